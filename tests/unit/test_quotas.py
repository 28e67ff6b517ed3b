"""Per-tenant quotas with per-instance (memory) windows and a fake clock: no real sleeping.

The shared-store behaviour (two instances, two processes, an unreachable store) is in
tests/integration/test_quotas_redis.py, against a real Redis-protocol server.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from shared.resilience.quotas import (
    REQUESTS_PER_MINUTE,
    TOKENS_PER_MINUTE,
    WINDOW_S,
    QuotaDecision,
    TenantQuotas,
)
from shared.tenancy.registry import Quota


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# 15 s into a fixed minute (the per-instance windows are minutes aligned to the epoch).
START = 1_000_000 * WINDOW_S + 15.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def quotas(clock: FakeClock) -> TenantQuotas:
    return TenantQuotas(None, clock=clock)


async def _admitted(quotas: TenantQuotas, tenant: str, quota: Quota, tokens: int, n: int) -> int:
    return sum([(await quotas.try_acquire(tenant, quota, tokens)).allowed for _ in range(n)])


@pytest.mark.parametrize("url", [None, "memory://", ""])
async def test_memory_storage_is_per_instance_and_never_degraded(url: str | None) -> None:
    quotas = TenantQuotas(url)
    assert await quotas.try_acquire("t", Quota(requests_per_minute=1), 1) == QuotaDecision(
        True, 0.0, None
    )
    assert not quotas.degraded
    await quotas.close()


async def test_requests_per_minute_refuses_the_next_request_until_exactly_when_it_fits(
    quotas: TenantQuotas, clock: FakeClock
) -> None:
    quota = Quota(requests_per_minute=5)
    assert await _admitted(quotas, "t", quota, 0, 5) == 5
    refused = await quotas.try_acquire("t", quota, 0)
    assert not refused.allowed
    assert refused.limit == REQUESTS_PER_MINUTE
    # 45 s left of this minute; then the 5 requests weigh 5 x (60 - t) / 60 < 5 at once.
    assert refused.retry_after_s == pytest.approx(45.001)
    clock.advance(refused.retry_after_s - 0.01)
    assert not (await quotas.try_acquire("t", quota, 0)).allowed
    clock.advance(0.01)
    assert (await quotas.try_acquire("t", quota, 0)).allowed


async def test_tokens_per_minute_slides_as_the_previous_minute_decays(
    quotas: TenantQuotas, clock: FakeClock
) -> None:
    quota = Quota(tokens_per_minute=1000)
    assert (await quotas.try_acquire("t", quota, 900)).allowed
    clock.advance(45.0)  # the next minute starts: 900 weighs 900 x (60 - t) / 60
    refused = await quotas.try_acquire("t", quota, 400)
    assert refused.limit == TOKENS_PER_MINUTE
    # 900 x (60 - t) / 60 < 1000 - 400 + 1  =>  t > 19.933...
    assert refused.retry_after_s == pytest.approx(60 - 601 * 60 / 900 + 0.001)
    clock.advance(refused.retry_after_s - 0.01)
    assert not (await quotas.try_acquire("t", quota, 400)).allowed
    clock.advance(0.01)
    assert (await quotas.try_acquire("t", quota, 400)).allowed


async def test_a_refusal_charges_neither_limit(quotas: TenantQuotas) -> None:
    quota = Quota(tokens_per_minute=1000, requests_per_minute=10)
    assert (await quotas.try_acquire("t", quota, 990)).allowed
    for _ in range(20):  # each has request room but no token room: nothing may be charged
        decision = await quotas.try_acquire("t", quota, 100)
        assert (decision.allowed, decision.limit) == (False, TOKENS_PER_MINUTE)
    # All 9 remaining requests (of 1 token each) still fit: no request was charged above.
    assert await _admitted(quotas, "t", quota, 1, 12) == 9
    decision = await quotas.try_acquire("t", quota, 1)
    assert decision.limit == REQUESTS_PER_MINUTE


async def test_the_limit_with_the_longer_wait_is_the_one_reported(quotas: TenantQuotas) -> None:
    quota = Quota(tokens_per_minute=1000, requests_per_minute=2)
    assert await _admitted(quotas, "t", quota, 500, 2) == 2
    decision = await quotas.try_acquire("t", quota, 500)
    assert not decision.allowed
    assert decision.limit in {REQUESTS_PER_MINUTE, TOKENS_PER_MINUTE}
    assert decision.retry_after_s > 0


async def test_a_request_larger_than_the_whole_quota_runs_once_the_window_is_empty(
    quotas: TenantQuotas, clock: FakeClock
) -> None:
    quota = Quota(tokens_per_minute=1000)
    assert (await quotas.try_acquire("big", quota, 5000)).allowed  # empty window: admitted
    after = await quotas.try_acquire("big", quota, 1)
    assert (after.allowed, after.limit) == (False, TOKENS_PER_MINUTE)  # it spent the minute

    assert (await quotas.try_acquire("busy", quota, 10)).allowed
    waiting = await quotas.try_acquire("busy", quota, 5000)
    assert not waiting.allowed
    assert 0 < waiting.retry_after_s <= 2 * WINDOW_S  # finite: it does not wait forever
    clock.advance(waiting.retry_after_s)
    assert (await quotas.try_acquire("busy", quota, 5000)).allowed


async def test_no_quota_and_no_tokens_charge_nothing(quotas: TenantQuotas) -> None:
    assert await _admitted(quotas, "free", Quota(), 10**9, 1000) == 1000
    only_tokens = Quota(tokens_per_minute=10)
    assert await _admitted(quotas, "zero", only_tokens, 0, 1000) == 1000


async def test_one_tenant_over_quota_does_not_touch_another(quotas: TenantQuotas) -> None:
    quota = Quota(tokens_per_minute=1000, requests_per_minute=3)
    assert await _admitted(quotas, "noisy", quota, 400, 50) == 2
    assert await _admitted(quotas, "quiet", quota, 100, 3) == 3


async def test_retry_after_is_exact_for_random_histories() -> None:
    """Whatever was charged when: a refusal's retry_after_s is the first moment the request fits
    (a little before, it is still refused; at it, it is admitted)."""
    rng = random.Random(7)
    refused = 0
    for case in range(300):
        clock = FakeClock(START + rng.uniform(0, WINDOW_S))
        quotas = TenantQuotas(None, clock=clock)
        limit = rng.choice([5, 60, 1000, 30_000])
        quota = Quota(tokens_per_minute=limit)
        for _ in range(rng.randint(1, 6)):
            await quotas.try_acquire("t", quota, rng.randint(1, limit))
            clock.advance(rng.uniform(0, 40))
        want = rng.randint(1, limit)
        decision = await quotas.try_acquire("t", quota, want)
        if decision.allowed:
            continue
        refused += 1
        assert decision.retry_after_s > 0, case
        if decision.retry_after_s > 0.01:
            clock.advance(decision.retry_after_s - 0.005)
            assert not (await quotas.try_acquire("t", quota, want)).allowed, case
            clock.advance(0.005)
        else:
            clock.advance(decision.retry_after_s)
        assert (await quotas.try_acquire("t", quota, want)).allowed, case
    assert refused > 100  # the histories do exercise refusals


def test_bulkhead_is_one_semaphore_per_tenant_and_none_when_unlimited(
    quotas: TenantQuotas,
) -> None:
    assert quotas.bulkhead("t", Quota()) is None
    first = quotas.bulkhead("t", Quota(max_concurrent=2))
    assert first is not None
    assert quotas.bulkhead("t", Quota(max_concurrent=2)) is first
    assert quotas.bulkhead("other", Quota(max_concurrent=2)) is not first
    changed = quotas.bulkhead("t", Quota(max_concurrent=3))
    assert changed is not None
    assert changed is not first
    assert quotas.bulkhead("t", Quota()) is None


async def test_bulkhead_caps_concurrent_calls_of_a_tenant(quotas: TenantQuotas) -> None:
    quota = Quota(max_concurrent=3)
    release = asyncio.Event()
    running = 0
    most = 0

    async def call() -> None:
        nonlocal running, most
        semaphore = quotas.bulkhead("t", quota)
        assert semaphore is not None
        async with semaphore:
            running += 1
            most = max(most, running)
            await release.wait()
            running -= 1

    tasks = [asyncio.create_task(call()) for _ in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)  # let every task reach the semaphore (no real time passes)
    assert (running, most) == (3, 3)
    release.set()
    await asyncio.gather(*tasks)
    assert most == 3


async def test_an_azure_redis_url_without_credentials_uses_entra_id() -> None:
    entra = TenantQuotas("rediss://amr-x.eastus2.redis.azure.net:10000")
    keyed = TenantQuotas("rediss://:secret@cache.example:10000")
    local = TenantQuotas("redis://127.0.0.1:6379/0")
    for quotas, want in ((entra, "EntraIdCredentialsProvider"), (keyed, None), (local, None)):
        assert quotas._shared is not None
        client = quotas._shared.storage.bridge.storage  # type: ignore[attr-defined]
        provider = client.connection_pool.connection_kwargs.get("credential_provider")
        assert (type(provider).__name__ if provider else None) == want
        assert not quotas.degraded  # nothing connects until the first call
        await quotas.close()
