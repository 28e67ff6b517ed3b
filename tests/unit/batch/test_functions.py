"""function_app.py's batch functions: their bindings, and the functions called with built inputs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import azure.functions as func
import pytest

import function_app
from shared.runtime import Runtime, set_runtime
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from tests.fakes import RecordingReplySender, memory_runtime
from tests.unit.batch.helpers import RecordingRowSender, row, unlimited_registry, upload


@pytest.fixture
def store() -> MemoryBlobStore:
    return MemoryBlobStore()


@pytest.fixture
def sender() -> RecordingRowSender:
    return RecordingRowSender()


@pytest.fixture
def runtime(store: MemoryBlobStore, sender: RecordingRowSender) -> Iterator[Runtime]:
    rt = memory_runtime(unlimited_registry(), store=store, replies=RecordingReplySender())
    rt.row_sender = sender
    previous = set_runtime(rt)
    try:
        yield rt
    finally:
        set_runtime(previous)


def test_the_upload_trigger_is_an_event_grid_blob_trigger_on_the_batch_folder() -> None:
    fn = function_app.batch_upload.build()
    assert fn.get_function_name() == "batch_upload"
    [binding] = json.loads(fn.get_function_json())["bindings"]
    assert binding == {
        "direction": "IN",
        "type": "blobTrigger",
        "name": "blob",
        "path": "uploads/{tenant}/batch/{name}",
        "connection": "AzureWebJobsStorage",
        "source": "EventGrid",
    }


def test_the_progress_endpoint_is_a_get_with_a_function_key() -> None:
    fn = function_app.batch_progress.build()
    trigger = next(
        b for b in json.loads(fn.get_function_json())["bindings"] if b["type"] == "httpTrigger"
    )
    assert trigger["route"] == "tenants/{tenant_id}/batches/{batch_id}"
    assert trigger["methods"] == ["GET"]
    assert trigger["authLevel"] == "FUNCTION"


async def test_an_upload_is_taken_and_its_progress_served(
    runtime: Runtime, store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    name = await upload(store, "contoso/batch/a.jsonl", [row(), row(), "{bad"])
    blob = func.blob.InputStream(data=b"", name=f"{names.UPLOADS_CONTAINER}/{name}")
    await function_app.batch_upload.build().get_user_function()(blob)
    assert len(sender.rows) == 2
    batch_id = str(sender.rows[0].application_properties["batch_id"])

    request = func.HttpRequest(
        "GET",
        f"/api/tenants/contoso/batches/{batch_id}",
        body=b"",
        route_params={"tenant_id": "contoso", "batch_id": batch_id},
    )
    response = await function_app.batch_progress.build().get_user_function()(request)
    assert response.status_code == 200
    progress = json.loads(response.get_body())
    assert (progress["done"], progress["failed"], progress["pending"]) == (0, 1, 2)

    other = func.HttpRequest(
        "GET", "/x", body=b"", route_params={"tenant_id": "tailwind", "batch_id": batch_id}
    )
    missing = await function_app.batch_progress.build().get_user_function()(other)
    assert missing.status_code == 404
