"""Batch intake over MemoryBlobStore: validation, streamed fan-out, the record, a re-fire."""

from __future__ import annotations

import json

import pytest

from shared.batch.gather import errors_file_name
from shared.batch.intake import Upload
from shared.batch.policy import BatchPolicy
from shared.batch.record import record_blob_name
from shared.contracts.batch import BATCH_ID_PROPERTY, batch_id_for
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from tests.unit.batch.helpers import (
    SECRET,
    Clock,
    RecordingRowSender,
    devhost_registry,
    jsonl,
    memory_batches,
    row,
    upload,
)

NAME = "tailwind/batch/nightly.jsonl"


@pytest.fixture
def store() -> MemoryBlobStore:
    return MemoryBlobStore()


@pytest.fixture
def sender() -> RecordingRowSender:
    return RecordingRowSender()


async def _batch_id(store: MemoryBlobStore, name: str) -> str:
    blob = await store.read(names.UPLOADS_CONTAINER, name)
    assert blob is not None
    assert blob.etag
    return batch_id_for(name.split("/", maxsplit=1)[0], name, blob.etag)


async def test_valid_rows_are_sent_as_batch_rows_named_by_their_line(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    await upload(store, NAME, [row(f"q{i}") for i in range(5)])
    progress = await memory_batches(store, sender).take(Upload(NAME))

    batch_id = await _batch_id(store, NAME)
    assert progress is not None
    assert progress.state == "running"
    assert progress.batch_id == batch_id
    assert (progress.counts.rows, progress.counts.accepted, progress.counts.invalid) == (5, 5, 0)
    assert (progress.done, progress.failed, progress.pending) == (0, 0, 5)
    assert [m.message_id for m in sender.rows] == [f"{batch_id}:{n}" for n in range(1, 6)]
    assert {q for q, _ in sender.sends} == {names.INFERENCE_REQUESTS}
    first = sender.rows[0]
    assert first.application_properties["traffic"] == "batch"
    assert first.application_properties[BATCH_ID_PROPERTY] == batch_id
    assert first.application_properties["batch_line"] == 1
    assert first.scheduled_enqueue_time_utc is None  # no quota: no pacing
    body = json.loads(first.body)
    assert body["tenant_id"] == "tailwind"
    assert body["request_id"] == f"{batch_id}:1"
    assert store.text(names.RESULTS_CONTAINER, errors_file_name("tailwind", batch_id)) == ""
    stored = await store.read(names.BATCHES_CONTAINER, record_blob_name("tailwind", batch_id))
    assert stored is not None


async def test_rows_are_sent_in_batches(store: MemoryBlobStore, sender: RecordingRowSender) -> None:
    await upload(store, NAME, [row() for _ in range(450)])
    await memory_batches(store, sender, policy=BatchPolicy(send_rows=200)).take(Upload(NAME))
    assert [len(rows) for _, rows in sender.sends] == [200, 200, 50]


async def test_bad_rows_go_to_the_errors_file_with_line_and_reason_never_values(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    lines = [
        row("good 1"),
        "{broken " + SECRET,
        "",
        row(tenant_id="contoso"),
        json.dumps({"messages": [{"role": "user", "content": SECRET}], "color": SECRET}),
        row("x" * 500),
        row("good 2"),
    ]
    policy = BatchPolicy(max_row_bytes=300)
    progress = await memory_batches(store, sender, policy=policy).take(Upload(NAME))
    assert progress is None  # nothing uploaded yet: the blob is gone
    await upload(store, NAME, lines)
    progress = await memory_batches(store, sender, policy=policy).take(Upload(NAME))

    assert progress is not None
    assert (progress.counts.rows, progress.counts.accepted, progress.counts.invalid) == (6, 2, 4)
    assert progress.failed == 4
    assert progress.pending == 2
    assert [json.loads(m.body)["messages"][0]["content"] for m in sender.rows] == [
        "good 1",
        "good 2",
    ]
    errors_name = errors_file_name("tailwind", progress.batch_id)
    errors = jsonl(store, names.RESULTS_CONTAINER, errors_name)
    assert [(e["line"], e["reason"]) for e in errors] == [
        (2, "invalid_json"),
        (4, "wrong_tenant"),
        (5, "invalid_request"),
        (6, "row_too_large"),
    ]
    text = store.text(names.RESULTS_CONTAINER, errors_name)
    assert SECRET not in text
    assert "contoso" not in text
    assert progress.errors_blob == f"{names.RESULTS_CONTAINER}/{errors_name}"


async def test_an_oversize_file_is_refused_whole_before_it_is_read(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    await upload(store, NAME, [row() for _ in range(20)])
    policy = BatchPolicy(max_upload_bytes=100)
    progress = await memory_batches(store, sender, policy=policy).take(Upload(NAME))
    assert progress is not None
    assert progress.state == "rejected"
    assert progress.rejection is not None
    assert progress.rejection.reason == "file_too_large"
    assert sender.rows == []


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
async def test_an_empty_file_is_refused(
    store: MemoryBlobStore, sender: RecordingRowSender, data: bytes
) -> None:
    await upload(store, NAME, data)
    progress = await memory_batches(store, sender).take(Upload(NAME))
    assert progress is not None
    assert progress.state == "rejected"
    assert progress.rejection is not None
    assert progress.rejection.reason == "empty_file"
    assert sender.rows == []


async def test_an_unknown_tenant_is_filed_under_unknown_and_nothing_is_sent(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    name = await upload(store, "globex/batch/a.jsonl", [row()])
    progress = await memory_batches(store, sender).take(Upload(name))
    assert progress is not None
    assert progress.state == "rejected"
    assert progress.tenant_id == names.UNKNOWN_TENANT_PREFIX
    assert progress.rejection is not None
    assert progress.rejection.reason == "unknown_tenant"
    assert not [n for n in store.names(names.BATCHES_CONTAINER) if n.startswith("globex/")]
    assert sender.rows == []


async def test_a_path_that_is_not_a_batch_file_is_refused(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    name = await upload(store, "tailwind/batch/notes.txt", [row()])
    progress = await memory_batches(store, sender).take(Upload(name))
    assert progress is not None
    assert progress.rejection is not None
    assert progress.rejection.reason == "bad_path"
    assert await memory_batches(store, sender).take(Upload("../x/batch/a.jsonl")) is None
    assert sender.rows == []


async def test_a_refired_trigger_resumes_instead_of_doubling(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    await upload(store, NAME, [row(f"q{i}") for i in range(10)])
    first = await memory_batches(store, sender).take(Upload(NAME))
    again = await memory_batches(store, sender).take(Upload(NAME))
    assert first is not None
    assert again is not None
    assert again.batch_id == first.batch_id
    assert len(sender.rows) == 10  # the second run sent nothing


async def test_a_fan_out_cut_short_resumes_after_its_checkpoint(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    await upload(store, NAME, [row(f"q{i}") for i in range(10)])
    policy = BatchPolicy(send_rows=2, checkpoint_rows=4)
    sender.fail_after = 6
    with pytest.raises(ConnectionError):
        await memory_batches(store, sender, policy=policy).take(Upload(NAME))
    assert len(sender.rows) == 6
    sender.fail_after = None
    progress = await memory_batches(store, sender, policy=policy).take(Upload(NAME))
    assert progress is not None
    assert progress.state == "running"
    lines = [m.application_properties["batch_line"] for m in sender.rows]
    # rows 1-4 were checkpointed; 5-6 are sent again (duplicate detection drops them)
    assert lines == [1, 2, 3, 4, 5, 6, 5, 6, 7, 8, 9, 10]


async def test_a_new_version_of_the_same_name_is_a_new_batch(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    await upload(store, NAME, [row()])
    first = await memory_batches(store, sender).take(Upload(NAME))
    await upload(store, NAME, [row(), row()])
    second = await memory_batches(store, sender).take(Upload(NAME))
    assert first is not None
    assert second is not None
    assert first.batch_id != second.batch_id
    assert len(sender.rows) == 3


async def test_rows_are_paced_to_the_tenants_batch_share_of_its_quota(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    # tailwind: 300 requests/min; a share of 0.5 at 90%: 2.25 rows/s
    registry = devhost_registry()
    tenants = tuple(
        t.model_copy(update={"quota": t.quota.model_copy(update={"tokens_per_minute": None})})
        for t in registry.tenants
    )
    registry = registry.model_copy(update={"tenants": tenants})
    await upload(store, NAME, [row() for _ in range(10)])
    clock = Clock()
    batches = memory_batches(store, sender, registry=registry, clock=clock)
    await batches.take(Upload(NAME))
    times = [m.scheduled_enqueue_time_utc for m in sender.rows]
    assert times[0] is None
    assert times[1] is None
    assert times[2] is None
    offsets = [(t - clock.now).total_seconds() for t in times[3:] if t is not None]
    assert len(offsets) == 7
    assert offsets == sorted(offsets)
    assert offsets[-1] == pytest.approx(9 / 2.25, abs=0.01)
