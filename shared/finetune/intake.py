"""The `finetune-jobs` queue: validate a `finetune.request`, record the job, start it or wait.

For each message (`FinetuneIntake.handle_message`):

1. Decode and validate the contract (`shared.contracts.finetune`); check the tenant, its policy
   (`allow_tuning`), the scope (a `tenant` job trains only on the tenant's own data; a `shared` one
   only on tenants whose policy has `share_for_training`), the base deployment (known, pooled,
   tunable), and the dataset (`shared.finetune.datasets`: manifest, sha256, format, size). A
   failure is a rejection record `rejected/<tenant or _unknown>/finetune/<message_id>.json`
   (`finetune.rejected`, a reason code and a detail that never repeats the sent text); the message
   is completed.
2. Record the job (`jobs/<tenant>/<job_id>.json`, state `queued`), idempotent by job key: a
   repeated request finds its job and goes on from where that job stands.
3. Ask for a GPU slot (`Launcher.try_start`): admitted → submitted to the backend; over the
   tenant's GPU budget → the job is `rejected` with the numbers; no slot now → a copy of the
   message is scheduled on `finetune-jobs` for later (the delay doubles per wait, from
   `wait_base_s` up to `wait_max_s`, with jitter; message id `<job_id>.wait-<n>` so a redelivered
   original sends no second copy), the original is completed: no spinning, nothing dropped. The
   watcher also starts the fair-share winner as soon as a slot frees, so a waiting job rarely
   needs its copy.

Only an infrastructure failure (storage, a retryable backend error) raises, so that Service Bus
redelivers the message.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from pydantic import ValidationError

from shared.contracts import RejectionRecord
from shared.contracts.finetune import FINETUNE_REQUEST_TYPE, FinetuneRequest
from shared.contracts.inference import ContractError, checked_envelope, decode_object
from shared.finetune.admission import Wait
from shared.finetune.datasets import DatasetProblem, load_and_split
from shared.finetune.jobs import JobRecord, JobState, JobStore, Transition, job_id_for
from shared.finetune.launcher import Launcher
from shared.inference.rejections import RejectionLog
from shared.inference.replies import Reply, ReplySender
from shared.messages import InboundMessage
from shared.storage import names
from shared.storage.blob_store import BlobStore
from shared.structured_logging import without_none
from shared.tenancy.registry import IsolationMode, Registry
from shared.tenancy.registry_source import RegistryProvider

log = logging.getLogger(__name__)

FINETUNE_REJECTED_TYPE: Final = "finetune.rejected"
WAIT_PROPERTY: Final = "admission_wait"


class _Refused(Exception):
    def __init__(self, reason: str, detail: str, tenant_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.tenant_id = tenant_id


def _error_detail(exc: ValidationError) -> str:
    first = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']} ({exc.error_count()} problem(s))"


def check_request(registry: Registry, request: FinetuneRequest) -> None:
    """The request's policy and scope checks; raises _Refused with a reason code."""
    tenant = registry.tenant(request.tenant_id)
    if tenant is None:
        raise _Refused("unknown_tenant", "the tenant is not registered")
    if not tenant.policy.allow_tuning:
        raise _Refused("tuning_not_allowed", "the tenant's policy does not allow tuning", tenant.id)
    if not request.job_key.startswith(f"{tenant.id}."):
        raise _Refused(
            "job_key_not_tenants",
            "a job key starts with its tenant's id and a dot (as drift and uploads make them)",
            tenant.id,
        )
    if request.scope == "tenant" and set(request.tenants_in_dataset) != {tenant.id}:
        raise _Refused(
            "consent_scope",
            "a tenant-scope job may train only on the tenant's own data",
            tenant.id,
        )
    if request.scope == "shared":
        for other in request.tenants_in_dataset:
            known = registry.tenant(other)
            if known is None or not known.policy.share_for_training:
                raise _Refused(
                    "consent_scope",
                    f"tenant {other!r} in the dataset has not agreed to shared training",
                    tenant.id,
                )
    base = registry.deployment_by_name.get(request.base.deployment)
    if base is None or base.mode is not IsolationMode.POOLED or base.purpose != "serving":
        raise _Refused(
            "unknown_base", "the base must be a pooled deployment in the registry", tenant.id
        )
    if not base.finetune_model:
        raise _Refused("base_not_tunable", "the base deployment has no finetune_model", tenant.id)


class FinetuneIntake:
    def __init__(
        self,
        *,
        store: BlobStore,
        registry: RegistryProvider,
        jobs: JobStore,
        launcher: Launcher,
        sender: ReplySender,
        rejections: RejectionLog,
        clock: Callable[[], datetime],
        wait_base_s: float = 30.0,
        wait_max_s: float = 600.0,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._jobs = jobs
        self._launcher = launcher
        self._sender = sender
        self._rejections = rejections
        self._clock = clock
        self._wait_base_s = wait_base_s
        self._wait_max_s = wait_max_s
        self._rng = rng or random.Random()

    async def handle_message(self, message: InboundMessage) -> JobRecord | RejectionRecord:
        """The job as it stands after this message, or the rejection recorded."""
        registry = await self._registry.get()
        try:
            request = self._parse(message)
            check_request(registry, request)
        except _Refused as refused:
            return await self._reject(registry, message, refused)
        job = await self._record(message, request)
        if isinstance(job, RejectionRecord):
            return job
        if job.state is not JobState.QUEUED:
            return job  # a repeat of a request whose job is already past the queue
        tenant = registry.tenant(job.tenant_id)
        budget = tenant.policy.gpu_minutes_per_month if tenant else None
        outcome = await self._launcher.try_start(registry, job, budget, by="intake")
        if isinstance(outcome, JobRecord):
            self._log(outcome, outcome.history[-1].reason if outcome.history else "")
            return outcome
        if isinstance(outcome, Wait):
            return await self._wait(message, job, outcome)
        return job

    def _parse(self, message: InboundMessage) -> FinetuneRequest:
        try:
            document = decode_object(message.body)
            ids = checked_envelope(
                document,
                message.application_properties,
                contract_type=FINETUNE_REQUEST_TYPE,
                version=1,
                invalid_reason="invalid_request",
            )
        except ContractError as exc:
            raise _Refused(exc.reason, exc.detail) from None
        try:
            return FinetuneRequest.model_validate(
                {**document, "type": FINETUNE_REQUEST_TYPE, "version": 1}
            )
        except ValidationError as exc:
            raise _Refused("invalid_request", _error_detail(exc), ids.get("tenant_id")) from None

    async def _record(
        self, message: InboundMessage, request: FinetuneRequest
    ) -> JobRecord | RejectionRecord:
        job_id = job_id_for(request.tenant_id, request.job_key)
        existing = await self._jobs.find(request.tenant_id, job_id)
        if existing is not None:
            return existing
        try:
            split = await load_and_split(self._store, request)
        except DatasetProblem as problem:
            registry = await self._registry.get()
            return await self._reject(
                registry, message, _Refused(problem.reason, problem.detail, request.tenant_id)
            )
        now = self._clock()
        record = JobRecord(
            job_id=job_id,
            job_key=request.job_key,
            tenant_id=request.tenant_id,
            scope=request.scope,
            request=request.model_dump(mode="json"),
            train_blob=split.train_blob,
            heldout_blob=split.heldout_blob,
            train_examples=split.train_examples,
            heldout_examples=split.heldout_examples,
            train_sha256=split.train_sha256,
        )
        record.history.append(
            Transition(
                state=JobState.QUEUED,
                at=now,
                reason=f"{request.reason.kind}: {split.train_examples} examples to train on, "
                f"{split.heldout_examples} held out",
                by="intake",
            )
        )
        stored, _ = await self._jobs.create(record)
        return stored

    async def _wait(self, message: InboundMessage, job: JobRecord, wait: Wait) -> JobRecord:
        waits = job.admission_waits + 1
        delay = min(self._wait_max_s, self._wait_base_s * 2 ** min(waits - 1, 10))
        delay += self._rng.uniform(0, delay * 0.2)
        at = self._clock() + timedelta(seconds=delay)
        await self._sender.send(
            Reply(
                queue=names.FINETUNE_JOBS,
                body=message.body,
                correlation_id=job.job_key,
                message_id=f"{job.job_id}.wait-{waits}",
                subject=FINETUNE_REQUEST_TYPE,
                application_properties={
                    **message.application_properties,
                    WAIT_PROPERTY: waits,
                },
                scheduled_enqueue_time_utc=at,
            )
        )

        def counted(record: JobRecord) -> None:
            record.admission_waits = max(record.admission_waits, waits)

        updated = await self._jobs.amend(job.tenant_id, job.job_id, counted)
        self._log(updated, f"waiting for a GPU slot ({wait.reason}); asks again at {at:%H:%M:%S}")
        return updated

    async def _reject(
        self, registry: Registry, message: InboundMessage, refused: _Refused
    ) -> RejectionRecord:
        known = registry.tenant(refused.tenant_id) if refused.tenant_id else None
        record = RejectionRecord(
            type=FINETUNE_REJECTED_TYPE,
            reason=refused.reason,
            detail=refused.detail,
            tenant_id=known.id if known else None,
            request_id=None,
            message_id=message.message_id,
            delivery_count=message.delivery_count,
            rejected_at=self._clock(),
        )
        await self._rejections.write(
            record, known_tenant_id=known.id if known else None, kind="finetune"
        )
        log.warning(
            "fine-tune request rejected",
            extra=without_none(
                event="finetune.rejected",
                tenant_id=known.id if known else None,
                reason=refused.reason,
                detail=refused.detail,
            ),
        )
        return record

    @staticmethod
    def _log(job: JobRecord, detail: str) -> None:
        log.info(
            "fine-tuning job %s",
            job.state.value,
            extra={
                "event": f"finetune.{job.state.value}",
                "tenant_id": job.tenant_id,
                "job_id": job.job_id,
                "detail": detail,
            },
        )
