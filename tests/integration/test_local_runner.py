"""The local fine-tuning backend end to end: `LocalRunnerBackend` -> devhost's job runner (a real
process on a free loopback port) -> `python -m training.train` in .venv-training, with the data
and the outputs in a real Azurite, and the trained candidate deployed on a real model simulator.

The runner trains `tiny:micro` (hidden 32, 2 layers) for a few dozen steps: seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from azure.storage.blob.aio import BlobServiceClient

from devhost.azurite import Azurite
from devhost.jobrunner import TRAINING_PYTHON, JobRunnerProcess
from devhost.models import ThreadedSimulator, start_simulator_in_thread
from shared.finetune.backends.local_runner import LocalRunnerBackend
from shared.finetune.backends.port import BackendError, BackendState, TrainingSpec
from tests.fixtures.models import make_models_config
from tests.unit.training.chat_data import chat_lines

TENANT = "fabrikam"
BASE = "gpt-4o-mini-pool-a"
FAST = {"max_steps": 30, "learning_rate": 1e-2, "batch_size": 8, "save_steps": 10}


@pytest.fixture(scope="module")
def simulator() -> Iterator[ThreadedSimulator]:
    sim = start_simulator_in_thread(make_models_config())
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def runner(
    azurite: Azurite, simulator: ThreadedSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JobRunnerProcess]:
    if not TRAINING_PYTHON.exists():
        pytest.fail(f"{TRAINING_PYTHON} is missing: run `python3 dev.py bootstrap`", pytrace=False)
    folder = tmp_path_factory.mktemp("jobrunner")
    process = JobRunnerProcess(
        storage_connection=azurite.connection_string,
        simulator_url=simulator.url,
        work_dir=folder / "work",
        log_path=folder / "runner.log",
    )
    try:
        process.start()
        yield process
    finally:
        process.stop()


@pytest.fixture
def backend(runner: JobRunnerProcess) -> LocalRunnerBackend:
    return LocalRunnerBackend(runner.url, base_model="tiny:micro", parameters=FAST)


async def _upload(azurite: Azurite, name: str, data: bytes) -> str:
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        await service.get_blob_client("training", name).upload_blob(data, overwrite=True)
    return f"training/{name}"


async def _spec(
    azurite: Azurite, job_id: str, train: bytes, held_out: bytes | None = None, **changes: object
) -> TrainingSpec:
    train_blob = await _upload(azurite, f"{TENANT}/{job_id}/train.jsonl", train)
    held_out_blob = (
        await _upload(azurite, f"{TENANT}/{job_id}/heldout.jsonl", held_out) if held_out else None
    )
    fields: dict[str, object] = {
        "job_id": job_id,
        "tenant_id": TENANT,
        "base_deployment": BASE,
        "base_model": "gpt-4o-mini-2024-07-18",
        "train_blob": train_blob,
        "validation_blob": held_out_blob,
        "dataset_sha256": hashlib.sha256(train).hexdigest(),
        "tags": {"tenant_id": TENANT, "drift_event_id": "d-1"},
    }
    fields.update(changes)
    return TrainingSpec(**fields)  # type: ignore[arg-type]


def _jsonl(n: int, seed: int) -> bytes:
    return ("\n".join(chat_lines(n, seed)) + "\n").encode()


async def _wait_finished(
    backend: LocalRunnerBackend, name: str, timeout_s: float = 120
) -> BackendState:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        status = await backend.status(name)
        if status.state.finished:
            return status.state
        assert asyncio.get_running_loop().time() < deadline, f"{name} still {status}"
        await asyncio.sleep(0.2)


async def test_train_read_outputs_and_deploy(
    backend: LocalRunnerBackend, azurite: Azurite, simulator: ThreadedSimulator
) -> None:
    spec = await _spec(azurite, "ftj-local-train", _jsonl(64, 1), _jsonl(16, 2))
    assert await backend.submit(spec) == "ftj-local-train"
    assert await backend.submit(spec) == "ftj-local-train"  # the same job, not a second one
    assert await _wait_finished(backend, "ftj-local-train") is BackendState.SUCCEEDED

    trained = await backend.outputs("ftj-local-train")
    assert trained.model == f"models/{TENANT}/ftj-local-train/adapter"
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        models = service.get_container_client("models")
        names = {b.name async for b in models.list_blobs(name_starts_with=f"{TENANT}/")}
        stored = json.loads(
            await (await models.download_blob(f"{TENANT}/ftj-local-train/metrics.json")).readall()
        )
    prefix = f"{TENANT}/ftj-local-train"
    assert {
        f"{prefix}/adapter/adapter_config.json",
        f"{prefix}/adapter/adapter_model.safetensors",
        f"{prefix}/metrics.json",
        f"{prefix}/lineage.json",
    } <= names
    assert not any("checkpoint" in n for n in names)
    assert trained.metrics["train_loss"] < trained.metrics["first_train_loss"] - 1.0
    assert trained.metrics["validation_loss"] < trained.metrics["validation_loss_before"] - 1.0
    assert stored["final_train_loss"] == trained.metrics["train_loss"]
    assert trained.lineage["dataset_sha256"] == spec.dataset_sha256
    assert trained.lineage["base_model"] == "tiny:micro"
    assert trained.lineage["metrics_blob"] == f"models/{prefix}/metrics.json"
    assert json.loads(trained.lineage["parameters"])["max_steps"] == 30

    served = await backend.deploy(trained, deployment="fabrikam-ft-local", spec=spec)
    assert served.kind == "azure_openai"
    assert served.model == "fabrikam-ft-local"
    assert served.endpoint == "${AZURE_OPENAI_ENDPOINT}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{simulator.url}/admin/deployments") as response,
    ):
        listed = json.dumps(await response.json())
    assert "fabrikam-ft-local" in listed


async def test_cancel_a_running_job(backend: LocalRunnerBackend, azurite: Azurite) -> None:
    spec = await _spec(
        azurite, "ftj-local-cancel", _jsonl(32, 3), hyperparameters={"max_steps": 100_000}
    )
    await backend.submit(spec)
    deadline = asyncio.get_running_loop().time() + 60
    while (await backend.status("ftj-local-cancel")).state is not BackendState.RUNNING:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    await backend.cancel("ftj-local-cancel")
    status = await backend.status("ftj-local-cancel")
    assert status.state is BackendState.CANCELLED
    await backend.cancel("ftj-local-cancel")  # finished: nothing happens
    with pytest.raises(BackendError, match="Canceled, not Completed"):
        await backend.outputs("ftj-local-cancel")


async def test_a_malformed_dataset_fails_with_the_reason(
    backend: LocalRunnerBackend, azurite: Azurite
) -> None:
    lines = chat_lines(6, seed=4)
    lines[2] = '{"messages": [{"role": "user", "content": "hi"}'
    spec = await _spec(azurite, "ftj-local-bad", ("\n".join(lines) + "\n").encode())
    await backend.submit(spec)
    assert await _wait_finished(backend, "ftj-local-bad") is BackendState.FAILED
    detail = (await backend.status("ftj-local-bad")).detail
    assert detail.startswith("bad input: ")
    assert "train.jsonl line 3: not valid JSON" in detail


async def test_a_changed_dataset_fails_on_its_sha256(
    backend: LocalRunnerBackend, azurite: Azurite
) -> None:
    spec = await _spec(azurite, "ftj-local-sha", _jsonl(8, 5), dataset_sha256="0" * 64)
    await backend.submit(spec)
    assert await _wait_finished(backend, "ftj-local-sha") is BackendState.FAILED
    assert "the dataset changed" in (await backend.status("ftj-local-sha")).detail


async def test_a_missing_blob_fails_and_an_unknown_job_is_an_error(
    backend: LocalRunnerBackend, azurite: Azurite
) -> None:
    spec = await _spec(azurite, "ftj-local-missing", _jsonl(4, 6))
    gone = TrainingSpec(**{**spec.__dict__, "train_blob": "training/fabrikam/nothing.jsonl"})
    await backend.submit(gone)
    assert await _wait_finished(backend, "ftj-local-missing") is BackendState.FAILED
    assert "does not exist" in (await backend.status("ftj-local-missing")).detail
    with pytest.raises(BackendError, match="404") as err:
        await backend.status("ftj-never-submitted")
    assert not err.value.retryable


async def test_a_restarted_runner_resumes_its_job_from_the_checkpoint(
    azurite: Azurite, simulator: ThreadedSimulator, tmp_path: Path
) -> None:
    """SIGTERM stops the runner and its trainer (as a pre-empted node goes); the next runner on
    the same folder runs the job again and the trainer resumes from its checkpoint."""
    spec = await _spec(azurite, "ftj-local-restart", _jsonl(32, 7))

    def runner_process(simulator_url: str = simulator.url) -> JobRunnerProcess:
        return JobRunnerProcess(
            storage_connection=azurite.connection_string,
            simulator_url=simulator_url,
            work_dir=tmp_path / "work",
            log_path=tmp_path / "runner.log",
        )

    first = runner_process().start()
    try:
        backend = LocalRunnerBackend(
            first.url,
            base_model="tiny:micro",
            parameters={**FAST, "max_steps": 40, "save_steps": 5},
        )
        await backend.submit(spec)
        checkpoints = tmp_path / "work" / "jobs" / "ftj-local-restart" / "outputs" / "adapter"
        deadline = asyncio.get_running_loop().time() + 60
        while not list(checkpoints.glob("checkpoints/checkpoint-*/trainer_state.json")):
            assert asyncio.get_running_loop().time() < deadline, "no checkpoint within 60 s"
            await asyncio.sleep(0.05)
    finally:
        first.stop()
    second = runner_process().start()
    try:
        backend = LocalRunnerBackend(second.url)
        assert await _wait_finished(backend, "ftj-local-restart") is BackendState.SUCCEEDED
        trained = await backend.outputs("ftj-local-restart")
        assert int(trained.lineage["resumed_from_step"]) > 0
        assert trained.metrics["steps"] == 40
        await backend.deploy(trained, deployment="fabrikam-ft-restart", spec=spec)
    finally:
        second.stop()
    # The whole stack restarts (`dev.py up --keep-data`): a new simulator knows nothing of the
    # candidate; the runner deploys it again when it starts, so a promoted model never 404s.
    fresh = start_simulator_in_thread(make_models_config())
    third = runner_process(fresh.url).start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{fresh.url}/admin/deployments") as response,
        ):
            listed = json.dumps(await response.json())
        assert "fabrikam-ft-restart" in listed
    finally:
        third.stop()
        fresh.stop()


async def test_an_unreachable_runner_is_retryable() -> None:
    from devhost.processes import free_port

    backend = LocalRunnerBackend(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackendError) as err:
        await backend.status("ftj-x")
    assert err.value.retryable
