"""The wait before the next attempt, as a `tenacity` wait strategy.

`WaitRetryAfter`: when the failure carries the service's retry hint (`retry_after_s`, read from
`retry-after-ms`, `x-ms-retry-after-ms`, then `retry-after` by `shared.inference.model_errors`),
wait that long, capped; otherwise full-jitter exponential backoff (a uniform draw between 0 and
min(cap, base * 2 ** attempt): AWS Architecture Blog, "Exponential Backoff And Jitter", 2015),
which is tenacity's `wait_random_exponential`. The resilient client's own "no candidate has room
until T" failure carries T - now as its `retry_after_s`, so it is honoured the same way (capped).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from tenacity import RetryCallState
from tenacity.wait import wait_base, wait_random_exponential


@runtime_checkable
class HasRetryHint(Protocol):
    retry_after_s: float | None


class _Attempt:
    """What `wait_random_exponential` reads of a retry state: the attempt number."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


class WaitRetryAfter(wait_base):
    def __init__(self, *, base_s: float = 0.5, cap_s: float = 20.0) -> None:
        self._cap_s = cap_s
        self._fallback = wait_random_exponential(multiplier=base_s, max=cap_s)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        return self.wait_for(error, retry_state.attempt_number)

    def wait_for(self, error: BaseException | None, attempt_number: int) -> float:
        """The wait after `error` ended attempt number `attempt_number` (1-based)."""
        hint = getattr(error, "retry_after_s", None)
        if isinstance(hint, int | float) and hint >= 0:
            return min(float(hint), self._cap_s)
        return float(self._fallback(_Attempt(attempt_number)))  # type: ignore[arg-type]
