"""A simulated stream of fine-tuning requests through `Admission`, for the test and the bench.

Time is simulated in whole minutes. Each job arrives at its minute, asks for a slot, and, while
refused, asks again every `retry_every` minutes (the intake's Service Bus reschedule); when a job
finishes, the watcher's `next_waiting` start is simulated too (the freed slot goes to the
fair-share winner at once). A job runs `duration` minutes. The result is each job's wait (minutes
from arrival to start), by tenant.

`fifo=True` replays the same stream with first-come-first-served admission and no per-tenant
limit: the baseline the fair-share rules are measured beside (bench/finetune_fairness.py).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.finetune.admission import Admission, Admitted
from shared.storage.blob_store import MemoryBlobStore

START = datetime(2026, 11, 2, tzinfo=UTC)


@dataclass(frozen=True)
class SimJob:
    tenant_id: str
    job_id: str
    arrives: int
    duration: int


def stream(large_jobs: int = 12, small_jobs: int = 3) -> list[SimJob]:
    """One large tenant sends a job every 10 minutes from minute 0; two small tenants each send
    one every 90 minutes from minute 15 and 25. Every job takes 60 GPU-minutes."""
    jobs = [SimJob("large", f"large-{i}", 10 * i, 60) for i in range(large_jobs)]
    for n, (tenant, first) in enumerate((("small-a", 15), ("small-b", 25))):
        jobs += [SimJob(tenant, f"{tenant}-{i}", first + 90 * i + n, 60) for i in range(small_jobs)]
    return sorted(jobs, key=lambda j: (j.arrives, j.job_id))


async def simulate(
    jobs: list[SimJob], *, slots: int = 2, retry_every: int = 5, fifo: bool = False
) -> dict[str, list[int]]:
    """Each tenant's waits in minutes, in job order."""
    minute = 0
    admission = Admission(
        MemoryBlobStore(), max_running=slots, clock=lambda: START + timedelta(minutes=minute)
    )
    started: dict[str, int] = {}
    running: dict[str, int] = {}  # job -> finishes at
    asking: dict[str, int] = {}  # job -> next ask
    by_id = {j.job_id: j for j in jobs}
    fifo_queue: list[SimJob] = []
    horizon = sum(j.duration for j in jobs) + max(j.arrives for j in jobs) + 1
    for minute in range(horizon):
        for job_id, ends in list(running.items()):
            if ends <= minute:
                del running[job_id]
                await admission.release(by_id[job_id].tenant_id, job_id)
        for job in jobs:
            if job.arrives == minute:
                asking[job.job_id] = minute
                fifo_queue.append(job)
        if fifo:
            while fifo_queue and len(running) < slots:
                job = fifo_queue.pop(0)
                started[job.job_id] = minute
                running[job.job_id] = minute + job.duration
            continue
        while (winner := await admission.next_waiting()) is not None:
            _, job_id = winner
            if not isinstance(await admission.admit(winner[0], job_id, None), Admitted):
                break
            started[job_id] = minute
            running[job_id] = minute + by_id[job_id].duration
            asking.pop(job_id, None)
        for job_id, when in sorted(asking.items(), key=lambda kv: (kv[1], kv[0])):
            if when != minute:
                continue
            decision = await admission.admit(by_id[job_id].tenant_id, job_id, None)
            if isinstance(decision, Admitted):
                started[job_id] = minute
                running[job_id] = minute + by_id[job_id].duration
                del asking[job_id]
            else:
                asking[job_id] = minute + retry_every
    waits: dict[str, list[int]] = defaultdict(list)
    for job in jobs:
        waits[job.tenant_id].append(started[job.job_id] - job.arrives)
    return dict(waits)


def run(fifo: bool = False) -> dict[str, list[int]]:
    return asyncio.run(simulate(stream(), fifo=fifo))
