"""Fuzzing `feedback` v1: the queue handler and the HTTP endpoint's handler, in memory.

Any body, properties and message id on the queue: recorded or revised (the tenant's answer), or a
`feedback.rejected` record under the tenant or `_unknown/feedback/` with the reason, never a
crash; over HTTP, any tenant in the path and any body: an answer with a status the endpoint knows.
Every blob is named from safe ids in a known prefix, and a good feedback afterwards is recorded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from shared.contracts import FeedbackRecord, InferenceResult, RejectionRecord, TokenUsage
from shared.feedback.handler import FeedbackOutcome
from shared.messages import InboundMessage
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from tests.fakes import fixed_clock, memory_runtime
from tests.security.fuzz_kit import (
    CANARY,
    MESSAGE_IDS,
    ODD_TEXT,
    PROPERTIES,
    bodies,
    encode,
    fuzz_settings,
)
from tests.security.test_fuzz_inference import REGISTRY, assert_safe_names

VALID: dict[str, Any] = {
    "tenant_id": "tailwind",
    "request_id": "r-1",
    "rating": "down",
    "correction": f"The refund window is 30 days. {CANARY}",
    "labels": ["wrong-fact"],
}
HTTP_STATUSES = {200, 201, 400, 404, 409}


async def answered_runtime() -> tuple[Runtime, MemoryBlobStore]:
    """A runtime whose store has tailwind's answered request r-1 (the feedback's target)."""
    store = MemoryBlobStore()
    rt = memory_runtime(REGISTRY, store=store)
    rt.drift_check_every = 10**9  # no drift evaluation in the middle of a fuzz run
    await rt.results.save(
        InferenceResult(
            tenant_id="tailwind",
            request_id="r-1",
            deployment="gpt-4o-mini-pool-a",
            model="gpt-4o-mini",
            message=None,
            finish_reason="stop",
            usage=TokenUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
            latency_ms=1,
            completed_at=fixed_clock(),
        )
    )
    return rt, store


async def on_the_queue(body: bytes, props: dict[str, Any], message_id: str) -> None:
    rt, store = await answered_runtime()
    message = InboundMessage(
        body=body, message_id=message_id, application_properties=props, delivery_count=1
    )
    answer = await rt.feedback.handle_message(message)
    event(f"feedback: {answer.outcome.value} {answer.reason or ''}")
    rejected = store.names(names.REJECTED_CONTAINER)
    kept = store.names(names.FEEDBACK_CONTAINER)
    if answer.outcome is FeedbackOutcome.REJECTED:
        [name] = rejected
        record = RejectionRecord.model_validate_json(store.text(names.REJECTED_CONTAINER, name))
        assert record.type == "feedback.rejected"
        assert CANARY not in record.detail
        assert name.split("/")[1] == "feedback"
    else:
        assert rejected == []
        records = [n for n in kept if "/_stream/" not in n]
        [name] = records
        FeedbackRecord.model_validate_json(store.text(names.FEEDBACK_CONTAINER, name))
    assert_safe_names(store)
    good = InboundMessage(body=encode(VALID), message_id="m-good", delivery_count=1)
    assert (await rt.feedback.handle_message(good)).outcome in (
        FeedbackOutcome.RECORDED,
        FeedbackOutcome.REVISED,
    )
    await rt.close()


async def over_http(tenant: str, body: bytes) -> None:
    rt, store = await answered_runtime()
    answer = await rt.feedback.handle_http(tenant, body)
    event(f"http: {answer.http_status}")
    assert answer.http_status in HTTP_STATUSES
    assert CANARY not in json.dumps(answer.body())
    assert_safe_names(store)
    assert (await rt.feedback.handle_http("tailwind", encode(VALID))).http_status in (200, 201)
    await rt.close()


@fuzz_settings(120)
@given(body=bodies(VALID, "correction"), props=PROPERTIES, message_id=MESSAGE_IDS)
def test_any_feedback_message_is_recorded_or_rejected(
    body: bytes, props: dict[str, Any], message_id: str
) -> None:
    asyncio.run(on_the_queue(body, props, message_id))


@fuzz_settings(60)
@given(
    tenant=st.one_of(st.just("tailwind"), st.just("contoso"), ODD_TEXT),
    body=bodies(VALID, "correction"),
)
def test_any_feedback_post_gets_an_answer(tenant: str, body: bytes) -> None:
    asyncio.run(over_http(tenant, body))
