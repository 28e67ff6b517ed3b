"""The simulator's rate limiter, driven by a fake clock: no real sleeping."""

from __future__ import annotations

import pytest

from devhost.models.limiter import (
    MINUTE_S,
    RPM_WINDOW_S,
    RateLimiter,
    effective_rpm,
    requests_per_window,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_unlimited_admits_everything_and_reports_no_remaining(clock: FakeClock) -> None:
    lim = RateLimiter(0, 0, clock)
    for _ in range(10_000):
        d = lim.try_acquire(1_000_000)
        assert d.admitted
    assert d.remaining_tokens is None
    assert d.remaining_requests is None


def test_derived_rpm_is_six_per_thousand_tpm() -> None:
    assert effective_rpm(tpm=1000, rpm=0) == 6
    assert effective_rpm(tpm=200_000, rpm=0) == 1200
    assert effective_rpm(tpm=200_000, rpm=30) == 30  # an explicit RPM wins
    assert effective_rpm(tpm=0, rpm=0) == 0
    assert requests_per_window(1200) == 200
    assert requests_per_window(6) == 1
    assert requests_per_window(5) == 1  # a limited deployment admits at least one per window
    assert requests_per_window(0) == 0


def test_tpm_charges_prompt_plus_max_tokens_over_a_sliding_minute(clock: FakeClock) -> None:
    lim = RateLimiter(tpm=1000, rpm=600, clock=clock)
    assert lim.try_acquire(400).remaining_tokens == 600
    clock.advance(20)
    assert lim.try_acquire(400).remaining_tokens == 200
    clock.advance(20)
    refused = lim.try_acquire(400)
    assert not refused.admitted
    assert refused.limit == "tokens"
    # the first charge (t=0) leaves the minute at t=60, i.e. 20 s from now
    assert refused.retry_after_s == pytest.approx(20.0)
    assert refused.remaining_tokens == 200
    clock.advance(19.9)
    assert not lim.try_acquire(400).admitted
    clock.advance(0.1)
    ok = lim.try_acquire(400)
    assert ok.admitted
    assert ok.remaining_tokens == 200  # 400 (t=20) + 400 (now) in the window


def test_retry_after_waits_for_enough_tokens_to_leave(clock: FakeClock) -> None:
    lim = RateLimiter(tpm=1000, rpm=600, clock=clock)
    for _ in range(5):
        assert lim.try_acquire(200).admitted
        clock.advance(10)
    # charges at t=0,10,20,30,40 (200 each); now t=50; asking 500 needs 500 freed: 3 charges
    d = lim.try_acquire(500)
    assert not d.admitted
    assert d.retry_after_s == pytest.approx(20 + MINUTE_S - 50)
    clock.advance(d.retry_after_s)
    assert lim.try_acquire(500).admitted


def test_throttled_requests_are_not_charged(clock: FakeClock) -> None:
    lim = RateLimiter(tpm=1000, rpm=600, clock=clock)
    assert lim.try_acquire(900).admitted
    for _ in range(50):
        assert not lim.try_acquire(200).admitted
    # only the first charge counts: a small request still fits
    small = lim.try_acquire(100)
    assert small.admitted
    assert small.remaining_tokens == 0
    clock.advance(MINUTE_S)
    assert lim.try_acquire(1000).remaining_tokens == 0


def test_rpm_is_enforced_per_ten_second_window(clock: FakeClock) -> None:
    clock.now = 1000.0  # the start of a window (1000 / 10 = 100)
    lim = RateLimiter(tpm=0, rpm=60, clock=clock)  # 10 per 10 s
    remaining = [lim.try_acquire(1).remaining_requests for _ in range(10)]
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    clock.advance(3.5)
    refused = lim.try_acquire(1)
    assert not refused.admitted
    assert refused.limit == "requests"
    assert refused.retry_after_s == pytest.approx(RPM_WINDOW_S - 3.5)
    clock.advance(refused.retry_after_s)
    assert lim.try_acquire(1).admitted  # a new window


def test_rpm_refusal_does_not_use_up_the_window(clock: FakeClock) -> None:
    clock.now = 2000.0
    lim = RateLimiter(tpm=0, rpm=12, clock=clock)  # 2 per window
    assert lim.try_acquire(1).admitted
    assert lim.try_acquire(1).admitted
    assert not lim.try_acquire(1).admitted
    clock.advance(RPM_WINDOW_S)
    assert lim.try_acquire(1).remaining_requests == 1


def test_derived_rpm_throttles_a_tpm_only_deployment(clock: FakeClock) -> None:
    clock.now = 3000.0
    lim = RateLimiter(tpm=1000, rpm=0, clock=clock)  # 6 RPM: 1 request per 10 s
    assert lim.rpm == 6
    assert lim.try_acquire(10).admitted
    d = lim.try_acquire(10)
    assert not d.admitted
    assert d.limit == "requests"
    assert d.retry_after_s == pytest.approx(RPM_WINDOW_S)


def test_a_token_refusal_is_not_counted_against_rpm(clock: FakeClock) -> None:
    clock.now = 4000.0
    lim = RateLimiter(tpm=100, rpm=12, clock=clock)  # 2 per window
    assert lim.try_acquire(100).admitted
    assert not lim.try_acquire(50).admitted  # tokens
    d = lim.try_acquire(0)  # fits the tokens; the refused one did not use the second slot
    assert d.admitted
    assert d.remaining_requests == 0


def test_when_both_limits_refuse_the_longer_wait_is_given(clock: FakeClock) -> None:
    clock.now = 5000.0
    lim = RateLimiter(tpm=100, rpm=6, clock=clock)
    assert lim.try_acquire(100).admitted
    d = lim.try_acquire(10)
    assert not d.admitted
    assert d.retry_after_s == pytest.approx(MINUTE_S)
    assert d.limit == "tokens"


def test_an_oversized_request_runs_alone_in_an_empty_minute(clock: FakeClock) -> None:
    lim = RateLimiter(tpm=1000, rpm=600, clock=clock)
    assert lim.try_acquire(10).admitted
    clock.advance(5)
    d = lim.try_acquire(5000)
    assert not d.admitted
    assert d.retry_after_s == pytest.approx(MINUTE_S - 5)
    clock.advance(d.retry_after_s)
    big = lim.try_acquire(5000)
    assert big.admitted
    assert big.remaining_tokens == 0
    assert not lim.try_acquire(1).admitted


def test_reset_forgets_all_charges(clock: FakeClock) -> None:
    clock.now = 6000.0
    lim = RateLimiter(tpm=100, rpm=6, clock=clock)
    assert lim.try_acquire(100).admitted
    lim.reset()
    d = lim.try_acquire(100)
    assert d.admitted
    assert d.remaining_requests == 0


def test_negative_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        RateLimiter(tpm=-1)
