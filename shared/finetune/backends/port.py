"""The one small port every fine-tuning backend implements: submit, status, cancel, outputs.

A backend turns a `TrainingSpec` into a job somewhere else (an Azure ML command job, an Azure
OpenAI fine-tuning job, a local subprocess) and reports on it in one vocabulary, `BackendState`.
The job watcher (`shared.finetune.watcher`) polls `status`; once a job has `SUCCEEDED` it asks for
`outputs` and hands the `TrainedModel` to the backend's `ModelDeployer`, which makes the model
servable as a deployment (an Azure OpenAI deployment, the simulator's, ...). The candidate is then a
new version of the tenant's tuned deployment in the registry; only the evaluation gate promotes it.

Errors: `BackendError` for anything the backend refused or failed to say; `retryable` tells the
watcher whether to try again on its next tick (throttling, timeouts) or to fail the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class BackendError(Exception):
    """A backend call failed. `retryable`: try again later rather than fail the job."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class BackendState(StrEnum):
    QUEUED = "queued"  # accepted, not running yet (validating files, provisioning a node, ...)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (BackendState.SUCCEEDED, BackendState.FAILED, BackendState.CANCELLED)


@dataclass(frozen=True)
class TrainingSpec:
    """One job, as every backend takes it.

    job_id:          the job's id (`ftj-...`, from the job key); also the backend's job name
                     where it lets us choose one, so a repeated submit finds the first job.
    tenant_id:       the tenant the model is for (`shared` scope: the requesting tenant).
    base_deployment: the registry deployment the candidate is tuned from (e.g. gpt-4o-mini-pool-a).
    base_model:      the model at the backend (e.g. gpt-4o-mini-2024-07-18, or an open model id).
    train_blob:      `<container>/<name>` of the chat JSONL (Azure OpenAI fine-tuning format).
    validation_blob: `<container>/<name>` of held-out chat JSONL, or None.
    dataset_sha256:  sha256 of the training blob, checked by the trainer and kept in lineage.
    hyperparameters: e.g. {"n_epochs": 2, "learning_rate_multiplier": 1.0} or LoRA settings.
    tags:            tenant_id, drift_event_id, dataset_sha256, job_key: carried to the backend.
    suffix:          a short name for the result (Azure OpenAI's `suffix`), e.g. `fabrikam-v2`.
    """

    job_id: str
    tenant_id: str
    base_deployment: str
    base_model: str
    train_blob: str
    validation_blob: str | None
    dataset_sha256: str
    hyperparameters: Mapping[str, int | float | str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    suffix: str = ""


@dataclass(frozen=True)
class BackendStatus:
    """state, a one-line detail (the backend's own status word or error), and metrics so far."""

    state: BackendState
    detail: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainedModel:
    """What a succeeded job produced.

    model:    the backend's name for it (Azure OpenAI `fine_tuned_model`, an AML model
              `name:version`, or the local runner's adapter blob prefix).
    metrics:  e.g. train_loss, validation_loss (floats).
    lineage:  base model, dataset sha256, parameters, code version (strings).
    """

    model: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    lineage: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServedModel:
    """A deployment that serves a trained model: the registry entry's `kind`, `model` (deployment
    name at the endpoint) and `endpoint` (as the registry writes it,
    `${ENV}` references allowed)."""

    kind: str
    model: str
    endpoint: str


class TrainingBackend(Protocol):
    name: str

    async def submit(self, spec: TrainingSpec) -> str:
        """Start the job; the backend's job id. Raises BackendError."""
        ...

    async def status(self, external_id: str) -> BackendStatus:
        """Where the job stands now. Raises BackendError."""
        ...

    async def cancel(self, external_id: str) -> None:
        """Ask the backend to stop the job (finished: nothing happens). Raises BackendError."""
        ...

    async def outputs(self, external_id: str) -> TrainedModel:
        """The trained model of a SUCCEEDED job. Raises BackendError otherwise."""
        ...


class ModelDeployer(Protocol):
    async def deploy(
        self, model: TrainedModel, *, deployment: str, spec: TrainingSpec
    ) -> ServedModel:
        """Serve `model` as `deployment` (e.g. fabrikam-ft-v2) and say how to reach it; idempotent
        by deployment name. Raises BackendError."""
        ...
