"""Starting a queued job: choose its backend, take a GPU slot, submit; and the backends' registry.

`Backends` maps a backend name (`azure_openai`, `azure_ml`, `local`) to its `TrainingBackend` and
`ModelDeployer`. With `choice="auto"` a job goes where its base model lives: a base deployment of
kind `azure_openai` to Azure OpenAI fine-tuning, `ai_inference` (open models) to Azure ML; any
other choice sends every job to that backend (devhost: `local`, the runner that executes the same
`training/` entry point as Azure ML).

`Launcher.try_start` is the one path from queued to submitted, used by the intake (a message
arrives) and the watcher (a slot freed): admission first (`shared.finetune.admission`), then
`submit`; a submit that fails gives the slot back (retryable: the job stays queued and the caller
tries again later; otherwise the job is rejected with the backend's message).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from shared.contracts.finetune import FinetuneRequest
from shared.finetune.admission import Admission, Admitted, Decision, OverBudget
from shared.finetune.backends.port import (
    BackendError,
    ModelDeployer,
    TrainingBackend,
    TrainingSpec,
)
from shared.finetune.jobs import JobRecord, JobState, JobStore
from shared.tenancy.registry import DeploymentKind, Registry

AUTO: Final = "auto"
_BY_KIND: Final = {
    DeploymentKind.AZURE_OPENAI: "azure_openai",
    DeploymentKind.AI_INFERENCE: "azure_ml",
}


class NoBackend(Exception):
    """No configured backend can tune from this base (the message says why)."""


@dataclass(frozen=True)
class Backend:
    name: str
    trainer: TrainingBackend
    deployer: ModelDeployer


class Backends:
    def __init__(self, configured: Mapping[str, Backend], choice: str = AUTO) -> None:
        self._configured = dict(configured)
        self._choice = choice

    @property
    def names(self) -> list[str]:
        return sorted(self._configured)

    def named(self, name: str) -> Backend:
        found = self._configured.get(name)
        if found is None:
            raise NoBackend(f"fine-tuning backend {name!r} is not configured")
        return found

    def for_base(self, registry: Registry, base_deployment: str) -> tuple[Backend, str]:
        """The backend for a job tuned from `base_deployment`, and the base model to tune."""
        base = registry.deployment_by_name.get(base_deployment)
        if base is None:
            raise NoBackend(f"base deployment {base_deployment!r} is not in the registry")
        if not base.finetune_model:
            raise NoBackend(f"base deployment {base_deployment!r} has no finetune_model")
        name = _BY_KIND[base.kind] if self._choice == AUTO else self._choice
        return self.named(name), base.finetune_model


def spec_for(job: JobRecord, base_model: str) -> TrainingSpec:
    request = FinetuneRequest.model_validate(job.request)
    reason = request.reason
    return TrainingSpec(
        job_id=job.job_id,
        tenant_id=job.tenant_id,
        base_deployment=request.base.deployment,
        base_model=base_model,
        train_blob=job.train_blob,
        validation_blob=job.heldout_blob,
        dataset_sha256=job.train_sha256 or request.dataset.sha256,
        tags={
            "tenant_id": job.tenant_id,
            "job_key": job.job_key,
            "drift_event_id": job.job_key if reason.kind.endswith("drift") else "",
            "dataset_sha256": request.dataset.sha256,
            "reason": reason.kind,
        },
        suffix=f"{job.tenant_id}"[:18],
    )


class Launcher:
    def __init__(
        self,
        jobs: JobStore,
        admission: Admission,
        backends: Backends,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._jobs = jobs
        self._admission = admission
        self._backends = backends
        self._clock = clock

    async def try_start(
        self, registry: Registry, job: JobRecord, budget_minutes: float | None, *, by: str
    ) -> Decision | JobRecord:
        """Admit and submit the queued job: the updated record once submitted (or failed), else
        the admission's refusal (`Wait`: try later; `OverBudget`: the job is rejected here).
        Raises BackendError (retryable) after giving the slot back."""
        decision = await self._admission.admit(job.tenant_id, job.job_id, budget_minutes)
        if isinstance(decision, OverBudget):
            return await self._jobs.transition(
                job.tenant_id,
                job.job_id,
                JobState.REJECTED,
                at=self._clock(),
                reason=decision.reason,
                by=by,
            )
        if not isinstance(decision, Admitted):
            return decision
        request = FinetuneRequest.model_validate(job.request)
        try:
            backend, base_model = self._backends.for_base(registry, request.base.deployment)
            external_id = await backend.trainer.submit(spec_for(job, base_model))
        except NoBackend as exc:
            await self._admission.release(job.tenant_id, job.job_id)
            return await self._fail(job, str(exc), by)
        except BackendError as exc:
            await self._admission.release(job.tenant_id, job.job_id)
            if exc.retryable:
                raise
            return await self._fail(job, f"the backend refused the job: {exc}", by)

        def submitted(record: JobRecord) -> None:
            record.backend = backend.name
            record.external_id = external_id
            record.submitted_at = self._clock()

        return await self._jobs.transition(
            job.tenant_id,
            job.job_id,
            JobState.SUBMITTED,
            at=self._clock(),
            reason=f"submitted to {backend.name} as {external_id}",
            by=by,
            update=submitted,
        )

    async def _fail(self, job: JobRecord, reason: str, by: str) -> JobRecord:
        """A queued job that cannot be submitted at all ends `rejected` with the reason."""
        return await self._jobs.transition(
            job.tenant_id, job.job_id, JobState.REJECTED, at=self._clock(), reason=reason, by=by
        )
