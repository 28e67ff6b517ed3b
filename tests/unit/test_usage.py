"""Usage lines: one per call, per tenant per day, continued in a new blob when one is full."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shared.contracts import UsageRecord
from shared.inference.usage import UsageMeter, usage_blob_name
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore


def record(tenant: str = "tailwind", request_id: str = "r", day: int = 2) -> UsageRecord:
    return UsageRecord(
        tenant_id=tenant,
        request_id=request_id,
        deployment="gpt-4o-mini-pool-a",
        kind="azure_openai",
        model="gpt-4o-mini",
        feature=None,
        prompt_tokens=3,
        completion_tokens=4,
        total_tokens=7,
        latency_ms=12,
        at=datetime(2025, 1, day, 12, tzinfo=UTC),
    )


def test_blob_names() -> None:
    assert usage_blob_name("tailwind", "2025-01-02") == "tailwind/2025-01-02.jsonl"
    assert usage_blob_name("tailwind", "2025-01-02", 3) == "tailwind/2025-01-02.3.jsonl"


async def test_lines_are_appended_per_tenant_and_day() -> None:
    store = MemoryBlobStore()
    meter = UsageMeter(store)
    await meter.record(record(request_id="a"))
    await meter.record(record(request_id="b"))
    await meter.record(record(request_id="c", day=3))
    await meter.record(record(tenant="contoso", request_id="d"))
    assert store.names(names.USAGE_CONTAINER) == [
        "contoso/2025-01-02.jsonl",
        "tailwind/2025-01-02.jsonl",
        "tailwind/2025-01-03.jsonl",
    ]
    lines = store.text(names.USAGE_CONTAINER, "tailwind/2025-01-02.jsonl").splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["a", "b"]


async def test_a_full_append_blob_continues_in_the_next_part() -> None:
    store = MemoryBlobStore(append_block_limit=2)
    meter = UsageMeter(store)
    written = [await meter.record(record(request_id=str(i))) for i in range(5)]
    assert written == [
        "tailwind/2025-01-02.jsonl",
        "tailwind/2025-01-02.jsonl",
        "tailwind/2025-01-02.1.jsonl",
        "tailwind/2025-01-02.1.jsonl",
        "tailwind/2025-01-02.2.jsonl",
    ]
    # A new meter (another instance) finds its way past the full parts too.
    assert await UsageMeter(store).record(record(request_id="x")) == "tailwind/2025-01-02.2.jsonl"
