"""Fair-share admission of fine-tuning jobs to the GPU: one document, `jobs/_fleet.json`.

Rules, checked in this order for a job that asks for a slot (`Admission.admit`):

1. **Budget**: the tenant's GPU-minutes this calendar month (UTC; finished jobs plus the running
   time of its jobs on the GPU now) must be under its policy's `gpu_minutes_per_month` (None: no
   budget). Over it, the job is refused (`OverBudget`) and the intake rejects it with the numbers.
2. **One at a time per tenant**: a tenant with a job on the GPU waits (`Wait`).
3. **Global cap**: at most `max_running` jobs on the GPU (the cluster's nodes); full: `Wait`.
4. **Fair share**: the jobs waiting whose tenant has none running are ordered by their tenant's
   GPU-minutes over the last `window` (finished plus running), fewest first, ties by the time each
   started waiting; with k slots free, the first k may start and the others wait. So a large
   tenant that keeps sending jobs gets a slot only when no smaller user is waiting: it cannot
   starve them (with the one-job rule it also never holds more than one slot). The idea of
   Slurm's fair-share factor, without its decay: a fixed window.

A `Wait` keeps the job in the waiting list (with when it was last seen, so entries whose message
is gone expire after `forget_after`); the intake reschedules the message on Service Bus. When a
job leaves the GPU (`release`), its minutes are booked to its tenant, and `next_waiting` tells the
watcher which waiting job is first, so a freed slot is taken without waiting for a reschedule.

The document is changed only with If-Match on its ETag (re-read on a lost race), so concurrent
instances cannot both take the last slot.

Libraries weighed: Azure ML's own queue orders jobs by priority, not by tenant usage, and sees only
its own jobs (not Azure OpenAI fine-tuning); Slurm/Kueue-style schedulers are clusters of their
own. The rules above are a few lines over one JSON document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.storage import names
from shared.storage.blob_store import BlobStore, ConditionFailed

FLEET_BLOB: Final = "_fleet.json"
_ATTEMPTS: Final = 20


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str
    tenant_id: str
    since: datetime
    seen: datetime


class _Usage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    tenant_id: str
    finished_at: datetime
    minutes: float


class FleetState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    running: list[_Entry] = Field(default_factory=list)
    waiting: list[_Entry] = Field(default_factory=list)
    evaluating: list[_Entry] = Field(default_factory=list)
    """Jobs off the GPU whose candidate the gate has still to score (the watcher's to-do)."""
    usage: list[_Usage] = Field(default_factory=list)


@dataclass(frozen=True)
class Admitted:
    """The job holds a GPU slot now."""


@dataclass(frozen=True)
class Wait:
    """No slot for this job now; `reason` says which rule; `position` in the fair-share order."""

    reason: str
    position: int


@dataclass(frozen=True)
class OverBudget:
    used_minutes: float
    budget_minutes: float

    @property
    def reason(self) -> str:
        return (
            f"GPU budget spent: {self.used_minutes:.1f} of {self.budget_minutes:.1f} GPU-minutes "
            "used this month"
        )


Decision = Admitted | Wait | OverBudget


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _minutes(since: datetime, now: datetime) -> float:
    return max(0.0, (now - since).total_seconds() / 60.0)


class Admission:
    """The fleet document and the rules above."""

    def __init__(
        self,
        store: BlobStore,
        *,
        max_running: int,
        clock: Callable[[], datetime],
        window: timedelta = timedelta(days=7),
        forget_after: timedelta = timedelta(hours=6),
        container: str = names.JOBS_CONTAINER,
    ) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self._store = store
        self._max_running = max_running
        self._clock = clock
        self._window = window
        self._forget_after = forget_after
        self._container = container

    async def state(self) -> FleetState:
        state, _ = await self._read()
        return state

    async def admit(self, tenant_id: str, job_id: str, budget_minutes: float | None) -> Decision:
        """Take a GPU slot for the job if the rules allow; otherwise say why not."""
        for _ in range(_ATTEMPTS):
            state, etag = await self._read()
            now = self._clock()
            decision = self._decide(state, tenant_id, job_id, budget_minutes, now)
            try:
                await self._write(state, etag)
            except ConditionFailed:
                continue
            return decision
        raise RuntimeError("the fleet document kept changing during admission")

    async def release(self, tenant_id: str, job_id: str, *, to_evaluate: bool = False) -> float:
        """The job left the GPU (finished, failed, cancelled): book its minutes; returns them.
        `to_evaluate`: its candidate awaits the gate (listed until `evaluated`)."""
        for _ in range(_ATTEMPTS):
            state, etag = await self._read()
            now = self._clock()
            entry = next((e for e in state.running if e.job_id == job_id), None)
            state.waiting = [e for e in state.waiting if e.job_id != job_id]
            minutes = 0.0
            if entry is not None:
                state.running.remove(entry)
                minutes = _minutes(entry.since, now)
                state.usage.append(
                    _Usage(job_id=job_id, tenant_id=tenant_id, finished_at=now, minutes=minutes)
                )
            if to_evaluate and all(e.job_id != job_id for e in state.evaluating):
                state.evaluating.append(
                    _Entry(job_id=job_id, tenant_id=tenant_id, since=now, seen=now)
                )
            self._prune(state, now)
            try:
                await self._write(state, etag)
            except ConditionFailed:
                continue
            return minutes
        raise RuntimeError("the fleet document kept changing during release")

    async def forget(self, job_id: str) -> None:
        """Drop a job that will never ask again (rejected, cancelled) or was evaluated."""
        for _ in range(_ATTEMPTS):
            state, etag = await self._read()
            if all(e.job_id != job_id for e in (*state.waiting, *state.evaluating)):
                return
            state.waiting = [e for e in state.waiting if e.job_id != job_id]
            state.evaluating = [e for e in state.evaluating if e.job_id != job_id]
            try:
                await self._write(state, etag)
            except ConditionFailed:
                continue
            return
        raise RuntimeError("the fleet document kept changing")

    async def next_waiting(self) -> tuple[str, str] | None:
        """(tenant, job id) of the waiting job that the next free slot goes to, if a slot is
        free and a job waits whose tenant has nothing running."""
        state = await self.state()
        if len(state.running) >= self._max_running:
            return None
        order = self._fair_order(state, self._clock())
        return (order[0].tenant_id, order[0].job_id) if order else None

    def used_this_month(self, state: FleetState, tenant_id: str, now: datetime) -> float:
        start = _month_start(now)
        finished = sum(
            u.minutes for u in state.usage if u.tenant_id == tenant_id and u.finished_at >= start
        )
        running = sum(
            _minutes(max(e.since, start), now) for e in state.running if e.tenant_id == tenant_id
        )
        return finished + running

    def recent_minutes(self, state: FleetState, tenant_id: str, now: datetime) -> float:
        since = now - self._window
        finished = sum(
            u.minutes for u in state.usage if u.tenant_id == tenant_id and u.finished_at >= since
        )
        running = sum(_minutes(e.since, now) for e in state.running if e.tenant_id == tenant_id)
        return finished + running

    def _decide(
        self,
        state: FleetState,
        tenant_id: str,
        job_id: str,
        budget_minutes: float | None,
        now: datetime,
    ) -> Decision:
        self._prune(state, now)
        if any(e.job_id == job_id for e in state.running):
            return Admitted()
        if budget_minutes is not None:
            used = self.used_this_month(state, tenant_id, now)
            if used >= budget_minutes:
                state.waiting = [e for e in state.waiting if e.job_id != job_id]
                return OverBudget(used, budget_minutes)
        mine = next((e for e in state.waiting if e.job_id == job_id), None)
        if mine is None:
            mine = _Entry(job_id=job_id, tenant_id=tenant_id, since=now, seen=now)
            state.waiting.append(mine)
        mine.seen = now
        order = self._fair_order(state, now)
        position = next((i for i, e in enumerate(order) if e.job_id == job_id), len(order))
        if any(e.tenant_id == tenant_id for e in state.running):
            return Wait(f"tenant {tenant_id} already has a job on the GPU", position)
        free = self._max_running - len(state.running)
        if free <= 0:
            return Wait(f"all {self._max_running} GPU slots are busy", position)
        if position >= free:
            first = order[0]
            return Wait(
                f"fair share: tenant {first.tenant_id} used fewer GPU-minutes recently and "
                "goes first",
                position,
            )
        state.waiting.remove(mine)
        state.running.append(_Entry(job_id=job_id, tenant_id=tenant_id, since=now, seen=now))
        return Admitted()

    def _fair_order(self, state: FleetState, now: datetime) -> list[_Entry]:
        busy = {e.tenant_id for e in state.running}
        ready = [e for e in state.waiting if e.tenant_id not in busy]
        return sorted(ready, key=lambda e: (self.recent_minutes(state, e.tenant_id, now), e.since))

    def _prune(self, state: FleetState, now: datetime) -> None:
        state.waiting = [e for e in state.waiting if now - e.seen <= self._forget_after]
        keep_from = min(now - self._window, _month_start(now))
        state.usage = [u for u in state.usage if u.finished_at >= keep_from]

    async def _read(self) -> tuple[FleetState, str | None]:
        blob = await self._store.read(self._container, FLEET_BLOB)
        if blob is None:
            return FleetState(), None
        try:
            return FleetState.model_validate_json(blob.data), blob.etag
        except ValidationError as exc:
            raise RuntimeError(f"{self._container}/{FLEET_BLOB} is unreadable: {exc}") from None

    async def _write(self, state: FleetState, etag: str | None) -> None:
        data = state.model_dump_json().encode("utf-8")
        if etag is None:
            if not await self._store.create(self._container, FLEET_BLOB, data):
                raise ConditionFailed("the fleet document appeared meanwhile")
            return
        await self._store.put(self._container, FLEET_BLOB, data, if_match=etag)
