"""Gathering: once every accepted row has settled, `results/<tenant>/batches/<batch_id>.jsonl`.

One `batch.result` line per accepted row, in input order: the row's `inference.result`
(`results/<tenant>/<batch_id>:<line>.json`, succeeded or failed), or the rejection the handler
filed for it (copied to `batches/<tenant>/<batch_id>/rejected/<line>.json` when it settled).

Who gathers: the caller that moves the record from `running` to `gathering` (If-Match, so one of
several racing instances); the file is written as staged blocks committed at the end, so a
gatherer that dies leaves no half file, and the next one (`gather_stale_s` later: a redelivered row,
the trigger fired again, or a progress read) writes the same file again. Then `completed`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta

from shared.batch.files import BatchFiles
from shared.batch.policy import BatchPolicy
from shared.batch.record import BatchRecord, RecordStore
from shared.contracts import InferenceResult, RejectionRecord
from shared.contracts.batch import BatchResultLine, row_request_id
from shared.inference.results import result_blob_name
from shared.security.paths import tenant_path
from shared.storage import names
from shared.storage.blob_store import BlobStore
from shared.structured_logging import key_values

log = logging.getLogger(__name__)


def results_file_name(tenant_id: str, batch_id: str) -> str:
    return tenant_path(tenant_id, "batches", batch_id, suffix=".jsonl")


def errors_file_name(tenant_id: str, batch_id: str) -> str:
    return tenant_path(tenant_id, "batches", batch_id, suffix=".errors.jsonl")


def row_rejection_name(tenant_id: str, batch_id: str, line: int) -> str:
    return tenant_path(tenant_id, batch_id, "rejected", str(line), suffix=".json")


class RowResultMissing(RuntimeError):
    """A settled row has neither a result nor a rejection copy (retried by a later gatherer)."""


class Gatherer:
    def __init__(
        self,
        store: BlobStore,
        files: BatchFiles,
        records: RecordStore,
        policy: BatchPolicy,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._files = files
        self._records = records
        self._policy = policy
        self._clock = clock

    def due(self, record: BatchRecord) -> bool:
        """Every row settled and nobody (alive) gathering."""
        if not record.all_settled():
            return False
        if record.state == "running":
            return True
        if record.state == "gathering" and record.gathering_since is not None:
            stale = timedelta(seconds=self._policy.gather_stale_s)
            return self._clock() - record.gathering_since > stale
        return False

    async def gather_if_due(self, record: BatchRecord) -> BatchRecord:
        if not self.due(record):
            return record
        now = self._clock()

        def claim(current: BatchRecord) -> BatchRecord | None:
            if not self.due(current):
                return None
            return current.model_copy(
                update={"state": "gathering", "gathering_since": now, "updated_at": now}
            )

        claimed, won = await self._records.update(record.tenant_id, record.batch_id, claim)
        if claimed is None or not won:
            return claimed or record
        name = results_file_name(claimed.tenant_id, claimed.batch_id)
        try:
            size = await self._files.write(names.RESULTS_CONTAINER, name, self._lines(claimed))
        except BaseException:
            await self._release(claimed)
            raise
        done = self._clock()

        def complete(current: BatchRecord) -> BatchRecord | None:
            if current.state == "completed":
                return None
            return current.model_copy(
                update={
                    "state": "completed",
                    "completed_at": done,
                    "updated_at": done,
                    "gathering_since": None,
                    "results_blob": f"{names.RESULTS_CONTAINER}/{name}",
                }
            )

        final, _ = await self._records.update(claimed.tenant_id, claimed.batch_id, complete)
        extra = {
            "event": "batch.completed",
            "tenant_id": claimed.tenant_id,
            "batch_id": claimed.batch_id,
            "rows": claimed.counts.rows,
            "succeeded": claimed.counts.succeeded,
            "failed": claimed.counts.failed + claimed.counts.invalid,
            "results_bytes": size,
        }
        log.info(key_values(extra), extra=extra)
        return final or claimed

    async def _release(self, record: BatchRecord) -> None:
        def release(current: BatchRecord) -> BatchRecord | None:
            if current.state != "gathering":
                return None
            return current.model_copy(update={"state": "running", "gathering_since": None})

        try:
            await self._records.update(record.tenant_id, record.batch_id, release)
        except Exception:
            log.warning("batch.release_failed batch_id=%s", record.batch_id)

    async def _lines(self, record: BatchRecord) -> AsyncIterator[bytes]:
        window = max(1, self._policy.gather_concurrency)
        for part in _batched(iter(record.settled_rows()), window):  # in line order
            rows = await asyncio.gather(*(self._row(record, line) for line in part))
            yield b"".join(row.model_dump_json().encode("utf-8") + b"\n" for row in rows)

    async def _row(self, record: BatchRecord, line: int) -> BatchResultLine:
        request_id = row_request_id(record.batch_id, line)
        blob = await self._store.read(
            names.RESULTS_CONTAINER, result_blob_name(record.tenant_id, request_id)
        )
        if blob is not None:
            result = InferenceResult.model_validate_json(blob.data)
            return BatchResultLine(
                line=line, request_id=request_id, status=result.status, result=result
            )
        copy = await self._store.read(
            names.BATCHES_CONTAINER, row_rejection_name(record.tenant_id, record.batch_id, line)
        )
        if copy is None:
            raise RowResultMissing(f"batch {record.batch_id} line {line}: no result")
        rejection = RejectionRecord.model_validate_json(copy.data)
        return BatchResultLine(
            line=line, request_id=request_id, status="rejected", rejection=rejection
        )


def _batched(items: Iterator[int], size: int) -> Iterator[tuple[int, ...]]:
    while part := tuple(itertools.islice(items, size)):
        yield part
