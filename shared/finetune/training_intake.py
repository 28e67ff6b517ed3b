"""Intake of a training upload `uploads/<tenant_id>/training/<name>.jsonl`: check it, scrub its
rows into the tenant's training pool, report bad rows, and ask for fine-tuning when the policy says.

1. The blob's name and ETag give `upload_id` (`upload_id_for`): the record
   `training/<tenant>/uploads/<upload_id>.json` (`UploadRecord`) is created once; a trigger fired
   again for the same version finds it: a finished upload is not read again (nothing is pooled
   twice), one cut short resumes after its last stored pool part.
2. Whole-file checks, before anything is kept: the path names a registered tenant and has the
   form above; the consent rule (`shared.feedback.consent.training_tenants`) lets the tenant's
   data train the model it would tune (`tenant` scope: its own; a pooled tenant's: the shared
   one); the file is not empty nor over `max_upload_bytes`; then one cheap pass over the file
   (pinned to its ETag, in chunks): every line is UTF-8 and there are at most `max_rows` rows.
   A refusal is one `TrainingUploadError` (`line: null`) in the rejection file; nothing is kept.
3. The pooling pass: each row is checked (`parse_training_row`); a bad one becomes a line of the
   rejection file (line number, reason, a detail without the row's text); good ones go through
   `Consent.keep` (normalised, PII scrubbed) in groups of `scrub_rows`, and are written as pool
   parts of `part_rows` rows, each part once (If-None-Match) and then checkpointed in the record.
4. The upload is added to the pool index (once), the record says `pooled` with its counts, and
   the fine-tune policy is applied (`TrainingUploads.consider`, see there).

The rejection file is `rejected/<tenant>/training/<stem>.<upload_id>.jsonl` (`_unknown` for a
tenant the registry does not know): beside the tenant's other rejection records, not beside the
upload, where it would fire the upload trigger again. It is written for every upload (empty when
every row was kept), so a tenant finds the verdict on each version of each file.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.batch.files import BatchFiles, BlobStat, UploadChanged
from shared.batch.lines import numbered_lines
from shared.contracts.batch import is_tenant_id
from shared.contracts.finetune import FinetuneReason
from shared.drift.report import Action
from shared.feedback.consent import NOT_CONSENTED, Consent, pii_total, training_tenants
from shared.finetune.requests import (
    FinetuneRequests,
    finetune_request,
    serving_deployment,
    training_scope,
)
from shared.finetune.training_pool import (
    JsonDocuments,
    PoolEntry,
    PoolIndex,
    PoolRequest,
    TrainingPool,
    index_name,
)
from shared.finetune.training_rows import (
    FileReason,
    TrainingExample,
    TrainingUploadError,
    UploadLimits,
    checked_rows,
)
from shared.inference.replies import ReplySender
from shared.security.paths import safe_or_hashed, tenant_path
from shared.storage import names
from shared.storage.blob_store import BlobStore
from shared.structured_logging import key_values
from shared.tenancy.registry import DataPolicy, Registry, Tenant
from shared.tenancy.registry_source import RegistryProvider

log = logging.getLogger(__name__)

_UPLOAD_PATH = re.compile(r"^(?P<tenant>[^/]+)/training/(?P<file>[^/]+\.jsonl)$")
UploadState = Literal["pooling", "pooled", "rejected"]


def _tenant_in_path(blob_name: str) -> tuple[str, bool]:
    """(the path's first segment, whether the whole name is `<tenant>/training/<file>.jsonl`)."""
    matched = _UPLOAD_PATH.fullmatch(blob_name)
    return (matched["tenant"], True) if matched else (blob_name.partition("/")[0], False)


def upload_id_for(tenant_id: str, blob_name: str, etag: str) -> str:
    """One version of one upload: the same (name, ETag) always gives the same id (`t` + 24 hex)."""
    key = f"training\x00{tenant_id}\x00{blob_name}\x00{etag.strip(chr(34))}"
    return "t" + hashlib.sha256(key.encode()).hexdigest()[:24]


def record_name(tenant_id: str, upload_id: str) -> str:
    return tenant_path(tenant_id, "uploads", upload_id, suffix=".json")


def rejection_name(owner: str, blob_name: str, upload_id: str) -> str:
    """`<owner>/training/<stem>.<upload_id>.jsonl` in the rejected container (`stem`: the file's
    name without `.jsonl`, at most 200 characters; `sha256-<hash>` when that is not a safe id:
    `shared.security.paths.safe_or_hashed`)."""
    stem = safe_or_hashed(blob_name.rsplit("/", 1)[-1].removesuffix(".jsonl")[:200])
    return tenant_path(owner, "training", f"{stem}.{upload_id}", suffix=".jsonl")


class UploadRecord(BaseModel):
    """`training.upload` v1: what became of one version of one upload.

    Counts are rows (non-blank lines): `invalid` refused, `kept` pooled (`kept_bytes` of scrubbed
    JSONL in `parts` parts); `through_line`: every good row up to this line is in a stored part;
    `pii_removed`: spans replaced per kind (counts only); `tuning`: the fine-tune decision taken
    after the upload was pooled."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["training.upload"] = "training.upload"
    version: Literal[1] = 1
    tenant_id: str
    upload_id: str
    source: str
    etag: str
    state: UploadState = "pooling"
    rows: int = Field(default=0, ge=0)
    invalid: int = Field(default=0, ge=0)
    kept: int = Field(default=0, ge=0)
    kept_bytes: int = Field(default=0, ge=0)
    parts: int = Field(default=0, ge=0)
    through_line: int = Field(default=0, ge=0)
    pii_removed: dict[str, int] = Field(default_factory=dict)
    rejections_blob: str | None = None
    rejection: TrainingUploadError | None = None
    tuning: Action | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


class TrainingUploads:
    """The intake (module docstring). `take` is what the blob trigger's handler calls."""

    def __init__(
        self,
        *,
        store: BlobStore,
        files: BatchFiles,
        registry: RegistryProvider,
        consent: Consent,
        sender: ReplySender,
        clock: Callable[[], datetime],
        limits: UploadLimits | None = None,
    ) -> None:
        self.limits = limits or UploadLimits()
        self.files = files
        self.consent = consent
        self.clock = clock
        self.pool = TrainingPool(store, files)
        self.records = JsonDocuments(store, names.TRAINING_CONTAINER, UploadRecord)
        self._store = store
        self._registry = registry
        self._requests = FinetuneRequests(store, sender)

    async def take(self, blob_name: str) -> UploadRecord | None:
        """The upload's record after intake (`blob_name` inside the uploads container); None for
        a blob that is gone or whose path names no well-formed tenant (logged: nothing to file it
        under). Raises only what a later try can fix (storage, the queue): a retry resumes."""
        tenant_part, path_ok = _tenant_in_path(blob_name)
        stat = await self.files.stat(names.UPLOADS_CONTAINER, blob_name)
        if stat is None or not is_tenant_id(tenant_part):
            why = "gone" if stat is None else "no tenant id in the path"
            _log(logging.WARNING, "training.not_filed", upload=blob_name[:200], why=why)
            return None
        registry = await self._registry.get()
        tenant = registry.tenant(tenant_part)
        upload_id = upload_id_for(tenant_part, blob_name, stat.etag)
        now = self.clock()
        fresh = UploadRecord(
            tenant_id=tenant.id if tenant else names.UNKNOWN_TENANT_PREFIX,
            upload_id=upload_id,
            source=f"{names.UPLOADS_CONTAINER}/{blob_name}",
            etag=stat.etag,
            created_at=now,
            updated_at=now,
        )
        if tenant is None:
            unknown = _file_error(
                FileReason.UNKNOWN_TENANT, "the tenant in the upload's path is not registered"
            )
            return await self._reject(fresh, blob_name, unknown, store_record=False)
        record = await self.records.update(
            record_name(tenant.id, upload_id), lambda current: None if current else fresh
        )
        record = record or fresh
        if record.state == "rejected":
            return record
        if record.state == "pooled":  # fired again: only the policy is looked at again
            return await self._decide(registry, tenant, record)
        refusal = self._refusal(registry, tenant, path_ok, stat)
        if refusal is None and record.parts == 0:
            refusal = await self._survey(blob_name, stat)
        if refusal is not None:
            return await self._reject(record, blob_name, refusal)
        try:
            record = await self._pool_rows(record, tenant, blob_name, stat)
        except UploadChanged:
            return await self._reject(record, blob_name, _replaced())
        return await self._decide(registry, tenant, record)

    def _refusal(
        self, registry: Registry, tenant: Tenant, path_ok: bool, stat: BlobStat
    ) -> TrainingUploadError | None:
        if not path_ok:
            return _file_error(
                FileReason.BAD_PATH,
                "training uploads are named uploads/<tenant_id>/training/<name>.jsonl",
            )
        if tenant not in training_tenants(registry, tenant, training_scope(tenant)):
            if not tenant.policy.log_prompts:
                detail = f"text may not be kept for training ({NOT_CONSENTED})"
            else:
                detail = (
                    "a pooled tenant's examples train the shared model, and this tenant's "
                    "policy does not share for training (share_for_training is false)"
                )
            return _file_error(FileReason.NO_CONSENT, detail)
        if stat.size > self.limits.max_upload_bytes:
            return _file_error(
                FileReason.FILE_TOO_LARGE,
                f"the file has {stat.size} bytes; the limit is {self.limits.max_upload_bytes} "
                "(split it into several uploads)",
            )
        if stat.size == 0:
            return _file_error(FileReason.EMPTY_FILE, "the file is empty")
        return None

    async def _survey(self, blob_name: str, stat: BlobStat) -> TrainingUploadError | None:
        """The whole-file problems found by reading it once: not UTF-8, too many rows, none."""
        limits = self.limits
        chunks = self.files.chunks(names.UPLOADS_CONTAINER, blob_name, stat.etag)
        rows = 0
        try:
            async for line, text in numbered_lines(chunks, limits.max_row_bytes):
                if text is not None:
                    try:
                        decoded = text.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        return _file_error(
                            FileReason.NOT_UTF8,
                            f"line {line} is not UTF-8 (byte {exc.start + 1} of the line); "
                            "training files are UTF-8 JSON lines",
                        )
                    if not decoded.strip():
                        continue
                rows += 1
                if rows > limits.max_rows:
                    return _file_error(
                        FileReason.TOO_MANY_ROWS,
                        f"the file has more than {limits.max_rows} rows "
                        "(split it into several uploads)",
                    )
        except UploadChanged:
            return _replaced()
        if rows == 0:
            return _file_error(FileReason.EMPTY_FILE, "the file has no rows")
        return None

    async def _pool_rows(
        self, record: UploadRecord, tenant: Tenant, blob_name: str, stat: BlobStat
    ) -> UploadRecord:
        run = _Pooling(self, record, tenant.policy)
        rejections = rejection_name(tenant.id, blob_name, record.upload_id)
        chunks = self.files.chunks(names.UPLOADS_CONTAINER, blob_name, stat.etag)
        await self.files.write(names.REJECTED_CONTAINER, rejections, run.error_lines(chunks))
        now = self.clock()
        if run.kept:
            await self.pool.add(
                tenant.id,
                PoolEntry(
                    upload_id=record.upload_id,
                    source=record.source,
                    examples=run.kept,
                    bytes=run.kept_bytes,
                    parts=run.parts,
                    added_at=now,
                ),
            )
        done = {
            "state": "pooled",
            "rows": run.rows,
            "invalid": run.invalid,
            "rejections_blob": f"{names.REJECTED_CONTAINER}/{rejections}",
            "updated_at": now,
            "completed_at": now,
            **run.progress(),
        }
        stored = await self.records.update(
            record_name(tenant.id, record.upload_id),
            lambda current: (
                current.model_copy(update=done)
                if current is not None and current.state == "pooling"
                else None
            ),
        )
        stored = stored or record
        _log(
            logging.INFO,
            "training.pooled",
            tenant_id=tenant.id,
            upload_id=record.upload_id,
            rows=stored.rows,
            kept=stored.kept,
            invalid=stored.invalid,
            pii_removed=sum(stored.pii_removed.values()),
        )
        return stored

    async def checkpoint(
        self, record: UploadRecord, through: int, progress: dict[str, object]
    ) -> None:
        """Note that every good row up to line `through` is in a stored part."""
        now = self.clock()
        await self.records.update(
            record_name(record.tenant_id, record.upload_id),
            lambda current: (
                current.model_copy(update={"through_line": through, "updated_at": now, **progress})
                if current is not None
                and current.state == "pooling"
                and current.through_line < through
                else None
            ),
        )

    async def _reject(
        self,
        record: UploadRecord,
        blob_name: str,
        refusal: TrainingUploadError,
        *,
        store_record: bool = True,
    ) -> UploadRecord:
        rejections = rejection_name(record.tenant_id, blob_name, record.upload_id)
        await self._store.put(
            names.REJECTED_CONTAINER,
            rejections,
            refusal.jsonl(),
            content_type="application/x-ndjson",
        )
        now = self.clock()
        update = {
            "state": "rejected",
            "rejection": refusal,
            "rejections_blob": f"{names.REJECTED_CONTAINER}/{rejections}",
            "updated_at": now,
            "completed_at": now,
        }
        rejected = record.model_copy(update=update)
        if store_record:
            stored = await self.records.update(
                record_name(record.tenant_id, record.upload_id),
                lambda current: (
                    current.model_copy(update=update)
                    if current is not None and current.state == "pooling"
                    else None
                ),
            )
            rejected = stored or rejected
        _log(
            logging.WARNING,
            "training.rejected",
            tenant_id=record.tenant_id,
            upload_id=record.upload_id,
            reason=refusal.reason,
        )
        return rejected

    async def _decide(
        self, registry: Registry, tenant: Tenant, record: UploadRecord
    ) -> UploadRecord:
        action = await self.consider(registry, tenant, record)
        now = self.clock()
        stored = await self.records.update(
            record_name(tenant.id, record.upload_id),
            lambda current: (
                current.model_copy(update={"tuning": action, "updated_at": now})
                if current is not None and current.tuning != action
                else None
            ),
        )
        _log(
            logging.INFO,
            "training.tuning",
            tenant_id=tenant.id,
            upload_id=record.upload_id,
            action=action.kind,
            job_key=action.job_key,
        )
        return stored or record.model_copy(update={"tuning": action})

    async def consider(self, registry: Registry, tenant: Tenant, record: UploadRecord) -> Action:
        """The fine-tune policy after an upload was pooled. One request, `finetune.request` with
        reason `training_upload`, when: the tenant's policy has `allow_tuning`; it is not in
        cool-down (`drift/<tenant>/state/_tuning.json`, shared with drift); and its pool holds at
        least max(`min_training_examples`, `min_job_examples`) examples added since the last
        request made from the pool. The request is first claimed in the pool index (If-Match:
        of two racing instances one claims), then its training set is built, it is sent, and the
        claim is closed; a claim left open by a try cut short is completed by the next try."""
        index = await self.pool.index(tenant.id)
        if index.pending is not None:
            return await self._complete(registry, tenant, index.pending, record)
        policy = tenant.policy
        if not policy.allow_tuning:
            return Action(
                kind="skipped", detail="the tenant's policy does not allow tuning (allow_tuning)"
            )
        now = self.clock()
        until = await self._requests.cool_down_until(tenant, now)
        if until is not None:
            return Action(kind="skipped", detail=f"in cool-down until {until.isoformat()}")
        needed = max(policy.min_training_examples, self.limits.min_job_examples)

        def claim(current: PoolIndex | None) -> PoolIndex | None:
            if current is None or current.pending is not None:
                return None
            new = current.new_examples()
            if new < needed:
                return None
            through = len(current.entries)
            digest = hashlib.sha256(
                f"{tenant.id}\x1f{through}\x1f{current.entries[-1].upload_id}".encode()
            ).hexdigest()[:20]
            pending = PoolRequest(
                job_key=f"{tenant.id}.tup-{digest}",
                dataset_id=f"ds-{digest}",
                through=through,
                examples=new,
                claimed_at=now,
            )
            return current.model_copy(update={"pending": pending})

        claimed = await self.pool.indexes.update(index_name(tenant.id), claim)
        if claimed is None or claimed.pending is None:
            new = claimed.new_examples() if claimed is not None else 0
            return Action(
                kind="waiting",
                detail=f"{new} new examples since the last request; the policy needs {needed}",
            )
        return await self._complete(registry, tenant, claimed.pending, record)

    async def _complete(
        self, registry: Registry, tenant: Tenant, pending: PoolRequest, record: UploadRecord
    ) -> Action:
        scope = training_scope(tenant)
        sources = [t.id for t in training_tenants(registry, tenant, scope)]
        serving = serving_deployment(registry, tenant)
        built = None
        if sources and serving is not None:
            built = await self.pool.build(
                tenant.id,
                sources,
                dataset_id=pending.dataset_id,
                scope=scope,
                max_bytes=self.limits.max_set_bytes,
                created_at=pending.claimed_at,
            )
        if built is None or serving is None:
            await self._close_claim(tenant.id, pending, sent=False)
            why = "no deployment serves the tenant" if serving is None else "no consented examples"
            return Action(kind="skipped", detail=f"{why}; the request was dropped")
        request = finetune_request(
            registry,
            tenant,
            job_key=pending.job_key,
            serving=serving,
            dataset=built,
            reason=FinetuneReason(
                kind="training_upload",
                report=f"{names.TRAINING_CONTAINER}/{record_name(tenant.id, record.upload_id)}",
                summary=f"{pending.examples} examples uploaded since the last request; "
                f"{built.examples} in the training set",
            ),
            requested_at=pending.claimed_at,
        )
        await self._requests.send(request)
        await self._close_claim(tenant.id, pending, sent=True)
        return Action(
            kind="finetune_requested",
            detail=f"{pending.examples} new examples; the set holds {built.examples} "
            f"(tenants: {', '.join(built.tenants)})",
            job_key=pending.job_key,
            dataset=built.blob,
        )

    async def _close_claim(self, tenant_id: str, pending: PoolRequest, *, sent: bool) -> None:
        def close(current: PoolIndex | None) -> PoolIndex | None:
            if current is None or current.pending != pending:
                return None
            if not sent:
                return current.model_copy(update={"pending": None})
            return current.model_copy(
                update={
                    "pending": None,
                    "last_request": pending,
                    "requested_through": pending.through,
                }
            )

        await self.pool.indexes.update(index_name(tenant_id), close)


class _Pooling:
    """One pass over the upload: yields the rejection file's lines, pools the good rows.
    Resumes after `record.through_line` (the rows before it are checked, not pooled again)."""

    def __init__(self, intake: TrainingUploads, record: UploadRecord, policy: DataPolicy) -> None:
        self._intake, self._record, self._policy = intake, record, policy
        self._limits = intake.limits
        self.rows = self.invalid = 0
        self.kept, self.kept_bytes = record.kept, record.kept_bytes
        self.parts, self.pii = record.parts, dict(record.pii_removed)
        self._group: list[tuple[int, TrainingExample]] = []
        self._part = bytearray()
        self._part_rows = self._part_through = 0
        self._part_pii: dict[str, int] = {}

    def progress(self) -> dict[str, object]:
        return {
            "kept": self.kept,
            "kept_bytes": self.kept_bytes,
            "parts": self.parts,
            "pii_removed": dict(self.pii),
        }

    async def error_lines(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for line, row in checked_rows(chunks, self._limits):
            self.rows += 1
            if isinstance(row, TrainingUploadError):
                self.invalid += 1
                yield row.jsonl()
            elif line > self._record.through_line:  # not pooled by an earlier try
                self._group.append((line, row))
                if len(self._group) >= self._limits.scrub_rows:
                    await self._scrub()
        await self._scrub()
        await self._close_part()

    async def _scrub(self) -> None:
        if not self._group:
            return
        group, self._group = self._group, []
        texts = [m.content for _, example in group for m in example.messages]
        kept = await self._intake.consent.keep(self._policy, texts)
        if any(k.text is None for k in kept):  # the policy was checked: a changed rule
            raise RuntimeError("the consent gate withheld text the intake was allowed to keep")
        start = 0
        for line, example in group:
            turns = kept[start : start + len(example.messages)]
            start += len(turns)
            self._part += example.jsonl([k.text or "" for k in turns])
            for kind, count in pii_total(turns).items():
                self._part_pii[kind] = self._part_pii.get(kind, 0) + count
            self._part_rows += 1
            self._part_through = line
            if self._part_rows >= self._limits.part_rows or (
                len(self._part) >= self._limits.part_bytes
            ):
                await self._close_part()

    async def _close_part(self) -> None:
        if not self._part_rows:
            return
        record = self._record
        await self._intake.pool.write_part(
            record.tenant_id, record.upload_id, self.parts, bytes(self._part)
        )
        self.parts += 1
        self.kept += self._part_rows
        self.kept_bytes += len(self._part)
        for kind, count in self._part_pii.items():
            self.pii[kind] = self.pii.get(kind, 0) + count
        self._part, self._part_rows, self._part_pii = bytearray(), 0, {}
        await self._intake.checkpoint(record, self._part_through, self.progress())


def _file_error(reason: str, detail: str) -> TrainingUploadError:
    return TrainingUploadError(line=None, reason=reason, detail=detail)


def _replaced() -> TrainingUploadError:
    return _file_error(
        FileReason.UPLOAD_REPLACED,
        "the upload changed while it was read; the new version is a new upload",
    )


def _log(level: int, event: str, **fields: object) -> None:
    extra = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
    log.log(level, key_values(extra), extra=extra)
