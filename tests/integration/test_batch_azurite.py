"""Batch uploads through the handlers with Azurite (the real blob SDK) and the inference handler.

Each test uploads its own file (unique names: the emulator is shared by the session), runs the
blob trigger's handler, feeds every row message to the real inference handler with a scripted
model, and reads the results and errors files back with a plain BlobServiceClient.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from devhost.azurite import Azurite
from shared.batch.files import AzureBatchFiles, UploadChanged
from shared.batch.handlers import batch_progress_response, handle_batch_upload
from shared.batch.policy import BatchPolicy
from shared.contracts.batch import BatchProgress
from shared.inference.handler import handle_inference_request
from shared.inference.model_errors import ModelRequestRejected
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import AzureBlobStore
from shared.tenancy.registry_source import StaticRegistry
from shared.tenancy.routing import Router
from tests.fakes import RecordingReplySender, ScriptedModel, fixed_clock
from tests.unit.batch.helpers import SECRET, RecordingRowSender, as_inbound, row, unlimited_registry


@pytest.fixture
def sender() -> RecordingRowSender:
    return RecordingRowSender()


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
async def runtime(
    azurite: Azurite, sender: RecordingRowSender, model: ScriptedModel
) -> AsyncIterator[Runtime]:
    rt = Runtime(
        store=AzureBlobStore.from_connection_string(azurite.connection_string),
        registry=StaticRegistry(unlimited_registry()),
        models=model,
        replies=RecordingReplySender(),
        router=Router(random.Random(5)),
        clock=fixed_clock,
        row_sender=sender,
        batch_policy=BatchPolicy(max_upload_bytes=64 * 1024, send_rows=50),
    )
    try:
        yield rt
    finally:
        await rt.close()


@pytest.fixture
async def blobs(azurite: Azurite) -> AsyncIterator[BlobServiceClient]:
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        yield client


async def put(blobs: BlobServiceClient, tenant: str, data: bytes) -> str:
    name = f"{tenant}/batch/{uuid.uuid4().hex}.jsonl"
    await blobs.get_blob_client(names.UPLOADS_CONTAINER, name).upload_blob(
        data, content_settings=ContentSettings(content_type="application/x-ndjson")
    )
    return name


async def lines_of(blobs: BlobServiceClient, container: str, name: str) -> list[dict[str, Any]]:
    downloader = await blobs.get_blob_client(container, name).download_blob()
    text = (await downloader.readall()).decode()
    return [json.loads(line) for line in text.splitlines() if line]


async def serve_all(runtime: Runtime, sender: RecordingRowSender) -> None:
    for message in sender.rows:
        await handle_inference_request(as_inbound(message), runtime)


def jsonl(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


async def test_a_valid_file_ends_in_the_results_file_in_input_order(
    runtime: Runtime, sender: RecordingRowSender, blobs: BlobServiceClient
) -> None:
    name = await put(blobs, "tailwind", jsonl(*(row(f"question {i}") for i in range(1, 121))))
    progress = await handle_batch_upload(f"{names.UPLOADS_CONTAINER}/{name}", runtime)
    assert progress is not None
    assert progress.state == "running"
    assert len(sender.rows) == 120
    assert [len(r) for _, r in sender.sends] == [50, 50, 20]
    for message in reversed(sender.rows):  # any order of completion
        await handle_inference_request(as_inbound(message), runtime)

    status, body = await batch_progress_response("tailwind", progress.batch_id, runtime)
    final = BatchProgress.model_validate_json(body)
    assert status == 200
    assert final.state == "completed"
    assert (final.done, final.failed, final.pending) == (120, 0, 0)
    assert final.results_blob is not None
    results = await lines_of(blobs, *final.results_blob.split("/", 1))
    assert [r["line"] for r in results] == list(range(1, 121))
    assert {r["status"] for r in results} == {"succeeded"}
    assert results[0]["result"]["message"]["content"] == "ok"


async def test_a_mixed_file_splits_into_results_and_errors_each_row_once(
    runtime: Runtime, sender: RecordingRowSender, blobs: BlobServiceClient
) -> None:
    data = jsonl(
        row("fine"),
        "not json " + SECRET,
        row(tenant_id="contoso"),
        "",
        row("fine as well"),
        json.dumps({"messages": []}),
        row("fine too"),
    )
    progress = await handle_batch_upload(await put(blobs, "tailwind", data), runtime)
    assert progress is not None
    await serve_all(runtime, sender)

    _, body = await batch_progress_response("tailwind", progress.batch_id, runtime)
    final = BatchProgress.model_validate_json(body)
    assert final.state == "completed"
    assert (final.counts.rows, final.counts.invalid, final.counts.accepted) == (6, 3, 3)
    assert (final.done, final.failed, final.pending) == (3, 3, 0)
    assert final.results_blob is not None
    assert final.errors_blob is not None
    results = await lines_of(blobs, *final.results_blob.split("/", 1))
    errors = await lines_of(blobs, *final.errors_blob.split("/", 1))
    assert [(r["line"], r["status"]) for r in results] == [
        (1, "succeeded"),
        (5, "succeeded"),
        (7, "succeeded"),
    ]
    assert [(e["line"], e["reason"]) for e in errors] == [
        (2, "invalid_json"),
        (3, "wrong_tenant"),
        (6, "invalid_request"),
    ]
    raw = json.dumps(errors)
    assert SECRET not in raw
    assert "contoso" not in raw


async def test_a_rejected_row_is_in_the_results_with_its_rejection(
    runtime: Runtime, sender: RecordingRowSender, blobs: BlobServiceClient, model: ScriptedModel
) -> None:
    name = await put(blobs, "tailwind", jsonl(row("a"), row("b")))
    progress = await handle_batch_upload(name, runtime)
    assert progress is not None
    model.failures.append(
        ModelRequestRejected(
            "400", deployment="x", status_code=400, error_code="context_length_exceeded"
        )
    )
    await serve_all(runtime, sender)
    _, body = await batch_progress_response("tailwind", progress.batch_id, runtime)
    final = BatchProgress.model_validate_json(body)
    assert (final.state, final.done, final.failed) == ("completed", 1, 1)
    assert final.results_blob is not None
    results = await lines_of(blobs, *final.results_blob.split("/", 1))
    assert [(r["line"], r["status"]) for r in results] == [(1, "rejected"), (2, "succeeded")]
    assert results[0]["rejection"]["error_code"] == "context_length_exceeded"


async def test_an_oversize_file_is_refused_and_nothing_sent(
    runtime: Runtime, sender: RecordingRowSender, blobs: BlobServiceClient
) -> None:
    name = await put(blobs, "tailwind", jsonl(*(row("x" * 900) for _ in range(80))))
    progress = await handle_batch_upload(name, runtime)
    assert progress is not None
    assert progress.state == "rejected"
    assert progress.rejection is not None
    assert progress.rejection.reason == "file_too_large"
    assert sender.rows == []


@pytest.mark.parametrize("data", [b"", b"\n \n"])
async def test_an_empty_file_is_refused(
    runtime: Runtime, sender: RecordingRowSender, blobs: BlobServiceClient, data: bytes
) -> None:
    progress = await handle_batch_upload(await put(blobs, "tailwind", data), runtime)
    assert progress is not None
    assert progress.rejection is not None
    assert progress.rejection.reason == "empty_file"
    assert sender.rows == []


async def test_an_unknown_tenant_in_the_path_is_refused_under_unknown(
    runtime: Runtime, sender: RecordingRowSender, blobs: BlobServiceClient
) -> None:
    name = await put(blobs, "globex", jsonl(row()))
    progress = await handle_batch_upload(name, runtime)
    assert progress is not None
    assert progress.tenant_id == names.UNKNOWN_TENANT_PREFIX
    assert progress.rejection is not None
    assert progress.rejection.reason == "unknown_tenant"
    assert sender.rows == []
    status, _ = await batch_progress_response("globex", progress.batch_id, runtime)
    assert status == 404


async def test_a_refired_trigger_resumes_and_a_finished_batch_is_left_alone(
    runtime: Runtime, sender: RecordingRowSender, blobs: BlobServiceClient
) -> None:
    name = await put(blobs, "contoso", jsonl(*(row(f"q{i}") for i in range(7))))
    first = await handle_batch_upload(name, runtime)
    again = await handle_batch_upload(name, runtime)
    assert first is not None
    assert again is not None
    assert again.batch_id == first.batch_id
    assert len(sender.rows) == 7
    await serve_all(runtime, sender)
    await serve_all(runtime, sender)  # every row delivered twice
    done = await handle_batch_upload(name, runtime)
    assert done is not None
    assert done.state == "completed"
    assert (done.done, done.pending) == (7, 0)
    assert len(sender.rows) == 7
    assert done.results_blob is not None
    assert len(await lines_of(blobs, *done.results_blob.split("/", 1))) == 7


async def test_the_upload_is_read_in_chunks_pinned_to_its_etag(
    azurite: Azurite, blobs: BlobServiceClient
) -> None:
    name = await put(blobs, "tailwind", b"x" * 2500)
    files = AzureBatchFiles(blobs, chunk_bytes=1000)
    stat = await files.stat(names.UPLOADS_CONTAINER, name)
    assert stat is not None
    assert stat.size == 2500
    sizes = [len(c) async for c in files.chunks(names.UPLOADS_CONTAINER, name, stat.etag)]
    assert sizes == [1000, 1000, 500]
    chunks = files.chunks(names.UPLOADS_CONTAINER, name, stat.etag)
    assert len(await anext(chunks)) == 1000
    await blobs.get_blob_client(names.UPLOADS_CONTAINER, name).upload_blob(b"y", overwrite=True)
    with pytest.raises(UploadChanged):
        await anext(chunks)


async def test_staged_writes_replace_the_file_whole(blobs: BlobServiceClient) -> None:
    files = AzureBatchFiles(blobs, chunk_bytes=10)
    name = f"tailwind/batches/{uuid.uuid4().hex}.jsonl"

    async def parts(n: int) -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"{i:04d}\n".encode()

    assert await files.write(names.RESULTS_CONTAINER, name, parts(7)) == 35
    assert await files.write(names.RESULTS_CONTAINER, name, parts(3)) == 15
    downloader = await blobs.get_blob_client(names.RESULTS_CONTAINER, name).download_blob()
    assert await downloader.readall() == b"0000\n0001\n0002\n"
    empty = f"tailwind/batches/{uuid.uuid4().hex}.errors.jsonl"
    assert await files.write(names.RESULTS_CONTAINER, empty, parts(0)) == 0
