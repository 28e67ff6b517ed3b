"""Azurite, Microsoft's storage emulator (blob service only), as a child process.

    with Azurite() as azurite:          # a free loopback port, a fresh temporary data folder
        asyncio.run(create_containers(azurite.connection_string))
        ...                             # the real azure-storage-blob SDK, against azurite

`python -m devhost.azurite [--port N] [--location DIR]` runs one in the foreground, creates the
app's containers and prints the connection string for `AzureWebJobsStorage`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import BlobServiceClient

from devhost.processes import ROOT, DataDirServer
from shared.storage import names

AZURITE_BLOB = ROOT / "devhost" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's well-known development account key (public, the same on every machine).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def connection_string(host: str, port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{ACCOUNT_NAME};"
    )


class Azurite(DataDirServer):
    """One azurite-blob process; its blobs live in `location` (the data folder)."""

    temp_prefix = "azurite-"

    def __init__(self, *, location: Path | None = None, **options: Any) -> None:
        super().__init__(data_dir=location, **options)

    @property
    def location(self) -> Path:
        return self.data_dir

    @property
    def connection_string(self) -> str:
        return connection_string(self.host, self.port)

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{ACCOUNT_NAME}"

    def command(self) -> list[str]:
        if not AZURITE_BLOB.exists():
            raise FileNotFoundError(
                f"{AZURITE_BLOB} is missing: run `python3 dev.py bootstrap` (npm ci in devhost/)"
            )
        return [
            str(AZURITE_BLOB),
            "--blobHost",
            self.host,
            "--blobPort",
            str(self.port),
            "--location",
            str(self.location),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ]


async def create_containers(connection: str, containers: Iterable[str] = names.CONTAINERS) -> None:
    """Create the app's containers (shared/storage/names.py); existing ones are left alone."""
    async with BlobServiceClient.from_connection_string(connection) as service:
        for name in containers:
            with suppress(ResourceExistsError):
                await service.create_container(name)


async def seed_registry(connection: str, source: Path, blob: str, *, replace: bool = True) -> bool:
    """Upload the registry document `source` to `blob` (`<container>/<name>`); with
    `replace=False` an existing blob is kept. True if it was written."""
    container, _, name = blob.partition("/")
    document = await asyncio.to_thread(source.read_bytes)
    async with BlobServiceClient.from_connection_string(connection) as service:
        client = service.get_blob_client(container, name)
        try:
            await client.upload_blob(document, overwrite=replace)
        except ResourceExistsError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.azurite", description=__doc__)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--location", type=Path, default=None)
    options = parser.parse_args(argv)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    azurite = Azurite(port=options.port, location=options.location).start()
    try:
        asyncio.run(create_containers(azurite.connection_string))
        print(azurite.connection_string, flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
