"""Azure OpenAI fine-tuning end to end: the backend and the deployer over real HTTP.

`AzureOpenAIFineTuning` reads its training blobs from Azurite (azure-storage-blob) and calls the
models simulator with the real `openai` client; `AzureOpenAIDeployer` calls the simulator's ARM
routes with the real `azure-mgmt-cognitiveservices` client and a static token credential. The
tuned deployment then answers chat through the simulator like any other. Retries are checked at
the HTTP transport (httpx2.MockTransport for openai, an azure-core transport for ARM).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import openai
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.cognitiveservices.aio import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import (
    Deployment,
    DeploymentModel,
    DeploymentProperties,
    Sku,
)

from devhost.azurite import Azurite
from devhost.models import RunningSimulator, verdict_of
from shared.finetune.backends.aoai_deployer import AzureOpenAIDeployer
from shared.finetune.backends.azure_openai import (
    AzureOpenAIFineTuning,
    JobLink,
    RetrySettings,
    link_blob_name,
)
from shared.finetune.backends.port import (
    BackendError,
    BackendState,
    TrainedModel,
    TrainingSpec,
)
from shared.storage import names
from shared.storage.blob_store import AzureBlobStore, MemoryBlobStore
from tests.fixtures.models import (
    TEST_API_KEY,
    SimulatorFactory,
    make_models_config,
    model_deployment,
)
from tests.transport_fakes import AzureTransport

API_VERSION = "2024-10-21"
BASE_MODEL = "gpt-4o-mini-2024-07-18"
FAST = {"validating_s": 0.05, "queued_s": 0.05, "running_s": 0.1}
TUNING = {"gain": 0.4, "examples_for_full_gain": 20, "max_quality": 0.95}


class StaticCredential:
    """An AsyncTokenCredential that always has the same token (the simulator takes any)."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("local-token", int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StaticCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def simulator_config(**fine_tuning: float) -> Any:
    return make_models_config(
        model_deployment(
            "gpt-4o-mini-pool-a",
            model="gpt-4o-mini",
            quality=0.6,
            quality_by_topic={"billing": 0.5},
        ),
        model_deployment("judge", model="gpt-4o", judge=True),
        answer_verdicts=True,
        fine_tuning={**FAST, **TUNING, **fine_tuning},
    )


def example(topic: str, i: int) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "You answer Fabrikam's customers."},
                {"role": "user", "content": f"Why was invoice {i} charged twice? #{topic}"},
                {"role": "assistant", "content": f"Invoice {i} was charged once; refunded."},
            ]
        }
    )


def chat_jsonl(count: int, topic: str = "billing") -> bytes:
    return "\n".join(example(topic, i) for i in range(count)).encode()


@pytest.fixture
async def store(azurite: Azurite) -> AsyncIterator[AzureBlobStore]:
    s = AzureBlobStore.from_connection_string(azurite.connection_string)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def sim(model_simulator_factory: SimulatorFactory) -> RunningSimulator:
    return await model_simulator_factory(simulator_config())


@pytest.fixture
async def backend(
    sim: RunningSimulator, store: AzureBlobStore
) -> AsyncIterator[AzureOpenAIFineTuning]:
    b = AzureOpenAIFineTuning.connect(sim.url, store, api_key=TEST_API_KEY, file_poll_s=0.01)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def deployer(sim: RunningSimulator) -> AsyncIterator[AzureOpenAIDeployer]:
    d = AzureOpenAIDeployer(
        StaticCredential(), "sub-1", "rg-1", "aoai-1", capacity=500, base_url=sim.url
    )
    try:
        yield d
    finally:
        await d.close()


async def put_training(
    store: AzureBlobStore, data: bytes, tenant: str = "fabrikam"
) -> tuple[str, str]:
    name = f"{tenant}/{uuid.uuid4().hex}.jsonl"
    await store.put(names.TRAINING_CONTAINER, name, data, content_type="application/x-ndjson")
    return f"{names.TRAINING_CONTAINER}/{name}", hashlib.sha256(data).hexdigest()


async def make_spec(
    store: AzureBlobStore,
    data: bytes,
    *,
    validation: bytes | None = None,
    base_model: str = BASE_MODEL,
    **fields: Any,
) -> TrainingSpec:
    train_blob, sha = await put_training(store, data)
    validation_blob = (await put_training(store, validation))[0] if validation else None
    return TrainingSpec(
        job_id="ftj-" + uuid.uuid4().hex[:24],
        tenant_id="fabrikam",
        base_deployment="gpt-4o-mini-pool-a",
        base_model=base_model,
        train_blob=train_blob,
        validation_blob=validation_blob,
        dataset_sha256=sha,
        **fields,
    )


async def until_finished(
    backend: AzureOpenAIFineTuning, external_id: str, timeout_s: float = 15.0
) -> list[BackendState]:
    seen: list[BackendState] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = await backend.status(external_id)
        if not seen or seen[-1] is not status.state:
            seen.append(status.state)
        if status.state.finished:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {external_id} did not finish: {seen}")


def aoai(sim: RunningSimulator) -> openai.AsyncAzureOpenAI:
    return openai.AsyncAzureOpenAI(
        azure_endpoint=sim.url, api_key=TEST_API_KEY, api_version=API_VERSION, max_retries=0
    )


async def good_rate(client: openai.AsyncAzureOpenAI, deployment: str, topic: str) -> float:
    good = 0
    requests = 150
    for i in range(requests):
        completion = await client.chat.completions.create(
            model=deployment,
            messages=[{"role": "user", "content": f"Question {i}: my bill is wrong #{topic}"}],
        )
        good += verdict_of(completion.choices[0].message.content or "") is True
    return good / requests


# ---- end to end -------------------------------------------------------------------------------


async def test_submit_train_deploy_and_serve_better_on_the_trained_topic(
    sim: RunningSimulator,
    store: AzureBlobStore,
    backend: AzureOpenAIFineTuning,
    deployer: AzureOpenAIDeployer,
) -> None:
    spec = await make_spec(
        store,
        chat_jsonl(30),
        validation=chat_jsonl(10),
        hyperparameters={"n_epochs": 2, "lora_rank": 8},
        suffix="fabrikam v2",
    )
    external_id = await backend.submit(spec)
    assert external_id.startswith("ftjob-")
    assert await backend.submit(spec) == external_id  # a repeated submit finds the first job
    link = await store.read(names.JOBS_CONTAINER, link_blob_name("fabrikam", spec.job_id))
    assert link is not None
    assert JobLink.model_validate_json(link.data).fine_tuning_job == external_id

    states = await until_finished(backend, external_id)
    assert states[0] is BackendState.QUEUED
    assert states[-1] is BackendState.SUCCEEDED

    trained = await backend.outputs(external_id)
    assert trained.model.startswith(f"{BASE_MODEL}.ft-")
    assert trained.model.endswith("-fabrikam-v2")
    assert {"train_loss", "validation_loss", "trained_tokens"} <= set(trained.metrics)
    assert 0 < trained.metrics["train_loss"] < 2.5
    assert trained.lineage["base_model"] == BASE_MODEL
    assert trained.lineage["job_id"] == spec.job_id
    assert trained.lineage["dataset_sha256"] == spec.dataset_sha256
    assert trained.lineage["backend_job_id"] == external_id
    assert trained.lineage["n_epochs"] == "2"

    served = await deployer.deploy(trained, deployment="fabrikam-ft-v2", spec=spec)
    assert (served.kind, served.model, served.endpoint) == (
        "azure_openai",
        "fabrikam-ft-v2",
        "${AZURE_OPENAI_ENDPOINT}",
    )
    assert await deployer.deploy(trained, deployment="fabrikam-ft-v2", spec=spec) == served
    deployed = sim.simulator.deployment_config("fabrikam-ft-v2")
    assert deployed is not None
    assert deployed.tuned is not None
    assert deployed.tuned.examples_by_topic == {"billing": 30}
    assert deployed.tpm == 500_000

    async with aoai(sim) as client:
        tuned = await good_rate(client, "fabrikam-ft-v2", "billing")
        base = await good_rate(client, "gpt-4o-mini-pool-a", "billing")
        raw = await client.chat.completions.with_raw_response.create(
            model="fabrikam-ft-v2", messages=[{"role": "user", "content": "hello #legal"}]
        )
    # 0.5 + 0.4 on 30 >= 20 examples, capped at 0.95 -> 0.9 against the base's 0.5.
    assert tuned > base + 0.25, (tuned, base)
    assert float(raw.headers["x-sim-quality"]) == pytest.approx(0.6)  # untrained: the base's


async def test_a_bad_file_fails_the_job_with_the_reason(
    store: AzureBlobStore, backend: AzureOpenAIFineTuning
) -> None:
    few = await make_spec(store, chat_jsonl(4))
    broken = await make_spec(store, chat_jsonl(12) + b"\n{not json")
    few_id, broken_id = await backend.submit(few), await backend.submit(broken)
    assert (await until_finished(backend, few_id))[-1] is BackendState.FAILED
    assert (await until_finished(backend, broken_id))[-1] is BackendState.FAILED
    few_status, broken_status = await backend.status(few_id), await backend.status(broken_id)
    assert "at least 10 examples" in few_status.detail
    assert "invalid_n_examples" in few_status.detail
    assert "Invalid file format. Line 13" in broken_status.detail
    with pytest.raises(BackendError, match="has not succeeded") as err:
        await backend.outputs(few_id)
    assert not err.value.retryable


async def test_an_unknown_base_model_fails_the_job(
    store: AzureBlobStore, backend: AzureOpenAIFineTuning
) -> None:
    spec = await make_spec(store, chat_jsonl(12), base_model="davinci-002")
    external_id = await backend.submit(spec)
    assert (await until_finished(backend, external_id))[-1] is BackendState.FAILED
    assert "invalid_model" in (await backend.status(external_id)).detail


async def test_cancel_stops_a_job_and_is_a_no_op_once_finished(
    model_simulator_factory: SimulatorFactory, store: AzureBlobStore
) -> None:
    slow = await model_simulator_factory(simulator_config(running_s=600.0))
    backend = AzureOpenAIFineTuning.connect(slow.url, store, api_key=TEST_API_KEY)
    try:
        external_id = await backend.submit(await make_spec(store, chat_jsonl(12)))
        await backend.cancel(external_id)
        status = await backend.status(external_id)
        assert status.state is BackendState.CANCELLED
        await backend.cancel(external_id)  # finished: nothing happens
        with pytest.raises(BackendError, match="cancelled"):
            await backend.outputs(external_id)
    finally:
        await backend.close()


async def test_a_submit_that_stopped_before_linking_finds_its_job(
    sim: RunningSimulator, store: AzureBlobStore, backend: AzureOpenAIFineTuning
) -> None:
    spec = await make_spec(store, chat_jsonl(12))
    async with aoai(sim) as client:  # the first submit got this far, then its instance died
        uploaded = await client.files.create(file=("t.jsonl", chat_jsonl(12)), purpose="fine-tune")
        orphan = await client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=uploaded.id)
    link = JobLink(
        job_id=spec.job_id,
        tenant_id=spec.tenant_id,
        dataset_sha256=spec.dataset_sha256,
        training_file=uploaded.id,
    )
    name = link_blob_name(spec.tenant_id, spec.job_id)
    assert await store.create(names.JOBS_CONTAINER, name, link.model_dump_json().encode())
    assert await backend.submit(spec) == orphan.id
    assert await backend.submit(spec) == orphan.id


async def test_concurrent_submits_agree_on_one_job(
    sim: RunningSimulator, store: AzureBlobStore, backend: AzureOpenAIFineTuning
) -> None:
    spec = await make_spec(store, chat_jsonl(12))
    first, second = await asyncio.gather(backend.submit(spec), backend.submit(spec))
    assert first == second
    async with aoai(sim) as client:
        jobs = [j async for j in client.fine_tuning.jobs.list()]
        files = [f async for f in client.files.list(purpose="fine-tune")]
    assert [j.id for j in jobs if j.status != "cancelled"] == [first]  # a second one is cancelled
    assert len({j.training_file for j in jobs}) == 1  # both used the files linked first
    assert len(files) == 1  # the loser's upload was deleted


async def test_missing_or_changed_training_data_is_not_retryable(
    store: AzureBlobStore, backend: AzureOpenAIFineTuning
) -> None:
    spec = await make_spec(store, chat_jsonl(12))
    gone = TrainingSpec(**{**spec.__dict__, "train_blob": "training/fabrikam/none.jsonl"})
    with pytest.raises(BackendError, match="does not exist") as err:
        await backend.submit(gone)
    assert not err.value.retryable
    changed = TrainingSpec(**{**spec.__dict__, "dataset_sha256": "0" * 64})
    with pytest.raises(BackendError, match="changed"):
        await backend.submit(changed)


# ---- ARM, with the real management client -----------------------------------------------------


async def test_arm_deployments_take_base_models_and_refuse_unknown_ones(
    sim: RunningSimulator,
) -> None:
    credential = StaticCredential()
    async with CognitiveServicesManagementClient(
        credential, "sub-1", base_url=sim.url, retry_total=0
    ) as client:
        ops = client.deployments
        local: dict[str, Any] = {"enforce_https": False}
        body = Deployment(
            sku=Sku(name="Standard", capacity=2),
            properties=DeploymentProperties(
                model=DeploymentModel(format="OpenAI", name="gpt-4o-mini", version="2024-07-18")
            ),
        )
        poller = await ops.begin_create_or_update("rg", "acct", "mini-2", body, **local)
        created = await poller.result()
        assert created.properties is not None
        assert created.properties.provisioning_state == "Succeeded"
        got = await ops.get("rg", "acct", "mini-2", **local)
        assert got.sku is not None
        assert got.sku.capacity == 2
        names_listed = {d.name async for d in ops.list("rg", "acct", **local)}
        assert {"mini-2", "gpt-4o-mini-pool-a", "judge"} <= names_listed
        unknown = Deployment(
            sku=Sku(name="Standard", capacity=1),
            properties=DeploymentProperties(
                model=DeploymentModel(format="OpenAI", name="gpt-9", version="1")
            ),
        )
        with pytest.raises(HttpResponseError) as err:
            await ops.begin_create_or_update("rg", "acct", "nine", unknown, **local)
        assert err.value.status_code == 400
        assert err.value.error is not None
        assert err.value.error.code == "DeploymentModelNotSupported"
        delete = await ops.begin_delete("rg", "acct", "mini-2", **local)
        await delete.result()
        assert sim.simulator.deployment_config("mini-2") is None
    assert credential.scopes == [("https://management.azure.com/.default",)] * len(
        credential.scopes
    )
    async with aoai(sim) as http:
        raw = await http.chat.completions.with_raw_response.create(
            model="gpt-4o-mini-pool-a", messages=[{"role": "user", "content": "hi"}]
        )
    assert raw.headers["x-sim-deployment"] == "gpt-4o-mini-pool-a"


async def test_arm_needs_a_bearer_token(sim: RunningSimulator) -> None:
    import aiohttp

    url = (
        f"{sim.url}/subscriptions/s/resourceGroups/rg/providers/Microsoft.CognitiveServices/"
        "accounts/a/deployments/judge?api-version=2025-09-01"
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 401
        async with http.get(url, headers={"Authorization": "Bearer x"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["properties"]["provisioningState"] == "Succeeded"


async def test_the_deployer_refuses_a_name_that_serves_another_model(
    deployer: AzureOpenAIDeployer, store: AzureBlobStore
) -> None:
    spec = await make_spec(store, chat_jsonl(12))
    with pytest.raises(BackendError, match="already serves gpt-4o-mini") as err:
        await deployer.deploy(
            TrainedModel(model=f"{BASE_MODEL}.ft-x"), deployment="gpt-4o-mini-pool-a", spec=spec
        )
    assert not err.value.retryable
    with pytest.raises(BackendError, match="400") as err:
        await deployer.deploy(TrainedModel(model="nope"), deployment="new-one", spec=spec)
    assert not err.value.retryable


# ---- retries, at the HTTP transport -----------------------------------------------------------


JOB_BODY = {
    "id": "ftjob-abc",
    "object": "fine_tuning.job",
    "created_at": 1,
    "model": BASE_MODEL,
    "status": "running",
    "training_file": "file-1",
    "hyperparameters": {"n_epochs": 1},
    "organization_id": "org",
    "result_files": [],
    "seed": 1,
}


def mocked_backend(
    answers: list[httpx2.Response],
) -> tuple[AzureOpenAIFineTuning, list[float], list[httpx2.Request]]:
    waits: list[float] = []
    seen: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return answers.pop(0)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(answer))
    backend = AzureOpenAIFineTuning.connect(
        "https://aoai.example",
        MemoryBlobStore(),
        api_key="k",
        http_client=http,
        sleep=sleep,
        retry=RetrySettings(attempts=3, max_wait_s=10.0),
    )
    return backend, waits, seen


async def test_throttling_is_retried_after_the_servers_hint() -> None:
    backend, waits, seen = mocked_backend(
        [
            httpx2.Response(
                429, json={"error": {"code": "429"}}, headers={"retry-after-ms": "1500"}
            ),
            httpx2.Response(503, json={"error": {"code": "x"}}, headers={"retry-after": "60"}),
            httpx2.Response(200, json=JOB_BODY),
        ]
    )
    status = await backend.status("ftjob-abc")
    assert status.state is BackendState.RUNNING
    assert waits == [1.5, 10.0]  # the hint, then the hint capped at max_wait_s
    assert len(seen) == 3
    assert seen[0].url.path == "/openai/fine_tuning/jobs/ftjob-abc"


async def test_transient_failures_give_up_retryable_and_refusals_at_once() -> None:
    backend, waits, _ = mocked_backend([httpx2.Response(500, json={})] * 3)
    with pytest.raises(BackendError, match="HTTP 500") as err:
        await backend.status("ftjob-abc")
    assert err.value.retryable
    assert len(waits) == 2
    backend, waits, seen = mocked_backend(
        [httpx2.Response(404, json={"error": {"code": "NotFound", "message": "no such job"}})]
    )
    with pytest.raises(BackendError, match="no such job") as err:
        await backend.status("ftjob-nope")
    assert not err.value.retryable
    assert (waits, len(seen)) == ([], 1)


class Sequence(AzureTransport):
    """An azure-core transport that answers with one canned response after another (streamed
    too, as a long-running operation's first response is read)."""

    def __init__(self, answers: list[tuple[int, dict[str, Any], dict[str, str]]]) -> None:
        super().__init__(200, b"{}")
        self.answers = answers

    async def send(self, request: Any, **kwargs: Any) -> Any:
        status, body, headers = self.answers.pop(0)
        self.status, self.body = status, json.dumps(body).encode()
        self.headers = {"content-type": "application/json", **headers}
        response = await super().send(request, **kwargs)
        content = self.body

        async def chunks(*args: Any, **kw: Any) -> AsyncIterator[bytes]:
            yield content

        response._stream_download_generator = chunks
        return response


async def test_the_deployer_retries_throttled_arm_calls_after_the_hint() -> None:
    resource: Callable[[str], dict[str, Any]] = lambda model: {  # noqa: E731
        "name": "d",
        "sku": {"name": "Standard", "capacity": 1},
        "properties": {
            "model": {"format": "OpenAI", "name": model, "version": "1"},
            "provisioningState": "Succeeded",
        },
    }
    transport = Sequence(
        [
            (429, {"error": {"code": "TooManyRequests", "message": "slow"}}, {"Retry-After": "7"}),
            (404, {"error": {"code": "DeploymentNotFound", "message": "none"}}, {}),
            (201, resource("m.ft-1"), {}),
        ]
    )
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    client = CognitiveServicesManagementClient(
        StaticCredential(),
        "sub",
        base_url="https://management.example",
        transport=transport,
        retry_total=0,
    )
    deployer = AzureOpenAIDeployer(
        StaticCredential(), "sub", "rg", "acct", client=client, sleep=sleep
    )
    spec = TrainingSpec(
        job_id="ftj-1",
        tenant_id="t",
        base_deployment="b",
        base_model=BASE_MODEL,
        train_blob="training/t/x.jsonl",
        validation_blob=None,
        dataset_sha256="0" * 64,
    )
    try:
        served = await deployer.deploy(TrainedModel(model="m.ft-1"), deployment="d", spec=spec)
    finally:
        await deployer.close()
    assert served.model == "d"
    assert waits == [7.0]
    assert [r.method for r in transport.requests] == ["GET", "GET", "PUT"]
    put = json.loads(transport.requests[-1].content)
    assert put["properties"]["model"] == {"format": "OpenAI", "name": "m.ft-1", "version": "1"}
    assert put["sku"] == {"name": "Standard", "capacity": 1}


class NoToken(StaticCredential):
    """A credential whose token is empty: ARM (the simulator) answers 401."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("", int(time.time()) + 3600)


async def test_arm_auth_failures_are_retryable_for_role_propagation(
    sim: RunningSimulator,
) -> None:
    deployer = AzureOpenAIDeployer(NoToken(), "sub", "rg", "acct", base_url=sim.url)
    spec = TrainingSpec(
        job_id="ftj-2",
        tenant_id="t",
        base_deployment="b",
        base_model=BASE_MODEL,
        train_blob="training/t/x.jsonl",
        validation_blob=None,
        dataset_sha256="0" * 64,
    )
    try:
        with pytest.raises(BackendError, match="HTTP 401") as err:
            await deployer.deploy(TrainedModel(model="gpt-4o"), deployment="g4", spec=spec)
    finally:
        await deployer.close()
    assert err.value.retryable
    assert sim.simulator.deployment_config("g4") is None


async def test_a_job_create_whose_answer_is_lost_is_found_not_made_twice() -> None:
    created: list[httpx2.Request] = []
    jobs: list[dict[str, Any]] = []
    file_body = {
        "id": "file-t",
        "object": "file",
        "bytes": 1,
        "created_at": 1,
        "filename": "x.jsonl",
        "purpose": "fine-tune",
        "status": "processed",
    }

    def answer(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path == "/openai/files" and request.method == "POST":
            return httpx2.Response(200, json=file_body)
        if path == "/openai/files/file-t":
            return httpx2.Response(200, json=file_body)
        if path == "/openai/fine_tuning/jobs" and request.method == "GET":
            return httpx2.Response(200, json={"object": "list", "data": jobs, "has_more": False})
        if path == "/openai/fine_tuning/jobs" and request.method == "POST":
            created.append(request)
            jobs.append({**JOB_BODY, "training_file": "file-t"})  # made, but the answer is lost
            return httpx2.Response(502, json={"error": {"code": "BadGateway"}})
        return httpx2.Response(404, json={})

    async def sleep(seconds: float) -> None:
        return None

    store = MemoryBlobStore()
    data = chat_jsonl(12)
    await store.put(names.TRAINING_CONTAINER, "t/x.jsonl", data)
    spec = TrainingSpec(
        job_id="ftj-lost",
        tenant_id="t",
        base_deployment="b",
        base_model=BASE_MODEL,
        train_blob="training/t/x.jsonl",
        validation_blob=None,
        dataset_sha256=hashlib.sha256(data).hexdigest(),
        hyperparameters={"n_epochs": 3, "learning_rate_multiplier": 2},
        suffix="t/ü v2",
    )
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(answer))
    backend = AzureOpenAIFineTuning.connect(
        "https://aoai.example", store, api_key="k", http_client=http, sleep=sleep
    )
    with pytest.raises(BackendError, match="HTTP 502") as err:
        await backend.submit(spec)
    assert err.value.retryable
    assert len(created) == 1  # not retried in place
    sent = json.loads(created[0].content)
    assert sent["model"] == BASE_MODEL
    assert sent["hyperparameters"] == {"n_epochs": 3, "learning_rate_multiplier": 2.0}
    assert sent["suffix"] == "t---v2"
    assert isinstance(sent["seed"], int)
    assert await backend.submit(spec) == "ftjob-abc"  # found by its training file
    assert len(created) == 1
