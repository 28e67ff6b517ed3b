"""Rescheduling a request that cannot be served now (shared/resilience/reschedule.py): what a
message's properties say of its earlier rounds, the next round's copy, and when to give up."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.resilience.reschedule import (
    ATTEMPT_PROPERTY,
    FIRST_ENQUEUED_PROPERTY,
    MODEL_ATTEMPTS_PROPERTY,
    REASON_PROPERTY,
    History,
    Plan,
    ReschedulePolicy,
    history_of,
    plan,
    reschedule_message_id,
)

NOW = datetime(2025, 3, 4, 12, 0, 0, tzinfo=UTC)
ENQUEUED = NOW - timedelta(seconds=2)
NO_JITTER = ReschedulePolicy(jitter_fraction=0.0)


# ---- history ------------------------------------------------------------------------------


def test_a_first_delivery_has_no_history() -> None:
    assert history_of({}, ENQUEUED, NOW) == History(0, ENQUEUED, 0)
    assert history_of({}, None, NOW) == History(0, NOW, 0)


def test_the_counters_a_previous_round_wrote_are_read() -> None:
    first = NOW - timedelta(minutes=3)
    props = {
        ATTEMPT_PROPERTY: 2,
        FIRST_ENQUEUED_PROPERTY: first.isoformat(),
        MODEL_ATTEMPTS_PROPERTY: 5,
        "tenant_field": "kept",
    }
    assert history_of(props, ENQUEUED, NOW) == History(2, first, 5)


def test_counters_given_as_text_or_bytes_are_read() -> None:
    first = NOW - timedelta(minutes=1)
    props = {
        ATTEMPT_PROPERTY: "3",
        FIRST_ENQUEUED_PROPERTY: first.isoformat().encode(),
        MODEL_ATTEMPTS_PROPERTY: b"7",
    }
    assert history_of(props, ENQUEUED, NOW) == History(3, first, 7)


@pytest.mark.parametrize(
    "garbage",
    [
        {ATTEMPT_PROPERTY: "many", MODEL_ATTEMPTS_PROPERTY: "x"},
        {ATTEMPT_PROPERTY: -4, MODEL_ATTEMPTS_PROPERTY: -1},
        {ATTEMPT_PROPERTY: True, MODEL_ATTEMPTS_PROPERTY: 2.5},
        {ATTEMPT_PROPERTY: None, MODEL_ATTEMPTS_PROPERTY: [1]},
        {FIRST_ENQUEUED_PROPERTY: "yesterday"},
        {FIRST_ENQUEUED_PROPERTY: "2025-03-04T11:00:00"},  # no zone: cannot be compared
        {FIRST_ENQUEUED_PROPERTY: datetime(2025, 3, 4, 11, 0)},  # naive
        {FIRST_ENQUEUED_PROPERTY: 1741086000},
        {FIRST_ENQUEUED_PROPERTY: b"\xff\xfe"},
        {ATTEMPT_PROPERTY: "9" * 5000},
    ],
)
def test_garbage_counts_as_absent(garbage: dict[str, Any]) -> None:
    assert history_of(garbage, ENQUEUED, NOW) == History(0, ENQUEUED, 0)


def test_a_first_enqueue_in_the_future_cannot_extend_the_deadline() -> None:
    future = NOW + timedelta(days=30)
    history = history_of({FIRST_ENQUEUED_PROPERTY: future.isoformat()}, ENQUEUED, NOW)
    assert history.first_enqueued_at == ENQUEUED
    # so the request still gives up at the deadline counted from its own enqueue
    late = NOW + timedelta(seconds=NO_JITTER.deadline_s)
    assert next_round(history, now=late, delay_s=1.0).give_up


def test_a_first_enqueue_in_the_past_can_shorten_it() -> None:
    past = NOW - timedelta(hours=2)
    history = history_of({FIRST_ENQUEUED_PROPERTY: past.isoformat()}, ENQUEUED, NOW)
    assert history.first_enqueued_at == past
    assert next_round(history, delay_s=1.0).give_up


def test_another_time_zone_is_the_same_instant() -> None:
    first = (NOW - timedelta(minutes=5)).astimezone(timezone(timedelta(hours=9)))
    history = history_of({FIRST_ENQUEUED_PROPERTY: first.isoformat()}, ENQUEUED, NOW)
    assert history.first_enqueued_at == NOW - timedelta(minutes=5)


# ---- the next round -----------------------------------------------------------------------


def next_round(
    history: History,
    *,
    now: datetime = NOW,
    delay_s: float = 5.0,
    policy: ReschedulePolicy = NO_JITTER,
    properties: dict[str, Any] | None = None,
    seed: int = 1,
    tenant_id: str = "tailwind",
    request_id: str = "req-1",
    attempts_now: int = 2,
) -> Plan:
    return plan(
        tenant_id=tenant_id,
        request_id=request_id,
        properties=properties or {},
        history=history,
        attempts_now=attempts_now,
        delay_s=delay_s,
        reason="deployments_busy",
        now=now,
        policy=policy,
        rng=random.Random(seed),
    )


def test_the_copy_is_scheduled_after_the_delay_and_carries_the_counters() -> None:
    history = History(reschedules=1, first_enqueued_at=ENQUEUED, model_attempts=3)
    p = next_round(history, properties={"trace": "abc", 7: "not a string key"})
    assert not p.give_up
    assert p.at == NOW + timedelta(seconds=5.0)
    assert p.properties == {
        "trace": "abc",
        ATTEMPT_PROPERTY: 2,
        FIRST_ENQUEUED_PROPERTY: ENQUEUED.isoformat(),
        MODEL_ATTEMPTS_PROPERTY: 5,
        REASON_PROPERTY: "deployments_busy",
    }
    assert p.message_id == reschedule_message_id("tailwind", "req-1", 2)


def test_the_next_round_reads_what_this_round_wrote() -> None:
    h0 = history_of({}, ENQUEUED, NOW)
    p1 = next_round(h0, attempts_now=2)
    h1 = history_of(p1.properties, p1.at, p1.at)
    assert h1 == History(reschedules=1, first_enqueued_at=ENQUEUED, model_attempts=2)
    p2 = next_round(h1, now=p1.at, properties=p1.properties, attempts_now=3)
    h2 = history_of(p2.properties, p2.at, p2.at)
    assert h2 == History(reschedules=2, first_enqueued_at=ENQUEUED, model_attempts=5)


def test_message_ids_are_deterministic_per_attempt() -> None:
    history = History(0, ENQUEUED, 0)
    # a redelivered handler plans again (another jitter, another moment): the same id
    a = next_round(history, seed=1, policy=ReschedulePolicy())
    b = next_round(history, seed=2, now=NOW + timedelta(seconds=3), policy=ReschedulePolicy())
    assert a.at != b.at
    assert a.message_id == b.message_id
    assert next_round(History(1, ENQUEUED, 0)).message_id != a.message_id
    assert next_round(history, request_id="req-2").message_id != a.message_id
    assert next_round(history, tenant_id="contoso").message_id != a.message_id
    ids = {reschedule_message_id(t, r, n) for t in ("a", "b") for r in ("1", "2") for n in (1, 2)}
    assert len(ids) == 8


def test_message_ids_do_not_run_together_across_fields() -> None:
    assert reschedule_message_id("ab", "c", 1) != reschedule_message_id("a", "bc", 1)


def test_message_ids_fit_service_bus_and_hide_the_request() -> None:
    long_id = "r" * 128
    mid = reschedule_message_id("tenant-with-a-long-name", long_id, 10_000)
    assert len(mid) <= 64
    assert long_id not in mid
    assert "tenant-with-a-long-name" not in mid


def test_it_gives_up_when_the_copy_would_land_past_the_deadline() -> None:
    policy = ReschedulePolicy(deadline_s=600.0, jitter_fraction=0.0)
    first = NOW - timedelta(seconds=590)
    history = History(3, first, 4)
    assert not next_round(history, delay_s=10.0, policy=policy).give_up  # exactly at it
    assert next_round(history, delay_s=10.001, policy=policy).give_up
    assert next_round(history, now=NOW + timedelta(seconds=11), delay_s=0.0, policy=policy).give_up


def test_it_gives_up_after_max_reschedules() -> None:
    policy = ReschedulePolicy(max_reschedules=4, jitter_fraction=0.0)
    assert not next_round(History(3, ENQUEUED, 0), policy=policy).give_up  # the 4th copy
    gave_up = next_round(History(4, ENQUEUED, 9), policy=policy)  # a 5th would be one too many
    assert gave_up.give_up
    assert gave_up.history == History(4, ENQUEUED, 9)


@pytest.mark.parametrize(
    ("delay_s", "most"),
    [(5.0, 1.0), (1.0, 0.2), (100.0, 2.0), (0.0, 0.0)],  # fraction * delay, at most max_jitter
)
def test_jitter_is_added_within_its_bounds(delay_s: float, most: float) -> None:
    policy = ReschedulePolicy(jitter_fraction=0.2, max_jitter_s=2.0)
    history = History(0, NOW, 0)
    extras = [
        (next_round(history, delay_s=delay_s, policy=policy, seed=s).at - NOW).total_seconds()
        - delay_s
        for s in range(400)
    ]
    assert all(-1e-6 <= e <= most + 1e-6 for e in extras)
    if most:
        assert max(extras) > 0.8 * most  # spread: not a herd
        assert min(extras) < 0.2 * most


def test_a_request_over_its_tenants_quota_returns_spread_over_the_quota_window() -> None:
    """reschedule.py: over-quota copies return at a random point of the next `quota_spread_s`, so
    a backlog does not come back as one herd (other reasons keep the short jitter)."""
    import random as _random
    from datetime import UTC, datetime, timedelta

    from shared.resilience.reschedule import History, ReschedulePolicy, plan

    now = datetime(2025, 1, 2, tzinfo=UTC)
    history = History(reschedules=0, first_enqueued_at=now, model_attempts=0)
    rng = _random.Random(3)

    def offsets(reason: str) -> list[float]:
        return [
            (
                plan(
                    tenant_id="t",
                    request_id=f"r{i}",
                    properties={},
                    history=history,
                    attempts_now=0,
                    delay_s=5.0,
                    reason=reason,
                    now=now,
                    policy=ReschedulePolicy(),
                    rng=rng,
                ).at
                - now
                - timedelta(seconds=5)
            ).total_seconds()
            for i in range(200)
        ]

    quota = offsets("tenant_quota:requests_per_minute")
    busy = offsets("deployments_busy")
    assert min(quota) >= 0
    assert max(quota) <= 60
    assert max(quota) - min(quota) > 30  # spread over the window
    assert max(busy) <= 1.0  # 20% of a 5 s delay
