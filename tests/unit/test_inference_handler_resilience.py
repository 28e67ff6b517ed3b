"""The inference handler when models are throttled or down, and when a reply cannot be sent:
reschedule instead of raising, a failed result after the deadline, a compact reply for a result too
large for the queue, an error code on a model's refusal."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus.exceptions import MessageSizeExceededError, MessagingEntityNotFoundError

from shared.inference.handler import Outcome, handle_inference_request
from shared.inference.model_errors import ModelRateLimited, ModelRequestRejected
from shared.inference.results import REPLY_SENT_AT
from shared.messages import InboundMessage
from shared.resilience.reschedule import (
    ATTEMPT_PROPERTY,
    FIRST_ENQUEUED_PROPERTY,
    MODEL_ATTEMPTS_PROPERTY,
    ReschedulePolicy,
)
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import read_registry_file
from tests.fakes import FakeTime, RecordingReplySender, ScriptedModel, memory_runtime

DEVHOST_REGISTRY = Path(__file__).resolve().parents[2] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def throttled(retry_after_s: float) -> ModelRateLimited:
    return ModelRateLimited("429", deployment="d", status_code=429, retry_after_s=retry_after_s)


def body(tenant: str = "contoso", request_id: str = "r-1") -> bytes:
    return json.dumps(
        {
            "tenant_id": tenant,
            "request_id": request_id,
            "messages": [{"role": "user", "content": "hello"}],
            "parameters": {"max_tokens": 20},
        }
    ).encode()


def message(**fields: Any) -> InboundMessage:
    return InboundMessage(
        body=fields.pop("body", body()),
        message_id=fields.pop("message_id", "m-1"),
        reply_to=fields.pop("reply_to", "inference-results"),
        delivery_count=fields.pop("delivery_count", 1),
        enqueued_time=fields.pop("enqueued_time", NOW),
        **fields,
    )


def runtime(
    model: ScriptedModel,
    replies: RecordingReplySender,
    store: MemoryBlobStore,
    ticks: FakeTime | None = None,
    **policy: Any,
) -> Runtime:
    rt = memory_runtime(
        read_registry_file(DEVHOST_REGISTRY, env=ENV),
        model=model,
        replies=replies,
        store=store,
        fake_time=ticks or FakeTime(),
    )
    rt.reschedule_policy = ReschedulePolicy(**policy)
    rt.rng = random.Random(1)
    return rt


async def test_a_throttled_request_is_rescheduled_for_the_retry_after_not_raised() -> None:
    # contoso has one deployment; a 429 asking for 30 s is longer than the in-process wait.
    model = ScriptedModel(failures=[throttled(30.0)])
    replies, store = RecordingReplySender(), MemoryBlobStore()
    rt = runtime(model, replies, store)

    assert await handle_inference_request(message(), rt) is Outcome.RESCHEDULED

    [copy] = replies.sent
    assert copy.queue == names.INFERENCE_REQUESTS
    assert copy.body == body()
    assert copy.reply_to == "inference-results"
    assert copy.scheduled_enqueue_time_utc is not None
    wait = (copy.scheduled_enqueue_time_utc - NOW).total_seconds()
    assert 30.0 <= wait <= 32.0 + 0.05  # retry-after, plus at most 2 s of jitter
    props = copy.application_properties
    assert props[ATTEMPT_PROPERTY] == 1
    assert props[FIRST_ENQUEUED_PROPERTY] == NOW.isoformat()
    assert props[MODEL_ATTEMPTS_PROPERTY] == 1
    assert store.names(names.RESULTS_CONTAINER) == []  # nothing stored, nothing dead-lettered

    # A redelivery of the same original schedules a copy with the same id (the queue drops it).
    model.failures.append(throttled(30.0))
    again = message(delivery_count=2)
    assert await handle_inference_request(again, rt) is Outcome.RESCHEDULED
    assert replies.sent[1].message_id == copy.message_id


async def test_the_rescheduled_copy_is_answered_exactly_once() -> None:
    model = ScriptedModel(failures=[throttled(30.0)])
    replies, store, ticks = RecordingReplySender(), MemoryBlobStore(), FakeTime()
    rt = runtime(model, replies, store, ticks)
    assert await handle_inference_request(message(), rt) is Outcome.RESCHEDULED
    [copy] = replies.sent
    ticks.now += 31.0  # the copy arrives when it was scheduled for
    later = message(
        message_id=copy.message_id,
        application_properties=dict(copy.application_properties),
        enqueued_time=copy.scheduled_enqueue_time_utc,
    )
    assert await handle_inference_request(later, rt) is Outcome.COMPLETED
    assert await handle_inference_request(later, rt) is Outcome.DUPLICATE
    results = [r for r in replies.sent if r.subject == "inference.result"]
    assert len(results) == 1
    assert json.loads(results[0].body)["status"] == "succeeded"


async def test_past_the_deadline_the_tenant_gets_a_failed_result_with_the_reason() -> None:
    model = ScriptedModel(failures=[throttled(30.0)])
    replies, store = RecordingReplySender(), MemoryBlobStore()
    rt = runtime(model, replies, store, deadline_s=600)
    first = NOW - timedelta(seconds=590)  # 30 s more would pass the 600 s deadline
    props = {ATTEMPT_PROPERTY: 7, FIRST_ENQUEUED_PROPERTY: first.isoformat()}
    props[MODEL_ATTEMPTS_PROPERTY] = 9
    msg = message(application_properties=props)

    assert await handle_inference_request(msg, rt) is Outcome.FAILED

    result = json.loads(store.text(names.RESULTS_CONTAINER, "contoso/r-1.json"))
    assert result["status"] == "failed"
    assert result["message"] is None
    assert result["failure"]["reason"] == "deadline_exceeded"
    assert result["failure"]["attempts"] == 10
    assert result["failure"]["reschedules"] == 7
    [reply] = replies.sent
    assert reply.queue == "inference-results"
    assert json.loads(reply.body)["status"] == "failed"


async def test_after_max_reschedules_the_failure_says_attempts_exhausted() -> None:
    model = ScriptedModel(failures=[throttled(30.0)])
    replies, store = RecordingReplySender(), MemoryBlobStore()
    rt = runtime(model, replies, store, max_reschedules=3)
    msg = message(application_properties={ATTEMPT_PROPERTY: 3})
    assert await handle_inference_request(msg, rt) is Outcome.FAILED
    result = json.loads(store.text(names.RESULTS_CONTAINER, "contoso/r-1.json"))
    assert result["failure"]["reason"] == "attempts_exhausted"


async def test_a_short_retry_after_is_waited_in_process() -> None:
    model = ScriptedModel(failures=[throttled(2.0)])
    replies, store = RecordingReplySender(), MemoryBlobStore()
    ticks = FakeTime()
    rt = memory_runtime(
        read_registry_file(DEVHOST_REGISTRY, env=ENV),
        model=model,
        replies=replies,
        store=store,
        fake_time=ticks,
    )
    assert await handle_inference_request(message(), rt) is Outcome.COMPLETED
    [wait] = ticks.sleeps
    assert 2.0 <= wait <= 2.05
    assert [c.deployment for c in model.calls] == ["contoso-gpt-4o", "contoso-gpt-4o"]


async def test_a_reply_too_large_for_the_queue_becomes_a_pointer_to_the_result_blob() -> None:
    replies, store = RecordingReplySender(), MemoryBlobStore()
    replies.failures.append(MessageSizeExceededError(message="too large"))
    rt = runtime(ScriptedModel(), replies, store)
    assert await handle_inference_request(message(), rt) is Outcome.COMPLETED
    [reply] = replies.sent
    compact = json.loads(reply.body)
    assert compact["status"] == "succeeded"
    assert compact["truncated"] is True
    assert compact["message"] is None
    assert compact["result_blob"] == "results/contoso/r-1.json"
    stored = json.loads(store.text(names.RESULTS_CONTAINER, "contoso/r-1.json"))
    assert stored["message"]["content"] == "ok"  # the whole result is kept
    # A redelivery does not try the doomed send again.
    assert await handle_inference_request(message(delivery_count=2), rt) is Outcome.DUPLICATE
    assert len(replies.sent) == 1


async def test_a_missing_reply_queue_is_logged_and_not_retried_forever() -> None:
    replies, store = RecordingReplySender(), MemoryBlobStore()
    replies.failures.append(MessagingEntityNotFoundError(message="no such queue"))
    rt = runtime(ScriptedModel(), replies, store)
    assert await handle_inference_request(message(), rt) is Outcome.COMPLETED
    blob = await store.read(names.RESULTS_CONTAINER, "contoso/r-1.json")
    assert blob is not None
    assert REPLY_SENT_AT in blob.metadata
    assert blob.metadata["reply_note"] == "reply_undeliverable"
    assert await handle_inference_request(message(delivery_count=2), rt) is Outcome.DUPLICATE
    assert replies.sent == []


# A content filter's 400 is a `filtered` result: tests/security/test_content_filter.py
@pytest.mark.parametrize("code", ["invalid_prompt", "context_length_exceeded"])
async def test_a_refusal_carries_the_services_error_code(code: str) -> None:
    refusal = ModelRequestRejected("400", deployment="d", status_code=400, error_code=code)
    replies, store = RecordingReplySender(), MemoryBlobStore()
    rt = runtime(ScriptedModel(failures=[refusal]), replies, store)
    assert await handle_inference_request(message(), rt) is Outcome.REJECTED
    [reply] = replies.sent
    record = json.loads(reply.body)
    assert record["reason"] == "model_rejected_request"
    assert record["error_code"] == code
    assert "hello" not in reply.body.decode()


async def test_a_request_whose_copy_is_too_large_to_reschedule_fails_with_the_reason() -> None:
    model = ScriptedModel(failures=[throttled(30.0)])
    replies, store = RecordingReplySender(), MemoryBlobStore()
    replies.failures.append(MessageSizeExceededError(message="too large"))  # the copy
    rt = runtime(model, replies, store)
    assert await handle_inference_request(message(), rt) is Outcome.FAILED
    result = json.loads(store.text(names.RESULTS_CONTAINER, "contoso/r-1.json"))
    assert result["failure"]["reason"] == "cannot_reschedule"
    [reply] = replies.sent
    assert json.loads(reply.body)["status"] == "failed"


async def test_a_request_larger_than_the_tenants_whole_token_quota_is_refused_at_once() -> None:
    """tailwind's quota is 50,000 tokens a minute: a request charged more could never be admitted,
    so it is rejected with the reason now, not rescheduled until the deadline."""
    model = ScriptedModel()
    replies, store = RecordingReplySender(), MemoryBlobStore()
    rt = runtime(model, replies, store)
    big = json.dumps(
        {
            "tenant_id": "tailwind",
            "request_id": "r-big",
            "messages": [{"role": "user", "content": "hello"}],
            "parameters": {"max_tokens": 60_000},
        }
    ).encode()
    assert await handle_inference_request(message(body=big), rt) is Outcome.REJECTED
    assert model.calls == []
    [reply] = replies.sent
    record = json.loads(reply.body)
    assert record["reason"] == "request_exceeds_quota"
    assert "50000 tokens per minute" in record["detail"]
