"""`python -m devhost.host --script-root DIR [--settings FILE] [--http-port N] [--http-host H]`

Runs the Function app in DIR (its function_app.py and host.json) until SIGTERM or SIGINT. Logs
`functions host ready: <n> functions (<names>)` to stderr once every trigger is running. On a
signal it stops taking work, lets in-flight invocations finish within `--grace-seconds`, abandons
what did not, and exits 0. A configuration error (a missing connection setting, a bad host.json,
a binding it cannot drive) exits 2 with a message that names it; an app that fails to import, 1.

Run it from the app's root (as `func start` is), so relative paths in settings resolve there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from devhost.cli import configure_logging
from devhost.host.runner import FunctionsHost, HostStartupError

log = logging.getLogger("devhost.host.lifecycle")


async def serve(host: FunctionsHost) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.info("%s again: already stopping (grace %.0fs)", sig.name, host.grace_s)
            return
        log.info("%s: functions host stopping", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await host.start()
    except HostStartupError as exc:
        log.error("functions host cannot start: %s", exc)
        return 2
    except Exception:
        log.exception("functions host cannot start (function_app.py failed to load?)")
        return 1
    # After start: host.json's levels apply from here on (the startup lines are already out).
    apply_log_levels(host)
    await stop.wait()
    await host.stop()
    await _close_app_runtime()
    return 0


async def _close_app_runtime() -> None:
    """The app's process-wide clients (shared.runtime), as a worker's exit would drop them."""
    runtime = sys.modules.get("shared.runtime")
    close = getattr(runtime, "close_runtime", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def apply_log_levels(host: FunctionsHost) -> None:
    for name, level in host.options.log_levels.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger("devhost.host.lifecycle").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devhost.host",
        description="Run a Python (v2 model) Function app locally, as the Functions host would.",
    )
    parser.add_argument(
        "--script-root",
        type=Path,
        default=Path.cwd(),
        help="the folder with function_app.py and host.json (default: .)",
    )
    parser.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="a local.settings.json (default: the script root's, if any)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="HTTP port (default: Host.LocalHttpPort of the settings, else free)",
    )
    parser.add_argument("--http-host", default="127.0.0.1")
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=10.0,
        help="how long in-flight invocations may finish after a stop signal",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    # The SDKs' connection chatter is noise unless host.json asks for it.
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("devhost.host.lifecycle").setLevel(logging.INFO)
    host = FunctionsHost(
        args.script_root,
        args.settings,
        http_host=args.http_host,
        http_port=args.http_port,
        grace_s=args.grace_seconds,
        module_name="function_app",
    )
    code = asyncio.run(serve(host))
    if host.busy_threads:
        # A sync function still running past the grace period would hold the interpreter's exit
        # (it joins worker threads); its message was abandoned already.
        log.warning("%d function thread(s) still running; exiting without them", host.busy_threads)
        logging.shutdown()
        os._exit(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
