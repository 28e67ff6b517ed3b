"""Fine-tuning on devhost's job runner (devhost/jobrunner): the local stand-in for Azure ML.

`LocalRunnerBackend(base_url, *, base_model="tiny:mini", parameters=None)` is both the
`TrainingBackend` and the `ModelDeployer` of the `local` backend (LOCAL_TRAINING_RUNNER_URL),
over aiohttp (one short-lived session per call, so it works from any event loop):

- `submit(spec)`: `POST {base_url}/jobs` with name = spec.job_id (the runner returns the existing
  job for a name it knows), the spec's blobs, dataset sha256 and tags, `base_model` (the runner
  trains a `tiny:` model on a developer machine, whatever the spec's Azure model is), the
  trainer's hyperparameters (`parameters`, overridden by those of spec.hyperparameters the
  trainer knows), and outputs_prefix `models/<tenant>/<job_id>`. Returns the job name.
- `status(name)`: `GET /jobs/{name}`; Queued -> QUEUED, Running -> RUNNING, Completed ->
  SUCCEEDED, Failed -> FAILED, Canceled -> CANCELLED; detail = the runner's error, else its
  word; metrics = its numbers (step and loss while running, then every metric).
- `cancel(name)`: `POST /jobs/{name}/cancel`.
- `outputs(name)`: a Completed job's `TrainedModel`: model = `models/<tenant>/<job_id>/adapter`
  (the adapter's blob prefix in the app's storage account), metrics (train_loss,
  validation_loss, ... floats), lineage (strings, plus `metrics_blob` and `lineage_blob`).
- `deploy(model, deployment=, spec=)`: `POST /jobs/{spec.job_id}/deploy` {"deployment",
  "base": spec.base_deployment}: the model simulator serves `deployment`, tuned from the base;
  `ServedModel(kind="azure_openai", model=deployment, endpoint="${AZURE_OPENAI_ENDPOINT}")`.

Errors: BackendError; retryable for connection errors, timeouts, HTTP 429 and 5xx (the runner
restarting, the simulator unreachable); not retryable for 400, 404 and 409 (with the runner's
reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from shared.finetune.backends.port import (
    BackendError,
    BackendState,
    BackendStatus,
    ServedModel,
    TrainedModel,
    TrainingSpec,
)
from shared.finetune.backends.trainer_parameters import overridden

DEFAULT_BASE_MODEL: Final = "tiny:mini"
# Enough for the tiny model to learn the tenant's phrasing in seconds on a laptop's CPU.
DEFAULT_PARAMETERS: Final[Mapping[str, int | float]] = {
    "max_steps": 60,
    "learning_rate": 1e-2,
    "lora_r": 8,
    "lora_alpha": 16,
    "batch_size": 8,
    "save_steps": 20,
    "seed": 42,
}
STATES: Final[Mapping[str, BackendState]] = {
    "Queued": BackendState.QUEUED,
    "Running": BackendState.RUNNING,
    "Completed": BackendState.SUCCEEDED,
    "Failed": BackendState.FAILED,
    "Canceled": BackendState.CANCELLED,
}
TIMEOUT_S: Final = 30.0


def _numbers(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


class LocalRunnerBackend:
    name = "local"

    def __init__(
        self,
        base_url: str,
        *,
        base_model: str = DEFAULT_BASE_MODEL,
        parameters: Mapping[str, int | float] | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._base_model = base_model
        self._parameters = {**DEFAULT_PARAMETERS, **(parameters or {})}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def _request_parameters(self, spec: TrainingSpec) -> dict[str, int | float]:
        return overridden(self._parameters, spec)

    async def _call(
        self, method: str, path: str, action: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        url = f"{self._base_url}{path}"
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.request(method, url, json=body) as response,
            ):
                try:
                    data = await response.json(content_type=None)
                except ValueError:
                    data = None
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise BackendError(
                f"{action}: the job runner at {self._base_url}: {type(err).__name__}: {err}",
                retryable=True,
            ) from None
        if status >= 400:
            reason = data.get("error") if isinstance(data, dict) else None
            raise BackendError(
                f"{action}: job runner answered {status}: {reason or 'no reason'}",
                retryable=status == 429 or status >= 500,
            )
        if not isinstance(data, dict):
            raise BackendError(f"{action}: job runner answered no JSON object", retryable=True)
        return data

    async def submit(self, spec: TrainingSpec) -> str:
        body = {
            "name": spec.job_id,
            "tags": {
                **{k: str(v) for k, v in spec.tags.items()},
                "tenant_id": spec.tenant_id,
                "base_deployment": spec.base_deployment,
            },
            "train_blob": spec.train_blob,
            "validation_blob": spec.validation_blob,
            "dataset_sha256": spec.dataset_sha256,
            "base_model": self._base_model,
            "parameters": self._request_parameters(spec),
            "outputs_prefix": f"models/{spec.tenant_id}/{spec.job_id}",
        }
        data = await self._call("POST", "/jobs", f"submit {spec.job_id}", body)
        return str(data.get("name") or spec.job_id)

    async def _job(self, name: str, action: str) -> dict[str, Any]:
        return await self._call("GET", f"/jobs/{quote(name, safe='')}", f"{action} {name}")

    async def status(self, external_id: str) -> BackendStatus:
        data = await self._job(external_id, "status")
        word = str(data.get("status"))
        state = STATES.get(word)
        if state is None:
            raise BackendError(f"job runner status {word!r} is not known", retryable=True)
        return BackendStatus(
            state=state,
            detail=str(data.get("error") or word),
            metrics=_numbers(data.get("metrics")),
        )

    async def cancel(self, external_id: str) -> None:
        path = f"/jobs/{quote(external_id, safe='')}/cancel"
        await self._call("POST", path, f"cancel {external_id}")

    async def outputs(self, external_id: str) -> TrainedModel:
        data = await self._job(external_id, "outputs")
        if data.get("status") != "Completed":
            raise BackendError(f"job {external_id} is {data.get('status')}, not Completed")
        outputs = data.get("outputs")
        if not isinstance(outputs, dict) or not outputs.get("adapter"):
            raise BackendError(f"job {external_id} names no adapter output", retryable=True)
        lineage_raw = data.get("lineage")
        lineage = (
            {str(k): str(v) for k, v in lineage_raw.items()}
            if isinstance(lineage_raw, dict)
            else {}
        )
        lineage.update(
            metrics_blob=str(outputs.get("metrics", "")),
            lineage_blob=str(outputs.get("lineage", "")),
        )
        return TrainedModel(
            model=str(outputs["adapter"]), metrics=_numbers(data.get("metrics")), lineage=lineage
        )

    async def deploy(
        self, model: TrainedModel, *, deployment: str, spec: TrainingSpec
    ) -> ServedModel:
        await self._call(
            "POST",
            f"/jobs/{quote(spec.job_id, safe='')}/deploy",
            f"deploy {spec.job_id} as {deployment}",
            {"deployment": deployment, "base": spec.base_deployment},
        )
        return ServedModel(
            kind="azure_openai", model=deployment, endpoint="${AZURE_OPENAI_ENDPOINT}"
        )
