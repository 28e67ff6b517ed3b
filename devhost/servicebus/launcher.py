"""The broker as a child process, for tests, benchmarks and the local stack."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from devhost.processes import ChildProcess, free_port, python_module
from devhost.servicebus.server import connection_string

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "servicebus.config.json"


class BrokerProcess(ChildProcess):
    def __init__(
        self,
        data_dir: Path,
        *,
        config: Path = DEFAULT_CONFIG,
        port: int | None = None,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
        admin_port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        port = port or free_port(host)
        # The management API (admin_http.py) on a port of its own, as the official emulator has.
        self.admin_port = admin_port or free_port(host)
        super().__init__(
            python_module(
                "devhost.servicebus",
                "--host",
                host,
                "--port",
                str(port),
                "--admin-port",
                str(self.admin_port),
                "--data-dir",
                str(data_dir),
                "--config",
                str(config),
            ),
            port,
            host=host,
            log_path=log_path,
        )

    @property
    def connection_string(self) -> str:
        return connection_string(self.host, self.port)

    @property
    def admin_connection_string(self) -> str:
        """For `ServiceBusAdministrationClient.from_connection_string` (the emulator's form)."""
        return connection_string(self.host, self.admin_port)

    def restart(self) -> Self:
        """Same port, same data dir: what a supervisor does after a crash."""
        self.stop()
        return self.start()
