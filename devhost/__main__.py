"""`python -m devhost up` runs the local stack; `python -m devhost demo` plays tenants on it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading

from devhost.demo import run_demo
from devhost.stack import LocalStack, StackOptions, fresh_data_dir


def _up(stack: LocalStack) -> int:
    for what, where in stack.describe():
        print(f"  {what:<22} {where}")
    print("  settings (local.settings.json values):")
    for name, value in stack.app_settings().items():
        print(f"    {name}={value}")
    print("Ctrl-C stops everything.", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start broker, Azurite, Redis, model simulator and Functions host")
    demo = sub.add_parser("demo", help="start the stack and play three tenants against it")
    demo.add_argument("--per-tenant", type=int, default=40, help="requests per tenant")
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for replies")
    demo.add_argument(
        "--drift-requests",
        type=int,
        default=420,
        help="requests in the drift act (0: skip it)",
    )
    demo.add_argument(
        "--calm", action="store_true", help="no injected 429s and 500s (a good day at the provider)"
    )
    args = parser.parse_args(argv)

    print("starting the local stack ...", flush=True)
    data_dir = fresh_data_dir(args.command)
    # A drift evaluation after every 20 first ratings, so the demo's few hundred show it.
    options = StackOptions(data_dir=data_dir, extra_settings={"DRIFT_CHECK_EVERY": "20"})
    with LocalStack(options) as stack:
        if args.command == "up":
            return _up(stack)
        for what, where in stack.describe():
            print(f"  {what:<22} {where}")
        settings = stack.app_settings()
        return asyncio.run(
            run_demo(
                settings["ServiceBusConnection"],
                settings["AzureWebJobsStorage"],
                settings["AZURE_OPENAI_ENDPOINT"],
                args.per_tenant,
                args.timeout,
                host_log=stack.logs / "host.log",
                bad_day=not args.calm,
                drift_requests=args.drift_requests,
                chart_to=data_dir / "drift-chart.png",
                host_url=f"http://127.0.0.1:{stack.http_port}",
            )
        )


if __name__ == "__main__":
    sys.exit(main())
