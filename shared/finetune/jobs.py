"""Fine-tuning job records: `jobs/<tenant>/<job_id>.json`, a state machine written with ETags.

    queued ──► submitted ──► running ──► succeeded ──► evaluated ──► promoted ──► rolled_back
      │            │            │            │              │
      ▼            ▼            ▼            ▼              ▼
   rejected     failed       failed       failed         rejected
   cancelled    cancelled    cancelled

- queued: accepted by the intake, waiting for a GPU slot (fair-share admission);
- submitted / running: the backend has it (`backend`, `external_id`);
- succeeded: the backend produced a model; the candidate is deployed and registered as a new, not
  promoted, version of the tenant's tuned deployment (`candidate`);
- evaluated: the gate scored candidate and current on held-out examples (`evaluation`);
- promoted / rejected: the gate's (or an operator's) decision; rejected also ends a request that
  is over the tenant's GPU budget or not allowed;
- rolled_back: a promoted version that an operator (or a canary) took back.

Every transition is appended to `history` with its time, the reason and who made it; a transition
the table does not allow raises `InvalidTransition`; one to the state the job is already in is a
no-op (a redelivered message or a second watcher tick repeats work harmlessly). Writes use the
record's ETag (If-Match) and re-read on a lost race, so two instances cannot interleave.

`job_id` is `ftj-` + the first 24 hex digits of sha256(tenant id, job key): a job key names one
job of one tenant, and the id is safe in blob names and as an Azure ML job name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.security.paths import tenant_path, tenant_prefix
from shared.storage import names
from shared.storage.blob_store import BlobStore, ConditionFailed

_ATTEMPTS: Final = 10
_RECORD_NAME: Final = re.compile(r"^(ftj-[0-9a-f]{24})\.json$")


class JobState(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EVALUATED = "evaluated"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"


ALLOWED: Final[Mapping[JobState, frozenset[JobState]]] = {
    JobState.QUEUED: frozenset({JobState.SUBMITTED, JobState.REJECTED, JobState.CANCELLED}),
    JobState.SUBMITTED: frozenset(
        {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset({JobState.EVALUATED, JobState.FAILED}),
    JobState.EVALUATED: frozenset({JobState.PROMOTED, JobState.REJECTED}),
    JobState.PROMOTED: frozenset({JobState.ROLLED_BACK}),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.REJECTED: frozenset(),
    JobState.ROLLED_BACK: frozenset(),
}
"""Which states each state may move to (the diagram in the module docstring)."""

ON_GPU: Final = frozenset({JobState.SUBMITTED, JobState.RUNNING})
"""States that hold a GPU slot."""


class InvalidTransition(Exception):
    """The state machine does not allow this move (the message names both states)."""


class JobNotFound(Exception):
    """No record for this tenant and job id."""


def job_id_for(tenant_id: str, job_key: str) -> str:
    """`ftj-` + 24 hex digits of sha256(tenant, job key): the same key sent for two tenants names
    two jobs, so no backend, runner or blob prefix keyed by job id is ever shared by tenants."""
    digest = hashlib.sha256(f"{tenant_id}\x1f{job_key}".encode()).hexdigest()
    return "ftj-" + digest[:24]


def job_blob_name(tenant_id: str, job_id: str) -> str:
    return tenant_path(tenant_id, job_id, suffix=".json")


class Transition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: JobState
    at: datetime
    reason: str = Field(max_length=2000)
    by: str = Field(description="who moved it: intake, watcher, gate, an operator's name")


class Candidate(BaseModel):
    """The trained model as the registry serves it: `deployment` (e.g. fabrikam-ft-v2) with
    `model_version` (ft-2), and the backend's `model` name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment: str
    model_version: str
    model: str


class JobRecord(BaseModel):
    """One fine-tuning job (shapes in docs/finetune.md)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    job_key: str
    tenant_id: str
    scope: str
    state: JobState = JobState.QUEUED
    request: dict[str, Any] = Field(description="the finetune.request as received")
    train_blob: str = Field(description="`<container>/<name>`: the examples trained on")
    heldout_blob: str = Field(description="`<container>/<name>`: never trained on; the gate's")
    train_examples: int
    heldout_examples: int
    train_sha256: str = Field(
        default="", description="sha256 of the train blob (the trainer checks it)"
    )
    backend: str | None = None
    external_id: str | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    gpu_minutes: float = 0.0
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: dict[str, str] = Field(default_factory=dict)
    candidate: Candidate | None = None
    evaluation: dict[str, Any] | None = None
    admission_waits: int = 0
    history: list[Transition] = Field(default_factory=list)


class JobStore:
    """Job records in `jobs/<tenant>/<job_id>.json`."""

    def __init__(self, store: BlobStore, container: str = names.JOBS_CONTAINER) -> None:
        self._store = store
        self._container = container

    async def create(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store a new record unless one exists; (the stored record, True if this call made it)."""
        data = record.model_dump_json().encode("utf-8")
        name = job_blob_name(record.tenant_id, record.job_id)
        if await self._store.create(self._container, name, data):
            return record, True
        return await self.get(record.tenant_id, record.job_id), False

    async def get(self, tenant_id: str, job_id: str) -> JobRecord:
        record, _ = await self._read(tenant_id, job_id)
        return record

    async def find(self, tenant_id: str, job_id: str) -> JobRecord | None:
        try:
            return await self.get(tenant_id, job_id)
        except JobNotFound:
            return None

    async def list(self, tenant_id: str) -> list[JobRecord]:
        """The tenant's jobs, oldest first (by their first transition)."""
        records = []
        prefix = tenant_prefix(tenant_id) + "ftj-"
        for name in await self._store.list_names(self._container, prefix):
            matched = _RECORD_NAME.match(name.rsplit("/", 1)[-1])
            if matched is None:
                continue  # a backend's own blobs beside the records (e.g. *.aoai.json)
            found = await self.find(tenant_id, matched.group(1))
            if found is not None:
                records.append(found)
        return sorted(records, key=lambda r: r.history[0].at if r.history else datetime.min)

    async def transition(
        self,
        tenant_id: str,
        job_id: str,
        to: JobState,
        *,
        at: datetime,
        reason: str,
        by: str,
        update: Callable[[JobRecord], None] | None = None,
    ) -> JobRecord:
        """Move the job to `to` (with `update` applied to the record first) and return it.

        Raises InvalidTransition (not allowed from the current state), JobNotFound."""
        for _ in range(_ATTEMPTS):
            record, etag = await self._read(tenant_id, job_id)
            if record.state is to:
                return record
            if to not in ALLOWED[record.state]:
                raise InvalidTransition(f"{job_id}: {record.state} may not become {to}")
            if update is not None:
                update(record)
            record.state = to
            record.history.append(Transition(state=to, at=at, reason=reason[:2000], by=by))
            try:
                await self._write(record, etag)
            except ConditionFailed:
                continue
            return record
        raise RuntimeError(f"{job_id}: the record kept changing during a transition")

    async def amend(
        self, tenant_id: str, job_id: str, update: Callable[[JobRecord], None]
    ) -> JobRecord:
        """Change fields without a transition (metrics while running, a wait counted)."""
        for _ in range(_ATTEMPTS):
            record, etag = await self._read(tenant_id, job_id)
            update(record)
            try:
                await self._write(record, etag)
            except ConditionFailed:
                continue
            return record
        raise RuntimeError(f"{job_id}: the record kept changing during an update")

    async def _read(self, tenant_id: str, job_id: str) -> tuple[JobRecord, str | None]:
        blob = await self._store.read(self._container, job_blob_name(tenant_id, job_id))
        if blob is None:
            raise JobNotFound(f"no job {job_id} for tenant {tenant_id}")
        try:
            return JobRecord.model_validate_json(blob.data), blob.etag
        except ValidationError as exc:
            raise JobNotFound(f"job {job_id} of {tenant_id} is unreadable: {exc}") from None

    async def _write(self, record: JobRecord, etag: str | None) -> None:
        await self._store.put(
            self._container,
            job_blob_name(record.tenant_id, record.job_id),
            record.model_dump_json().encode("utf-8"),
            if_match=etag,
        )
