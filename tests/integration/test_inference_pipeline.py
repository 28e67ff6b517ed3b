"""The whole inference path over real HTTP: handler -> router -> openai / azure-ai-inference SDK
clients -> the model simulator, with results and usage in Azurite.

The simulator's /admin/stats (per deployment, per tenant, from the x-tenant-id header) proves
where each request went.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob.aio import BlobServiceClient

from devhost.azurite import Azurite
from devhost.models import RunningSimulator
from shared.inference.handler import Outcome, handle_inference_request
from shared.inference.model_clients import ModelClients
from shared.messages import InboundMessage
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import AzureBlobStore
from shared.tenancy.registry import parse_registry
from shared.tenancy.registry_source import RegistrySource, StaticRegistry
from shared.tenancy.routing import Router
from tests.fakes import RecordingReplySender

ROOT = Path(__file__).resolve().parents[2]
REGISTRY_PATH = ROOT / "devhost" / "registry.json"
RuntimeFactory = Callable[..., Runtime]


def endpoints(sim: RunningSimulator) -> dict[str, str]:
    return {"AZURE_OPENAI_ENDPOINT": sim.url, "AZURE_AI_SERVICES_ENDPOINT": f"{sim.url}/models"}


@pytest.fixture
async def make_runtime(
    azurite: Azurite, model_simulator: RunningSimulator
) -> AsyncIterator[RuntimeFactory]:
    built: list[Runtime] = []

    def make(registry_doc: dict[str, Any] | None = None, *, timeout_s: float = 10.0) -> Runtime:
        env = endpoints(model_simulator)
        registry = (
            StaticRegistry(parse_registry(json.dumps(registry_doc), env=env))
            if registry_doc is not None
            else RegistrySource(str(REGISTRY_PATH), None, env=env)
        )
        rt = Runtime(
            store=AzureBlobStore.from_connection_string(azurite.connection_string),
            registry=registry,
            models=ModelClients(api_key="sim-key", timeout_s=timeout_s),
            replies=RecordingReplySender(),
            router=Router(random.Random(11)),
        )
        built.append(rt)
        return rt

    try:
        yield make
    finally:
        for rt in built:
            await rt.close()


@pytest.fixture
async def blobs(azurite: Azurite) -> AsyncIterator[BlobServiceClient]:
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        yield service


def request(tenant: str, max_tokens: int = 16) -> tuple[str, InboundMessage]:
    request_id = f"r-{uuid.uuid4().hex}"
    body = {
        "tenant_id": tenant,
        "request_id": request_id,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Which plan includes priority support?"},
        ],
        "parameters": {"max_tokens": max_tokens, "temperature": 0.1},
    }
    msg = InboundMessage(
        body=json.dumps(body).encode(),
        message_id=f"m-{uuid.uuid4().hex}",
        reply_to=names.INFERENCE_RESULTS,
        reply_to_session_id=tenant,
    )
    return request_id, msg


def served(sim: RunningSimulator) -> dict[str, dict[str, int]]:
    """{tenant: {deployment: ok calls}} from the simulator's own stats."""
    out: dict[str, dict[str, int]] = {}
    for tenant, cell in sim.stats()["tenants"].items():
        out[tenant] = {d: c["ok"] for d, c in cell["deployments"].items() if c["ok"]}
    return out


async def read_json(service: BlobServiceClient, container: str, name: str) -> Any:
    downloader = await service.get_blob_client(container, name).download_blob()
    return json.loads(await downloader.readall())


async def test_each_tenant_reaches_only_its_deployments(
    make_runtime: RuntimeFactory, model_simulator: RunningSimulator, blobs: BlobServiceClient
) -> None:
    runtime = make_runtime()
    done: dict[str, list[str]] = {}
    for tenant in ("tailwind", "contoso", "fabrikam"):
        for _ in range(12):
            request_id, msg = request(tenant)
            assert await handle_inference_request(msg, runtime) is Outcome.COMPLETED
            done.setdefault(tenant, []).append(request_id)

    by_tenant = served(model_simulator)
    assert set(by_tenant["tailwind"]) <= {"gpt-4o-mini-pool-a", "gpt-4o-mini-pool-b"}
    assert sum(by_tenant["tailwind"].values()) == 12
    assert by_tenant["contoso"] == {"contoso-gpt-4o": 12}
    assert by_tenant["fabrikam"] == {"fabrikam-ft-v1": 12}

    # The stored result names the deployment the simulator saw, and the model it reported.
    result = await read_json(blobs, names.RESULTS_CONTAINER, f"fabrikam/{done['fabrikam'][0]}.json")
    assert result["deployment"] == "fabrikam-ft-v1"
    assert result["model"] == "gpt-4o-mini-2024-07-18.ft-fabrikam-v1"
    assert result["message"]["content"]
    assert result["usage"]["completion_tokens"] <= 16

    # Replies went out, one per request, correlated by request id, in the tenant's session.
    replies = runtime.replies
    assert isinstance(replies, RecordingReplySender)
    assert [r.correlation_id for r in replies.sent if r.session_id == "contoso"] == done["contoso"]


async def test_pooled_traffic_spreads_by_capacity_over_http(
    make_runtime: RuntimeFactory, model_simulator: RunningSimulator
) -> None:
    runtime = make_runtime()
    for _ in range(90):
        _, msg = request("tailwind", max_tokens=4)
        await handle_inference_request(msg, runtime)
    tailwind = served(model_simulator)["tailwind"]
    assert tailwind["gpt-4o-mini-pool-a"] > tailwind["gpt-4o-mini-pool-b"] > 10  # 2:1 TPM


async def test_usage_matches_what_the_simulator_counted(
    make_runtime: RuntimeFactory, model_simulator: RunningSimulator, blobs: BlobServiceClient
) -> None:
    runtime = make_runtime()
    request_id, msg = request("contoso")
    await handle_inference_request(msg, runtime)
    day = runtime.clock().date().isoformat()
    blob = blobs.get_blob_client(names.USAGE_CONTAINER, f"contoso/{day}.jsonl")
    lines = [json.loads(x) for x in (await (await blob.download_blob()).readall()).splitlines()]
    [mine] = [x for x in lines if x["request_id"] == request_id]
    counted = model_simulator.stats()["deployments"]["contoso-gpt-4o"]
    assert (mine["prompt_tokens"], mine["completion_tokens"]) == (
        counted["prompt_tokens"],
        counted["completion_tokens"],
    )
    assert mine["latency_ms"] >= 0


async def test_ai_inference_deployments_are_served_through_the_models_endpoint(
    make_runtime: RuntimeFactory, model_simulator: RunningSimulator, blobs: BlobServiceClient
) -> None:
    doc = json.loads(REGISTRY_PATH.read_text())
    tailwind = next(t for t in doc["tenants"] if t["id"] == "tailwind")
    tailwind["deployments"] = ["phi-4-pool"]
    runtime = make_runtime(doc)
    request_id, msg = request("tailwind")
    assert await handle_inference_request(msg, runtime) is Outcome.COMPLETED
    assert served(model_simulator) == {"tailwind": {"phi-4-pool": 1}}
    result = await read_json(blobs, names.RESULTS_CONTAINER, f"tailwind/{request_id}.json")
    assert (result["deployment"], result["model"]) == ("phi-4-pool", "Phi-4")
    assert result["finish_reason"] in {"stop", "length"}


async def test_a_redelivered_request_is_not_sent_to_the_model_again(
    make_runtime: RuntimeFactory, model_simulator: RunningSimulator
) -> None:
    runtime = make_runtime()
    _, msg = request("contoso")
    assert await handle_inference_request(msg, runtime) is Outcome.COMPLETED
    assert await handle_inference_request(msg, runtime) is Outcome.DUPLICATE
    assert model_simulator.stats()["totals"]["requests"] == 1


@pytest.mark.parametrize(
    ("tenant", "deployment"),
    [("contoso", "contoso-gpt-4o"), ("phi", "phi-4-pool")],
    ids=["azure_openai", "ai_inference"],
)
@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "429", "retry_after_s": 3},
        {"kind": "503"},
        {"kind": "500"},
        {"kind": "disconnect"},
        {"kind": "timeout", "hang_s": 5},
    ],
    ids=["429", "503", "500", "disconnect", "timeout"],
)
async def test_a_transient_failure_is_retried_within_the_delivery_and_succeeds(
    *,
    make_runtime: RuntimeFactory,
    model_simulator: RunningSimulator,
    blobs: BlobServiceClient,
    tenant: str,
    deployment: str,
    fault: dict[str, Any],
) -> None:
    """The only deployment fails once (each kind of transient failure, through each SDK): the
    resilience layer retries it, honouring a 429's retry-after, in the same delivery; the SDKs'
    own retries stay off (one SDK call per attempt)."""
    doc = json.loads(REGISTRY_PATH.read_text())
    if tenant == "phi":
        next(t for t in doc["tenants"] if t["id"] == "tailwind")["deployments"] = ["phi-4-pool"]
        tenant = "tailwind"
    runtime = make_runtime(doc, timeout_s=0.5)
    model_simulator.add_fault(deployment, {**fault, "count": 1})
    request_id, msg = request(tenant)

    started = time.monotonic()
    assert await handle_inference_request(msg, runtime) is Outcome.COMPLETED
    if fault["kind"] == "429":
        assert time.monotonic() - started >= 3  # the retry-after was waited out
    failed = runtime.resilient.stats
    assert (failed["calls"], failed["retries"], failed["succeeded"]) == (2, 1, 1)
    container = blobs.get_container_client(names.RESULTS_CONTAINER)
    prefix = f"{tenant}/{request_id}"
    assert [b.name async for b in container.list_blobs(name_starts_with=prefix)] == [
        f"{prefix}.json"
    ]
    stats = model_simulator.stats()["deployments"][deployment]
    assert (stats["faults"], stats["ok"]) == (1, 1)  # one SDK call per attempt: no SDK retries
