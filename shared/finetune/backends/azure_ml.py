"""Fine-tuning on Azure Machine Learning: a command job that runs `python -m training.train`.

`build_command_job(spec, ...)` is the pure part: the `azure.ai.ml.entities.Command` for one
`TrainingSpec`, inspected by the tests without a workspace.
- name = spec.job_id (a repeated submit finds the first job); experiment `finetune-<tenant>`;
  tags = spec.tags plus tenant_id, dataset_sha256, job_id, base_deployment (strings).
- compute: the GPU cluster by name (`gpu-cluster` in infra/main.bicep, AZURE_ML_COMPUTE_NAME).
  Its low priority is the cluster's own `vmPriority: LowPriority` (Bicep): a job on a cluster
  takes the cluster's tier, and `queue_settings.job_tier` applies only to serverless compute.
  With `compute=None` the job runs on serverless compute with `job_tier="Spot"` (the same
  pre-emptible capacity) and the given `instance_type`.
- code: a folder whose only child is `training/` (so `python -m training.train` imports, as in
  devhost); `stage_code()` copies the repository's training/ into one. Azure ML uploads the
  snapshot once per content hash. A registered code asset (`azureml:...`) works too.
- environment: training/environment/environment.yaml (image + conda.yaml), used as an anonymous
  environment (keyed by content, so the image is rebuilt only when the packages change).
- inputs: `train_file` (and `validation_file`) as `uri_file` inputs at
  `<blob_url>/<container>/<name>` of the app's storage account, read with the job's identity
  (`identity_client_id`: the training identity, AZURE_ML_TRAINING_IDENTITY_CLIENT_ID); the base
  model as a string (`tiny:<preset>`, a hub id), or, for an `azureml:` asset (the registry's open
  models), as a model input mounted as a folder; dataset_sha256 and every hyperparameter as
  literal inputs, so the studio shows them.
- output: `adapter`, a `custom_model` folder (rw_mount) at
  `azureml://datastores/<datastore>/paths/models/<tenant>/<job_id>/`: the adapter, metrics.json,
  lineage.json, and while the job runs its checkpoints, which outlive a pre-empted node (the
  restarted job resumes from them; the trainer removes them once done).
- the command: `python -m training.train` with every CLI flag bound to those inputs and outputs.

`AzureMLBackend` implements `TrainingBackend` over `MLClient` (azure-ai-ml is synchronous: each
call runs in a thread, `asyncio.to_thread`):
- `submit`: `jobs.get(job_id)` first (a repeated submit returns the existing job), else
  `jobs.create_or_update(build_command_job(...))`;
- `status`: `jobs.get(name).status` mapped by `STATUS_MAP` (NotStarted, Starting, Provisioning,
  Preparing, Queued, Paused -> QUEUED; Running, Finalizing, CancelRequested, NotResponding ->
  RUNNING; Completed -> SUCCEEDED; Failed -> FAILED; Canceled -> CANCELLED); an unknown word is
  a retryable BackendError;
- `cancel`: `jobs.begin_cancel(name)` (a finished job: nothing happens);
- `outputs`: for a Completed job, downloads the `adapter` output's metrics.json and lineage.json,
  registers the output as the tenant's model (`build_model`: `custom_model` named
  `<tenant>-adapter`, tagged with the job; a repeated call finds the version already registered
  for this job) and returns `TrainedModel(model="<name>:<version>", metrics, lineage)`.
  metrics: every number of metrics.json, plus `train_loss` (the last step's) and
  `validation_loss` (held-out, after training); lineage: strings (dicts as compact JSON).

Errors: azure-core's `ResourceNotFoundError` -> BackendError (not retryable); HTTP 408, 429 and
5xx, connection errors and credential failures -> BackendError(retryable=True); other HTTP errors
and the SDK's validation errors (`MlException`) -> BackendError (not retryable).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import quote

from azure.ai.ml import Input, Output, command, load_environment
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Command, Environment, ManagedIdentityConfiguration, Model
from azure.ai.ml.exceptions import MlException
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.finetune.backends.port import (
    BackendError,
    BackendState,
    BackendStatus,
    TrainedModel,
    TrainingSpec,
)
from shared.finetune.backends.run_outputs import flat_lineage, flat_metrics
from shared.finetune.backends.trainer_parameters import TRAIN_PARAMETERS, overridden

ROOT: Final = Path(__file__).resolve().parents[3]
TRAINING_DIR: Final = ROOT / "training"
ENVIRONMENT_YAML: Final = TRAINING_DIR / "environment" / "environment.yaml"
OUTPUT_NAME: Final = "adapter"
DEFAULT_DATASTORE: Final = "workspaceblobstore"
SERVERLESS_JOB_TIER: Final = "Spot"
JOB_TIMEOUT_S: Final = 6 * 3600

DEFAULT_PARAMETERS: Final[Mapping[str, int | float]] = {
    "max_steps": 1000,
    "learning_rate": 2e-4,
    "lora_r": 16,
    "lora_alpha": 32,
    "batch_size": 4,
    "save_steps": 100,
    "seed": 42,
}

STATUS_MAP: Final[Mapping[str, BackendState]] = {
    "NotStarted": BackendState.QUEUED,
    "Starting": BackendState.QUEUED,
    "Provisioning": BackendState.QUEUED,
    "Preparing": BackendState.QUEUED,
    "Queued": BackendState.QUEUED,
    "Paused": BackendState.QUEUED,
    "Running": BackendState.RUNNING,
    "Finalizing": BackendState.RUNNING,
    "CancelRequested": BackendState.RUNNING,
    # Heartbeat missed; Azure ML lets a job return from it to any earlier state.
    "NotResponding": BackendState.RUNNING,
    "Completed": BackendState.SUCCEEDED,
    "Failed": BackendState.FAILED,
    "Canceled": BackendState.CANCELLED,
}

_RETRYABLE_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]")
T = TypeVar("T")


def map_status(status: str | None) -> BackendState:
    """BackendState for an Azure ML job status word; BackendError (retryable) when unknown."""
    state = STATUS_MAP.get(status or "")
    if state is None:
        raise BackendError(f"Azure ML job status {status!r} is not known", retryable=True)
    return state


def training_environment(path: Path = ENVIRONMENT_YAML) -> Environment:
    """The job's environment: the image and conda file of training/environment/, anonymous."""
    loaded = load_environment(source=path)
    return Environment(
        image=loaded.image, conda_file=loaded.conda_file, description=loaded.description
    )


@functools.cache
def stage_code(training_dir: Path = TRAINING_DIR) -> Path:
    """A temporary folder holding a copy of training/ (without caches): the job's code. Made
    once per process (kept until it exits); Azure ML uploads it once per content hash."""
    folder = Path(tempfile.mkdtemp(prefix="aml-code-"))
    shutil.copytree(
        training_dir, folder / "training", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return folder


def blob_uri(blob_url: str, blob: str) -> str:
    """`https://<account>.blob.core.windows.net/<container>/<name>` for `<container>/<name>`."""
    container, _, name = blob.partition("/")
    if not container or not name:
        raise BackendError(f"blob {blob!r} is not <container>/<name>")
    return f"{blob_url.rstrip('/')}/{quote(container)}/{quote(name)}"


def model_name(tenant_id: str) -> str:
    """The tenant's registered model: `<tenant>-adapter` (Azure ML asset name characters)."""
    return _NAME_CHARS.sub("-", f"{tenant_id}-adapter")[:255]


def training_parameters(
    spec: TrainingSpec, defaults: Mapping[str, int | float] = DEFAULT_PARAMETERS
) -> dict[str, int | float]:
    """The trainer's hyperparameters: the defaults, overridden by those of spec.hyperparameters
    that the trainer knows (others, such as Azure OpenAI's n_epochs, do not apply here)."""
    return overridden({k: defaults.get(k, DEFAULT_PARAMETERS[k]) for k in TRAIN_PARAMETERS}, spec)


def _base_model_input(base_model: str, model_type: str) -> Input | str:
    if not base_model.startswith("azureml:"):
        return base_model
    path = base_model
    if "/versions/" not in path and "/labels/" not in path and path.startswith("azureml://"):
        path = f"{path.rstrip('/')}/labels/latest"
    return Input(type=model_type, path=path, mode="ro_mount")


def build_command_job(
    spec: TrainingSpec,
    *,
    compute: str | None,
    blob_url: str,
    code: str | PathLike[str],
    environment: Environment | str,
    identity_client_id: str | None = None,
    parameters: Mapping[str, int | float] = DEFAULT_PARAMETERS,
    datastore: str = DEFAULT_DATASTORE,
    instance_type: str | None = None,
    base_model_type: str = AssetTypes.MLFLOW_MODEL,
) -> Command:
    """The command job for one spec (see the module docstring)."""
    if compute is None and not instance_type:
        raise BackendError("serverless compute (compute=None) needs an instance_type")
    values = training_parameters(spec, parameters)
    inputs: dict[str, Any] = {
        "train_file": Input(type=AssetTypes.URI_FILE, path=blob_uri(blob_url, spec.train_blob)),
        "base_model": _base_model_input(spec.base_model, base_model_type),
        "dataset_sha256": spec.dataset_sha256,
        **values,
    }
    flags = ["--train-file ${{inputs.train_file}}"]
    if spec.validation_blob:
        inputs["validation_file"] = Input(
            type=AssetTypes.URI_FILE, path=blob_uri(blob_url, spec.validation_blob)
        )
        flags.append("--validation-file ${{inputs.validation_file}}")
    flags += [
        "--base-model ${{inputs.base_model}}",
        "--dataset-sha256 ${{inputs.dataset_sha256}}",
        f"--output-dir ${{{{outputs.{OUTPUT_NAME}}}}}",
        *(f"--{key.replace('_', '-')} ${{{{inputs.{key}}}}}" for key in TRAIN_PARAMETERS),
    ]
    output = Output(
        type=AssetTypes.CUSTOM_MODEL,
        mode="rw_mount",
        path=f"azureml://datastores/{datastore}/paths/models/{spec.tenant_id}/{spec.job_id}/",
    )
    tags = {
        **{k: str(v) for k, v in spec.tags.items()},
        "tenant_id": spec.tenant_id,
        "dataset_sha256": spec.dataset_sha256,
        "job_id": spec.job_id,
        "base_deployment": spec.base_deployment,
    }
    job: Command = command(
        name=spec.job_id,
        display_name=f"{spec.suffix or spec.tenant_id} fine-tune {spec.job_id}",
        description=f"LoRA fine-tuning of {spec.base_model} for tenant {spec.tenant_id}",
        experiment_name=_NAME_CHARS.sub("-", f"finetune-{spec.tenant_id}"),
        tags=tags,
        command="python -m training.train " + " ".join(flags),
        code=code,
        environment=environment,
        environment_variables={"TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1"},
        compute=compute,
        instance_type=instance_type if compute is None else None,
        job_tier=SERVERLESS_JOB_TIER if compute is None else None,
        inputs=inputs,
        outputs={OUTPUT_NAME: output},
        identity=ManagedIdentityConfiguration(client_id=identity_client_id)
        if identity_client_id
        else None,
        timeout=JOB_TIMEOUT_S,
    )
    return job


def build_model(
    job_name: str,
    tenant_id: str,
    *,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    lineage: Mapping[str, str],
) -> Model:
    """The tenant's adapter, registered from the job's `adapter` output."""
    keep = ("dataset_sha256", "drift_event_id", "job_key", "base_deployment")
    return Model(
        name=model_name(tenant_id),
        path=f"azureml://jobs/{job_name}/outputs/{OUTPUT_NAME}",
        type=AssetTypes.CUSTOM_MODEL,
        description=f"LoRA adapter for tenant {tenant_id}, trained by job {job_name}",
        tags={
            **{k: tags[k] for k in keep if k in tags},
            "tenant_id": tenant_id,
            "job_name": job_name,
            "base_model": lineage.get("base_model", ""),
            "code_version": lineage.get("code_version", ""),
        },
        properties={k: f"{v:.6g}" for k, v in metrics.items()},
    )


class _Client(Protocol):
    """What is used of `azure.ai.ml.MLClient` (tests give a fake with these two attributes)."""

    @property
    def jobs(self) -> Any: ...

    @property
    def models(self) -> Any: ...


def _backend_error(action: str, err: Exception) -> BackendError:
    if isinstance(err, BackendError):
        return err
    if isinstance(err, ResourceNotFoundError):
        return BackendError(f"{action}: not found in the workspace ({err.message})")
    if isinstance(err, ClientAuthenticationError):
        return BackendError(f"{action}: authentication failed ({err.message})", retryable=True)
    if isinstance(err, ServiceRequestError | ServiceResponseError | TimeoutError | OSError):
        return BackendError(f"{action}: {type(err).__name__}: {err}", retryable=True)
    if isinstance(err, HttpResponseError):
        code = err.status_code or 0
        return BackendError(
            f"{action}: HTTP {code} {err.reason or ''} ({err.message})".strip(),
            retryable=code in _RETRYABLE_STATUS,
        )
    return BackendError(f"{action}: {type(err).__name__}: {err}")


class AzureMLBackend:
    """`TrainingBackend` on an Azure ML workspace (see the module docstring)."""

    name = "azure_ml"

    def __init__(
        self,
        client: _Client,
        *,
        compute: str | None,
        blob_url: str,
        identity_client_id: str | None = None,
        parameters: Mapping[str, int | float] | None = None,
        code: str | PathLike[str] | None = None,
        environment: Environment | str | None = None,
        datastore: str = DEFAULT_DATASTORE,
        instance_type: str | None = None,
    ) -> None:
        self._client = client
        self._compute = compute
        self._blob_url = blob_url
        self._identity_client_id = identity_client_id
        self._parameters = {**DEFAULT_PARAMETERS, **(parameters or {})}
        self._code = code
        self._environment = environment
        self._datastore = datastore
        self._instance_type = instance_type

    @classmethod
    def connect(
        cls,
        *,
        subscription_id: str,
        resource_group: str,
        workspace: str,
        managed_identity_client_id: str | None = None,
        **options: Any,
    ) -> AzureMLBackend:
        """An `MLClient` with `DefaultAzureCredential` (the app's managed identity in Azure)."""
        from azure.ai.ml import MLClient  # noqa: PLC0415 - only where a workspace is used
        from azure.identity import DefaultAzureCredential  # noqa: PLC0415

        credential = DefaultAzureCredential(managed_identity_client_id=managed_identity_client_id)
        client = MLClient(credential, subscription_id, resource_group, workspace)
        return cls(client, **options)

    def build(self, spec: TrainingSpec) -> Command:
        return build_command_job(
            spec,
            compute=self._compute,
            blob_url=self._blob_url,
            code=self._code if self._code is not None else stage_code(),
            environment=self._environment or training_environment(),
            identity_client_id=self._identity_client_id,
            parameters=self._parameters,
            datastore=self._datastore,
            instance_type=self._instance_type,
        )

    async def _call(self, action: str, work: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(work)
        except (AzureError, MlException, OSError, ValueError, BackendError) as err:
            raise _backend_error(action, err) from err

    async def submit(self, spec: TrainingSpec) -> str:
        def work() -> str:
            try:
                existing = self._client.jobs.get(spec.job_id)
                return str(existing.name)
            except ResourceNotFoundError:
                pass
            created = self._client.jobs.create_or_update(self.build(spec))
            return str(created.name)

        return await self._call(f"submit {spec.job_id}", work)

    async def status(self, external_id: str) -> BackendStatus:
        job = await self._call(f"status {external_id}", lambda: self._client.jobs.get(external_id))
        word = str(job.status)
        state = map_status(word)
        detail = word
        if state is BackendState.FAILED and getattr(job, "studio_url", None):
            detail = f"{word} (see {job.studio_url})"
        return BackendStatus(state=state, detail=detail)

    async def cancel(self, external_id: str) -> None:
        def work() -> None:
            job = self._client.jobs.get(external_id)
            if map_status(str(job.status)).finished:
                return
            self._client.jobs.begin_cancel(external_id)

        await self._call(f"cancel {external_id}", work)

    async def outputs(self, external_id: str) -> TrainedModel:
        return await self._call(f"outputs {external_id}", lambda: self._outputs(external_id))

    def _outputs(self, name: str) -> TrainedModel:
        job = self._client.jobs.get(name)
        if map_status(str(job.status)) is not BackendState.SUCCEEDED:
            raise BackendError(f"job {name} is {job.status}, not Completed")
        tags: dict[str, str] = dict(job.tags or {})
        tenant_id = tags.get("tenant_id")
        if not tenant_id:
            raise BackendError(f"job {name} has no tenant_id tag")
        with tempfile.TemporaryDirectory(prefix="aml-outputs-") as folder:
            self._client.jobs.download(name, download_path=folder, output_name=OUTPUT_NAME)
            metrics = flat_metrics(_read_json(Path(folder), "metrics.json"))
            lineage = flat_lineage(_read_json(Path(folder), "lineage.json"))
        lineage = {**lineage, "job": name, "compute": str(getattr(job, "compute", "") or "")}
        registered = self._find_model(tenant_id, name) or self._client.models.create_or_update(
            build_model(name, tenant_id, tags=tags, metrics=metrics, lineage=lineage)
        )
        return TrainedModel(
            model=f"{registered.name}:{registered.version}", metrics=metrics, lineage=lineage
        )

    def _find_model(self, tenant_id: str, job_name: str) -> Any:
        try:
            for model in self._client.models.list(name=model_name(tenant_id)):
                if (model.tags or {}).get("job_name") == job_name:
                    return model
        except ResourceNotFoundError:
            return None
        return None


def _read_json(folder: Path, file_name: str) -> dict[str, Any]:
    found = sorted(folder.rglob(file_name), key=lambda p: len(p.parts))
    if not found:
        raise BackendError(f"the job's {OUTPUT_NAME} output has no {file_name}")
    data = json.loads(found[0].read_text())
    if not isinstance(data, dict):
        raise BackendError(f"{file_name} is not a JSON object")
    return data
