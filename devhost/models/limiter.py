"""Per-deployment rate limits, as Azure OpenAI applies them.

- Tokens per minute over a sliding minute. A request is charged, when it is admitted, its
  estimated prompt tokens plus its max_tokens (the caller passes the sum), not what it ends up
  generating. A request that costs more than the whole TPM is admitted only into an empty minute
  (so it can still be served, alone).
- Requests per minute, enforced as RPM/6 per fixed 10-second window. A deployment with a TPM but
  no RPM gets Azure's ratio: 6 RPM per 1,000 TPM.
- A throttled request is charged nothing, against either limit.
- A limit of 0 means unlimited.

The clock is injectable (seconds, monotonic), so tests drive time without sleeping.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

MINUTE_S = 60.0
RPM_WINDOW_S = 10.0
WINDOWS_PER_MINUTE = 6
RPM_PER_1000_TPM = 6


def effective_rpm(tpm: int, rpm: int) -> int:
    """The RPM a deployment enforces: its own, or 6 per 1,000 TPM when only TPM is set."""
    if rpm > 0:
        return rpm
    if tpm > 0:
        return tpm * RPM_PER_1000_TPM // 1000
    return 0


def requests_per_window(rpm: int) -> int:
    """How many requests one 10-second window admits (at least one when RPM is limited)."""
    return max(1, rpm // WINDOWS_PER_MINUTE) if rpm > 0 else 0


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    retry_after_s: float
    """0 when admitted; otherwise how long until the same request would be admitted."""
    remaining_requests: int | None
    """Requests left in the current 10-second window; None when unlimited."""
    remaining_tokens: int | None
    """Tokens left in the sliding minute; None when unlimited."""
    limit: Literal["requests", "tokens"] | None = None
    """Which limit throttled the request."""


class RateLimiter:
    __slots__ = ("_clock", "_count", "_per_window", "_spent", "_tpm", "_used", "_window", "rpm")

    def __init__(self, tpm: int = 0, rpm: int = 0, clock: Callable[[], float] = time.monotonic):
        if tpm < 0 or rpm < 0:
            raise ValueError("limits must be >= 0")
        self._clock = clock
        self._tpm = tpm
        self.rpm = effective_rpm(tpm, rpm)
        self._per_window = requests_per_window(self.rpm)
        self._spent: deque[tuple[float, int]] = deque()
        self._used = 0
        self._window = -1
        self._count = 0

    @property
    def tpm(self) -> int:
        return self._tpm

    @property
    def per_window(self) -> int:
        return self._per_window

    def reset(self) -> None:
        self._spent.clear()
        self._used = 0
        self._window = -1
        self._count = 0

    def try_acquire(self, tokens: int) -> Decision:
        """Admit and charge the request, or say how long to wait; never charges a refusal."""
        if self._tpm == 0 and self._per_window == 0:
            return _UNLIMITED
        now = self._clock()
        rpm_wait = self._requests_wait(now)
        tpm_wait = self._tokens_wait(now, tokens)
        if rpm_wait == 0.0 and tpm_wait == 0.0:
            if self._per_window:
                self._count += 1
            if self._tpm:
                self._spent.append((now, tokens))
                self._used += tokens
            return Decision(True, 0.0, self._remaining_requests(), self._remaining_tokens())
        return Decision(
            False,
            max(rpm_wait, tpm_wait),
            self._remaining_requests(),
            self._remaining_tokens(),
            "requests" if rpm_wait >= tpm_wait else "tokens",
        )

    def _requests_wait(self, now: float) -> float:
        if not self._per_window:
            return 0.0
        window = math.floor(now / RPM_WINDOW_S)
        if window != self._window:
            self._window = window
            self._count = 0
        if self._count < self._per_window:
            return 0.0
        return (window + 1) * RPM_WINDOW_S - now

    def _tokens_wait(self, now: float, tokens: int) -> float:
        if not self._tpm:
            return 0.0
        spent = self._spent
        horizon = now - MINUTE_S
        while spent and spent[0][0] <= horizon:
            self._used -= spent.popleft()[1]
        if self._used + tokens <= self._tpm or not spent:
            return 0.0
        # Walk the oldest charges until enough of them have left the minute.
        excess = self._used + tokens - self._tpm
        freed = 0
        for at, charged in spent:
            freed += charged
            if freed >= excess:
                return at + MINUTE_S - now
        return spent[-1][0] + MINUTE_S - now  # oversized: wait for an empty minute

    def _remaining_requests(self) -> int | None:
        return self._per_window - self._count if self._per_window else None

    def _remaining_tokens(self) -> int | None:
        return max(0, self._tpm - self._used) if self._tpm else None


_UNLIMITED = Decision(True, 0.0, None, None)
