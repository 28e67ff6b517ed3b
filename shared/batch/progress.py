"""Progress: each batch row that settles is counted once in its record; the record is the answer.

`RowTracker.settled(message, outcome)` is the inference handler's hook, called after every
message it handles. Only a message marked as a batch row (`batch_id`, `batch_line` application
properties) whose body names that row (`request_id` = `<batch_id>:<line>`) counts, and only for
the tenant the body names: properties alone cannot touch another tenant's batch. A row settles
when its result is stored (succeeded or failed) or it is rejected (the rejection record is copied
beside the batch, as its row result); a rescheduled row has not settled. The record's bitmap
makes a redelivered row count once; the write that settles the last row gathers the results.
Rows that settle together in one process are written together (a group commit), so the record
is not a hot spot of conflicting writes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from shared.batch.gather import Gatherer, row_rejection_name
from shared.batch.record import BatchRecord, Bitmap, RecordStore
from shared.contracts import InferenceResult
from shared.contracts.batch import (
    BATCH_ID_PROPERTY,
    BATCH_LINE_PROPERTY,
    BatchProgress,
    is_batch_id,
    is_tenant_id,
    row_request_id,
)
from shared.inference.rejections import rejection_blob_name
from shared.inference.results import result_blob_name
from shared.messages import InboundMessage
from shared.storage import names
from shared.storage.blob_store import BlobStore
from shared.structured_logging import key_values

log = logging.getLogger(__name__)

# The handler's outcomes (shared.inference.handler.Outcome values) that end a row.
_RESULT_OUTCOMES: Final = frozenset({"completed", "filtered", "failed", "duplicate"})
_REJECTED: Final = "rejected"


@dataclass
class _Group:
    """Rows of one batch waiting for the same record write: line -> failed."""

    rows: dict[int, bool] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class RowTracker:
    def __init__(
        self,
        store: BlobStore,
        records: RecordStore,
        gatherer: Gatherer,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._records = records
        self._gatherer = gatherer
        self._clock = clock
        self._open: dict[tuple[str, str], _Group] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def settled(self, message: InboundMessage, outcome: str) -> None:
        """The hook. Cheap (no I/O) for a message that is not a batch row."""
        batch_id = message.property_text(BATCH_ID_PROPERTY)
        line_text = message.property_text(BATCH_LINE_PROPERTY)
        if batch_id is None or line_text is None:
            return
        if outcome not in _RESULT_OUTCOMES and outcome != _REJECTED:
            return  # rescheduled: it will settle later
        row = _row_of(message.body, batch_id, line_text)
        if row is None:
            return
        tenant_id, line = row
        status = await self._status(message, outcome, tenant_id, batch_id, line)
        if status is None:
            return
        await self.count(tenant_id, batch_id, line, failed=status != "succeeded")

    async def count(self, tenant_id: str, batch_id: str, line: int, *, failed: bool) -> None:
        """Count the row in its record, in a group commit: the rows of one batch that settle in
        this process while its previous write is in flight are written together, in one
        read-modify-write, so the record's ETag sees one writer per process, not one per row.
        Returns once the write that holds this row is stored (or raises what it raised)."""
        key = (tenant_id, batch_id)
        group = self._open.get(key)
        if group is None:
            group = _Group()
            self._open[key] = group
            group.task = asyncio.create_task(self._commit(key, group))
        group.rows[line] = failed
        assert group.task is not None
        await asyncio.shield(group.task)

    async def _commit(self, key: tuple[str, str], group: _Group) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:  # the batch's previous group is written first
                if self._open.get(key) is group:
                    del self._open[key]  # rows from now on join the next group
                record = await self._write(key, group.rows)
        finally:
            if not lock.locked() and key not in self._open:
                self._locks.pop(key, None)
        if record is None:
            extra = {"event": "batch.row_without_record", "tenant_id": key[0], "batch_id": key[1]}
            log.warning(key_values(extra), extra=extra)
            return
        await self._gatherer.gather_if_due(record)

    async def _write(self, key: tuple[str, str], rows: dict[int, bool]) -> BatchRecord | None:
        now = self._clock()

        def settle(current: BatchRecord) -> BatchRecord | None:
            settled = current.settled_rows()
            failed_rows = Bitmap.decode(current.failed_rows)
            succeeded, failed = current.counts.succeeded, current.counts.failed
            for line, row_failed in rows.items():
                if not settled.add(line):
                    continue  # counted already (a redelivery)
                if row_failed:
                    failed_rows.add(line)
                    failed += 1
                else:
                    succeeded += 1
            if (succeeded, failed) == (current.counts.succeeded, current.counts.failed):
                return None
            return current.model_copy(
                update={
                    "settled": settled.encode(),
                    "failed_rows": failed_rows.encode(),
                    "counts": current.counts.model_copy(
                        update={"succeeded": succeeded, "failed": failed}
                    ),
                    "updated_at": now,
                }
            )

        record, _ = await self._records.update(key[0], key[1], settle)
        return record

    async def progress(self, tenant_id: str, batch_id: str) -> BatchProgress | None:
        """The record's progress; None for a batch this tenant does not have. A batch whose rows
        have all settled but whose gathering stalled is gathered now."""
        if not is_tenant_id(tenant_id) or not is_batch_id(batch_id):
            return None
        record = await self._records.get(tenant_id, batch_id)
        if record is None:
            return None
        return (await self._gatherer.gather_if_due(record)).progress()

    async def _status(
        self, message: InboundMessage, outcome: str, tenant_id: str, batch_id: str, line: int
    ) -> str | None:
        request_id = row_request_id(batch_id, line)
        if outcome == "completed":
            return "succeeded"
        if outcome in ("failed", "filtered"):  # a filtered row ended without an answer
            return outcome
        if outcome == "duplicate":
            blob = await self._store.read(
                names.RESULTS_CONTAINER, result_blob_name(tenant_id, request_id)
            )
            if blob is None:
                return None
            return InferenceResult.model_validate_json(blob.data).status
        # Rejected: keep the handler's record beside the batch, under the row's line (a
        # rescheduled copy is filed under the copy's message id, which the gatherer cannot know).
        rejection = None
        for owner in (tenant_id, None):  # None: filed under _unknown (the tenant was removed)
            rejection = await self._store.read(
                names.REJECTED_CONTAINER, rejection_blob_name(owner, message.message_id)
            )
            if rejection is not None:
                break
        if rejection is None:
            return None
        await self._store.put(
            names.BATCHES_CONTAINER,
            row_rejection_name(tenant_id, batch_id, line),
            rejection.data,
        )
        return "rejected"


def _row_of(body: bytes, batch_id: str, line_text: str) -> tuple[str, int] | None:
    """(tenant, line) when the body is that batch row's request; None otherwise."""
    if not is_batch_id(batch_id) or not line_text.isdigit():
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    tenant_id, request_id = document.get("tenant_id"), document.get("request_id")
    line = int(line_text)
    if not isinstance(tenant_id, str) or not is_tenant_id(tenant_id):
        return None
    if request_id != row_request_id(batch_id, line) or line < 1:
        return None
    return tenant_id, line
