"""The resilient model client: one `await client.complete(tenant_id, messages, parameters)` per
request, over the model port, with every policy of this package composed in one place.

Per request:
1. the tenant's candidates come from the router (priority, then capacity-weighted; a dedicated
   tenant only its own unless its policy allows pooled fallback; a tuned tenant its tuned
   deployment, then its base);
2. the tenant's quota (tokens and requests per minute, shared across instances) is charged the
   request's admission estimate; over quota -> `TryLater` at the time the tenant has room; the
   tenant's bulkhead (max concurrent calls on this instance) is entered;
3. each attempt goes to the first candidate whose circuit breaker allows a call and whose rate
   budget has room for the request (deployments that already failed this request go last), so
   most 429s are avoided rather than retried;
4. a transient failure (429, 5xx, timeout, connection) is retried with `tenacity`: at once on
   another candidate that has room (a failover), otherwise after the earliest time a candidate
   frees up, the server's retry-after, or full-jitter backoff;
5. when the next wait would pass the request's time budget, exceed `max_wait_s`, or the attempts
   run out, `TryLater` is raised with the earliest time worth trying again: the caller reschedules
   (the Functions handler sends the request back to Service Bus with a scheduled enqueue time).

A request the model refuses (`ModelRequestRejected`: 400/413/422) and a configuration error
(401/403/404) are raised at once, never retried. A prompt a content filter refuses
(`ContentFiltered`, a refusal) is final too, and is returned as a filtered completion
(`Completion.content_filter`, no text, no tokens) from the deployment that refused it, so the
caller stores a `filtered` result; a completion the filter withheld (200, `finish_reason:
content_filter`) is an answer like any other: neither is retried or failed over. The SDKs' own
retries are off (`shared.inference.model_clients`), so this is the one retry policy.

Usable outside the Functions host: the benchmarks build it from a registry document directly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from shared.contracts import ChatMessage, InferenceParameters, RejectionReason
from shared.inference.model_clients import Completion, ModelPort
from shared.inference.model_errors import ContentFiltered, ModelRateLimited, TransientModelError
from shared.resilience.backoff import WaitRetryAfter
from shared.resilience.breaker import BreakerBoard, BreakerPolicy
from shared.resilience.priority import Priority
from shared.resilience.rate_budget import DeploymentBudget, admission_tokens
from shared.structured_logging import key_values
from shared.tenancy.registry import Capacity, Deployment, Quota, Registry, Tenant
from shared.tenancy.registry_source import RegistryProvider
from shared.tenancy.routing import Router, RoutingError

log = logging.getLogger(__name__)


class UnknownTenant(RoutingError):
    """The tenant is not in the registry."""


class RequestOverQuota(RoutingError):
    """The request alone needs more tokens than the tenant's whole per-minute quota."""


class TryLater(Exception):
    """The request cannot be served now; try again in `retry_after_s` seconds (at the earliest).

    `reason`: `deployments_busy` (every candidate open or out of budget), `time_budget` (the
    request's time budget is spent), `attempts` (the attempt limit is reached), or
    `tenant_quota:<limit>` / `tenant_concurrency` (the tenant is over its own quota)."""

    def __init__(self, retry_after_s: float, reason: str, *, attempts: int, throttled: int) -> None:
        super().__init__(f"try again in {retry_after_s:.1f}s ({reason})")
        self.retry_after_s = retry_after_s
        self.reason = reason
        self.attempts = attempts
        self.throttled = throttled


class QuotaVerdict(Protocol):
    @property
    def allowed(self) -> bool: ...
    @property
    def retry_after_s(self) -> float: ...
    @property
    def limit(self) -> str | None: ...


class QuotaPort(Protocol):
    """Per-tenant quotas (`shared.resilience.quotas.TenantQuotas`)."""

    async def try_acquire(
        self, tenant_id: str, quota: Quota, tokens: int, *, share: float = 1.0
    ) -> QuotaVerdict: ...

    def bulkhead(self, tenant_id: str, quota: Quota) -> asyncio.Semaphore | None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ResiliencePolicy:
    """time_budget_s: a request's whole time for attempts and waits (see `time_budget`);
    max_wait_s: the longest single in-process wait, longer ones become `TryLater`;
    max_attempts: calls per request; default_max_tokens: what the service is assumed to charge
    a request that sets no max_tokens."""

    time_budget_s: float = 60.0
    max_wait_s: float = 10.0
    max_attempts: int = 8
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 10.0
    default_max_tokens: int = 256
    max_retry_after_s: float = 300.0
    """A server's retry hint beyond this (e.g. an HTTP date years ahead) is read as this."""
    batch_quota_share: float = 0.5
    """The part of a tenant's quota its batch rows may use (shared.resilience.priority)."""
    batch_max_queued_s: float = 1.0
    """A batch row that waited in the queue longer than this steps aside (is rescheduled)."""
    batch_step_aside_s: float = 5.0
    """How much later a batch row that stepped aside comes back."""
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)


@dataclass(frozen=True, slots=True)
class ResilientCompletion:
    completion: Completion
    deployment: Deployment
    attempts: int
    failovers: int
    throttled: int
    """429s this request received."""


class _NoRoomNow(TransientModelError):
    """Every candidate is open or out of budget until `retry_after_s` from now, later than this
    request may wait; `why` is the bound that binds: `deployments_busy` (max_wait_s) or
    `time_budget`."""

    def __init__(self, message: str, *, retry_after_s: float, why: str) -> None:
        super().__init__(message, deployment="*", retry_after_s=retry_after_s)
        self.why = why


@dataclass
class _Request:
    tenant: Tenant
    candidates: list[Deployment]
    tokens: int
    priority: Priority = Priority.INTERACTIVE
    queued_s: float = 0.0
    failed: list[str] = field(default_factory=list)
    attempts: int = 0
    failovers: int = 0
    throttled: int = 0
    last: str | None = None
    started: float = 0.0


class ResilientModelClient:
    def __init__(
        self,
        models: ModelPort,
        registry: RegistryProvider,
        *,
        policy: ResiliencePolicy | None = None,
        router: Router | None = None,
        quotas: QuotaPort | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or ResiliencePolicy()
        self._models = models
        self._registry = registry
        self._router = router or Router(rng)
        self._quotas = quotas
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.breakers = BreakerBoard(self.policy.breaker, clock)
        self._budgets: dict[str, tuple[Capacity, DeploymentBudget]] = {}
        self._lines: dict[tuple[str, ...], asyncio.Lock] = {}
        self._wait = WaitRetryAfter(
            base_s=self.policy.backoff_base_s, cap_s=self.policy.backoff_cap_s
        )
        self.stats: Counter[str] = Counter()
        """calls, succeeded, filtered, throttled, failovers, retries, try_later: for benchmarks and
        demos."""

    def budget(self, deployment: Deployment) -> DeploymentBudget:
        """The deployment's budget; a new one when the registry changed its capacity."""
        known = self._budgets.get(deployment.name)
        if known is not None and known[0] == deployment.capacity:
            return known[1]
        budget = DeploymentBudget(deployment.capacity, clock=self._clock)
        self._budgets[deployment.name] = (deployment.capacity, budget)
        return budget

    async def complete(
        self,
        tenant_id: str,
        messages: Sequence[ChatMessage],
        parameters: InferenceParameters,
    ) -> ResilientCompletion:
        """One completion for the tenant. Raises `TryLater`, `RoutingError` (no candidate, or an
        unknown tenant), `ModelRequestRejected`, or `ModelConfigurationError`."""
        registry = await self._registry.get()
        tenant = registry.tenant(tenant_id)
        if tenant is None:
            raise UnknownTenant("unknown_tenant", f"tenant {tenant_id!r} is not registered")
        return await self.complete_for(registry, tenant, messages, parameters)

    async def complete_for(
        self,
        registry: Registry,
        tenant: Tenant,
        messages: Sequence[ChatMessage],
        parameters: InferenceParameters,
        *,
        priority: Priority = Priority.INTERACTIVE,
        queued_s: float = 0.0,
    ) -> ResilientCompletion:
        """`complete` for a caller that holds the registry and tenant already; a batch row
        (`priority`; `queued_s`: how long it waited in the queue) gets what interactive requests
        leave (shared.resilience.priority)."""
        request = _Request(
            tenant=tenant,
            candidates=self._router.candidates(registry, tenant),
            tokens=admission_tokens(
                (m.content for m in messages), parameters.max_tokens, self.policy.default_max_tokens
            ),
            priority=priority,
            queued_s=queued_s,
        )
        async with AsyncExitStack() as stack:
            await self._admit_tenant(request, stack)
            return await self._attempts(request, messages, parameters)
        raise AssertionError("unreachable")  # pragma: no cover - the stack does not swallow

    async def _admit_tenant(self, request: _Request, stack: AsyncExitStack) -> None:
        tenant = request.tenant
        tpm = tenant.quota.tokens_per_minute
        if tpm is not None and request.tokens > tpm:
            raise RequestOverQuota(
                RejectionReason.REQUEST_EXCEEDS_QUOTA,
                f"the request is charged {request.tokens} tokens (prompt estimate + max_tokens), "
                f"more than the tenant's quota of {tpm} tokens per minute; lower max_tokens",
            )
        policy = self.policy
        if request.priority is Priority.BATCH and request.queued_s > policy.batch_max_queued_s:
            self.stats["try_later"] += 1  # the host is behind: interactive requests first
            raise TryLater(policy.batch_step_aside_s, "interactive_first", attempts=0, throttled=0)
        if self._quotas is None:
            return
        if request.priority is Priority.BATCH:
            verdict = await self._quotas.try_acquire(
                tenant.id, tenant.quota, request.tokens, share=self.policy.batch_quota_share
            )
        else:
            verdict = await self._quotas.try_acquire(tenant.id, tenant.quota, request.tokens)
        if not verdict.allowed:
            self.stats["try_later"] += 1
            raise TryLater(
                max(verdict.retry_after_s, 0.05),
                f"tenant_quota:{verdict.limit}",
                attempts=0,
                throttled=0,
            )
        bulkhead = self._quotas.bulkhead(tenant.id, tenant.quota)
        if bulkhead is None:
            return
        try:
            await asyncio.wait_for(bulkhead.acquire(), timeout=self.policy.max_wait_s)
        except TimeoutError:
            self.stats["try_later"] += 1
            raise TryLater(1.0, "tenant_concurrency", attempts=0, throttled=0) from None
        stack.callback(bulkhead.release)

    async def _attempts(
        self, request: _Request, messages: Sequence[ChatMessage], parameters: InferenceParameters
    ) -> ResilientCompletion:
        """The first attempt directly (no retry machinery is built for the common case); after a
        transient failure, tenacity drives the rest."""
        request.started = self._clock()
        try:
            return await self._attempt(request, messages, parameters)
        except _NoRoomNow as exc:
            raise self._try_later(request, exc) from exc
        except TransientModelError as exc:
            first = exc
        pause = self._wait_before_next(request, first, 1)
        if self._out_of_time(request, pause):
            raise self._try_later(request, first)
        await self._pause(pause)

        def stop(state: RetryCallState) -> bool:
            return self._out_of_time(request, state.upcoming_sleep)

        def wait(state: RetryCallState) -> float:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            return self._wait_before_next(request, error, request.attempts)

        retrying = AsyncRetrying(
            retry=retry_if_exception(
                lambda e: isinstance(e, TransientModelError) and not isinstance(e, _NoRoomNow)
            ),
            wait=wait,
            stop=stop,
            sleep=self._pause,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(request, messages, parameters)
        except TransientModelError as exc:
            raise self._try_later(request, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            await self._sleep(seconds)

    def _out_of_time(self, request: _Request, upcoming_s: float) -> bool:
        policy = self.policy
        return (
            request.attempts >= policy.max_attempts
            or upcoming_s > policy.max_wait_s
            or self._clock() - request.started + upcoming_s > policy.time_budget_s
        )

    def _try_later(self, request: _Request, exc: TransientModelError) -> TryLater:
        """The earliest time any candidate has room (breakers and budgets already hold the
        servers' retry-after); at least a second when the calls themselves ran out or this
        request waited its turn in line for as long as it may."""
        delay = max(self._earliest_room(request) - self._clock(), 0.05)
        if request.attempts >= self.policy.max_attempts:
            reason, delay = "attempts", max(delay, 1.0)
        elif isinstance(exc, _NoRoomNow):
            reason, delay = exc.why, max(delay, exc.retry_after_s or 0.0, 0.05)
        elif delay > self.policy.max_wait_s:
            reason = "deployments_busy"
        else:
            reason, delay = "time_budget", max(delay, 1.0)
        self.stats["try_later"] += 1
        return TryLater(delay, reason, attempts=request.attempts, throttled=request.throttled)

    async def _acquire(self, request: _Request) -> Deployment:
        """A candidate with room for this request, waiting for one if need be.

        Requests that wait for the same candidates wait in one first-come-first-served line (an
        `asyncio.Lock`, which wakes its waiters in order): only the head sleeps until the earliest
        room and takes it, so a freed slot does not wake a herd, and a newcomer does not jump the
        line. A request waits at most `max_wait_s`, and never past its time budget; then
        `_NoRoomNow` (the caller reschedules)."""
        key = tuple(d.name for d in request.candidates)
        line = self._lines.get(key)
        if line is None or not line.locked():
            deployment = self._pick(request)
            if deployment is not None:
                return deployment
        if request.priority is Priority.BATCH:  # never ahead of, nor among, waiting requests
            behind = max(self._earliest_room(request) - self._clock(), 1.0)
            raise _NoRoomNow("batch row: no room now", retry_after_s=behind, why="deployments_busy")
        line = self._lines.setdefault(key, asyncio.Lock())
        now = self._clock()
        budget_end = request.started + self.policy.time_budget_s
        deadline = min(now + self.policy.max_wait_s, budget_end)
        why = "time_budget" if deadline == budget_end else "deployments_busy"
        try:
            async with asyncio.timeout(max(0.0, deadline - now)):
                await line.acquire()
        except TimeoutError:
            behind = max(self._earliest_room(request) - self._clock(), 1.0)
            raise _NoRoomNow("waited in line", retry_after_s=behind, why=why) from None
        try:
            while True:
                deployment = self._pick(request)
                if deployment is not None:
                    return deployment
                now = self._clock()
                room = self._earliest_room(request)
                if room > deadline:
                    raise _NoRoomNow("no candidate has room", retry_after_s=room - now, why=why)
                await self._sleep(room - now)
        finally:
            line.release()

    def _pick(self, request: _Request) -> Deployment | None:
        """The first candidate with a closed (or probing) breaker and room in its budget; the
        ones that failed this request go last."""
        fresh = [d for d in request.candidates if d.name not in request.failed]
        tried = [d for d in request.candidates if d.name in request.failed]
        now = self._clock()
        for deployment in fresh + tried:
            if self._has_room(deployment, request.tokens, now):
                return deployment
        return None

    def _has_room(self, deployment: Deployment, tokens: int, now: float) -> bool:
        return (
            self.breakers[deployment.name].allows(now)
            and self.budget(deployment).room_at(tokens, now) <= now
        )

    def _earliest_room(self, request: _Request) -> float:
        now = self._clock()
        return min(
            max(
                self.breakers[d.name].available_at(now),
                self.budget(d).room_at(request.tokens, now),
            )
            for d in request.candidates
        )

    def _wait_before_next(
        self, request: _Request, error: BaseException | None, attempt_number: int
    ) -> float:
        """0 when another candidate that has not failed this request has room (a failover), or
        when room is coming (the next attempt waits for it in line); otherwise the failure's retry
        hint or jittered backoff (the only candidate with room just failed)."""
        now = self._clock()
        fresh = [d for d in request.candidates if d.name not in request.failed]
        if any(self._has_room(d, request.tokens, now) for d in fresh):
            return 0.0
        if self._earliest_room(request) > now:
            return 0.0
        return self._wait.wait_for(error, attempt_number)

    async def _attempt(
        self, request: _Request, messages: Sequence[ChatMessage], parameters: InferenceParameters
    ) -> ResilientCompletion:
        deployment = await self._acquire(request)
        if request.last is not None and request.last != deployment.name:
            request.failovers += 1
            self.stats["failovers"] += 1
        if request.attempts:
            self.stats["retries"] += 1
        request.attempts += 1
        request.last = deployment.name
        breaker, budget = self.breakers[deployment.name], self.budget(deployment)
        breaker.on_call()
        receipt = budget.charge(request.tokens)
        self.stats["calls"] += 1
        try:
            completion = await self._models.complete(
                deployment, messages, parameters, tenant_id=request.tenant.id
            )
        except ModelRateLimited as exc:
            budget.refund(receipt)
            budget.block(self._hint(exc) if exc.retry_after_s is not None else 1.0)
            self._failed(request, deployment, exc)
            request.throttled += 1
            self.stats["throttled"] += 1
            raise
        except TransientModelError as exc:
            self._failed(request, deployment, exc)
            raise
        except ContentFiltered as exc:  # final: the same text is refused on every deployment
            breaker.on_abandoned()
            self.stats["filtered"] += 1
            return ResilientCompletion(
                completion=Completion(
                    content="",
                    finish_reason="content_filter",
                    prompt_tokens=0,
                    completion_tokens=0,
                    model=None,
                    content_filter=exc.content_filter,
                ),
                deployment=deployment,
                attempts=request.attempts,
                failovers=request.failovers,
                throttled=request.throttled,
            )
        except BaseException:
            breaker.on_abandoned()  # a refusal, a configuration error, a cancellation
            raise
        breaker.on_success()
        budget.observe(completion.remaining_tokens, completion.remaining_requests)
        self.stats["succeeded"] += 1
        return ResilientCompletion(
            completion=completion,
            deployment=deployment,
            attempts=request.attempts,
            failovers=request.failovers,
            throttled=request.throttled,
        )

    def _hint(self, exc: TransientModelError) -> float:
        return min(exc.retry_after_s or 0.0, self.policy.max_retry_after_s)

    def _failed(self, request: _Request, deployment: Deployment, exc: TransientModelError) -> None:
        hint = self._hint(exc) if exc.retry_after_s is not None else None
        self.breakers[deployment.name].on_failure(hint)
        if deployment.name not in request.failed:
            request.failed.append(deployment.name)
        fields = {
            "event": "model.attempt_failed",
            "tenant_id": request.tenant.id,
            "deployment": deployment.name,
            "error_type": type(exc).__name__,
            "status_code": exc.status_code,
            "retry_after_s": exc.retry_after_s,
            "attempt": request.attempts,
        }
        log.info(key_values(fields), extra=fields)

    async def close(self) -> None:
        await self._models.close()
