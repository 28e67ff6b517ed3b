"""The inference handler writing to Azurite (real blob SDK), with a scripted model.

Results, idempotency, usage lines and a rejection record for each kind of bad input, read back
with a plain BlobServiceClient as an operator would.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob.aio import BlobServiceClient

from devhost.azurite import Azurite
from shared.contracts import RejectionReason
from shared.inference.handler import Outcome, handle_inference_request
from shared.inference.model_errors import ModelRateLimited
from shared.inference.results import REPLY_SENT_AT
from shared.messages import InboundMessage
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import AzureBlobStore
from shared.tenancy.registry import read_registry_file
from shared.tenancy.registry_source import RegistrySource, StaticRegistry
from shared.tenancy.routing import Router
from tests.fakes import RecordingReplySender, ScriptedModel, fixed_clock

ROOT = Path(__file__).resolve().parents[2]
ENV = {"AZURE_OPENAI_ENDPOINT": "https://aoai.example"}  # phi-4-pool unusable: no AI endpoint
DAY = fixed_clock().date().isoformat()


@pytest.fixture
async def runtime(azurite: Azurite) -> AsyncIterator[Runtime]:
    rt = Runtime(
        store=AzureBlobStore.from_connection_string(azurite.connection_string),
        registry=StaticRegistry(read_registry_file(ROOT / "devhost" / "registry.json", env=ENV)),
        models=ScriptedModel(),
        replies=RecordingReplySender(),
        router=Router(random.Random(5)),
        clock=fixed_clock,
    )
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def blobs(azurite: Azurite) -> AsyncIterator[BlobServiceClient]:
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        yield service


async def read_json(service: BlobServiceClient, container: str, name: str) -> Any:
    downloader = await service.get_blob_client(container, name).download_blob()
    return json.loads(await downloader.readall())


async def usage_lines(service: BlobServiceClient, tenant: str, request_id: str) -> list[Any]:
    blob = service.get_blob_client(names.USAGE_CONTAINER, f"{tenant}/{DAY}.jsonl")
    text = (await (await blob.download_blob()).readall()).decode()
    lines = [json.loads(line) for line in text.splitlines()]
    return [line for line in lines if line["request_id"] == request_id]  # the blob is shared


def request(tenant: str = "tailwind", **changes: Any) -> tuple[str, InboundMessage]:
    request_id = f"r-{uuid.uuid4().hex}"
    body = {
        "tenant_id": tenant,
        "request_id": request_id,
        "messages": [{"role": "user", "content": "what is the capital of France?"}],
        **changes,
    }
    msg = InboundMessage(body=json.dumps(body).encode(), message_id=f"m-{uuid.uuid4().hex}")
    return request_id, msg


async def test_result_and_usage_are_written(runtime: Runtime, blobs: BlobServiceClient) -> None:
    request_id, msg = request("contoso", feature="support")
    assert await handle_inference_request(msg, runtime) is Outcome.COMPLETED

    result = await read_json(blobs, names.RESULTS_CONTAINER, f"contoso/{request_id}.json")
    assert result["request_id"] == request_id
    assert result["deployment"] == "contoso-gpt-4o"
    assert result["message"]["content"] == "ok"
    props = await blobs.get_blob_client(
        names.RESULTS_CONTAINER, f"contoso/{request_id}.json"
    ).get_blob_properties()
    assert props.content_settings.content_type == "application/json"

    [usage] = await usage_lines(blobs, "contoso", request_id)
    assert usage["deployment"] == "contoso-gpt-4o"
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (11, 7)
    assert usage["feature"] == "support"


async def test_usage_lines_accumulate_in_one_append_blob(
    runtime: Runtime, blobs: BlobServiceClient
) -> None:
    ids = []
    for _ in range(3):
        request_id, msg = request("fabrikam")
        ids.append(request_id)
        await handle_inference_request(msg, runtime)
    blob = blobs.get_blob_client(names.USAGE_CONTAINER, f"fabrikam/{DAY}.jsonl")
    props = await blob.get_blob_properties()
    assert props.blob_type == "AppendBlob"
    for request_id in ids:
        [line] = await usage_lines(blobs, "fabrikam", request_id)
        assert line["deployment"] == "fabrikam-ft-v1"


async def test_a_second_handling_makes_no_model_call(
    runtime: Runtime, blobs: BlobServiceClient
) -> None:
    model = runtime.models
    assert isinstance(model, ScriptedModel)
    request_id, msg = request()
    assert await handle_inference_request(msg, runtime) is Outcome.COMPLETED
    assert await handle_inference_request(msg, runtime) is Outcome.DUPLICATE
    assert len(model.calls) == 1
    assert len(await usage_lines(blobs, "tailwind", request_id)) == 1


async def test_a_missed_reply_is_resent_from_the_stored_result(
    runtime: Runtime, blobs: BlobServiceClient
) -> None:
    replies = runtime.replies
    assert isinstance(replies, RecordingReplySender)
    replies.failures.append(ConnectionError("bus unreachable"))
    request_id, msg = request()
    msg = InboundMessage(body=msg.body, message_id=msg.message_id, reply_to=names.INFERENCE_RESULTS)
    with pytest.raises(ConnectionError):
        await handle_inference_request(msg, runtime)
    assert await handle_inference_request(msg, runtime) is Outcome.DUPLICATE
    [reply] = replies.sent
    assert reply.correlation_id == request_id
    name = f"tailwind/{request_id}.json"
    stored = await (
        await blobs.get_blob_client(names.RESULTS_CONTAINER, name).download_blob()
    ).readall()
    assert reply.body == stored
    props = await blobs.get_blob_client(names.RESULTS_CONTAINER, name).get_blob_properties()
    assert REPLY_SENT_AT in props.metadata


async def test_a_request_rescheduled_by_throttling_leaves_nothing_behind(
    runtime: Runtime, blobs: BlobServiceClient
) -> None:
    model = runtime.models
    assert isinstance(model, ScriptedModel)
    for _ in range(2):  # both of tailwind's usable deployments ask for a minute
        model.failures.append(
            ModelRateLimited("429", deployment="d", status_code=429, retry_after_s=60)
        )
    request_id, msg = request()
    assert await handle_inference_request(msg, runtime) is Outcome.RESCHEDULED
    found = [
        b.name
        async for b in blobs.get_container_client(names.RESULTS_CONTAINER).list_blobs(
            name_starts_with=f"tailwind/{request_id}"
        )
    ]
    assert found == []


def raw(body: bytes) -> InboundMessage:
    return InboundMessage(body=body, message_id=f"m-{uuid.uuid4().hex}", delivery_count=1)


def doc(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("msg", "prefix", "reason"),
    [
        (raw(b"\x00not json"), "_unknown", RejectionReason.INVALID_JSON),
        (raw(doc(tenant_id="tailwind", messages=MESSAGES)), "tailwind", "invalid_request"),
        (
            raw(doc(tenant_id="initech", request_id="r", messages=MESSAGES)),
            "_unknown",
            "unknown_tenant",
        ),
        (
            raw(doc(tenant_id="tailwind", request_id="r", messages=MESSAGES, type="x")),
            "tailwind",
            "unsupported_type",
        ),
    ],
    ids=["invalid-json", "missing-field", "unknown-tenant", "wrong-type"],
)
async def test_bad_input_leaves_a_rejection_record(
    runtime: Runtime, blobs: BlobServiceClient, msg: InboundMessage, prefix: str, reason: str
) -> None:
    assert await handle_inference_request(msg, runtime) is Outcome.REJECTED
    record = await read_json(blobs, names.REJECTED_CONTAINER, f"{prefix}/{msg.message_id}.json")
    assert record["reason"] == reason
    assert record["message_id"] == msg.message_id
    assert record["detail"]


async def test_a_tenant_without_a_usable_deployment_is_rejected(
    azurite: Azurite, blobs: BlobServiceClient
) -> None:
    registry = read_registry_file(ROOT / "devhost" / "registry.json", env={})
    runtime = Runtime(
        store=AzureBlobStore.from_connection_string(azurite.connection_string),
        registry=StaticRegistry(registry),
        models=ScriptedModel(),
        replies=RecordingReplySender(),
        clock=fixed_clock,
    )
    try:
        _, msg = request("contoso")
        assert await handle_inference_request(msg, runtime) is Outcome.REJECTED
    finally:
        await runtime.close()
    record = await read_json(blobs, names.REJECTED_CONTAINER, f"contoso/{msg.message_id}.json")
    assert record["reason"] == RejectionReason.NO_USABLE_DEPLOYMENT


async def test_the_registry_can_live_in_a_blob(azurite: Azurite, blobs: BlobServiceClient) -> None:
    text = (ROOT / "devhost" / "registry.json").read_bytes()
    name = f"registry-{uuid.uuid4().hex}.json"
    await blobs.get_blob_client(names.CONFIG_CONTAINER, name).upload_blob(text)
    store = AzureBlobStore.from_connection_string(azurite.connection_string)
    try:
        source = RegistrySource(f"blob://{names.CONFIG_CONTAINER}/{name}", store, env=ENV)
        registry = await source.get()
    finally:
        await store.close()
    assert {t.id for t in registry.tenants} == {"tailwind", "contoso", "fabrikam"}
