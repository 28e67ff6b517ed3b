"""`python -m devhost.models --port 8081 --config devhost/models.config.json [--host 127.0.0.1]`

Logs `models simulator listening on http://HOST:PORT` (stderr) when ready; stops cleanly, exit
code 0, on SIGTERM or SIGINT. A bad config file exits with code 2 and says what is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from devhost.cli import configure_logging
from devhost.models.config import ConfigError, SimulatorConfig, load_config
from devhost.models.server import start_simulator

log = logging.getLogger("devhost.models")


async def serve(config: SimulatorConfig, host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        sim = await start_simulator(config, host, port)
    except OSError as err:
        log.error("models simulator cannot listen on %s:%d: %s", host, port, err)
        return 1
    names = ", ".join(d.name for d in config.deployments) or "none"
    log.info("models simulator deployments: %s", names)
    log.info("models simulator listening on %s", sim.url)
    await stop.wait()
    await sim.stop()
    log.info("models simulator stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devhost.models",
        description="Serve the Azure OpenAI / Azure AI Inference APIs locally.",
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    parser.add_argument("--config", required=True, help="the simulator's JSON config file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    return asyncio.run(serve(config, args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())
