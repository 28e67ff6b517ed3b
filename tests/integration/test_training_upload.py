"""Training uploads through the handler with Azurite (the real blob SDK, streamed and ETag-pinned
reads, staged-block writes) and the real PII scrubber.

Each test uses a tenant of its own (the emulator is shared by the session, and a tenant's pool,
cool-down record and index are per tenant), added to the devhost registry: a tuned tenant not
tuned yet (served by the pooled deployments; `tenant` scope), allowed to keep text and to tune.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from devhost.azurite import Azurite
from shared.batch.files import AzureBatchFiles
from shared.contracts import FinetuneRequest
from shared.feedback.consent import Consent
from shared.finetune.training_intake import TrainingUploads, record_name, rejection_name
from shared.finetune.training_pool import PoolIndex, index_name
from shared.finetune.uploads import handle_training_upload
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import AzureBlobStore
from shared.tenancy.registry import Registry, parse_registry
from shared.tenancy.registry_source import StaticRegistry
from shared.tenancy.routing import Router
from tests.fakes import RecordingReplySender, ScriptedModel, fixed_clock

DEVHOST_REGISTRY = Path(__file__).resolve().parents[2] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}
SECRET = "my password is hunter2"
POLICY = {
    "log_prompts": True,
    "allow_tuning": True,
    "min_training_examples": 20,
    "tuning_cooldown_hours": 24,
}


def registry_with(tenant_id: str) -> Registry:
    document = json.loads(DEVHOST_REGISTRY.read_text())
    document["tenants"].append({"id": tenant_id, "mode": "tuned", "policy": POLICY})
    return parse_registry(json.dumps(document), env=ENV)


@pytest.fixture
def tenant() -> str:
    return f"up-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def replies() -> RecordingReplySender:
    return RecordingReplySender()


@pytest.fixture
async def runtime(
    azurite: Azurite, tenant: str, replies: RecordingReplySender
) -> AsyncIterator[Runtime]:
    rt = Runtime(
        store=AzureBlobStore.from_connection_string(azurite.connection_string),
        registry=StaticRegistry(registry_with(tenant)),
        models=ScriptedModel(),
        replies=replies,
        router=Router(random.Random(5)),
        clock=fixed_clock,
    )
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def blobs(azurite: Azurite) -> AsyncIterator[BlobServiceClient]:
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


def example(i: int) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "You answer for the tenant. " + "Be brief. " * 20},
                {"role": "user", "content": f"Question {i}: write to jane.doe{i}@example.com"},
                {"role": "assistant", "content": f"Answer {i}"},
            ]
        }
    )


async def put(blobs: BlobServiceClient, name: str, data: bytes) -> str:
    await blobs.get_blob_client(names.UPLOADS_CONTAINER, name).upload_blob(
        data, overwrite=True, content_settings=ContentSettings(content_type="application/x-ndjson")
    )
    return name


async def download(blobs: BlobServiceClient, container: str, name: str) -> bytes:
    downloader = await blobs.get_blob_client(container, name).download_blob()
    return await downloader.readall()


async def listed(blobs: BlobServiceClient, container: str, prefix: str) -> list[str]:
    client = blobs.get_container_client(container)
    return sorted([n async for n in client.list_blob_names(name_starts_with=prefix)])


async def test_an_upload_is_pooled_scrubbed_reported_and_asks_for_one_finetune(
    runtime: Runtime, replies: RecordingReplySender, blobs: BlobServiceClient, tenant: str
) -> None:
    rows = [example(i) for i in range(1200)]  # about 400 KB: more than one 256 KiB chunk
    rows[3] = "not json " + SECRET
    rows[700] = json.dumps({"messages": [{"role": "user", "content": SECRET}]})
    name = f"{tenant}/training/{uuid.uuid4().hex}.jsonl"
    data = ("\n".join(rows) + "\n").encode()
    assert len(data) > 256 * 1024
    await put(blobs, name, b"\xef\xbb\xbf" + data)  # with the BOM Azure OpenAI asks for

    await handle_training_upload(f"{names.UPLOADS_CONTAINER}/{name}", runtime)

    index = PoolIndex.model_validate_json(
        await download(blobs, names.TRAINING_CONTAINER, index_name(tenant))
    )
    [entry] = index.entries
    assert (entry.examples, entry.parts) == (1198, 2)
    record = json.loads(
        await download(blobs, names.TRAINING_CONTAINER, record_name(tenant, entry.upload_id))
    )
    assert (record["state"], record["rows"], record["kept"], record["invalid"]) == (
        "pooled",
        1200,
        1198,
        2,
    )
    assert record["pii_removed"] == {"email": 1198}
    errors = [
        json.loads(line)
        for line in (
            await download(
                blobs, names.REJECTED_CONTAINER, rejection_name(tenant, name, entry.upload_id)
            )
        ).splitlines()
    ]
    assert [(e["line"], e["reason"]) for e in errors] == [
        (4, "invalid_json"),
        (701, "invalid_example"),
    ]
    assert "hunter2" not in json.dumps(errors)
    parts = await listed(blobs, names.TRAINING_CONTAINER, f"{tenant}/pool/{entry.upload_id}/")
    pooled: list[dict[str, Any]] = []
    for part in parts:
        text = (await download(blobs, names.TRAINING_CONTAINER, part)).decode()
        pooled += [json.loads(line) for line in text.splitlines()]
    assert len(pooled) == 1198
    assert "@example.com" not in json.dumps(pooled)
    assert pooled[0]["messages"][1]["content"] == "Question 0: write to <EMAIL>"

    [reply] = replies.sent
    request = FinetuneRequest.model_validate_json(reply.body)
    assert reply.queue == names.FINETUNE_JOBS
    assert reply.message_id == request.job_key
    assert request.reason.kind == "training_upload"
    assert request.current.deployment == request.base.deployment == "gpt-4o-mini-pool-a"
    training = await download(blobs, *request.dataset.blob.split("/", 1))
    assert hashlib.sha256(training).hexdigest() == request.dataset.sha256
    assert [json.loads(line) for line in training.splitlines()] == pooled
    manifest = json.loads(await download(blobs, *request.dataset.manifest.split("/", 1)))
    assert (manifest["examples"], manifest["tenants"]) == (1198, [tenant])
    assert manifest["sha256"] == request.dataset.sha256

    # the trigger fired again for the same version: nothing pooled twice, nothing sent again
    before = await listed(blobs, names.TRAINING_CONTAINER, f"{tenant}/")
    await handle_training_upload(name, runtime)
    assert await listed(blobs, names.TRAINING_CONTAINER, f"{tenant}/") == before
    assert len(replies.sent) == 1


async def test_a_file_that_is_not_utf8_is_refused_whole(
    runtime: Runtime, replies: RecordingReplySender, blobs: BlobServiceClient, tenant: str
) -> None:
    name = f"{tenant}/training/{uuid.uuid4().hex}.jsonl"
    await put(blobs, name, ("\n".join(example(i) for i in range(30)) + "\n").encode("utf-16"))
    await handle_training_upload(name, runtime)

    [record_blob] = await listed(blobs, names.TRAINING_CONTAINER, f"{tenant}/uploads/")
    record = json.loads(await download(blobs, names.TRAINING_CONTAINER, record_blob))
    assert record["state"] == "rejected"
    [rejection] = (await download(blobs, *record["rejections_blob"].split("/", 1))).splitlines()
    assert json.loads(rejection)["reason"] == "not_utf8"
    assert json.loads(rejection)["line"] is None
    assert await listed(blobs, names.TRAINING_CONTAINER, f"{tenant}/pool/") == []
    assert replies.sent == []


class ReplacingFiles(AzureBatchFiles):
    """Replaces the upload after the first chunk of the second pass (the pooling pass) was read."""

    def __init__(self, service: BlobServiceClient) -> None:
        super().__init__(service, chunk_bytes=4096)
        self.service = service
        self.passes = 0

    async def chunks(self, container: str, name: str, etag: str) -> AsyncIterator[bytes]:
        self.passes += 1
        first = True
        async for chunk in super().chunks(container, name, etag):
            yield chunk
            if first and self.passes == 2:
                await self.service.get_blob_client(container, name).upload_blob(
                    b"{}\n", overwrite=True
                )
            first = False


async def test_an_upload_replaced_while_it_is_read_is_refused_and_not_pooled(
    azurite: Azurite, blobs: BlobServiceClient, tenant: str
) -> None:
    store = AzureBlobStore.from_connection_string(azurite.connection_string)
    replies = RecordingReplySender()
    intake = TrainingUploads(
        store=store,
        files=ReplacingFiles(blobs),
        registry=StaticRegistry(registry_with(tenant)),
        consent=Consent(),
        sender=replies,
        clock=fixed_clock,
    )
    try:
        name = await put(
            blobs,
            f"{tenant}/training/{uuid.uuid4().hex}.jsonl",
            ("\n".join(example(i) for i in range(40)) + "\n").encode(),
        )
        record = await intake.take(name)
    finally:
        await store.close()
    assert record is not None
    assert record.state == "rejected"
    assert record.rejection is not None
    assert record.rejection.reason == "upload_replaced"
    assert await listed(blobs, names.TRAINING_CONTAINER, index_name(tenant)) == []
    assert replies.sent == []
