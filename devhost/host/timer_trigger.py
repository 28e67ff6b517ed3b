"""Timer triggers: NCRONTAB schedules (or a TimeSpan interval), in UTC, one run at a time.

As the real host does, a function's runs never overlap: the next occurrence is the first one
after the later of now and the last scheduled time, so occurrences missed while a long run was
going are skipped, not queued. `run_on_startup` runs it once when the host starts. The function
gets `func.TimerRequest(past_due=...)`, past due when it starts more than a second late.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from azure.functions.timer import TimerRequest

from devhost.host import ncrontab
from devhost.host.discovery import FunctionSpec
from devhost.host.invocation import Invoker
from devhost.host.options import HostJsonError, parse_timespan
from shared.structured_logging import key_values, without_none

log = logging.getLogger("devhost.host")

PAST_DUE_AFTER = timedelta(seconds=1)


class Schedule(Protocol):
    def next_after(self, moment: datetime) -> datetime: ...


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule (`00:05:00`): every interval."""

    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.interval


def parse_schedule(text: str) -> Schedule:
    """NCRONTAB (six fields) or, with one field containing ':', a TimeSpan interval."""
    stripped = text.strip()
    if len(stripped.split()) == 1 and ":" in stripped:
        try:
            seconds = parse_timespan(stripped)
        except HostJsonError as exc:
            raise ncrontab.CronError(f"schedule {text!r}: {exc}") from None
        if seconds <= 0:
            raise ncrontab.CronError(f"schedule {text!r}: the interval must be positive")
        return IntervalSchedule(timedelta(seconds=seconds))
    return ncrontab.parse(stripped)


def utc_now() -> datetime:
    return datetime.now(UTC)


class TimerListener:
    def __init__(
        self,
        spec: FunctionSpec,
        schedule: Schedule,
        invoker: Invoker,
        *,
        run_on_startup: bool = False,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.spec = spec
        self.schedule = schedule
        self._invoker = invoker
        self._run_on_startup = run_on_startup
        self._clock = clock
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: asyncio.Task[Any] | None = None
        self._last: datetime | None = None

    def describe(self) -> str:
        return f"{self.spec.name}: timer {self.spec.prop('schedule')!r}"

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name=f"timer:{self.spec.name}")

    async def stop(self, grace_s: float) -> None:
        self._stopping.set()
        running = self._running
        if running is not None and not running.done():
            _, pending = await asyncio.wait({running}, timeout=grace_s)
            if pending:
                running.cancel()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)

    async def _run(self) -> None:
        scheduled = self._clock()
        if self._run_on_startup:
            await self._fire(scheduled, past_due=False)
        while not self._stopping.is_set():
            try:
                scheduled = self.schedule.next_after(max(self._clock(), scheduled))
            except ncrontab.CronError as exc:
                self._event(logging.ERROR, "timer.no_next_occurrence", error=str(exc))
                return
            if not await self._sleep_until(scheduled):
                return
            past_due = self._clock() - scheduled > PAST_DUE_AFTER
            await self._fire(scheduled, past_due=past_due)

    async def _sleep_until(self, moment: datetime) -> bool:
        """False when the host stops first."""
        while not self._stopping.is_set():
            remaining = (moment - self._clock()).total_seconds()
            if remaining <= 0:
                return True
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), remaining)
        return False

    async def _fire(self, scheduled: datetime, *, past_due: bool) -> None:
        now = self._clock()
        try:
            upcoming = self.schedule.next_after(max(now, scheduled)).isoformat()
        except ncrontab.CronError:
            upcoming = None
        status = without_none(
            Last=self._last.isoformat() if self._last else None,
            Next=upcoming,
            LastUpdated=now.isoformat(),
        )
        request = TimerRequest(
            past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True}
        )
        fields = {"scheduled": scheduled.isoformat(timespec="seconds"), "past_due": past_due}
        self._running = asyncio.create_task(self._invoker.invoke(self.spec, request, fields))
        try:
            await asyncio.shield(self._running)
        finally:
            self._last = scheduled
            self._running = None

    def _event(self, level: int, event: str, **fields: Any) -> None:
        extra = without_none(event=event, function=self.spec.name, **fields)
        log.log(level, key_values(extra), extra=extra)
