"""Batch test helpers: a recording row sender, a memory `Batches`, uploads and rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.batch.fanout import RowMessage
from shared.batch.files import StoreBatchFiles
from shared.batch.policy import BatchPolicy
from shared.batch.service import Batches
from shared.messages import InboundMessage
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import Registry, read_registry_file
from shared.tenancy.registry_source import StaticRegistry

DEVHOST_REGISTRY = Path(__file__).resolve().parents[3] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}
SECRET = "my password is hunter2"
START = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def devhost_registry() -> Registry:
    return read_registry_file(DEVHOST_REGISTRY, env=ENV)


def unlimited_registry() -> Registry:
    """The devhost registry without tenant quotas: rows are sent at once, unscheduled."""
    registry = devhost_registry()
    tenants = tuple(
        t.model_copy(
            update={
                "quota": t.quota.model_copy(
                    update={"tokens_per_minute": None, "requests_per_minute": None}
                )
            }
        )
        for t in registry.tenants
    )
    return registry.model_copy(update={"tenants": tenants})


@dataclass
class RecordingRowSender:
    sends: list[tuple[str, list[RowMessage]]] = field(default_factory=list)
    fail_after: int | None = None

    @property
    def rows(self) -> list[RowMessage]:
        return [row for _, rows in self.sends for row in rows]

    async def send_rows(self, queue: str, rows: Sequence[RowMessage]) -> None:
        if self.fail_after is not None and len(self.rows) + len(rows) > self.fail_after:
            raise ConnectionError("the queue went away")
        self.sends.append((queue, list(rows)))

    async def close(self) -> None:
        return None


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def memory_batches(
    store: MemoryBlobStore,
    sender: RecordingRowSender,
    *,
    registry: Registry | None = None,
    policy: BatchPolicy | None = None,
    clock: Clock | None = None,
) -> Batches:
    return Batches(
        store=store,
        files=StoreBatchFiles(store, chunk_bytes=7),  # tiny chunks: lines span chunks
        registry=StaticRegistry(registry or unlimited_registry()),
        sender=sender,
        clock=clock or Clock(),
        policy=policy,
    )


def row(content: str = SECRET, **changes: Any) -> str:
    doc: dict[str, Any] = {"messages": [{"role": "user", "content": content}]}
    doc.update(changes)
    return json.dumps(doc)


async def upload(store: MemoryBlobStore, name: str, lines: Sequence[str] | bytes) -> str:
    data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    await store.put(names.UPLOADS_CONTAINER, name, data, content_type="application/x-ndjson")
    return name


def as_inbound(message: RowMessage) -> InboundMessage:
    return InboundMessage(
        body=message.body,
        message_id=message.message_id,
        application_properties=dict(message.application_properties),
        delivery_count=1,
        enqueued_time=START,
    )


def jsonl(store: MemoryBlobStore, container: str, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in store.text(container, name).splitlines() if line]
