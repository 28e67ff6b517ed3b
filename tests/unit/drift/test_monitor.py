"""The drift monitor over in-memory ports: one drift event, one fine-tune request, and the
rules around it (policy, cool-down, too few examples, racing evaluations)."""

from __future__ import annotations

import json
import random
from datetime import timedelta

from shared.contracts import FinetuneRequest
from shared.drift.monitor import DriftState, state_name
from shared.feedback.inference_log import model_key
from shared.feedback.store import Rating
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore, StoredBlob
from tests.fakes import RecordingReplySender
from tests.unit.feedback.conftest import (
    answer,
    build_runtime,
    devhost_registry,
    feedback_body,
    feedback_message,
)

KEY = model_key("fabrikam-ft-v1", "ft-1")
TUNABLE = {"log_prompts": True, "allow_tuning": True, "min_training_examples": 5}


async def rated_examples(rt: Runtime, count: int, start: int = 0) -> None:
    """Answered and positively rated requests: usable training examples (and first ratings)."""
    for i in range(start, start + count):
        await answer(rt, "fabrikam", f"ex-{i}", f"#billing question {i}")
        await rt.feedback.handle_message(
            feedback_message(feedback_body("fabrikam", f"ex-{i}", "up"), message_id=f"fx-{i}")
        )


async def stream(
    rt: Runtime, scores: list[float], *, evaluate_every: int = 50, key: str = KEY
) -> None:
    """Ratings straight onto a stream, with an evaluation every `evaluate_every`."""
    for i, score in enumerate(scores, start=1):
        await rt.feedback_store.append_rating("fabrikam", key, Rating(f"s-{i}", score, rt.clock()))
        if i % evaluate_every == 0:
            await rt.drift.evaluate("fabrikam", key)


def decaying(seed: int, before: int = 600, after: int = 400) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < 0.9) for _ in range(before)] + [
        float(rng.random() < 0.4) for _ in range(after)
    ]


def finetune_requests(replies: RecordingReplySender) -> list[FinetuneRequest]:
    return [
        FinetuneRequest.model_validate_json(r.body)
        for r in replies.sent
        if r.queue == names.FINETUNE_JOBS
    ]


def reports(store: MemoryBlobStore) -> list[dict[str, object]]:
    return [
        json.loads(store.text(names.DRIFT_CONTAINER, n))
        for n in store.names(names.DRIFT_CONTAINER)
        if n.endswith(".json") and "/state/" not in n
    ]


async def test_a_decay_gives_one_report_one_chart_and_one_finetune_request() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    rt = build_runtime(devhost_registry(fabrikam=TUNABLE), store, replies, check_every=10_000)
    await rated_examples(rt, 8)
    await stream(rt, decaying(1))
    for _ in range(3):  # the timer finds nothing new: no second request
        await rt.drift.evaluate_all()

    [request] = finetune_requests(replies)
    [sent] = [r for r in replies.sent if r.queue == names.FINETUNE_JOBS]
    assert sent.message_id == request.job_key  # Service Bus duplicate detection drops repeats
    assert (request.tenant_id, request.scope, request.tenants_in_dataset) == (
        "fabrikam",
        "tenant",
        ("fabrikam",),
    )
    assert (request.current.deployment, request.base.deployment) == (
        "fabrikam-ft-v1",
        "gpt-4o-mini-pool-a",
    )
    dataset = store.text(names.TRAINING_CONTAINER, request.dataset.blob.split("/", 1)[1])
    import hashlib

    assert hashlib.sha256(dataset.encode()).hexdigest() == request.dataset.sha256
    assert request.dataset.examples == len(dataset.splitlines()) == 8
    assert all(
        json.loads(line)["messages"][-1]["role"] == "assistant" for line in dataset.splitlines()
    )
    drifted = [r for r in reports(store) if r["drift"]]
    assert len(drifted) == 1
    [report] = drifted
    assert report["action"]["kind"] == "finetune_requested"  # type: ignore[index]
    assert report["quality"]["detected"] is True  # type: ignore[index]
    assert request.reason.report is not None
    assert request.reason.report.endswith(".json")
    chart = store.blobs[(names.DRIFT_CONTAINER, str(report["chart"]).split("/", 1)[1])]
    assert bytes(chart[:8]) == b"\x89PNG\r\n\x1a\n"


async def test_a_steady_stream_raises_no_event() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    rt = build_runtime(devhost_registry(fabrikam=TUNABLE), store, replies, check_every=10_000)
    rng = random.Random(5)
    await stream(rt, [float(rng.random() < 0.85) for _ in range(1500)])
    assert finetune_requests(replies) == []
    assert reports(store)
    assert not any(r["drift"] for r in reports(store))


async def test_a_tenant_that_does_not_allow_tuning_gets_a_report_but_no_request() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    policy = {**TUNABLE, "allow_tuning": False}
    rt = build_runtime(devhost_registry(fabrikam=policy), store, replies, check_every=10_000)
    await rated_examples(rt, 8)
    await stream(rt, decaying(2))
    assert finetune_requests(replies) == []
    [report] = [r for r in reports(store) if r["drift"]]
    assert report["action"] == {  # type: ignore[comparison-overlap]
        "kind": "skipped",
        "detail": "the tenant's policy does not allow tuning",
        "job_key": None,
        "dataset": None,
    }


async def test_too_few_examples_waits_and_a_later_evaluation_sends_the_request() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    rt = build_runtime(devhost_registry(fabrikam=TUNABLE), store, replies, check_every=10_000)
    await rated_examples(rt, 2)
    await stream(rt, decaying(3))
    assert finetune_requests(replies) == []
    waiting = [r for r in reports(store) if r["drift"]]
    assert waiting
    assert waiting[0]["action"]["kind"] == "waiting"
    assert "only 2 usable examples" in waiting[0]["action"]["detail"]  # type: ignore[index]
    await rated_examples(rt, 4, start=2)  # their first ratings are new news for the timer
    await rt.drift.evaluate_all()
    [request] = finetune_requests(replies)
    assert request.dataset.examples == 6


async def test_the_cool_down_is_per_tenant_across_model_versions() -> None:
    store, replies = MemoryBlobStore(), RecordingReplySender()
    rt = build_runtime(devhost_registry(fabrikam=TUNABLE), store, replies, check_every=10_000)
    await rated_examples(rt, 8)
    await stream(rt, decaying(4))
    assert len(finetune_requests(replies)) == 1
    # the base model that also serves fabrikam decays too, within the 24 h cool-down
    base = model_key("gpt-4o-mini-pool-a", "2024-07-18")
    await stream(rt, decaying(5), key=base)
    assert len(finetune_requests(replies)) == 1
    kinds = [(r["model_key"], r["action"]["kind"]) for r in reports(store) if r["drift"]]  # type: ignore[index]
    assert kinds[0] == (KEY, "finetune_requested")
    assert (base, "skipped") in kinds
    # after the cool-down a drift of another model version may tune again
    rt.clock.at += timedelta(hours=25)  # type: ignore[attr-defined]
    await stream(rt, decaying(6), key=model_key("fabrikam-ft-v2", "ft-2"))
    assert len(finetune_requests(replies)) == 2


class RacingStore(MemoryBlobStore):
    """Between an evaluation's read of the drift state and its write, another instance
    evaluates the same stream (once)."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: Runtime | None = None
        self.raced = 0

    async def read(self, container: str, name: str) -> StoredBlob | None:
        blob = await super().read(container, name)
        if self.rival is not None and container == names.DRIFT_CONTAINER and "/state/" in name:
            rival, self.rival = self.rival, None
            self.raced += 1
            await rival.drift.evaluate("fabrikam", KEY)
        return blob


async def test_racing_evaluations_count_every_rating_exactly_once() -> None:
    store, replies = RacingStore(), RecordingReplySender()
    registry = devhost_registry(fabrikam=TUNABLE)
    rt = build_runtime(registry, store, replies, check_every=10_000)
    rival = build_runtime(registry, store, replies, check_every=10_000)
    await stream(rt, [1.0] * 120, evaluate_every=1000)
    store.rival = rival
    await rt.drift.evaluate("fabrikam", KEY)
    await stream(rt, [1.0] * 30, evaluate_every=1000)
    await rt.drift.evaluate("fabrikam", KEY)
    assert store.raced == 1
    state = DriftState.model_validate_json(
        store.text(names.DRIFT_CONTAINER, state_name("fabrikam", KEY))
    )
    assert state.ratings_total == 150


async def test_a_stale_evaluation_cannot_undo_what_a_racing_one_did() -> None:
    """A pending drift event (too few examples) is acted on by a rival evaluation between this
    evaluation's read of the state and its write: with If-Match this one loses and re-reads;
    without it, it would write the event back as pending and then record it as skipped."""
    store, replies = RacingStore(), RecordingReplySender()
    registry = devhost_registry(fabrikam=TUNABLE)
    rt = build_runtime(registry, store, replies, check_every=10_000)
    rival = build_runtime(registry, store, replies, check_every=10_000)
    await rated_examples(rt, 2)
    await stream(rt, decaying(3))
    assert finetune_requests(replies) == []  # waiting for examples
    await rated_examples(rt, 4, start=2)
    store.rival = rival
    await rt.drift.evaluate("fabrikam", KEY)
    assert store.raced == 1
    assert len(finetune_requests(replies)) == 1
    state = DriftState.model_validate_json(
        store.text(names.DRIFT_CONTAINER, state_name("fabrikam", KEY))
    )
    assert [e.action for e in state.events] == ["finetune_requested"]
    assert not any(r["action"]["kind"] == "skipped" for r in reports(store))  # type: ignore[index]
