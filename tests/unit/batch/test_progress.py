"""Rows settling: counted once, only for the tenant the row names; the last one gathers in order."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime

import pytest

from shared.batch.fanout import RowMessage
from shared.batch.gather import results_file_name
from shared.batch.intake import Upload
from shared.batch.service import Batches
from shared.contracts import InferenceResult, RejectionRecord, TokenUsage
from shared.contracts.batch import BatchProgress
from shared.inference.rejections import RejectionLog
from shared.inference.results import ResultStore
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from tests.unit.batch.helpers import (
    START,
    Clock,
    RecordingRowSender,
    as_inbound,
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


def result_for(message: RowMessage, status: str = "succeeded") -> InferenceResult:
    body = json.loads(message.body)
    return InferenceResult(
        tenant_id=body["tenant_id"],
        request_id=body["request_id"],
        status="failed" if status == "failed" else "succeeded",
        deployment="d",
        model="m",
        message=None,
        finish_reason="stop",
        usage=TokenUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
        latency_ms=1,
        completed_at=START,
    )


async def settle(store: MemoryBlobStore, batches: Batches, message: RowMessage, how: str) -> None:
    """What the inference handler does for the row, then its hook."""
    if how == "rejected":
        body = json.loads(message.body)
        record = RejectionRecord(
            reason="model_rejected_request",
            detail="refused",
            tenant_id=body["tenant_id"],
            request_id=body["request_id"],
            message_id=message.message_id,
            delivery_count=1,
            rejected_at=START,
        )
        await RejectionLog(store).write(record, known_tenant_id="tailwind")
        await batches.row_settled(as_inbound(message), "rejected")
        return
    await ResultStore(store).save(result_for(message, how))
    await batches.row_settled(as_inbound(message), "completed" if how == "succeeded" else how)


async def started(
    store: MemoryBlobStore, sender: RecordingRowSender, count: int, clock: Clock | None = None
) -> tuple[Batches, BatchProgress]:
    await upload(store, NAME, [row(f"q{i}") if i != 2 else "{bad" for i in range(count)])
    batches = memory_batches(store, sender, clock=clock)
    progress = await batches.take(Upload(NAME))
    assert progress is not None
    return batches, progress


async def test_the_last_row_gathers_every_result_in_input_order(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    batches, progress = await started(store, sender, 6)  # line 3 is bad
    rows = sender.rows
    assert len(rows) == 5
    outcomes = ["succeeded", "failed", "succeeded", "rejected", "succeeded"]
    for message, how in reversed(list(zip(rows, outcomes, strict=True))):
        await settle(store, batches, message, how)

    final = await batches.progress("tailwind", progress.batch_id)
    assert final is not None
    assert final.state == "completed"
    assert (final.done, final.failed, final.pending) == (3, 3, 0)
    lines = jsonl(store, names.RESULTS_CONTAINER, results_file_name("tailwind", progress.batch_id))
    assert [(line["line"], line["status"]) for line in lines] == [
        (1, "succeeded"),
        (2, "failed"),
        (4, "succeeded"),
        (5, "rejected"),
        (6, "succeeded"),
    ]
    assert lines[3]["rejection"]["reason"] == "model_rejected_request"
    assert lines[0]["result"]["request_id"] == f"{progress.batch_id}:1"
    assert final.results_blob == (
        f"{names.RESULTS_CONTAINER}/{results_file_name('tailwind', progress.batch_id)}"
    )


async def test_a_redelivered_row_counts_once(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    batches, progress = await started(store, sender, 3)
    first = sender.rows[0]
    await settle(store, batches, first, "succeeded")
    await batches.row_settled(as_inbound(first), "duplicate")
    await batches.row_settled(as_inbound(first), "completed")
    now = await batches.progress("tailwind", progress.batch_id)
    assert now is not None
    assert (now.done, now.pending) == (1, 1)


async def test_a_rescheduled_row_has_not_settled(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    batches, progress = await started(store, sender, 1)
    await batches.row_settled(as_inbound(sender.rows[0]), "rescheduled")
    now = await batches.progress("tailwind", progress.batch_id)
    assert now is not None
    assert now.pending == 1
    assert now.state == "running"


async def test_rows_settling_at_once_are_all_counted(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    batches, progress = await started(store, sender, 41)
    await asyncio.gather(*(settle(store, batches, m, "succeeded") for m in sender.rows))
    final = await batches.progress("tailwind", progress.batch_id)
    assert final is not None
    assert final.state == "completed"
    assert (final.done, final.failed, final.pending) == (40, 1, 0)
    lines = jsonl(store, names.RESULTS_CONTAINER, results_file_name("tailwind", progress.batch_id))
    assert len(lines) == 40
    assert len({line["line"] for line in lines}) == 40


async def test_properties_alone_cannot_touch_another_tenants_batch(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    batches, progress = await started(store, sender, 3)
    real = sender.rows[0]
    forged_body = json.loads(real.body) | {"tenant_id": "contoso"}
    forged = dataclasses.replace(real, body=json.dumps(forged_body).encode())
    await batches.row_settled(as_inbound(forged), "completed")
    other_line = dataclasses.replace(
        real, application_properties={**real.application_properties, "batch_line": 2}
    )
    await batches.row_settled(as_inbound(other_line), "completed")
    now = await batches.progress("tailwind", progress.batch_id)
    assert now is not None
    assert now.done == 0


async def test_progress_of_an_unknown_or_foreign_batch_is_none(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    batches, progress = await started(store, sender, 2)
    assert await batches.progress("contoso", progress.batch_id) is None
    assert await batches.progress("tailwind", "b" + "0" * 24) is None
    assert await batches.progress("../tailwind", progress.batch_id) is None
    assert await batches.progress("tailwind", "../../x") is None


async def test_a_stalled_gathering_is_taken_over(
    store: MemoryBlobStore, sender: RecordingRowSender
) -> None:
    clock = Clock()
    batches, progress = await started(store, sender, 2, clock)
    await settle(store, batches, sender.rows[0], "succeeded")

    gatherer = batches.tracker._gatherer
    files = gatherer._files
    original = files.write

    async def failing_write(*args: object, **kwargs: object) -> int:
        raise OSError("storage went away")

    files.write = failing_write  # type: ignore[method-assign]
    message = sender.rows[1]
    await ResultStore(store).save(result_for(message))
    with pytest.raises(OSError, match="storage went away"):
        await batches.row_settled(as_inbound(message), "completed")
    files.write = original  # type: ignore[method-assign]
    now = await batches.progress("tailwind", progress.batch_id)  # released: gathers now
    assert now is not None
    assert now.state == "completed"
    assert isinstance(now.completed_at, datetime)
