"""The Azure ML backend without a workspace: the real azure-ai-ml entities it builds, inspected
through their public YAML (`Command.dump`), and the backend's calls against a fake `jobs` /
`models` pair that answers as MLClient's operations do (entities with `.status`, `.tags`;
azure-core errors)."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from azure.ai.ml.entities import Command, Model
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

from shared.finetune.backends.azure_ml import (
    ROOT,
    STATUS_MAP,
    AzureMLBackend,
    build_command_job,
    build_model,
    stage_code,
    training_environment,
)
from shared.finetune.backends.port import BackendError, BackendState, TrainingSpec
from training.train import build_parser

# azure-ai-ml's schemas use marshmallow 3 APIs that marshmallow 4 will remove: their noise only.
pytestmark = pytest.mark.filterwarnings("ignore::marshmallow.warnings.RemovedInMarshmallow4Warning")

BLOB_URL = "https://sttenantai.blob.core.windows.net/"
SHA = "ab" * 32


def _spec(**changes: Any) -> TrainingSpec:
    fields: dict[str, Any] = {
        "job_id": "ftj-0123456789abcdef",
        "tenant_id": "fabrikam",
        "base_deployment": "phi-4-mini-pool",
        "base_model": "azureml://registries/azureml/models/Phi-4-mini-instruct",
        "train_blob": "training/fabrikam/ftj-0123456789abcdef/train.jsonl",
        "validation_blob": "training/fabrikam/ftj-0123456789abcdef/heldout.jsonl",
        "dataset_sha256": SHA,
        "tags": {
            "tenant_id": "fabrikam",
            "job_key": "fabrikam:drift:7",
            "drift_event_id": "fabrikam:drift:7",
            "dataset_sha256": SHA,
            "reason": "quality_drift",
        },
        "suffix": "fabrikam",
    }
    fields.update(changes)
    return TrainingSpec(**fields)


def _build(spec: TrainingSpec | None = None, **options: Any) -> Command:
    kwargs: dict[str, Any] = {
        "compute": "gpu-cluster",
        "blob_url": BLOB_URL,
        "code": stage_code(),
        "environment": training_environment(),
        "identity_client_id": "11111111-2222-3333-4444-555555555555",
    }
    kwargs.update(options)
    return build_command_job(spec or _spec(), **kwargs)


def _yaml(job: Command) -> dict[str, Any]:
    buffer = io.StringIO()
    job.dump(buffer)
    loaded: dict[str, Any] = yaml.safe_load(buffer.getvalue())
    return loaded


def _flags(command_line: str) -> dict[str, str]:
    words = shlex.split(command_line)
    assert words[:3] == ["python", "-m", "training.train"]
    pairs = words[3:]
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def test_the_job_runs_on_the_gpu_cluster_with_the_specs_name() -> None:
    job = _build()
    data = _yaml(job)
    assert job.name == "ftj-0123456789abcdef"
    assert data["compute"].removeprefix("azureml:") == "gpu-cluster"
    assert job.experiment_name == "finetune-fabrikam"
    # On a cluster the tier is the cluster's (LowPriority in infra/modules/ml.bicep).
    assert "queue_settings" not in data
    assert data["identity"] == {
        "type": "managed_identity",
        "client_id": "11111111-2222-3333-4444-555555555555",
    }
    assert data["limits"]["timeout"] == 6 * 3600


def test_serverless_compute_takes_the_spot_tier() -> None:
    data = _yaml(_build(compute=None, instance_type="Standard_NC24ads_A100_v4"))
    assert data["queue_settings"]["job_tier"].lower() == "spot"
    assert data["resources"]["instance_type"] == "Standard_NC24ads_A100_v4"
    assert "compute" not in data
    with pytest.raises(BackendError, match="instance_type"):
        _build(compute=None)


def test_inputs_and_output() -> None:
    data = _yaml(_build())
    inputs = data["inputs"]
    assert inputs["train_file"]["type"] == "uri_file"
    assert inputs["train_file"]["path"].removeprefix("azureml:") == (
        "https://sttenantai.blob.core.windows.net/training/fabrikam/ftj-0123456789abcdef/train.jsonl"
    )
    assert inputs["validation_file"]["type"] == "uri_file"
    assert inputs["validation_file"]["path"].endswith("/heldout.jsonl")
    assert inputs["base_model"] == {
        "type": "mlflow_model",
        "mode": "ro_mount",
        "path": "azureml://registries/azureml/models/Phi-4-mini-instruct/labels/latest",
    }
    assert inputs["dataset_sha256"] == SHA
    assert inputs["max_steps"] == 1000
    assert inputs["learning_rate"] == pytest.approx(2e-4)
    assert data["outputs"]["adapter"] == {
        "type": "custom_model",
        "mode": "rw_mount",
        "path": "azureml://datastores/workspaceblobstore/paths/models/fabrikam/ftj-0123456789abcdef/",
    }


def test_the_command_passes_every_trainer_flag() -> None:
    flags = _flags(_build().command or "")
    trainer_flags = {
        flag
        for action in build_parser()._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag not in {"--help", "--checkpoint-dir"}
    }
    # --checkpoint-dir keeps its default, inside the output: it survives a pre-empted node.
    assert set(flags) == trainer_flags
    assert flags["--train-file"] == "${{inputs.train_file}}"
    assert flags["--validation-file"] == "${{inputs.validation_file}}"
    assert flags["--output-dir"] == "${{outputs.adapter}}"
    assert flags["--learning-rate"] == "${{inputs.learning_rate}}"
    inputs = _yaml(_build())["inputs"]
    for value in flags.values():
        kind, _, name = value.strip("${}").partition(".")
        assert name in (inputs if kind == "inputs" else {"adapter"}), value


def test_without_held_out_data_there_is_no_validation_flag() -> None:
    job = _build(_spec(validation_blob=None, base_model="tiny:mini"))
    assert "--validation-file" not in _flags(job.command or "")
    inputs = _yaml(job)["inputs"]
    assert "validation_file" not in inputs
    assert inputs["base_model"] == "tiny:mini"


def test_tags_carry_tenant_drift_event_and_dataset() -> None:
    tags = _build().tags or {}
    assert tags["tenant_id"] == "fabrikam"
    assert tags["drift_event_id"] == "fabrikam:drift:7"
    assert tags["dataset_sha256"] == SHA
    assert tags["job_id"] == "ftj-0123456789abcdef"
    assert tags["base_deployment"] == "phi-4-mini-pool"


def test_hyperparameters_the_trainer_knows_override_the_defaults() -> None:
    spec = _spec(hyperparameters={"max_steps": 30, "learning_rate": 0.01, "n_epochs": 3})
    inputs = _yaml(_build(spec))["inputs"]
    assert inputs["max_steps"] == 30
    assert inputs["learning_rate"] == pytest.approx(0.01)
    assert "n_epochs" not in inputs
    with pytest.raises(BackendError, match="lora_r='big'"):
        _build(_spec(hyperparameters={"lora_r": "big"}))


def test_the_environment_is_training_environment_and_matches_its_requirements() -> None:
    env = training_environment()
    assert env.image is not None
    assert env.image.startswith("mcr.microsoft.com/azureml/")
    assert "cuda" in env.image
    conda = env.conda_file
    assert isinstance(conda, dict)
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    requirements = [
        line.strip()
        for line in (ROOT / "training" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert pip == requirements
    assert "python=3.11" in conda["dependencies"]
    assert _yaml(_build())["environment"]["image"] == env.image


def test_the_code_snapshot_is_a_folder_holding_training() -> None:
    folder = stage_code()
    assert sorted(p.name for p in folder.iterdir()) == ["training"]
    assert (folder / "training" / "train.py").is_file()
    assert (folder / "training" / "environment" / "conda.yaml").is_file()
    assert not list(folder.rglob("__pycache__"))


def test_the_model_is_registered_per_tenant() -> None:
    model = build_model(
        "ftj-1",
        "fabrikam",
        tags={"dataset_sha256": SHA, "drift_event_id": "d-1", "other": "x"},
        metrics={"train_loss": 1.25},
        lineage={"base_model": "tiny:mini", "code_version": "abc"},
    )
    assert isinstance(model, Model)
    assert model.name == "fabrikam-adapter"
    assert model.type == "custom_model"
    assert model.path == "azureml://jobs/ftj-1/outputs/adapter"
    assert model.tags == {
        "dataset_sha256": SHA,
        "drift_event_id": "d-1",
        "tenant_id": "fabrikam",
        "job_name": "ftj-1",
        "base_model": "tiny:mini",
        "code_version": "abc",
    }
    assert model.properties == {"train_loss": "1.25"}


# ---- the backend against fake MLClient operations ---------------------------------------------


class FakeJobs:
    def __init__(self) -> None:
        self.jobs: dict[str, SimpleNamespace] = {}
        self.created: list[Command] = []
        self.cancelled: list[str] = []
        self.fail_with: Exception | None = None

    def get(self, name: str) -> SimpleNamespace:
        if self.fail_with is not None:
            raise self.fail_with
        if name not in self.jobs:
            raise ResourceNotFoundError(f"job {name} not found")
        return self.jobs[name]

    def create_or_update(self, job: Command) -> SimpleNamespace:
        self.created.append(job)
        entity = SimpleNamespace(
            name=job.name,
            status="NotStarted",
            tags=dict(job.tags or {}),
            compute="gpu-cluster",
            studio_url=f"https://ml.azure.com/runs/{job.name}",
        )
        self.jobs[str(job.name)] = entity
        return entity

    def begin_cancel(self, name: str) -> None:
        self.cancelled.append(name)

    def download(self, name: str, *, download_path: str, output_name: str) -> None:
        out = Path(download_path) / "named-outputs" / output_name
        (out / "adapter").mkdir(parents=True)
        (out / "adapter" / "adapter_config.json").write_text("{}")
        (out / "metrics.json").write_text(
            json.dumps(
                {
                    "final_train_loss": 1.5,
                    "validation_loss_after": 1.75,
                    "steps": 30,
                    "device": "cuda",
                    "train_loss_by_step": [{"step": 1, "loss": 5.0}],
                }
            )
        )
        (out / "lineage.json").write_text(
            json.dumps(
                {
                    "base_model": "tiny:mini",
                    "dataset_sha256": SHA,
                    "parameters": {"max_steps": 30},
                    "resumed_from_step": 10,
                    "validation_sha256": None,
                }
            )
        )


class FakeModels:
    def __init__(self) -> None:
        self.registered: list[Model] = []

    def list(self, name: str) -> list[Model]:
        found = [m for m in self.registered if m.name == name]
        if not found:
            raise ResourceNotFoundError(f"model {name} not found")
        return found

    def create_or_update(self, model: Model) -> Model:
        model.version = str(1 + sum(m.name == model.name for m in self.registered))
        self.registered.append(model)
        return model


@pytest.fixture
def client() -> SimpleNamespace:
    return SimpleNamespace(jobs=FakeJobs(), models=FakeModels())


@pytest.fixture
def backend(client: SimpleNamespace) -> AzureMLBackend:
    return AzureMLBackend(
        client,
        compute="gpu-cluster",
        blob_url=BLOB_URL,
        code="azureml:tenantai-training-code:1",
        environment=training_environment(),
    )


async def test_submit_twice_finds_the_first_job(
    backend: AzureMLBackend, client: SimpleNamespace
) -> None:
    assert await backend.submit(_spec()) == "ftj-0123456789abcdef"
    assert await backend.submit(_spec()) == "ftj-0123456789abcdef"
    assert len(client.jobs.created) == 1
    assert client.jobs.created[0].compute == "gpu-cluster"


@pytest.mark.parametrize(("word", "state"), sorted(STATUS_MAP.items()))
async def test_status_maps_every_azure_ml_word(
    backend: AzureMLBackend, client: SimpleNamespace, word: str, state: BackendState
) -> None:
    client.jobs.jobs["j"] = SimpleNamespace(name="j", status=word, studio_url="https://studio/j")
    status = await backend.status("j")
    assert status.state is state
    assert status.detail.startswith(word)


def test_status_words_cover_the_sdk_enum() -> None:
    from azure.ai.ml._restclient.arm_ml_service.models import JobStatus

    assert {s.value for s in JobStatus} - {"Unknown"} <= set(STATUS_MAP)


async def test_status_errors(backend: AzureMLBackend, client: SimpleNamespace) -> None:
    with pytest.raises(BackendError, match="not found") as missing:
        await backend.status("nope")
    assert not missing.value.retryable
    client.jobs.jobs["odd"] = SimpleNamespace(name="odd", status="Sleeping")
    with pytest.raises(BackendError, match="'Sleeping' is not known") as odd:
        await backend.status("odd")
    assert odd.value.retryable
    throttled = HttpResponseError(message="slow down")
    throttled.status_code = 429
    client.jobs.fail_with = throttled
    with pytest.raises(BackendError, match="HTTP 429") as busy:
        await backend.status("odd")
    assert busy.value.retryable
    client.jobs.fail_with = ServiceRequestError("connection reset")
    with pytest.raises(BackendError) as down:
        await backend.status("odd")
    assert down.value.retryable


async def test_cancel_only_an_unfinished_job(
    backend: AzureMLBackend, client: SimpleNamespace
) -> None:
    client.jobs.jobs["run"] = SimpleNamespace(name="run", status="Running")
    client.jobs.jobs["done"] = SimpleNamespace(name="done", status="Completed")
    await backend.cancel("run")
    await backend.cancel("done")
    assert client.jobs.cancelled == ["run"]


async def test_outputs_register_the_tenants_model_once(
    backend: AzureMLBackend, client: SimpleNamespace
) -> None:
    await backend.submit(_spec())
    with pytest.raises(BackendError, match="NotStarted, not Completed"):
        await backend.outputs("ftj-0123456789abcdef")
    client.jobs.jobs["ftj-0123456789abcdef"].status = "Completed"
    trained = await backend.outputs("ftj-0123456789abcdef")
    assert trained.model == "fabrikam-adapter:1"
    assert trained.metrics["train_loss"] == 1.5
    assert trained.metrics["validation_loss"] == 1.75
    assert trained.metrics["steps"] == 30.0
    assert "device" not in trained.metrics
    assert trained.lineage["dataset_sha256"] == SHA
    assert trained.lineage["parameters"] == '{"max_steps":30}'
    assert trained.lineage["resumed_from_step"] == "10"
    assert trained.lineage["job"] == "ftj-0123456789abcdef"
    assert "validation_sha256" not in trained.lineage
    (model,) = client.models.registered
    assert model.tags["drift_event_id"] == "fabrikam:drift:7"
    assert model.path == "azureml://jobs/ftj-0123456789abcdef/outputs/adapter"
    again = await backend.outputs("ftj-0123456789abcdef")
    assert again.model == "fabrikam-adapter:1"
    assert len(client.models.registered) == 1
