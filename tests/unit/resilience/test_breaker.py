"""Circuit breakers per deployment, on a fake monotonic clock (the rules of
shared/resilience/breaker.py's docstring): closed -> open -> half-open -> closed."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from shared.resilience.breaker import BreakerBoard, BreakerPolicy, BreakerState, CircuitBreaker
from shared.structured_logging import fields_of
from tests.fakes import FakeTime

# Only the rule under test can open the breaker: the others are out of reach.
NO_STREAK = 1_000
NO_RATIO_CALLS = 1_000
NO_RETRY_AFTER_OPEN = 1_000.0


def breaker(time: FakeTime, **policy: Any) -> CircuitBreaker:
    return CircuitBreaker("dep-a", BreakerPolicy(**policy), clock=time.monotonic)


def fail(b: CircuitBreaker, n: int, retry_after_s: float | None = None) -> None:
    for _ in range(n):
        b.on_call()
        b.on_failure(retry_after_s)


def succeed(b: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        b.on_call()
        b.on_success()


# ---- closed -> open -----------------------------------------------------------------------


def test_opens_on_the_nth_consecutive_failure_and_not_before() -> None:
    time = FakeTime()
    b = breaker(time, consecutive_failures=3, min_calls_in_window=NO_RATIO_CALLS)
    fail(b, 2)
    assert b.state is BreakerState.CLOSED
    assert b.allows()
    fail(b, 1)
    assert b.state is BreakerState.OPEN
    assert not b.allows()


def test_a_success_breaks_the_streak() -> None:
    time = FakeTime()
    b = breaker(time, consecutive_failures=3, min_calls_in_window=NO_RATIO_CALLS)
    fail(b, 2)
    succeed(b, 1)
    fail(b, 2)
    assert b.state is BreakerState.CLOSED
    fail(b, 1)
    assert b.state is BreakerState.OPEN


def test_opened_by_the_streak_without_a_hint_stays_open_for_the_cool_down() -> None:
    time = FakeTime()
    b = breaker(time, consecutive_failures=2, min_calls_in_window=NO_RATIO_CALLS, cool_down_s=7.0)
    fail(b, 2)
    opened = time.now
    assert b.available_at() == opened + 7.0
    time.now = opened + 6.999
    assert b.state is BreakerState.OPEN
    time.now = opened + 7.0
    assert b.state is BreakerState.HALF_OPEN
    assert b.allows()


def test_opens_on_a_failure_ratio_within_the_window() -> None:
    time = FakeTime()
    b = breaker(
        time, consecutive_failures=NO_STREAK, failure_ratio=0.5, min_calls_in_window=4, window_s=30
    )
    for _ in range(2):  # S F S F: 2 of 4 failed, never two in a row
        succeed(b, 1)
        time.now += 1
        assert b.state is BreakerState.CLOSED
        fail(b, 1)
        time.now += 1
    assert b.state is BreakerState.OPEN


def test_a_ratio_below_the_threshold_or_too_few_calls_keeps_it_closed() -> None:
    time = FakeTime()
    b = breaker(
        time, consecutive_failures=NO_STREAK, failure_ratio=0.5, min_calls_in_window=4, window_s=30
    )
    fail(b, 3)  # 3 of 3 failed, but fewer than min_calls_in_window calls
    assert b.state is BreakerState.CLOSED

    time2 = FakeTime()
    b2 = breaker(
        time2, consecutive_failures=NO_STREAK, failure_ratio=0.5, min_calls_in_window=4, window_s=30
    )
    for outcome in "SSFSF":  # 2 of 5 = 0.4 < 0.5
        (fail if outcome == "F" else succeed)(b2, 1)
    assert b2.state is BreakerState.CLOSED


def test_failures_that_left_the_window_do_not_count() -> None:
    time = FakeTime()
    b = breaker(
        time, consecutive_failures=NO_STREAK, failure_ratio=0.5, min_calls_in_window=4, window_s=30
    )
    fail(b, 3)
    time.now += 31  # those three are out of the window now
    succeed(b, 2)
    fail(b, 1)  # in the window: S S F, 3 calls, fewer than 4
    assert b.state is BreakerState.CLOSED
    succeed(b, 1)
    succeed(b, 1)
    fail(b, 1)  # S S F S S F: 2 of 6 < 0.5
    assert b.state is BreakerState.CLOSED


def test_a_long_retry_after_opens_at_once_for_exactly_that_long() -> None:
    time = FakeTime()
    b = breaker(time, consecutive_failures=NO_STREAK, open_on_retry_after_s=10.0, cool_down_s=3.0)
    b.on_call()
    b.on_failure(retry_after_s=42.0)
    opened = time.now
    assert b.state is BreakerState.OPEN
    assert b.available_at() == opened + 42.0  # the server's time, not the cool-down
    time.now = opened + 41.99
    assert b.state is BreakerState.OPEN
    assert not b.allows()
    time.now = opened + 42.0
    assert b.state is BreakerState.HALF_OPEN
    assert b.allows()


def test_a_retry_after_at_the_threshold_opens_and_one_below_does_not() -> None:
    time = FakeTime()
    b = breaker(time, consecutive_failures=NO_STREAK, open_on_retry_after_s=10.0)
    b.on_call()
    b.on_failure(retry_after_s=9.9)
    assert b.state is BreakerState.CLOSED
    b.on_call()
    b.on_failure(retry_after_s=10.0)
    assert b.state is BreakerState.OPEN
    assert b.available_at() == time.now + 10.0


def test_the_streak_opens_for_the_servers_retry_after_when_one_was_given() -> None:
    time = FakeTime()
    b = breaker(
        time,
        consecutive_failures=2,
        min_calls_in_window=NO_RATIO_CALLS,
        open_on_retry_after_s=NO_RETRY_AFTER_OPEN,
        cool_down_s=9.0,
    )
    fail(b, 2, retry_after_s=4.0)
    assert b.state is BreakerState.OPEN
    assert b.available_at() == time.now + 4.0


def test_open_fails_fast_and_says_when() -> None:
    time = FakeTime()
    b = breaker(time, open_on_retry_after_s=5.0)
    b.on_failure(retry_after_s=20.0)
    opened = time.now
    for offset in (0.0, 5.0, 19.0):
        time.now = opened + offset
        assert not b.allows()
        assert b.available_at() == opened + 20.0


# ---- half-open ----------------------------------------------------------------------------


def open_then_cool(time: FakeTime, **policy: Any) -> CircuitBreaker:
    b = breaker(time, open_on_retry_after_s=1.0, **policy)
    b.on_call()
    b.on_failure(retry_after_s=5.0)
    time.now += 5.0
    assert b.state is BreakerState.HALF_OPEN
    return b


@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_lets_a_bounded_number_of_probes_through(probes: int) -> None:
    time = FakeTime()
    b = open_then_cool(time, half_open_probes=probes)
    for _ in range(probes):
        assert b.allows()
        b.on_call()
    assert not b.allows()
    assert b.available_at() > time.now
    assert b.state is BreakerState.HALF_OPEN


def test_a_probe_that_succeeds_closes_the_breaker() -> None:
    time = FakeTime()
    b = open_then_cool(time)
    b.on_call()
    assert not b.allows()  # the only probe is out
    b.on_success()
    assert b.state is BreakerState.CLOSED
    assert b.allows()
    b.on_call()  # closed again: calls pass without limit
    b.on_call()
    assert b.allows()


def test_a_probe_that_fails_opens_it_again() -> None:
    time = FakeTime()
    b = open_then_cool(time, cool_down_s=8.0)
    b.on_call()
    b.on_failure()
    assert b.state is BreakerState.OPEN
    assert b.available_at() == time.now + 8.0
    time.now += 8.0
    assert b.state is BreakerState.HALF_OPEN


def test_a_probe_that_fails_with_a_retry_after_opens_for_it() -> None:
    time = FakeTime()
    b = open_then_cool(time, cool_down_s=8.0)
    b.on_call()
    b.on_failure(retry_after_s=2.5)
    assert b.state is BreakerState.OPEN
    assert b.available_at() == time.now + 2.5


def test_after_closing_the_streak_starts_from_zero() -> None:
    time = FakeTime()
    b = breaker(time, consecutive_failures=3, min_calls_in_window=NO_RATIO_CALLS, cool_down_s=1.0)
    fail(b, 3)
    time.now += 1.0
    succeed(b, 1)
    assert b.state is BreakerState.CLOSED
    fail(b, 2)
    assert b.state is BreakerState.CLOSED


# ---- the board: counts and logs -----------------------------------------------------------


def test_the_board_keeps_one_breaker_per_deployment() -> None:
    time = FakeTime()
    board = BreakerBoard(BreakerPolicy(open_on_retry_after_s=1.0), clock=time.monotonic)
    assert board["a"] is board["a"]
    board["a"].on_failure(retry_after_s=5.0)
    assert board["a"].state is BreakerState.OPEN
    assert board["b"].state is BreakerState.CLOSED


def test_transitions_are_counted_per_deployment() -> None:
    time = FakeTime()
    board = BreakerBoard(
        BreakerPolicy(open_on_retry_after_s=1.0, cool_down_s=2.0), clock=time.monotonic
    )
    a = board["dep-a"]
    a.on_failure(retry_after_s=3.0)  # closed -> open
    time.now += 3.0
    assert a.state is BreakerState.HALF_OPEN  # open -> half_open
    a.on_call()
    a.on_failure()  # half_open -> open
    time.now += 2.0
    a.on_call()  # open -> half_open
    a.on_success()  # half_open -> closed
    board["dep-b"].on_failure(retry_after_s=3.0)
    assert board.transitions == {
        ("dep-a", "closed->open"): 1,
        ("dep-a", "open->half_open"): 2,
        ("dep-a", "half_open->open"): 1,
        ("dep-a", "half_open->closed"): 1,
        ("dep-b", "closed->open"): 1,
    }


def test_transitions_are_logged_with_the_deployment_and_no_tenant(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    board = BreakerBoard(BreakerPolicy(open_on_retry_after_s=1.0), clock=time.monotonic)
    with caplog.at_level(logging.INFO, logger="shared.resilience.breaker"):
        board["dep-a"].on_failure(retry_after_s=4.0)
        time.now += 4.0
        board["dep-a"].on_call()
        board["dep-a"].on_success()
    logged = [fields_of(r) for r in caplog.records if fields_of(r).get("event")]
    assert [(f["event"], f["deployment"], f["from_state"], f["to_state"]) for f in logged] == [
        ("breaker.transition", "dep-a", "closed", "open"),
        ("breaker.transition", "dep-a", "open", "half_open"),
        ("breaker.transition", "dep-a", "half_open", "closed"),
    ]
    for record in caplog.records:
        assert not any("tenant" in key for key in fields_of(record))
        assert "tenant" not in record.getMessage()
    assert caplog.records[0].levelno == logging.WARNING  # opening is worth a warning


def test_no_transition_no_log_no_count(caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()
    board = BreakerBoard(BreakerPolicy(consecutive_failures=5), clock=time.monotonic)
    with caplog.at_level(logging.DEBUG, logger="shared.resilience.breaker"):
        for _ in range(4):
            board["dep-a"].on_failure()
        board["dep-a"].on_success()
    assert not board.transitions
    assert not caplog.records
