"""The batch record: `batches/<tenant_id>/<batch_id>.json`, read-modify-written under its ETag.

It holds the public progress (`shared.contracts.batch.BatchProgress`: state, counts, timestamps)
and what the batch itself needs: how far the fan-out got (`fanned_through`, a line number), and
which rows have settled (a bitmap by line: a row's result or failure is counted once, however
often its message is delivered) and which of those failed.

Every change is `RecordStore.update(tenant, batch, change)`: read, apply, write If-Match the ETag
read; when another instance wrote in between (`ConditionFailed`) the change is applied again to
the newer record. `change` returns None when there is nothing to write.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Callable, Iterator
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.batch import (
    BatchCounts,
    BatchProgress,
    BatchRejection,
    BatchState,
)
from shared.security.paths import tenant_path
from shared.storage import names
from shared.storage.blob_store import BlobStore, ConditionFailed

MAX_WRITE_TRIES = 200


class Bitmap:
    """A growable set of line numbers (1-based), stored as base64 bytes."""

    def __init__(self, data: bytes = b"") -> None:
        self._bits = bytearray(data)

    @classmethod
    def decode(cls, text: str) -> Bitmap:
        return cls(base64.b64decode(text)) if text else cls()

    def encode(self) -> str:
        return base64.b64encode(bytes(self._bits)).decode("ascii")

    def __contains__(self, line: int) -> bool:
        index = line - 1
        return index // 8 < len(self._bits) and bool(self._bits[index // 8] & (1 << (index % 8)))

    def add(self, line: int) -> bool:
        """True if the line was not in the set."""
        if line in self:
            return False
        index = line - 1
        if index // 8 >= len(self._bits):
            self._bits.extend(bytes(index // 8 + 1 - len(self._bits)))
        self._bits[index // 8] |= 1 << (index % 8)
        return True

    def __iter__(self) -> Iterator[int]:
        for byte_index, byte in enumerate(self._bits):
            if byte:
                for bit in range(8):
                    if byte & (1 << bit):
                        yield byte_index * 8 + bit + 1


class BatchRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tenant_id: str
    batch_id: str
    source: str
    etag: str
    state: BatchState = "fanning_out"
    counts: BatchCounts = Field(default_factory=BatchCounts)
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    gathering_since: datetime | None = None
    rejection: BatchRejection | None = None
    fanned_through: int = 0
    """Every valid row up to this line was sent (a resumed fan-out skips sending them)."""
    settled: str = ""
    failed_rows: str = ""
    results_blob: str | None = None
    errors_blob: str | None = None

    def settled_rows(self) -> Bitmap:
        return Bitmap.decode(self.settled)

    def all_settled(self) -> bool:
        counts = self.counts
        return counts.succeeded + counts.failed >= counts.accepted

    def progress(self) -> BatchProgress:
        counts = self.counts
        failed = counts.invalid + counts.failed
        return BatchProgress(
            tenant_id=self.tenant_id,
            batch_id=self.batch_id,
            source=self.source,
            state=self.state,
            counts=counts,
            done=counts.succeeded,
            failed=failed,
            pending=max(0, counts.rows - counts.succeeded - failed),
            created_at=self.created_at,
            updated_at=self.updated_at,
            completed_at=self.completed_at,
            results_blob=self.results_blob,
            errors_blob=self.errors_blob,
            rejection=self.rejection,
        )


def record_blob_name(tenant_id: str, batch_id: str) -> str:
    return tenant_path(tenant_id, batch_id, suffix=".json")


class RecordStore:
    def __init__(
        self,
        store: BlobStore,
        *,
        container: str = names.BATCHES_CONTAINER,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._container = container
        self._rng = rng or random.Random()

    async def get(self, tenant_id: str, batch_id: str) -> BatchRecord | None:
        blob = await self._store.read(self._container, record_blob_name(tenant_id, batch_id))
        if blob is None:
            return None
        return BatchRecord.model_validate_json(blob.data)

    async def create(self, record: BatchRecord) -> BatchRecord:
        """Store a new record, or return the one stored first (a re-fired trigger)."""
        name = record_blob_name(record.tenant_id, record.batch_id)
        body = record.model_dump_json().encode("utf-8")
        if await self._store.create(self._container, name, body):
            return record
        existing = await self.get(record.tenant_id, record.batch_id)
        if existing is None:
            raise RuntimeError(f"batch record {name} vanished while being created")
        return existing

    async def update(
        self,
        tenant_id: str,
        batch_id: str,
        change: Callable[[BatchRecord], BatchRecord | None],
    ) -> tuple[BatchRecord | None, bool]:
        """(the record as stored now, whether this call wrote it); (None, False) if missing."""
        name = record_blob_name(tenant_id, batch_id)
        for attempt in range(MAX_WRITE_TRIES):
            blob = await self._store.read(self._container, name)
            if blob is None:
                return None, False
            current = BatchRecord.model_validate_json(blob.data)
            changed = change(current)
            if changed is None:
                return current, False
            try:
                await self._store.put(
                    self._container,
                    name,
                    changed.model_dump_json().encode("utf-8"),
                    if_match=blob.etag,
                )
            except ConditionFailed:
                await asyncio.sleep(self._rng.uniform(0, min(0.2, 0.005 * (attempt + 1))))
                continue
            return changed, True
        raise RuntimeError(f"batch record {name}: {MAX_WRITE_TRIES} conflicting writes in a row")
