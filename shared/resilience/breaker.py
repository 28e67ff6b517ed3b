"""Circuit breakers, one per model deployment: closed -> open -> half-open -> closed.

Rules (after Nygard's *Release It!* and the Azure API Management backend circuit breaker):
- closed: calls pass. It opens after `consecutive_failures` failures in a row, or when at least
  `min_calls_in_window` calls in the last `window_s` seconds failed at a ratio of
  `failure_ratio` or more, or at once on a 429 whose retry-after is `open_on_retry_after_s` or
  longer (the service has said it will refuse everything for that long).
- open: calls fail fast. It stays open for the server's retry-after when one was given (as APIM's
  breaker does with `acceptRetryAfter`), else for `cool_down_s`.
- half-open: up to `half_open_probes` calls are let through at a time; a success closes the
  breaker, a failure opens it again.

Only transient failures count (429, 5xx, timeouts, connection errors); a request the model refuses
(400) or a configuration error says nothing about the deployment's health. Transitions are logged
(`breaker.transition`, tagged with the deployment, never a tenant) and counted in `transitions`.

Libraries weighed: `pybreaker` and `purgatory` both open for a fixed `reset_timeout` set at
construction and count only consecutive failures; neither takes an open time from the failure
(the server's retry-after) nor a failure ratio over a time window, and both wrap the call, where
the router needs to ask "may I call this deployment now, and if not, when?" before choosing it.
So this is a small state machine of our own; the clock is injectable (monotonic seconds).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from shared.structured_logging import key_values

log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    consecutive_failures: int = 5
    failure_ratio: float = 0.5
    min_calls_in_window: int = 10
    window_s: float = 30.0
    open_on_retry_after_s: float = 10.0
    cool_down_s: float = 10.0
    half_open_probes: int = 1


class CircuitBreaker:
    """The breaker of one deployment. Not thread-safe; one event loop uses it."""

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[str, BreakerState, BreakerState, str], None] | None = None,
    ) -> None:
        self.name = name
        self._policy = policy
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._open_until = 0.0
        self._streak = 0
        self._calls: deque[tuple[float, bool]] = deque()  # (at, failed)
        self._probes = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._move(BreakerState.HALF_OPEN, "cool-down over")
        return self._state

    def available_at(self, now: float | None = None) -> float:
        """The monotonic time at which a call may pass: `now` when closed, or half-open with a
        probe free; the end of the open period when open."""
        now = self._clock() if now is None else now
        state = self.state
        if state is BreakerState.OPEN:
            return self._open_until
        if state is BreakerState.HALF_OPEN and self._probes >= self._policy.half_open_probes:
            return now + min(1.0, self._policy.cool_down_s)  # a probe is out; ask again soon
        return now

    def allows(self, now: float | None = None) -> bool:
        now = self._clock() if now is None else now
        return self.available_at(now) <= now

    def on_call(self) -> None:
        """A call is about to go out (reserves a probe when half-open)."""
        if self.state is BreakerState.HALF_OPEN:
            self._probes += 1

    def on_abandoned(self) -> None:
        """A call ended without a verdict on the deployment's health (a refused request, a
        configuration error, a cancellation): a probe it held is given back."""
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)

    def on_success(self) -> None:
        self._record(failed=False)
        self._streak = 0
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            self._move(BreakerState.CLOSED, "probe succeeded")

    def on_failure(self, retry_after_s: float | None = None) -> None:
        """A transient failure; `retry_after_s` is the server's hint, if it gave one."""
        now = self._clock()
        self._record(failed=True)
        self._streak += 1
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            self._open(now, retry_after_s, "probe failed")
            return
        if self._state is BreakerState.OPEN:
            self._open_until = max(self._open_until, now + (retry_after_s or 0.0))
            return
        p = self._policy
        if retry_after_s is not None and retry_after_s >= p.open_on_retry_after_s:
            self._open(now, retry_after_s, f"retry-after {retry_after_s:g}s")
        elif self._streak >= p.consecutive_failures:
            self._open(now, retry_after_s, f"{self._streak} consecutive failures")
        else:
            failed = sum(1 for _, f in self._calls if f)
            if len(self._calls) >= p.min_calls_in_window and failed / len(self._calls) >= (
                p.failure_ratio
            ):
                self._open(now, retry_after_s, f"{failed}/{len(self._calls)} failed")

    def _record(self, *, failed: bool) -> None:
        now = self._clock()
        self._calls.append((now, failed))
        while self._calls and self._calls[0][0] <= now - self._policy.window_s:
            self._calls.popleft()

    def _open(self, now: float, retry_after_s: float | None, why: str) -> None:
        self._open_until = now + (
            retry_after_s if retry_after_s is not None else self._policy.cool_down_s
        )
        self._probes = 0
        self._calls.clear()
        self._move(BreakerState.OPEN, why)

    def _move(self, to: BreakerState, why: str) -> None:
        before, self._state = self._state, to
        if to is BreakerState.CLOSED:
            self._streak = 0
            self._probes = 0
        if before is not to and self._on_transition is not None:
            self._on_transition(self.name, before, to, why)


class BreakerBoard:
    """The breakers of every deployment, created on first use, and their transition counts."""

    def __init__(
        self, policy: BreakerPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._policy = policy or BreakerPolicy()
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self.transitions: Counter[tuple[str, str]] = Counter()
        """(deployment, "closed->open") -> how many times."""

    def __getitem__(self, deployment: str) -> CircuitBreaker:
        breaker = self._breakers.get(deployment)
        if breaker is None:
            breaker = CircuitBreaker(deployment, self._policy, self._clock, self._transition)
            self._breakers[deployment] = breaker
        return breaker

    def _transition(self, name: str, before: BreakerState, to: BreakerState, why: str) -> None:
        self.transitions[(name, f"{before}->{to}")] += 1
        fields = {
            "event": "breaker.transition",
            "deployment": name,
            "from_state": str(before),
            "to_state": str(to),
            "why": why,
        }
        level = logging.WARNING if to is BreakerState.OPEN else logging.INFO
        log.log(level, key_values(fields), extra=fields)
