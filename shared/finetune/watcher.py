"""The job watcher (a timer): advance jobs on the GPU, evaluate candidates, fill freed slots.

One `tick`:
1. every job holding a GPU slot (`Admission.state().running`) is polled at its backend:
   running → `running`; failed or cancelled → that state, slot released; succeeded → the trained
   model is deployed (the backend's `ModelDeployer`), registered as the tenant's next tuned
   version (`versions.ModelVersions.register`; not served yet), the job `succeeded` with the
   candidate, metrics, lineage and GPU-minutes, and its slot released for the gate;
2. every job waiting for the gate (`evaluating`) is scored (`gate.EvaluationGate`) against the
   tenant's current model on its held-out examples, recorded `evaluated`, then `promoted` (the
   tenant's route switches, `versions.ModelVersions.promote`) or `rejected` with the numbers;
3. while a slot is free, the waiting job first in fair-share order is started
   (`Launcher.try_start`), without waiting for its message's rescheduled copy.

Each job is handled on its own: one that fails to advance (a backend timeout, a storage error) is
logged and tried again on the next tick; the others go on. Running the watcher on several
instances at once is safe: every change goes through ETag-guarded writes, and a transition to
the state a job already has is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from shared.contracts.finetune import FinetuneRequest
from shared.finetune.admission import Admission
from shared.finetune.backends.port import BackendError, BackendState
from shared.finetune.datasets import read_rows
from shared.finetune.gate import EvaluationGate, GateDeferred, held_out_examples
from shared.finetune.jobs import JobRecord, JobState, JobStore
from shared.finetune.launcher import Backends, Launcher, NoBackend, spec_for
from shared.finetune.versions import ModelVersions, VersionError
from shared.storage.blob_store import BlobStore
from shared.tenancy.registry_store import RegistryStore

log = logging.getLogger(__name__)


class JobWatcher:
    def __init__(
        self,
        *,
        store: BlobStore,
        jobs: JobStore,
        admission: Admission,
        backends: Backends,
        launcher: Launcher,
        versions: ModelVersions,
        registry: RegistryStore,
        gate: EvaluationGate,
        clock: Callable[[], datetime],
        gate_patience: timedelta = timedelta(hours=2),
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._admission = admission
        self._backends = backends
        self._launcher = launcher
        self._versions = versions
        self._registry = registry
        self._gate = gate
        self._clock = clock
        self._gate_patience = gate_patience

    async def tick(self) -> list[JobRecord]:
        """One round (see the module doc); the jobs whose state changed."""
        changed: list[JobRecord] = []
        state = await self._admission.state()
        for entry in state.running:
            await self._guarded(self._poll, entry.tenant_id, entry.job_id, changed)
        for entry in (await self._admission.state()).evaluating:
            await self._guarded(self._evaluate, entry.tenant_id, entry.job_id, changed)
        await self._fill_slots(changed)
        return changed

    async def _guarded(
        self,
        step: Callable[[JobRecord], Any],
        tenant_id: str,
        job_id: str,
        changed: list[JobRecord],
    ) -> None:
        job = await self._jobs.find(tenant_id, job_id)
        if job is None:
            await self._admission.release(tenant_id, job_id)
            await self._admission.forget(job_id)
            return
        before = job.state
        try:
            after: JobRecord = await step(job)
        except BackendError as exc:
            if exc.retryable:
                self._not_advanced(tenant_id, job_id, exc)
                return
            after = await self._fail(job, str(exc))
        except (VersionError, NoBackend) as exc:
            self._not_advanced(tenant_id, job_id, exc)
            return
        if after.state is not before:
            changed.append(after)
            log.info(
                "fine-tuning job %s",
                after.state.value,
                extra={
                    "event": f"finetune.{after.state.value}",
                    "tenant_id": tenant_id,
                    "job_id": job_id,
                    "detail": after.history[-1].reason,
                },
            )

    def _not_advanced(self, tenant_id: str, job_id: str, exc: Exception) -> None:
        log.warning(
            "fine-tuning job not advanced; next tick tries again",
            extra={
                "event": "finetune.watch_failed",
                "tenant_id": tenant_id,
                "job_id": job_id,
                "problem": str(exc)[:500],
            },
        )

    async def _fail(self, job: JobRecord, reason: str) -> JobRecord:
        """A backend's final refusal: the job fails (from wherever it may) and leaves the GPU."""
        current = await self._jobs.get(job.tenant_id, job.job_id)
        if current.state in (JobState.SUBMITTED, JobState.RUNNING, JobState.SUCCEEDED):
            minutes = await self._admission.release(job.tenant_id, job.job_id)
            await self._admission.forget(job.job_id)
            return await self._move(current, JobState.FAILED, reason, minutes=minutes or None)
        return current

    async def _poll(self, job: JobRecord) -> JobRecord:
        if job.state not in (JobState.SUBMITTED, JobState.RUNNING):
            if job.state is JobState.SUCCEEDED:
                await self._admission.release(job.tenant_id, job.job_id, to_evaluate=True)
            else:
                await self._admission.release(job.tenant_id, job.job_id)
            return job
        backend = self._backends.named(job.backend or "")
        status = await backend.trainer.status(job.external_id or "")
        now = self._clock()
        if status.metrics:
            metrics = dict(status.metrics)

            def note(record: JobRecord) -> None:
                record.metrics.update(metrics)

            job = await self._jobs.amend(job.tenant_id, job.job_id, note)
        if status.state is BackendState.RUNNING and job.state is JobState.SUBMITTED:
            return await self._move(job, JobState.RUNNING, status.detail or "training started")
        if status.state in (BackendState.FAILED, BackendState.CANCELLED):
            to = JobState.FAILED if status.state is BackendState.FAILED else JobState.CANCELLED
            minutes = await self._admission.release(job.tenant_id, job.job_id)
            return await self._move(
                job,
                to,
                status.detail or f"the backend says {status.state}",
                minutes=minutes,
            )
        if status.state is not BackendState.SUCCEEDED:
            return job
        trained = await backend.trainer.outputs(job.external_id or "")
        request = FinetuneRequest.model_validate(job.request)
        served = await backend.deployer.deploy(
            trained,
            deployment=f"{job.tenant_id}-{job.job_id[-8:]}",
            spec=spec_for(job, request.base.model or request.base.deployment),
        )
        candidate = await self._versions.register(
            job.tenant_id, base=request.base.deployment, served=served, job_id=job.job_id
        )
        minutes = await self._admission.release(job.tenant_id, job.job_id, to_evaluate=True)

        def done(record: JobRecord) -> None:
            record.candidate = candidate
            record.metrics.update(trained.metrics)
            record.lineage.update(trained.lineage)
            record.finished_at = now
            record.gpu_minutes = round(minutes, 3)

        return await self._move(
            job,
            JobState.SUCCEEDED,
            f"trained {trained.model}; registered as {candidate.deployment} "
            f"({candidate.model_version}), not serving yet",
            update=done,
        )

    async def _evaluate(self, job: JobRecord) -> JobRecord:
        if job.state is JobState.SUCCEEDED:
            try:
                job = await self._score(job)
            except GateDeferred as deferred:
                finished = job.finished_at or self._clock()
                if self._clock() - finished < self._gate_patience:
                    self._not_advanced(job.tenant_id, job.job_id, deferred)
                    return await self._jobs.amend(
                        job.tenant_id, job.job_id, _partial(deferred.partial)
                    )
                job = await self._move(
                    job,
                    JobState.EVALUATED,
                    f"not scored within {self._gate_patience}: {deferred}",
                    update=_unscored(str(deferred)),
                )
        if job.state is JobState.EVALUATED:
            job = await self._decide(job)
        await self._admission.forget(job.job_id)
        return job

    async def _score(self, job: JobRecord) -> JobRecord:
        assert job.candidate is not None
        registry = (await self._registry.read()).registry
        tenant = registry.tenant(job.tenant_id)
        if tenant is None:
            return await self._move(job, JobState.FAILED, "the tenant is no longer registered")
        request = FinetuneRequest.model_validate(job.request)
        current = tenant.tuned_deployment or request.base.deployment
        examples = held_out_examples(await read_rows(self._store, job.heldout_blob))
        partial = (job.evaluation or {}).get("partial")
        result = await self._gate.evaluate(
            registry,
            tenant,
            candidate=job.candidate.deployment,
            current=current,
            examples=examples,
            partial=partial if isinstance(partial, dict) else None,
        )

        def scored(record: JobRecord) -> None:
            record.evaluation = result

        return await self._move(job, JobState.EVALUATED, str(result["reason"]), update=scored)

    async def _decide(self, job: JobRecord) -> JobRecord:
        assert job.candidate is not None
        assert job.evaluation is not None
        reason = str(job.evaluation.get("reason", ""))
        if job.evaluation.get("decision") == "promote":
            await self._versions.promote(
                job.tenant_id, job.candidate.deployment, by="gate", why=reason, job_id=job.job_id
            )
            return await self._move(
                job, JobState.PROMOTED, f"{job.candidate.deployment} serves now: {reason}"
            )
        await self._versions.note_rejected(
            job.tenant_id, job.candidate, why=reason, job_id=job.job_id
        )
        return await self._move(job, JobState.REJECTED, reason)

    async def _fill_slots(self, changed: list[JobRecord]) -> None:
        for _ in range(16):
            winner = await self._admission.next_waiting()
            if winner is None:
                return
            tenant_id, job_id = winner
            job = await self._jobs.find(tenant_id, job_id)
            if job is None or job.state is not JobState.QUEUED:
                await self._admission.forget(job_id)
                continue
            registry = (await self._registry.read()).registry
            tenant = registry.tenant(tenant_id)
            budget = tenant.policy.gpu_minutes_per_month if tenant else None
            try:
                outcome = await self._launcher.try_start(registry, job, budget, by="watcher")
            except BackendError:
                return
            if not isinstance(outcome, JobRecord):
                return
            changed.append(outcome)

    async def _move(
        self,
        job: JobRecord,
        to: JobState,
        reason: str,
        *,
        minutes: float | None = None,
        update: Callable[[JobRecord], None] | None = None,
    ) -> JobRecord:
        now = self._clock()

        def apply(record: JobRecord) -> None:
            if minutes is not None:
                record.gpu_minutes = round(minutes, 3)
                record.finished_at = now
            if update is not None:
                update(record)

        return await self._jobs.transition(
            job.tenant_id, job.job_id, to, at=now, reason=reason, by="watcher", update=apply
        )


def _unscored(reason: str) -> Callable[[JobRecord], None]:
    """The evaluation of a candidate the gate could not score in time: rejected, with why."""

    def apply(record: JobRecord) -> None:
        record.evaluation = {"decision": "reject", "reason": reason, "examples": 0}

    return apply


def _partial(pairs: dict[int, list[float | None]]) -> Callable[[JobRecord], None]:
    """Keep the gate's scores so far on the (still `succeeded`) job, for its next try."""

    def apply(record: JobRecord) -> None:
        record.evaluation = {"partial": {str(k): v for k, v in pairs.items()}}

    return apply
