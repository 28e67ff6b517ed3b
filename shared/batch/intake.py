"""Intake of an upload `uploads/<tenant_id>/batch/<name>.jsonl`: check it, stream it, fan it out.

1. The path names a registered tenant (else the record goes under `batches/_unknown/`), the file
   is not larger than `max_upload_bytes` and not empty: otherwise the whole upload is refused
   (`state: rejected`, the reason in the record) and nothing is sent.
2. `batch_id` comes from the blob's name and ETag: the record `batches/<tenant>/<batch_id>.json`
   is created once; a trigger fired again for the same version finds it and resumes (a fan-out
   cut short restarts after `fanned_through`; a finished one is left alone).
3. The file is read in chunks (pinned to that ETag) and split into lines; each row is checked
   against `inference.request` (`parse_batch_row`); a bad row becomes a line of the errors file
   (line number, reason, a detail that names fields, never values); a good one a message
   `<batch_id>:<line>` marked as batch traffic, sent in batches of `send_rows`, scheduled at the
   pace of the tenant's batch share of its quota. Memory holds one chunk, one row and one send.
4. Then the record says `running` with the final counts; rows that already settled count, and if
   every row has, the results are gathered at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared import contracts
from shared.batch.fanout import RowMessage, RowSender
from shared.batch.files import BatchFiles, BlobStat, UploadChanged
from shared.batch.gather import Gatherer, errors_file_name, results_file_name
from shared.batch.lines import numbered_lines
from shared.batch.policy import BatchPolicy
from shared.batch.record import BatchRecord, RecordStore
from shared.contracts import ContractError, InferenceRequest
from shared.contracts.batch import (
    BATCH_ID_PROPERTY,
    BATCH_LINE_PROPERTY,
    BATCH_TRAFFIC,
    TRAFFIC_PROPERTY,
    BatchCounts,
    BatchProgress,
    BatchRejection,
    BatchRejectionReason,
    BatchRowError,
    RowErrorReason,
    batch_id_for,
    is_tenant_id,
    parse_batch_row,
)
from shared.resilience.rate_budget import admission_tokens
from shared.storage import names
from shared.structured_logging import key_values
from shared.tenancy.registry import Quota, Tenant
from shared.tenancy.registry_source import RegistryProvider

log = logging.getLogger(__name__)

_UPLOAD_PATH = re.compile(r"^(?P<tenant>[^/]+)/batch/(?P<file>[^/]+\.jsonl)$")


@dataclass(frozen=True, slots=True)
class Upload:
    """A blob in the uploads container, as the trigger names it (`<tenant>/batch/<file>`)."""

    name: str
    container: str = names.UPLOADS_CONTAINER


class _Pace:
    """When row n may be sent: `margin` of the tenant's batch share of its per-minute quota,
    counting both requests and tokens; rows sent early stay scheduled, not waiting in memory."""

    def __init__(self, quota: Quota, share: float, margin: float, default_max_tokens: int) -> None:
        rate = share * margin / 60.0
        rpm, tpm = quota.requests_per_minute, quota.tokens_per_minute
        self._rps = rpm * rate if rpm else None
        self._tps = tpm * rate if tpm else None
        self._default_max_tokens = default_max_tokens
        self._rows = 0
        self._tokens = 0

    def next_offset_s(self, request: InferenceRequest) -> float:
        offset = 0.0
        if self._rps:
            offset = max(offset, self._rows / self._rps)
        if self._tps:
            offset = max(offset, self._tokens / self._tps)
        self._rows += 1
        self._tokens += admission_tokens(
            (m.content for m in request.messages),
            request.parameters.max_tokens,
            self._default_max_tokens,
        )
        return offset


class BatchIntake:
    def __init__(
        self,
        *,
        files: BatchFiles,
        records: RecordStore,
        registry: RegistryProvider,
        sender: RowSender,
        gatherer: Gatherer,
        policy: BatchPolicy,
        clock: Callable[[], datetime],
        default_max_tokens: int = 256,
    ) -> None:
        self.files = files
        self.sender = sender
        self.policy = policy
        self.clock = clock
        self.default_max_tokens = default_max_tokens
        self._records = records
        self._registry = registry
        self._gatherer = gatherer

    async def take(self, upload: Upload) -> BatchProgress | None:
        """The batch's progress after intake; None for a blob that is gone or not a batch file
        under a well-formed tenant (logged; nothing to file it under)."""
        stat = await self.files.stat(upload.container, upload.name)
        if stat is None:
            self._log(logging.INFO, "batch.upload_gone", upload=upload.name)
            return None
        matched = _UPLOAD_PATH.match(upload.name)
        tenant_part = matched.group("tenant") if matched else upload.name.split("/", 1)[0]
        if not is_tenant_id(tenant_part):
            self._log(logging.WARNING, "batch.bad_path", upload=upload.name[:200])
            return None
        registry = await self._registry.get()
        tenant = registry.tenant(tenant_part)
        owner = tenant.id if tenant is not None else names.UNKNOWN_TENANT_PREFIX
        batch_id = batch_id_for(tenant_part, upload.name, stat.etag)
        now = self.clock()
        record = await self._records.create(
            BatchRecord(
                tenant_id=owner,
                batch_id=batch_id,
                source=f"{upload.container}/{upload.name}",
                etag=stat.etag,
                created_at=now,
                updated_at=now,
            )
        )
        if record.state == "rejected":
            return record.progress()
        refusal = self._refusal(tenant, matched is not None, stat)
        if refusal is not None:
            return (await self._reject(record, refusal)).progress()
        assert tenant is not None  # _refusal refuses an unknown tenant
        if record.state != "fanning_out":  # fired again: the fan-out is done
            return (await self._gatherer.gather_if_due(record)).progress()
        return (await self._fan_out(record, tenant, upload, stat)).progress()

    def _refusal(
        self, tenant: Tenant | None, path_ok: bool, stat: BlobStat
    ) -> BatchRejection | None:
        if tenant is None:
            return BatchRejection(
                reason=BatchRejectionReason.UNKNOWN_TENANT,
                detail="the tenant in the upload's path is not registered",
            )
        if not path_ok:
            return BatchRejection(
                reason=BatchRejectionReason.BAD_PATH,
                detail="batch uploads are named uploads/<tenant_id>/batch/<name>.jsonl",
            )
        if stat.size > self.policy.max_upload_bytes:
            return BatchRejection(
                reason=BatchRejectionReason.FILE_TOO_LARGE,
                detail=f"the file has {stat.size} bytes; the limit is "
                f"{self.policy.max_upload_bytes} (split it into several uploads)",
            )
        if stat.size == 0:
            return BatchRejection(
                reason=BatchRejectionReason.EMPTY_FILE, detail="the file is empty"
            )
        return None

    async def _reject(self, record: BatchRecord, rejection: BatchRejection) -> BatchRecord:
        now = self.clock()

        def reject(current: BatchRecord) -> BatchRecord | None:
            if current.state == "rejected":
                return None
            return current.model_copy(
                update={
                    "state": "rejected",
                    "rejection": rejection,
                    "updated_at": now,
                    "completed_at": now,
                }
            )

        stored, _ = await self._records.update(record.tenant_id, record.batch_id, reject)
        self._log(
            logging.WARNING,
            "batch.rejected",
            tenant_id=record.tenant_id,
            batch_id=record.batch_id,
            reason=rejection.reason,
        )
        return stored or record

    async def _fan_out(
        self, record: BatchRecord, tenant: Tenant, upload: Upload, stat: BlobStat
    ) -> BatchRecord:
        run = _FanOut(self, record, tenant, upload, stat)
        errors_name = errors_file_name(tenant.id, record.batch_id)
        try:
            await self.files.write(names.RESULTS_CONTAINER, errors_name, run.error_lines())
        except UploadChanged:
            return await self._reject(
                record,
                BatchRejection(
                    reason="upload_replaced",
                    detail="the upload changed while it was read; the new version is a new batch",
                ),
            )
        counts = run.counts()
        if counts.rows == 0:
            return await self._reject(
                record,
                BatchRejection(
                    reason=BatchRejectionReason.EMPTY_FILE, detail="the file has no rows"
                ),
            )
        now = self.clock()

        def finish(current: BatchRecord) -> BatchRecord | None:
            if current.state != "fanning_out":
                return None
            return current.model_copy(
                update={
                    "state": "running",
                    "counts": counts.model_copy(
                        update={
                            "succeeded": current.counts.succeeded,
                            "failed": current.counts.failed,
                        }
                    ),
                    "fanned_through": run.last_line,
                    "errors_blob": f"{names.RESULTS_CONTAINER}/{errors_name}",
                    "results_blob": None,
                    "updated_at": now,
                }
            )

        stored, _ = await self._records.update(tenant.id, record.batch_id, finish)
        stored = stored or record
        self._log(
            logging.INFO,
            "batch.fanned_out",
            tenant_id=tenant.id,
            batch_id=record.batch_id,
            rows=counts.rows,
            accepted=counts.accepted,
            invalid=counts.invalid,
            sent=run.sent,
            resumed_after=record.fanned_through or None,
        )
        return await self._gatherer.gather_if_due(stored)

    async def checkpoint(self, record: BatchRecord, through: int, counts: BatchCounts) -> None:
        now = self.clock()

        def note(current: BatchRecord) -> BatchRecord | None:
            if current.state != "fanning_out" or current.fanned_through >= through:
                return None
            return current.model_copy(
                update={
                    "fanned_through": through,
                    "counts": counts.model_copy(
                        update={
                            "succeeded": current.counts.succeeded,
                            "failed": current.counts.failed,
                        }
                    ),
                    "updated_at": now,
                }
            )

        await self._records.update(record.tenant_id, record.batch_id, note)

    def _log(self, level: int, event: str, **fields: object) -> None:
        extra = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
        log.log(level, key_values(extra), extra=extra)


class _FanOut:
    """One pass over the upload: yields the errors file's lines, sends the good rows."""

    def __init__(
        self,
        intake: BatchIntake,
        record: BatchRecord,
        tenant: Tenant,
        upload: Upload,
        stat: BlobStat,
    ) -> None:
        self._intake = intake
        self._record = record
        self._tenant = tenant
        self._upload = upload
        self._stat = stat
        self._policy = intake.policy
        self._pace = _Pace(
            tenant.quota,
            intake.policy.quota_share,
            intake.policy.pace_margin,
            intake.default_max_tokens,
        )
        self.rows = 0
        self.invalid = 0
        self.accepted = 0
        self.sent = 0
        self.last_line = 0
        self._pending: list[RowMessage] = []

    def counts(self) -> BatchCounts:
        return BatchCounts(rows=self.rows, invalid=self.invalid, accepted=self.accepted)

    async def error_lines(self) -> AsyncIterator[bytes]:
        intake, record = self._intake, self._record
        chunks = intake.files.chunks(self._upload.container, self._upload.name, self._stat.etag)
        since_checkpoint = 0
        async for line, text in numbered_lines(chunks, self._policy.max_row_bytes):
            self.last_line = line
            if text is not None and not text.strip():
                continue  # a blank line is no row
            self.rows += 1
            if text is None:
                self.invalid += 1
                yield _error(
                    line,
                    RowErrorReason.ROW_TOO_LARGE,
                    f"the row is longer than {self._policy.max_row_bytes} bytes",
                )
                continue
            try:
                request = parse_batch_row(
                    text, tenant_id=self._tenant.id, batch_id=record.batch_id, line=line
                )
            except ContractError as exc:
                self.invalid += 1
                yield _error(line, exc.reason, exc.detail)
                continue
            self.accepted += 1
            offset = self._pace.next_offset_s(request)
            if line <= record.fanned_through:
                continue  # sent before the trigger fired again
            self._pending.append(self._message(request, line, offset))
            if len(self._pending) >= self._policy.send_rows:
                await self._flush()
            since_checkpoint += 1
            if since_checkpoint >= self._policy.checkpoint_rows:
                await self._flush()
                await intake.checkpoint(record, line, self.counts())
                since_checkpoint = 0
        await self._flush()

    def _message(self, request: InferenceRequest, line: int, offset_s: float) -> RowMessage:
        at: datetime | None = self._record.created_at + timedelta(seconds=offset_s)
        if at is not None and at <= self._intake.clock() + timedelta(seconds=1):
            at = None
        return RowMessage(
            body=request.model_dump_json(exclude_none=True).encode("utf-8"),
            message_id=request.request_id,
            subject=contracts.REQUEST_TYPE,
            application_properties={
                "type": contracts.REQUEST_TYPE,
                "version": contracts.CONTRACT_VERSION,
                TRAFFIC_PROPERTY: BATCH_TRAFFIC,
                BATCH_ID_PROPERTY: self._record.batch_id,
                BATCH_LINE_PROPERTY: line,
            },
            scheduled_enqueue_time_utc=at,
        )

    async def _flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        await self._intake.sender.send_rows(names.INFERENCE_REQUESTS, rows)
        self.sent += len(rows)


def _error(line: int, reason: str, detail: str) -> bytes:
    return BatchRowError(line=line, reason=reason, detail=detail).model_dump_json().encode() + b"\n"


__all__ = ["BatchIntake", "Upload", "results_file_name"]
