"""`python -m devhost.jobrunner --port P --storage-connection CONN --simulator-url URL
--python PATH --work-dir DIR [--host 127.0.0.1] [--max-concurrent 1] [--log-level info]`

Logs `job runner listening on http://HOST:PORT` (stderr) when ready; on SIGTERM or SIGINT stops
its trainers (unfinished jobs run again at the next start) and exits 0. Exit 2 when --python does
not exist (run `python3 dev.py bootstrap`: it makes .venv-training), 1 when the port is taken.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from devhost.cli import configure_logging
from devhost.jobrunner.process import TRAINING_PYTHON
from devhost.jobrunner.server import start_runner

log = logging.getLogger("devhost.jobrunner")


async def serve(options: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        running = await start_runner(
            work_dir=options.work_dir,
            python=options.python,
            storage_connection=options.storage_connection,
            simulator_url=options.simulator_url,
            host=options.host,
            port=options.port,
            max_concurrent=options.max_concurrent,
        )
    except OSError as err:
        log.error("job runner cannot listen on %s:%d: %s", options.host, options.port, err)
        return 1
    log.info("job runner trains with %s in %s", options.python, options.work_dir)
    log.info("job runner listening on %s", running.url)
    await stop.wait()
    await running.stop()
    log.info("job runner stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.jobrunner", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--storage-connection", required=True)
    parser.add_argument("--simulator-url", required=True)
    parser.add_argument("--python", type=Path, default=TRAINING_PYTHON)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--max-concurrent", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    options = parser.parse_args(argv)
    configure_logging(options.log_level)
    logging.getLogger("azure").setLevel(logging.WARNING)  # not every blob request
    if not options.python.exists():
        log.error("%s does not exist: run `python3 dev.py bootstrap`", options.python)
        return 2
    if options.max_concurrent < 1:
        log.error("--max-concurrent must be at least 1")
        return 2
    return asyncio.run(serve(options))


if __name__ == "__main__":
    sys.exit(main())
