"""The wait before the next attempt (shared/resilience/backoff.py): the server's retry hint,
capped; without one, full-jitter exponential backoff."""

from __future__ import annotations

import pytest
from tenacity import RetryCallState, Retrying

from shared.inference.model_errors import ModelRateLimited, ModelServerError
from shared.resilience.backoff import WaitRetryAfter

DRAWS = 2000


def failed_state(error: BaseException, attempt_number: int = 1) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt_number
    state.set_exception((type(error), error, None))
    return state


def throttled(retry_after_s: float | None) -> ModelRateLimited:
    return ModelRateLimited("429", deployment="d", status_code=429, retry_after_s=retry_after_s)


@pytest.mark.parametrize("hint", [0.0, 0.4, 3.0, 19.99])
def test_the_servers_retry_after_is_waited_exactly(hint: float) -> None:
    wait = WaitRetryAfter(base_s=0.5, cap_s=20.0)
    for attempt in (1, 5):
        assert wait(failed_state(throttled(hint), attempt)) == hint


def test_the_retry_after_is_capped() -> None:
    wait = WaitRetryAfter(base_s=0.5, cap_s=20.0)
    assert wait(failed_state(throttled(60.0))) == 20.0
    assert wait(failed_state(throttled(20.0))) == 20.0


def test_a_5xx_with_a_hint_honours_it_too() -> None:
    error = ModelServerError("503", deployment="d", status_code=503, retry_after_s=2.0)
    assert WaitRetryAfter(base_s=0.5, cap_s=20.0)(failed_state(error)) == 2.0


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("hintless", [throttled(None), ModelServerError("500", deployment="d")])
def test_without_a_hint_full_jitter_within_zero_and_the_capped_exponential(
    attempt: int, hintless: BaseException
) -> None:
    base, cap = 0.5, 3.0
    wait = WaitRetryAfter(base_s=base, cap_s=cap)
    # the ceiling of the draw: base * 2 ** retries so far (attempt 1 -> base), capped
    ceiling = min(cap, base * 2 ** (attempt - 1))
    draws = [wait(failed_state(hintless, attempt)) for _ in range(DRAWS)]
    assert all(0.0 <= d <= ceiling for d in draws)
    # full jitter: spread over the whole range, not a fixed delay nor "half plus jitter"
    assert min(draws) < 0.1 * ceiling
    assert max(draws) > 0.9 * ceiling
    assert len(set(draws)) > DRAWS // 2


def test_the_backoff_grows_with_the_attempts() -> None:
    wait = WaitRetryAfter(base_s=0.25, cap_s=100.0)
    error = ModelServerError("500", deployment="d")
    largest = [max(wait(failed_state(error, n)) for _ in range(DRAWS)) for n in (1, 3, 5)]
    assert largest[0] <= 0.25 < largest[1] <= 1.0 < largest[2] <= 4.0


@pytest.mark.parametrize("bad", [-1.0, "3", None])
def test_a_hint_that_is_not_a_non_negative_number_falls_back_to_backoff(bad: object) -> None:
    error = ModelServerError("500", deployment="d")
    error.retry_after_s = bad  # type: ignore[assignment]
    draws = [WaitRetryAfter(base_s=0.5, cap_s=20.0)(failed_state(error)) for _ in range(200)]
    assert all(0.0 <= d <= 0.5 for d in draws)


def test_the_clients_no_room_until_failure_waits_exactly_until_then() -> None:
    """backoff.py's docstring: the client's "no candidate has room until T" failure carries T - now
    as its retry_after_s, honoured the same way (capped)."""
    from shared.resilience.client import _NoRoomNow

    wait = WaitRetryAfter(base_s=0.5, cap_s=20.0)
    busy = _NoRoomNow("no candidate has room", retry_after_s=4.0, why="deployments_busy")
    assert wait(failed_state(busy, attempt_number=1)) == 4.0
