"""Feedback and drift over the real storage SDK against Azurite, answers from the simulator.

Two runtimes (as two Function instances) share one storage account: feedback from both lands,
their racing drift evaluations count every rating once (ETag concurrency on the state blob), and
the decay yields one drift event and one fine-tune request between them.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.storage.blob.aio import BlobServiceClient

from devhost.azurite import Azurite
from devhost.models import RunningSimulator
from shared.contracts import FinetuneRequest
from shared.drift.monitor import DriftState, state_name
from shared.feedback.handler import FeedbackOutcome
from shared.feedback.inference_log import model_key
from shared.feedback.store import Rating
from shared.inference.handler import Outcome, handle_inference_request
from shared.inference.model_clients import ModelClients
from shared.messages import InboundMessage
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import AzureBlobStore
from shared.tenancy.registry import parse_registry
from shared.tenancy.registry_source import StaticRegistry
from tests.fakes import RecordingReplySender

DEPLOYMENT = "gpt-4o-mini-pool-a"
KEY = model_key(DEPLOYMENT, "2024-07-18")


def registry_doc(tenant: str, sim_url: str) -> dict[str, Any]:
    return {
        "version": 1,
        "deployments": [
            {
                "name": DEPLOYMENT,
                "kind": "azure_openai",
                "mode": "pooled",
                "endpoint": sim_url,
                "model_version": "2024-07-18",
                "capacity": {"tokens_per_minute": 1_000_000},
            }
        ],
        "tenants": [
            {
                "id": tenant,
                "mode": "pooled",
                "policy": {
                    "log_prompts": True,
                    "share_for_training": True,
                    "allow_tuning": True,
                    "min_training_examples": 10,
                },
            }
        ],
    }


@pytest.fixture
async def two_instances(
    azurite: Azurite, model_simulator: RunningSimulator
) -> AsyncIterator[tuple[str, Runtime, Runtime, RecordingReplySender]]:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    registry = StaticRegistry(parse_registry(json.dumps(registry_doc(tenant, model_simulator.url))))
    replies = RecordingReplySender()
    runtimes = [
        Runtime(
            store=AzureBlobStore.from_connection_string(azurite.connection_string),
            registry=registry,
            models=ModelClients(api_key="sim-key", timeout_s=10),
            replies=replies,
            drift_check_every=1_000_000,
        )
        for _ in range(2)
    ]
    try:
        yield tenant, runtimes[0], runtimes[1], replies
    finally:
        for rt in runtimes:
            await rt.close()


async def answer(rt: Runtime, tenant: str, request_id: str) -> None:
    body = {
        "tenant_id": tenant,
        "request_id": request_id,
        "messages": [{"role": "user", "content": f"#billing question {request_id}"}],
        "parameters": {"max_tokens": 16},
        "feature": "billing",
    }
    message = InboundMessage(body=json.dumps(body).encode(), message_id=request_id)
    assert await handle_inference_request(message, rt) is Outcome.COMPLETED


async def test_feedback_and_racing_drift_evaluations_through_azurite(
    two_instances: tuple[str, Runtime, Runtime, RecordingReplySender], azurite: Azurite
) -> None:
    tenant, one, two, replies = two_instances
    for i in range(12):
        rt = one if i % 2 else two
        await answer(rt, tenant, f"r-{i}")
        body = json.dumps({"tenant_id": tenant, "request_id": f"r-{i}", "rating": "up"}).encode()
        result = await rt.feedback.handle_http(tenant, body)
        assert result.outcome is FeedbackOutcome.RECORDED, result

    rng = random.Random(3)
    scores = [float(rng.random() < 0.9) for _ in range(600)]
    scores += [float(rng.random() < 0.35) for _ in range(300)]
    for start in range(0, len(scores), 100):
        await asyncio.gather(
            *(
                one.feedback_store.append_rating(
                    tenant, KEY, Rating(f"s-{i}", scores[i], one.clock())
                )
                for i in range(start, start + 100)
            )
        )
        await asyncio.gather(one.drift.evaluate(tenant, KEY), two.drift.evaluate(tenant, KEY))

    store = AzureBlobStore.from_connection_string(azurite.connection_string)
    try:
        state_blob = await store.read(names.DRIFT_CONTAINER, state_name(tenant, KEY))
    finally:
        await store.close()
    assert state_blob is not None
    state = DriftState.model_validate_json(state_blob.data)
    assert state.ratings_total == 12 + len(scores)  # none lost, none counted twice
    requests = [
        FinetuneRequest.model_validate_json(r.body)
        for r in replies.sent
        if r.queue == names.FINETUNE_JOBS
    ]
    assert len({r.job_key for r in requests}) == 1
    [request] = requests[:1]
    assert request.scope == "shared"
    assert request.tenants_in_dataset == (tenant,)
    assert request.dataset.examples == 12

    async with BlobServiceClient.from_connection_string(azurite.connection_string) as blobs:
        container = blobs.get_container_client(names.DRIFT_CONTAINER)
        report_names = [n async for n in container.list_blob_names(name_starts_with=f"{tenant}/")]
    assert any(n.endswith(".png") for n in report_names)
    assert any(n.endswith(".json") and "/state/" not in n for n in report_names)
