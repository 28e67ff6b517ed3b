"""Feedback intake over in-memory ports: every outcome, both entry points, the rating stream."""

from __future__ import annotations

import json

import pytest

from shared.contracts import FeedbackReason, FeedbackRecord, parse_feedback, parse_inference_request
from shared.contracts.inference import ContractError
from shared.feedback.handler import FeedbackOutcome, sampled
from shared.feedback.inference_log import model_key
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from shared.storage.json_lines import Cursor
from shared.tenancy.registry import Registry
from tests.fakes import RecordingReplySender
from tests.unit.feedback.conftest import (
    answer,
    build_runtime,
    feedback_body,
    feedback_message,
)

FABRIKAM_KEY = model_key("fabrikam-ft-v1", "ft-1")


@pytest.mark.parametrize(
    ("rating", "score"), [("up", 1.0), ("down", 0.0), (1, 0.0), (3, 0.5), (5, 1.0)]
)
def test_ratings_map_to_scores(rating: object, score: float) -> None:
    assert parse_feedback(feedback_body("t", "r", rating)).score == score


@pytest.mark.parametrize(
    ("body", "reason", "mentions"),
    [
        (b"not json", FeedbackReason.INVALID_JSON, "JSON"),
        (b"[1]", FeedbackReason.INVALID_JSON, "object"),
        (feedback_body("t", "r", 6), FeedbackReason.INVALID_FEEDBACK, "rating"),
        (feedback_body("t", "r", True), FeedbackReason.INVALID_FEEDBACK, "rating"),
        (feedback_body("t", "r", "meh"), FeedbackReason.INVALID_FEEDBACK, "rating"),
        (feedback_body("T!", "r"), FeedbackReason.INVALID_FEEDBACK, "tenant_id"),
        (feedback_body("t", "r", labels=["no spaces"]), FeedbackReason.INVALID_FEEDBACK, "labels"),
        (feedback_body("t", "r", correction=""), FeedbackReason.INVALID_FEEDBACK, "correction"),
        (feedback_body("t", "r", extra=1), FeedbackReason.INVALID_FEEDBACK, "extra"),
        (feedback_body("t", "r", version=2), FeedbackReason.UNSUPPORTED_VERSION, "version"),
        (feedback_body("t", "r", type="x"), FeedbackReason.UNSUPPORTED_TYPE, "type"),
    ],
)
def test_broken_feedback_is_refused_with_a_reason(body: bytes, reason: str, mentions: str) -> None:
    with pytest.raises(ContractError) as caught:
        parse_feedback(body)
    assert caught.value.reason == reason
    assert mentions in caught.value.detail


def test_a_refusal_never_repeats_the_submitted_text() -> None:
    with pytest.raises(ContractError) as caught:
        parse_feedback(feedback_body("t", "r", "secret-rating-value"))
    assert "secret-rating-value" not in caught.value.detail


async def test_first_feedback_is_recorded_and_streamed(
    runtime: Runtime, store: MemoryBlobStore
) -> None:
    await answer(runtime, "fabrikam", "r-1")
    result = await runtime.feedback.handle_message(
        feedback_message(feedback_body("fabrikam", "r-1", "down", correction="Call 555-0100."))
    )
    assert result.outcome is FeedbackOutcome.RECORDED
    assert result.revision == 1
    [name] = [n for n in store.names(names.FEEDBACK_CONTAINER) if n.endswith("r-1.json")]
    record = FeedbackRecord.model_validate_json(store.text(names.FEEDBACK_CONTAINER, name))
    assert (record.score, record.deployment, record.model_version) == (
        0.0,
        "fabrikam-ft-v1",
        "ft-1",
    )
    assert record.correction is not None
    assert "Call" in record.correction
    ratings, _ = await runtime.feedback_store.ratings("fabrikam", FABRIKAM_KEY, Cursor())
    assert [(r.request_id, r.score) for r in ratings] == [("r-1", 0.0)]


async def test_a_second_feedback_revises_and_is_not_counted_twice(runtime: Runtime) -> None:
    await answer(runtime, "fabrikam", "r-1")
    first = await runtime.feedback.handle_message(
        feedback_message(feedback_body("fabrikam", "r-1", "down"))
    )
    second = await runtime.feedback.handle_message(
        feedback_message(feedback_body("fabrikam", "r-1", 5), message_id="f-2")
    )
    assert first.outcome is FeedbackOutcome.RECORDED
    assert second.outcome is FeedbackOutcome.REVISED
    assert second.revision == 2
    assert second.http_status == 200
    stored = await runtime.feedback_store.get(
        "fabrikam", runtime.clock().date().replace(year=2025, month=1, day=2), "r-1"
    )
    assert stored is not None
    assert stored.record.rating == 5
    ratings, _ = await runtime.feedback_store.ratings("fabrikam", FABRIKAM_KEY, Cursor())
    assert [r.score for r in ratings] == [0.0]  # the detector counts the first only


@pytest.mark.parametrize(
    ("tenant", "request_id", "reason", "status"),
    [
        ("nobody", "r-1", FeedbackReason.UNKNOWN_TENANT, 404),
        ("fabrikam", "never-sent", FeedbackReason.UNKNOWN_REQUEST, 404),
        # tailwind's request, rated by fabrikam: as unknown to fabrikam as one never sent
        ("fabrikam", "tw-1", FeedbackReason.UNKNOWN_REQUEST, 404),
    ],
)
async def test_feedback_on_what_the_tenant_does_not_have_is_rejected_and_recorded(  # noqa: PLR0917
    runtime: Runtime, store: MemoryBlobStore, tenant: str, request_id: str, reason: str, status: int
) -> None:
    await answer(runtime, "tailwind", "tw-1")
    result = await runtime.feedback.handle_message(
        feedback_message(feedback_body(tenant, request_id), message_id="f-9")
    )
    assert (result.outcome, result.reason, result.http_status) == (
        FeedbackOutcome.REJECTED,
        reason,
        status,
    )
    [name] = [n for n in store.names(names.REJECTED_CONTAINER) if "/feedback/" in n]
    record = json.loads(store.text(names.REJECTED_CONTAINER, name))
    assert record["type"] == "feedback.rejected"
    assert record["reason"] == reason
    expected_prefix = "fabrikam/" if tenant == "fabrikam" else "_unknown/"
    assert name.startswith(expected_prefix)
    assert not any(n.endswith(f"{request_id}.json") for n in store.names(names.FEEDBACK_CONTAINER))


async def test_feedback_on_a_failed_request_is_not_answered(
    runtime: Runtime, store: MemoryBlobStore
) -> None:
    from datetime import UTC, datetime

    from shared.contracts import Failure, InferenceResult, TokenUsage

    await runtime.results.save(
        InferenceResult(
            tenant_id="fabrikam",
            request_id="r-failed",
            status="failed",
            deployment=None,
            model=None,
            message=None,
            finish_reason=None,
            usage=TokenUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
            latency_ms=1,
            completed_at=datetime(2025, 1, 2, tzinfo=UTC),
            failure=Failure(reason="deadline_exceeded", detail="x", attempts=1, reschedules=0),
        )
    )
    result = await runtime.feedback.handle_http("fabrikam", feedback_body("fabrikam", "r-failed"))
    assert (result.reason, result.http_status) == (FeedbackReason.REQUEST_NOT_ANSWERED, 409)


async def test_http_answers_with_status_codes_and_checks_the_path_tenant(runtime: Runtime) -> None:
    await answer(runtime, "fabrikam", "r-1")
    mismatch = await runtime.feedback.handle_http("tailwind", feedback_body("fabrikam", "r-1"))
    assert (mismatch.reason, mismatch.http_status) == (FeedbackReason.TENANT_MISMATCH, 400)
    bad = await runtime.feedback.handle_http("fabrikam", b"{")
    assert (bad.reason, bad.http_status) == (FeedbackReason.INVALID_JSON, 400)
    created = await runtime.feedback.handle_http("fabrikam", feedback_body("fabrikam", "r-1"))
    assert created.http_status == 201
    assert created.body() == {
        "status": "recorded",
        "tenant_id": "fabrikam",
        "request_id": "r-1",
        "revision": 1,
    }


async def test_about_every_nth_first_rating_runs_a_drift_check(
    registry: Registry, store: MemoryBlobStore, replies: RecordingReplySender
) -> None:
    rt = build_runtime(registry, store, replies, check_every=10)
    checked = []
    for i in range(200):
        await answer(rt, "fabrikam", f"r-{i}")
        result = await rt.feedback.handle_message(
            feedback_message(feedback_body("fabrikam", f"r-{i}"), message_id=f"f-{i}")
        )
        checked.append(result.drift_checked)
    assert 8 <= sum(checked) <= 35
    reports = [n for n in store.names(names.DRIFT_CONTAINER) if n.endswith(".json")]
    assert any(n.startswith(f"fabrikam/state/{FABRIKAM_KEY}") for n in reports)
    assert len([n for n in reports if "/state/" not in n]) == sum(checked)
    # a revision never triggers one
    again = await rt.feedback.handle_message(
        feedback_message(feedback_body("fabrikam", "r-0", "down"), message_id="f-again")
    )
    assert again.outcome is FeedbackOutcome.REVISED
    assert not again.drift_checked


def test_sampling_picks_about_one_in_n_and_is_the_same_everywhere() -> None:
    picked = [sampled(f"req-{i}", 20) for i in range(20_000)]
    assert 0.04 <= sum(picked) / len(picked) <= 0.06
    assert picked == [sampled(f"req-{i}", 20) for i in range(20_000)]
    assert all(sampled(f"req-{i}", 1) for i in range(10))


SENT = "SECRET alice@example.com 4111111111111111"


@pytest.mark.parametrize(
    "changes",
    [{SENT: 1}, {"type": SENT}, {"version": SENT}, {"labels": [SENT]}, {"rating": SENT}],
)
@pytest.mark.parametrize("parse", [parse_feedback, parse_inference_request])
def test_no_detail_repeats_what_was_sent(changes: dict[str, object], parse: object) -> None:
    body = {"tenant_id": "t", "request_id": "r", "rating": "up", "messages": [], **changes}
    with pytest.raises(ContractError) as caught:
        parse(json.dumps(body).encode())  # type: ignore[operator]
    assert "alice@example.com" not in caught.value.detail
    assert "4111" not in caught.value.detail


def test_an_unknown_field_with_a_plain_name_is_named() -> None:
    with pytest.raises(ContractError) as caught:
        parse_feedback(feedback_body("t", "r", colour="red"))
    assert caught.value.detail == "colour: Extra inputs are not permitted"
