"""Batch rows get what interactive requests leave: a share of the quota, no waiting line."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from shared.contracts import ChatMessage, InferenceParameters
from shared.resilience.client import ResiliencePolicy, ResilientModelClient, TryLater
from shared.resilience.priority import Priority, queued_seconds, traffic_priority
from shared.resilience.quotas import WINDOW_S, TenantQuotas
from shared.tenancy.registry import Quota
from shared.tenancy.registry_source import StaticRegistry
from shared.tenancy.routing import Router
from tests.fakes import FakeTime, ScriptedModel
from tests.unit.resilience.test_client import deployment, pooled_registry

START = 1_000_000 * WINDOW_S + 15.0
HELLO = [ChatMessage(role="user", content="hello")]
SMALL = InferenceParameters(max_tokens=10)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"traffic": "batch"}, Priority.BATCH),
        ({"traffic": b"batch"}, Priority.BATCH),
        ({"traffic": "interactive"}, Priority.INTERACTIVE),
        ({}, Priority.INTERACTIVE),
    ],
)
def test_traffic_priority(properties: dict[str, object], expected: Priority) -> None:
    assert traffic_priority(properties) is expected


async def test_batch_rows_stop_at_their_share_and_interactive_requests_get_the_rest() -> None:
    quotas = TenantQuotas(None, clock=Clock())
    quota = Quota(requests_per_minute=10)
    batch = [(await quotas.try_acquire("t", quota, 1, share=0.5)).allowed for _ in range(8)]
    assert batch == [True] * 5 + [False] * 3
    refused = await quotas.try_acquire("t", quota, 1, share=0.5)
    assert refused.limit in {"requests_per_minute", "batch_requests_per_minute"}
    assert refused.retry_after_s > 0
    interactive = [(await quotas.try_acquire("t", quota, 1)).allowed for _ in range(6)]
    assert interactive == [True] * 5 + [False]


async def test_interactive_use_counts_against_the_batch_share_too() -> None:
    quotas = TenantQuotas(None, clock=Clock())
    quota = Quota(tokens_per_minute=1000)
    assert (await quotas.try_acquire("t", quota, 450)).allowed
    assert not (await quotas.try_acquire("t", quota, 100, share=0.5)).allowed
    assert (await quotas.try_acquire("t", quota, 100)).allowed


async def test_racing_batch_rows_never_pass_the_share_together() -> None:
    quotas = TenantQuotas(None, clock=Clock())
    quota = Quota(requests_per_minute=10)
    racing = await asyncio.gather(*(quotas.try_acquire("t", quota, 1, share=0.5) for _ in range(9)))
    assert sum(d.allowed for d in racing) == 5


async def test_a_batch_row_larger_than_its_share_still_fits_an_empty_window() -> None:
    quotas = TenantQuotas(None, clock=Clock())
    assert (await quotas.try_acquire("t", Quota(tokens_per_minute=100), 80, share=0.5)).allowed


def _client(time: FakeTime, quotas: TenantQuotas | None = None) -> ResilientModelClient:
    registry = pooled_registry(deployment("a", 0, tpm=100_000, rpm=1))
    return ResilientModelClient(
        ScriptedModel(),
        StaticRegistry(registry),
        policy=ResiliencePolicy(max_wait_s=120.0, time_budget_s=300.0),
        router=Router(random.Random(3)),
        quotas=quotas,
        clock=time.monotonic,
        sleep=time.sleep,
        rng=random.Random(5),
    )


async def test_a_batch_row_is_rescheduled_where_an_interactive_request_would_wait() -> None:
    time = FakeTime()
    client = _client(time)
    registry = await StaticRegistry(pooled_registry(deployment("a", 0, rpm=1))).get()
    tenant = registry.tenants[0]
    await client.complete_for(registry, tenant, HELLO, SMALL)  # the deployment's one request
    with pytest.raises(TryLater) as later:
        await client.complete_for(registry, tenant, HELLO, SMALL, priority=Priority.BATCH)
    assert later.value.reason == "deployments_busy"
    assert time.sleeps == []  # it did not wait
    interactive = await client.complete_for(registry, tenant, HELLO, SMALL)
    assert interactive.deployment.name == "a"
    assert sum(time.sleeps) > 0  # the interactive one waited for room


async def test_the_client_charges_a_batch_row_against_the_tenants_share() -> None:
    time = FakeTime()
    quotas = TenantQuotas(None, clock=Clock())
    client = _client(time, quotas)
    doc = pooled_registry(deployment("a", 0), quota={"requests_per_minute": 4})
    tenant = doc.tenants[0]
    results = []
    for _ in range(3):
        try:
            await client.complete_for(doc, tenant, HELLO, SMALL, priority=Priority.BATCH)
            results.append("served")
        except TryLater as later:
            results.append(later.reason)
    assert results[:2] == ["served", "served"]
    assert results[2].startswith("tenant_quota:")
    await client.complete_for(doc, tenant, HELLO, SMALL)  # interactive: the rest is free
    await client.complete_for(doc, tenant, HELLO, SMALL)


async def test_a_batch_row_late_in_the_queue_steps_aside_without_a_model_call() -> None:
    time = FakeTime()
    client = _client(time)
    registry = pooled_registry(deployment("a", 0))
    tenant = registry.tenants[0]
    with pytest.raises(TryLater) as later:
        await client.complete_for(
            registry, tenant, HELLO, SMALL, priority=Priority.BATCH, queued_s=1.5
        )
    assert later.value.reason == "interactive_first"
    assert later.value.retry_after_s == ResiliencePolicy().batch_step_aside_s
    await client.complete_for(registry, tenant, HELLO, SMALL, priority=Priority.BATCH, queued_s=0.5)
    await client.complete_for(registry, tenant, HELLO, SMALL, queued_s=30.0)  # interactive: served
    assert client.stats["calls"] == 2


def test_queued_seconds() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert queued_seconds(None, now) == 0.0
    assert queued_seconds(now - timedelta(seconds=2.5), now) == 2.5
    assert queued_seconds(now + timedelta(seconds=1), now) == 0.0
