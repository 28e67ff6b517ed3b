"""`python -m devhost up | demo | inspect`: run the local stack, play tenants on it, look inside.

up [--fixed-ports] [--keep-data] [--data-dir DIR] [--env-file FILE]
    Starts every stand-in, writes FILE (default DIR/devhost.env; DIR defaults to
    .devhost-data/up) with every connection string and endpoint, prints the same lines, and
    runs until Ctrl-C or SIGTERM (exit 0, every part stopped). If a part dies, says which and
    where its log is, stops the rest and exits 1. Defaults: free ports, new on every start
    (`--fixed-ports`: 5672 AMQP, 5300 management, 10000 Azurite, 6379 Redis, 8081 models,
    7071 Functions host); data wiped on start (`--keep-data`: queues, blobs, the registry and
    counters of the last run are kept).
inspect [--env-file FILE] [--tenant ID] [--json]    see devhost/inspect/
demo [...]                                          see devhost/demo.py
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from devhost.demo import run_demo
from devhost.envfile import line, write_env_file
from devhost.inspect.cli import run_inspect
from devhost.processes import ROOT
from devhost.stack import LocalStack, PortInUse, StackOptions, StackPorts, fresh_data_dir

UP_DATA_DIR = ROOT / ".devhost-data" / "up"
ENV_FILE_NAME = "devhost.env"
# The app re-reads the registry this often locally, so a tenant added with `shared.admin` is
# served within seconds (Azure's default is 60 s).
UP_SETTINGS = {"DRIFT_CHECK_EVERY": "20", "TENANT_REGISTRY_REFRESH_SECONDS": "5"}
_POLL_S = 0.5


class _Stop(BaseException):
    """SIGINT or SIGTERM: stop everything (a BaseException, so no `except Exception` eats it)."""


_stopping = False


def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
    """Raise once: a second signal (Ctrl-C and dev.py's forwarded SIGTERM) must not interrupt
    the clean-up the first one started."""
    global _stopping  # noqa: PLW0603 - one process, one stop
    if _stopping:
        return
    _stopping = True
    raise _Stop(signum)


def stack_env(stack: LocalStack) -> dict[str, str]:
    """Every connection string and endpoint of a started stack, as the env file holds them."""
    assert stack.broker is not None
    assert stack.azurite is not None
    return {
        **stack.app_settings(),
        "ServiceBusAdminConnection": stack.broker.admin_connection_string,
        "AZURITE_BLOB_ENDPOINT": stack.azurite.blob_endpoint,
        "FUNCTIONS_HTTP": f"http://127.0.0.1:{stack.http_port}/api",
        "DEVHOST_LOGS": str(stack.logs),
    }


def _data_dir(path: Path, keep: bool) -> Path:
    if not keep:
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def up(args: argparse.Namespace) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_on_signal)
    data_dir = _data_dir(args.data_dir, args.keep_data)
    env_file: Path = args.env_file or data_dir / ENV_FILE_NAME
    options = StackOptions(
        data_dir=data_dir,
        extra_settings=dict(UP_SETTINGS),
        ports=StackPorts() if args.fixed_ports else None,
        keep_data=args.keep_data,
    )
    stack = LocalStack(options)
    try:
        try:
            print("starting the local stack ...", flush=True)
            stack.start()
        except (PortInUse, RuntimeError, TimeoutError, FileNotFoundError) as exc:
            print(f"devhost up: could not start: {exc}", file=sys.stderr)
            return 1
        env = stack_env(stack)
        write_env_file(env_file, env)
        for what, where in stack.describe():
            print(f"  {what:<24} {where}")
        # Raw `NAME=value` lines first, as local.settings.json holds them (tools read these),
        # then the same as shell lines that paste as they are (quoted: a connection string's `;`
        # would end the command).
        print("  settings (local.settings.json values):")
        for name, value in env.items():
            print(f"    {name}={value}")
        print(f"to paste into a shell (also in {env_file}):")
        for name, value in env.items():
            print(f"  export {line(name, value)}")
        print("Ctrl-C (or SIGTERM) stops everything.", flush=True)
        while True:
            ended = stack.exited()
            if ended:
                for name, code, log in ended:
                    status = "" if code is None else f" with status {code}"
                    print(f"devhost up: {name} exited{status}; see {log}", file=sys.stderr)
                print("devhost up: stopping the other parts", file=sys.stderr)
                return 1
            time.sleep(_POLL_S)
    except _Stop:
        print("stopping ...", flush=True)
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stack.stop()
        # A stale file would send tools to ports nobody listens on (they would wait, then fail).
        env_file.unlink(missing_ok=True)
        print("stopped.", flush=True)


def demo(args: argparse.Namespace) -> int:
    print("starting the local stack ...", flush=True)
    data_dir = fresh_data_dir(args.command)
    # A drift evaluation after every 20 first ratings, so the demo's few hundred show it.
    options = StackOptions(data_dir=data_dir, extra_settings={"DRIFT_CHECK_EVERY": "20"})
    with LocalStack(options) as stack:
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
                keys_file=stack.keys_file,
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devhost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start broker, Azurite, Redis, model simulator and host")
    start.add_argument(
        "--fixed-ports",
        action="store_true",
        help="5672/5300 Service Bus, 10000 Azurite, 6379 Redis, 8081 models, 7071 host "
        "(default: free ports, new on every start)",
    )
    start.add_argument(
        "--keep-data",
        action="store_true",
        help="keep queues, blobs, the registry and counters of the last run (default: wipe)",
    )
    start.add_argument("--data-dir", type=Path, default=UP_DATA_DIR, help="default: %(default)s")
    start.add_argument("--env-file", type=Path, help=f"default: <data dir>/{ENV_FILE_NAME}")
    look = sub.add_parser("inspect", help="results, rejections, usage, queues, dead letters")
    look.add_argument(
        "--env-file",
        type=Path,
        default=Path(".devhost-data") / "up" / ENV_FILE_NAME,
        help="the running stack's env file (default: %(default)s)",
    )
    look.add_argument("--tenant", action="append", help="only this tenant (repeat for more)")
    look.add_argument("--limit", type=int, default=5, help="recent items per list (default 5)")
    look.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    play = sub.add_parser("demo", help="start the stack and play three tenants against it")
    play.add_argument("--per-tenant", type=int, default=40, help="requests per tenant")
    play.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for replies")
    play.add_argument(
        "--drift-requests",
        type=int,
        default=420,
        help="requests in the drift act (0: skip it)",
    )
    play.add_argument(
        "--calm", action="store_true", help="no injected 429s and 500s (a good day at the provider)"
    )
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args)
    if args.command == "inspect":
        return run_inspect(args)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
