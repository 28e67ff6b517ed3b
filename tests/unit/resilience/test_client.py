"""The resilient model client (shared/resilience/client.py) over the scripted model port, a fake
clock and a recording sleep: every wait is asserted, none is slept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shared.contracts import ChatMessage, InferenceParameters
from shared.inference.model_clients import Completion
from shared.inference.model_errors import (
    ModelConfigurationError,
    ModelConnectionError,
    ModelRateLimited,
    ModelRequestRejected,
    ModelServerError,
    ModelTimeout,
)
from shared.resilience.breaker import BreakerPolicy, BreakerState
from shared.resilience.client import (
    ResiliencePolicy,
    ResilientCompletion,
    ResilientModelClient,
    TryLater,
    UnknownTenant,
)
from shared.resilience.rate_budget import DeploymentBudget, admission_tokens
from shared.tenancy.registry import Quota, Registry, parse_registry, read_registry_file
from shared.tenancy.registry_source import StaticRegistry
from shared.tenancy.routing import Router
from tests.fakes import FakeTime, ScriptedModel

DEVHOST_REGISTRY = Path(__file__).resolve().parents[3] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}
JITTER = 0.05  # the most the client adds to a wait for room
HELLO = [ChatMessage(role="user", content="Hello there, how are you?")]
SMALL = InferenceParameters(max_tokens=20)
TOKENS = admission_tokens([m.content for m in HELLO], 20, 256)


# ---- helpers ------------------------------------------------------------------------------


def deployment(name: str, priority: int, tpm: int = 100_000, rpm: int = 6_000) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "azure_openai",
        "mode": "pooled",
        "endpoint": "https://aoai.example",
        "capacity": {"tokens_per_minute": tpm, "requests_per_minute": rpm},
        "priority": priority,
    }


def pooled_registry(*deployments: dict[str, Any], quota: dict[str, int] | None = None) -> Registry:
    doc = {
        "version": 1,
        "deployments": list(deployments),
        "tenants": [{"id": "t1", "mode": "pooled", "quota": quota or {}}],
    }
    return parse_registry(json.dumps(doc), env={})


def two_pools(tpm_a: int = 100_000) -> Registry:
    """`a` first (priority 0), `b` after it (priority 1): the order is fixed, no coin tosses."""
    return pooled_registry(deployment("a", 0, tpm=tpm_a), deployment("b", 1))


def one_pool() -> Registry:
    return pooled_registry(deployment("a", 0))


def rate_limited(name: str, retry_after_s: float | None) -> ModelRateLimited:
    return ModelRateLimited(
        f"{name} 429", deployment=name, status_code=429, retry_after_s=retry_after_s
    )


def server_error(name: str) -> ModelServerError:
    return ModelServerError(f"{name} 500", deployment=name, status_code=500)


@dataclass
class Harness:
    client: ResilientModelClient
    model: ScriptedModel
    time: FakeTime
    registry: Registry

    @property
    def called(self) -> list[str]:
        return [c.deployment for c in self.model.calls]

    @property
    def waits(self) -> list[float]:
        """The waits that were not zero (a failover 'sleeps' 0 s in tenacity)."""
        return [s for s in self.time.sleeps if s]

    async def complete(
        self, tenant: str = "t1", parameters: InferenceParameters = SMALL
    ) -> ResilientCompletion:
        return await self.client.complete(tenant, HELLO, parameters)

    def budget(self, name: str) -> DeploymentBudget:
        return self.client.budget(self.registry.deployment_by_name[name])


def harness(
    registry: Registry,
    *failures: BaseException,
    quotas: Any = None,
    model: ScriptedModel | None = None,
    time: FakeTime | None = None,
    **policy: Any,
) -> Harness:
    time = time or FakeTime()
    scripted = model or ScriptedModel()
    scripted.failures.extend(failures)
    client = ResilientModelClient(
        scripted,
        StaticRegistry(registry),
        policy=ResiliencePolicy(**policy),
        router=Router(random.Random(3)),
        quotas=quotas,
        clock=time.monotonic,
        sleep=time.sleep,
        rng=random.Random(5),
    )
    return Harness(client, scripted, time, registry)


# ---- the plain path -----------------------------------------------------------------------


async def test_success_goes_to_the_first_candidate_at_once() -> None:
    h = harness(two_pools())
    result = await h.complete()
    assert result.completion.content == "ok"
    assert result.deployment.name == "a"
    assert (result.attempts, result.failovers, result.throttled) == (1, 0, 0)
    assert h.called == ["a"]
    assert h.time.sleeps == []
    assert h.model.calls[0].tenant_id == "t1"


async def test_an_unknown_tenant_is_a_routing_error() -> None:
    h = harness(two_pools())
    with pytest.raises(UnknownTenant):
        await h.complete(tenant="nobody")
    assert h.called == []


# ---- failover and waits -------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        rate_limited("a", 3.0),
        rate_limited("a", None),
        server_error("a"),
        ModelTimeout("a timed out", deployment="a"),
        ModelConnectionError("a unreachable", deployment="a"),
    ],
)
async def test_a_transient_failure_fails_over_to_a_candidate_with_room_at_once(
    error: BaseException,
) -> None:
    h = harness(two_pools(), error)
    result = await h.complete()
    assert h.called == ["a", "b"]
    assert result.deployment.name == "b"
    assert h.waits == []  # no wait: b had room
    assert (result.attempts, result.failovers) == (2, 1)
    assert result.throttled == (1 if isinstance(error, ModelRateLimited) else 0)


async def test_a_429_on_the_only_candidate_waits_its_retry_after() -> None:
    h = harness(one_pool(), rate_limited("a", 3.0))
    result = await h.complete()
    assert h.called == ["a", "a"]
    [wait] = h.waits
    assert 3.0 <= wait <= 3.0 + JITTER
    assert (result.attempts, result.failovers, result.throttled) == (2, 0, 1)


async def test_a_5xx_on_the_only_candidate_backs_off_with_full_jitter() -> None:
    h = harness(
        one_pool(),
        server_error("a"),
        server_error("a"),
        server_error("a"),
        backoff_base_s=0.25,
        backoff_cap_s=10.0,
    )
    await h.complete()
    assert h.called == ["a"] * 4
    assert len(h.time.sleeps) == 3
    for n, wait in enumerate(h.time.sleeps, start=1):
        assert 0.0 <= wait <= min(10.0, 0.25 * 2 ** (n - 1))


async def test_when_every_candidate_is_busy_for_a_while_it_waits_for_the_earliest_room() -> None:
    h = harness(two_pools())
    h.budget("a").block(5.0)
    h.budget("b").block(2.0)
    result = await h.complete()
    [wait] = h.waits
    assert 2.0 <= wait <= 2.0 + JITTER
    assert h.called == ["b"]
    assert result.attempts == 1


async def test_an_open_breaker_skips_its_candidate_without_a_call() -> None:
    h = harness(two_pools())
    h.client.breakers["a"].on_failure(retry_after_s=60.0)
    assert h.client.breakers["a"].state is BreakerState.OPEN
    result = await h.complete()
    assert h.called == ["b"]
    assert result.deployment.name == "b"
    assert h.waits == []


async def test_a_long_retry_after_opens_the_breaker_and_later_requests_skip_it() -> None:
    h = harness(two_pools(), rate_limited("a", 30.0))
    await h.complete()
    assert h.client.breakers["a"].state is BreakerState.OPEN
    await h.complete()
    await h.complete()
    assert h.called == ["a", "b", "b", "b"]
    assert h.client.breakers.transitions[("a", "closed->open")] == 1
    h.time.now += 30.0  # the breaker's open time is over: a probe goes to a, and closes it
    await h.complete()
    assert h.called[-1] == "a"
    assert h.client.breakers["a"].state is BreakerState.CLOSED


async def test_the_deployment_budget_routes_around_a_full_deployment_without_a_429() -> None:
    # a admits two requests a minute; the third goes to b before any 429
    h = harness(two_pools(tpm_a=2 * TOKENS))
    for _ in range(3):
        await h.complete()
    assert h.called == ["a", "a", "b"]
    h.time.now += 60.25  # the margin: charges slid out
    await h.complete()
    assert h.called[-1] == "a"


async def test_an_observed_remaining_count_routes_around_for_the_observation_ttl() -> None:
    spent = Completion(
        content="ok",
        finish_reason="stop",
        prompt_tokens=1,
        completion_tokens=1,
        model="m",
        remaining_tokens=TOKENS - 1,  # another instance spent the rest of a's minute
        remaining_requests=50,
    )
    h = harness(two_pools(), model=ScriptedModel(completion=spent))
    await h.complete()
    await h.complete()
    assert h.called == ["a", "b"]
    h.time.now += 5.0  # the observation's time to live
    h.model.completion = ScriptedModel().completion
    await h.complete()
    assert h.called[-1] == "a"


# ---- TryLater -----------------------------------------------------------------------------


async def test_all_candidates_busy_beyond_max_wait_is_try_later_at_the_earliest_room() -> None:
    h = harness(two_pools(), rate_limited("a", 30.0), rate_limited("b", 20.0), max_wait_s=10.0)
    with pytest.raises(TryLater) as err:
        await h.complete()
    assert h.called == ["a", "b"]
    assert h.waits == []  # nothing waited in-process
    assert err.value.reason == "deployments_busy"
    assert err.value.retry_after_s == pytest.approx(20.0)
    assert (err.value.attempts, err.value.throttled) == (2, 2)


async def test_try_later_names_the_earliest_room_not_the_last_retry_after() -> None:
    """a frees up in 12 s, b (the last to answer) in 20 s: worth trying again in 12 s."""
    h = harness(two_pools(), rate_limited("a", 12.0), rate_limited("b", 20.0), max_wait_s=10.0)
    with pytest.raises(TryLater) as err:
        await h.complete()
    assert h.called == ["a", "b"]
    assert err.value.reason == "deployments_busy"
    assert err.value.retry_after_s == pytest.approx(12.0)


async def test_budgets_full_before_any_call_beyond_max_wait_is_try_later() -> None:
    h = harness(two_pools(), max_wait_s=10.0)
    h.budget("a").block(40.0)
    h.budget("b").block(25.0)
    with pytest.raises(TryLater) as err:
        await h.complete()
    assert h.called == []
    assert err.value.reason == "deployments_busy"
    assert err.value.retry_after_s == pytest.approx(25.0)
    assert (err.value.attempts, err.value.throttled) == (0, 0)


async def test_a_wait_past_the_time_budget_is_try_later() -> None:
    h = harness(one_pool(), rate_limited("a", 8.0), time_budget_s=5.0, max_wait_s=10.0)
    with pytest.raises(TryLater) as err:
        await h.complete()
    assert h.called == ["a"]
    assert h.waits == []
    assert err.value.reason == "time_budget"
    assert err.value.retry_after_s == pytest.approx(8.0)


@dataclass
class SlowModel(ScriptedModel):
    """Each call takes `takes_s` on the fake clock."""

    time: FakeTime = field(default_factory=FakeTime)
    takes_s: float = 0.0

    async def complete(self, *args: Any, **kwargs: Any) -> Completion:
        self.time.now += self.takes_s
        return await super().complete(*args, **kwargs)


async def test_the_time_budget_counts_the_calls_and_waits_already_spent() -> None:
    time = FakeTime()
    slow = SlowModel(time=time, takes_s=3.0, failures=[server_error("a") for _ in range(10)])
    h = harness(
        one_pool(), model=slow, time=time, time_budget_s=5.0, backoff_base_s=0.25, max_attempts=50
    )
    started = h.time.now
    with pytest.raises(TryLater) as err:
        await h.complete()
    assert err.value.reason == "time_budget"
    assert err.value.attempts == 2  # at 3 s, a retry still fits; at 6 s + a wait, none does
    assert h.called == ["a", "a"]
    assert h.time.now - started - 2 * 3.0 == pytest.approx(sum(h.time.sleeps))
    assert sum(h.time.sleeps) <= 5.0 - 3.0


async def test_the_attempt_limit_is_try_later() -> None:
    h = harness(one_pool(), *(server_error("a") for _ in range(10)), max_attempts=3)
    with pytest.raises(TryLater) as err:
        await h.complete()
    assert h.called == ["a"] * 3
    assert err.value.reason == "attempts"
    assert err.value.attempts == 3


async def test_max_attempts_counts_calls_not_waits_for_room() -> None:
    """ResiliencePolicy: "max_attempts: calls per request". A wait for room is not a call."""
    h = harness(two_pools(), server_error("a"), max_attempts=2)
    h.budget("a").block(1.0)
    h.budget("b").block(1.0)
    result = await h.complete()  # wait 1 s, a fails, b serves: two calls
    assert h.called == ["a", "b"]
    assert result.attempts == 2


# ---- not retried --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ModelRequestRejected("400", deployment="a", status_code=400, error_code="content_filter"),
        ModelRequestRejected("413", deployment="a", status_code=413),
        ModelConfigurationError("401", deployment="a", status_code=401),
        ModelConfigurationError("404", deployment="a", status_code=404),
    ],
)
async def test_refusals_and_configuration_errors_are_raised_at_once(error: BaseException) -> None:
    h = harness(two_pools(), error)
    with pytest.raises(type(error)) as raised:
        await h.complete()
    assert raised.value is error
    assert h.called == ["a"]  # not retried, not failed over
    assert h.time.sleeps == []
    assert h.client.breakers["a"].state is BreakerState.CLOSED
    assert not h.client.breakers.transitions


async def test_a_refused_probe_does_not_wedge_the_breaker_half_open() -> None:
    """A 400 says nothing of the deployment's health, and the probe is over: once it is
    answered, the half-open breaker must let another call through."""
    h = harness(
        two_pools(),
        ModelRequestRejected("400", deployment="a", status_code=400),
        breaker=BreakerPolicy(half_open_probes=1, open_on_retry_after_s=10.0),
    )
    h.client.breakers["a"].on_failure(retry_after_s=10.0)
    h.time.now += 10.0  # half-open: one probe may go
    with pytest.raises(ModelRequestRejected):
        await h.complete()
    assert h.called == ["a"]
    h.time.now += 60.0
    await h.complete()
    assert h.called == ["a", "a"]  # a serves again; it never failed


# ---- tenancy: who may be served where -----------------------------------------------------


@pytest.fixture
def devhost_registry() -> Registry:
    return read_registry_file(DEVHOST_REGISTRY, env=ENV)


@pytest.mark.parametrize(
    "error", [rate_limited("fabrikam-ft-v1", 2.0), server_error("fabrikam-ft-v1")]
)
async def test_a_tuned_tenant_falls_back_to_its_base(
    devhost_registry: Registry, error: BaseException
) -> None:
    h = harness(devhost_registry, error)
    result = await h.complete(tenant="fabrikam")
    assert h.called == ["fabrikam-ft-v1", "gpt-4o-mini-pool-a"]
    assert result.deployment.name == "gpt-4o-mini-pool-a"
    assert h.waits == []
    assert result.failovers == 1


async def test_a_tuned_tenant_is_served_by_its_tuned_deployment_first(
    devhost_registry: Registry,
) -> None:
    h = harness(devhost_registry)
    result = await h.complete(tenant="fabrikam")
    assert result.deployment.name == "fabrikam-ft-v1"


async def test_a_tuned_tenant_never_leaves_its_tuned_and_base(devhost_registry: Registry) -> None:
    failures = [rate_limited(n, 30.0) for n in ("fabrikam-ft-v1", "gpt-4o-mini-pool-a")]
    h = harness(devhost_registry, *failures)
    with pytest.raises(TryLater):
        await h.complete(tenant="fabrikam")
    assert set(h.called) == {"fabrikam-ft-v1", "gpt-4o-mini-pool-a"}


async def test_a_dedicated_tenant_never_reaches_a_pooled_deployment(
    devhost_registry: Registry,
) -> None:
    h = harness(devhost_registry, *(server_error("contoso-gpt-4o") for _ in range(20)))
    with pytest.raises(TryLater):
        await h.complete(tenant="contoso")
    assert h.called
    assert set(h.called) == {"contoso-gpt-4o"}
    # the same when its own deployment is open or out of budget: wait or TryLater, never pooled
    h2 = harness(devhost_registry)
    h2.client.breakers["contoso-gpt-4o"].on_failure(retry_after_s=60.0)
    with pytest.raises(TryLater) as err:
        await h2.complete(tenant="contoso")
    assert h2.called == []
    assert err.value.retry_after_s == pytest.approx(60.0)


async def test_a_dedicated_tenant_with_fallback_may_fail_over_to_pooled() -> None:
    doc = {
        "version": 1,
        "deployments": [
            deployment("pool", 0),
            {**deployment("own", 0), "mode": "dedicated", "owner_tenant": "d1"},
        ],
        "tenants": [{"id": "d1", "mode": "dedicated", "fallback_to_pooled": True}],
    }
    h = harness(parse_registry(json.dumps(doc), env={}), server_error("own"))
    result = await h.complete(tenant="d1")
    assert h.called == ["own", "pool"]
    assert result.deployment.name == "pool"


# ---- tenant quotas and bulkheads ----------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: float = 0.0
    limit: str | None = None


@dataclass
class FakeQuotas:
    verdicts: list[Verdict] = field(default_factory=list)
    semaphore: asyncio.Semaphore | None = None
    asked: list[tuple[str, Quota, int]] = field(default_factory=list)

    async def try_acquire(self, tenant_id: str, quota: Quota, tokens: int) -> Verdict:
        self.asked.append((tenant_id, quota, tokens))
        return self.verdicts.pop(0) if self.verdicts else Verdict(True)

    def bulkhead(self, tenant_id: str, quota: Quota) -> asyncio.Semaphore | None:
        return self.semaphore


QUOTA = {"tokens_per_minute": 5000, "requests_per_minute": 10, "max_concurrent": 2}


async def test_the_quota_is_charged_the_admission_estimate() -> None:
    quotas = FakeQuotas()
    h = harness(pooled_registry(deployment("a", 0), quota=QUOTA), quotas=quotas)
    await h.complete()
    assert quotas.asked == [("t1", Quota(**QUOTA), TOKENS)]


@pytest.mark.parametrize("limit", ["tokens_per_minute", "requests_per_minute"])
async def test_over_quota_is_try_later_when_the_tenant_has_room(limit: str) -> None:
    quotas = FakeQuotas([Verdict(False, 7.5, limit)])
    h = harness(pooled_registry(deployment("a", 0), quota=QUOTA), quotas=quotas)
    with pytest.raises(TryLater) as err:
        await h.complete()
    assert err.value.reason.startswith("tenant_quota")
    assert err.value.reason == f"tenant_quota:{limit}"
    assert err.value.retry_after_s == 7.5
    assert h.called == []
    assert h.time.sleeps == []


async def test_a_full_bulkhead_beyond_max_wait_is_try_later() -> None:
    quotas = FakeQuotas(semaphore=asyncio.Semaphore(1))
    assert quotas.semaphore is not None
    await quotas.semaphore.acquire()  # the tenant's one slot is taken
    h = harness(pooled_registry(deployment("a", 0), quota=QUOTA), quotas=quotas, max_wait_s=0.0)
    with pytest.raises(TryLater) as err:
        await h.complete()
    assert err.value.reason == "tenant_concurrency"
    assert err.value.retry_after_s > 0
    assert h.called == []


async def test_a_bulkhead_slot_freed_in_time_is_taken() -> None:
    quotas = FakeQuotas(semaphore=asyncio.Semaphore(1))
    assert quotas.semaphore is not None
    await quotas.semaphore.acquire()
    h = harness(pooled_registry(deployment("a", 0), quota=QUOTA), quotas=quotas, max_wait_s=5.0)
    asyncio.get_running_loop().call_soon(quotas.semaphore.release)
    result = await h.complete()
    assert result.deployment.name == "a"


@pytest.mark.parametrize(
    "failures",
    [
        [],
        [ModelRequestRejected("400", deployment="a", status_code=400)],
        [rate_limited("a", 60.0)],
    ],
)
async def test_the_bulkhead_slot_is_given_back_however_the_request_ends(
    failures: list[BaseException],
) -> None:
    quotas = FakeQuotas(semaphore=asyncio.Semaphore(2))
    h = harness(pooled_registry(deployment("a", 0), quota=QUOTA), *failures, quotas=quotas)
    with contextlib.suppress(TryLater, ModelRequestRejected):
        await h.complete()
    assert h.called == ["a"]
    assert quotas.semaphore is not None
    assert quotas.semaphore._value == 2  # type: ignore[attr-defined]


# ---- counted for demos and benchmarks -----------------------------------------------------


async def test_stats_count_calls_failovers_retries_and_throttles() -> None:
    h = harness(two_pools(), rate_limited("a", 1.0))
    await h.complete()
    stats = h.client.stats
    assert (stats["calls"], stats["succeeded"], stats["throttled"]) == (2, 1, 1)
    assert (stats["failovers"], stats["retries"]) == (1, 1)
