"""What is left of each deployment's tokens-per-minute (TPM) and requests-per-minute (RPM) budget.

Azure OpenAI admits a request against both limits when it arrives, charging its *estimated* tokens:
the prompt estimated from characters plus `max_tokens` (not what the model ends up generating);
RPM is enforced as RPM/6 per 10-second window, and a deployment given only TPM gets 6 RPM per
1,000 TPM ("Manage Azure OpenAI Service quota", learn.microsoft.com). A throttled request is charged
nothing. `DeploymentBudget` mirrors that, so the router sends a request where it fits and most 429s
are avoided rather than retried:

- locally, each admitted request is charged to a sliding minute of tokens and a sliding 10 s
  window of requests (stricter than Azure's fixed windows, so never looser), with a small margin
  for the time a request takes to reach the service;
- the service's own count, `x-ratelimit-remaining-tokens` / `-requests` on each answer, corrects
  the local view for what other instances spent: it is trusted for `observation_ttl_s` after it
  was seen, less what this instance charged since;
- a 429 blocks the deployment for its retry-after and refunds the local charge.

Times are monotonic seconds from an injectable clock. Libraries weighed: `limits` counts hits
against a fixed limit but cannot be corrected by a remaining-count the server reports, nor answer
"when will N tokens fit"; `aiolimiter` is a leaky bucket that waits inside `acquire` rather than
telling the router which deployment has room. So the window arithmetic is ours.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shared.tenancy.registry import Capacity

MINUTE_S = 60.0
RPM_WINDOW_S = 10.0
WINDOWS_PER_MINUTE = 6
RPM_PER_1000_TPM = 6
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3


def text_tokens(text: str) -> int:
    """About 4 characters per token (OpenAI's rule of thumb; Azure's limiter estimates likewise)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def prompt_tokens_estimate(contents: Iterable[str]) -> int:
    """Prompt tokens of a chat: its texts plus 3 per message and 3 to prime the reply."""
    return REPLY_PRIMING_TOKENS + sum(TOKENS_PER_MESSAGE + text_tokens(c) for c in contents)


def admission_tokens(contents: Iterable[str], max_tokens: int | None, default_max: int) -> int:
    """What a deployment charges a request when it admits it: prompt estimate + max_tokens."""
    return prompt_tokens_estimate(contents) + (max_tokens if max_tokens else default_max)


def effective_rpm(capacity: Capacity) -> int:
    if capacity.requests_per_minute:
        return capacity.requests_per_minute
    return max(1, capacity.tokens_per_minute * RPM_PER_1000_TPM // 1000)


@dataclass(frozen=True, slots=True)
class _Observation:
    at: float
    tokens: int | None
    requests: int | None
    charged_tokens_before: int
    charged_requests_before: int


class DeploymentBudget:
    """One deployment's budget as this instance sees it. Not thread-safe (one event loop)."""

    def __init__(
        self,
        capacity: Capacity,
        *,
        clock: Callable[[], float] = time.monotonic,
        margin_s: float = 0.25,
        observation_ttl_s: float = 5.0,
    ) -> None:
        self.tpm = capacity.tokens_per_minute
        self.per_window = max(1, effective_rpm(capacity) // WINDOWS_PER_MINUTE)
        self._clock = clock
        self._margin_s = margin_s
        self._ttl_s = observation_ttl_s
        self._tokens: deque[tuple[float, int]] = deque()
        self._used = 0  # the sum of the tokens in the window
        self._requests: deque[float] = deque()
        self._charged_tokens = 0  # ever, for the observation arithmetic
        self._charged_requests = 0
        self._observed: _Observation | None = None
        self._blocked_until = 0.0

    def _expire(self, now: float) -> None:
        while self._tokens and self._tokens[0][0] + MINUTE_S + self._margin_s <= now:
            self._used -= self._tokens.popleft()[1]
        while self._requests and self._requests[0] + RPM_WINDOW_S + self._margin_s <= now:
            self._requests.popleft()

    def room_at(self, tokens: int, now: float | None = None) -> float:
        """The earliest monotonic time at which a request charged `tokens` fits (`now` itself,
        when it fits now). A request larger than the whole TPM fits only into an empty minute, as
        Azure admits it."""
        now = self._clock() if now is None else now
        self._expire(now)
        at = max(now, self._blocked_until)
        at = max(at, self._tokens_free_at(now, min(tokens, self.tpm)))
        if len(self._requests) >= self.per_window:
            at = max(at, self._requests[-self.per_window] + RPM_WINDOW_S + self._margin_s)
        observed = self._observed
        if observed is not None and now - observed.at < self._ttl_s:
            left_tokens = _left(
                observed.tokens, self._charged_tokens - observed.charged_tokens_before
            )
            left_requests = _left(
                observed.requests, self._charged_requests - observed.charged_requests_before
            )
            if left_tokens < min(tokens, self.tpm) or left_requests < 1:
                at = max(at, observed.at + self._ttl_s)
        return at

    def _tokens_free_at(self, now: float, tokens: int) -> float:
        used = self._used
        if used + tokens <= self.tpm:
            return now
        for at, spent in self._tokens:  # oldest first: when enough of it has slid out
            used -= spent
            if used + tokens <= self.tpm:
                return at + MINUTE_S + self._margin_s
        return now  # unreachable: an empty window always fits

    def charge(self, tokens: int) -> tuple[float, int]:
        """Charge one request; returns its receipt, for `refund`."""
        now = self._clock()
        receipt = (now, tokens)
        self._tokens.append(receipt)
        self._used += tokens
        self._requests.append(now)
        self._charged_tokens += tokens
        self._charged_requests += 1
        return receipt

    def refund(self, receipt: tuple[float, int]) -> None:
        """Undo the charge of `receipt` (a 429: the service charged nothing), if it is still in
        the windows."""
        at, tokens = receipt
        for i in range(len(self._tokens) - 1, -1, -1):
            if self._tokens[i] is receipt:
                del self._tokens[i]
                self._used -= tokens
                break
        for i in range(len(self._requests) - 1, -1, -1):
            if self._requests[i] == at:
                del self._requests[i]
                break
        self._charged_tokens -= tokens
        self._charged_requests -= 1

    def observe(self, remaining_tokens: int | None, remaining_requests: int | None) -> None:
        """The service's `x-ratelimit-remaining-*` after one of this instance's requests."""
        if remaining_tokens is None and remaining_requests is None:
            return
        self._observed = _Observation(
            at=self._clock(),
            tokens=remaining_tokens,
            requests=remaining_requests,
            charged_tokens_before=self._charged_tokens,
            charged_requests_before=self._charged_requests,
        )

    def block(self, seconds: float) -> None:
        """A 429: nothing fits until `seconds` from now."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)


def _left(observed: int | None, charged_since: int) -> float:
    return float("inf") if observed is None else observed - charged_since
