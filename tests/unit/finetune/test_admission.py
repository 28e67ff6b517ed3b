"""Fair-share admission: budgets, one job per tenant, the global cap, fewest GPU-minutes first."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

from shared.finetune.admission import Admission, Admitted, OverBudget, Wait
from shared.finetune.fairness_sim import simulate, stream
from shared.storage.blob_store import MemoryBlobStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


def admission(slots: int = 2) -> tuple[Admission, Clock]:
    clock = Clock()
    return Admission(MemoryBlobStore(), max_running=slots, clock=clock), clock


async def test_one_job_per_tenant_and_a_global_cap() -> None:
    fleet, _ = admission(slots=2)
    assert isinstance(await fleet.admit("big", "b1", None), Admitted)
    second = await fleet.admit("big", "b2", None)
    assert isinstance(second, Wait)
    assert "already has a job" in second.reason
    assert isinstance(await fleet.admit("s1", "s1-1", None), Admitted)
    full = await fleet.admit("s2", "s2-1", None)
    assert isinstance(full, Wait)
    assert "slots are busy" in full.reason
    assert isinstance(await fleet.admit("big", "b1", None), Admitted)  # asking again: still in


async def test_a_freed_slot_goes_to_the_tenant_with_fewest_recent_gpu_minutes() -> None:
    fleet, clock = admission(slots=1)
    assert isinstance(await fleet.admit("big", "b1", None), Admitted)
    assert isinstance(await fleet.admit("big", "b2", None), Wait)  # waits first ...
    clock.advance(1)
    assert isinstance(await fleet.admit("small", "s1", None), Wait)  # ... small comes later
    clock.advance(60)
    assert await fleet.release("big", "b1") == 61
    assert await fleet.next_waiting() == ("small", "s1")
    refused = await fleet.admit("big", "b2", None)
    assert isinstance(refused, Wait)
    assert "fair share: tenant small" in refused.reason
    assert isinstance(await fleet.admit("small", "s1", None), Admitted)


async def test_a_slot_nobody_else_wants_goes_to_the_large_tenant() -> None:
    fleet, clock = admission(slots=1)
    await fleet.admit("big", "b1", None)
    clock.advance(30)
    await fleet.release("big", "b1")
    assert isinstance(await fleet.admit("big", "b2", None), Admitted)


async def test_over_the_monthly_budget_is_refused_with_the_numbers() -> None:
    fleet, clock = admission(slots=2)
    await fleet.admit("t", "j1", 100.0)
    clock.advance(90)
    assert isinstance(await fleet.admit("t", "j1", 100.0), Admitted)  # running, 90 used
    clock.advance(20)
    await fleet.release("t", "j1")
    refused = await fleet.admit("t", "j2", 100.0)
    assert isinstance(refused, OverBudget)
    assert refused.used_minutes == 110
    assert "110.0 of 100.0 GPU-minutes" in refused.reason
    assert all(e.job_id != "j2" for e in (await fleet.state()).waiting)
    clock.now = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)  # a new month, a new budget
    assert isinstance(await fleet.admit("t", "j2", 100.0), Admitted)


async def test_waiting_jobs_whose_message_is_gone_expire() -> None:
    fleet, clock = admission(slots=1)
    await fleet.admit("big", "b1", None)
    await fleet.admit("small", "lost", None)
    clock.advance(7 * 60)
    await fleet.release("big", "b1")
    assert await fleet.next_waiting() is None


async def test_simulated_stream_small_tenants_are_not_starved() -> None:
    """One large tenant (a job every 10 minutes) and two small ones (one every 90), 60-minute
    jobs, 2 GPU slots: fair share keeps the small tenants' waits short; first-come-first-served
    makes them queue behind the large tenant's backlog (the check can fail: FIFO fails it)."""
    fair = await simulate(stream())
    fifo = await simulate(stream(), fifo=True)
    small_fair = fair["small-a"] + fair["small-b"]
    small_fifo = fifo["small-a"] + fifo["small-b"]
    assert max(small_fair) <= 60, fair
    assert statistics.mean(small_fair) * 3 < statistics.mean(small_fifo), (fair, fifo)
    assert max(small_fifo) > 60
    # the large tenant still gets every job done, only later
    assert len(fair["large"]) == 12
