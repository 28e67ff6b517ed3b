"""Calling a function as the host does: awaited if async, on a worker thread if not, within
`functionTimeout`, with one structured log line per invocation.

The log line carries the function, the invocation id, the duration, the outcome and whatever ids
the trigger adds (the Service Bus message id, the blob name); never a payload.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from devhost.host.discovery import FunctionSpec
from shared.structured_logging import key_values, without_none

log = logging.getLogger("devhost.host")


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Invocation:
    invocation_id: str
    outcome: Outcome
    duration_ms: int
    value: Any = None
    error: BaseException | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome is Outcome.SUCCEEDED


class Invoker:
    """Runs functions; `close()` stops taking sync work (threads still running are left)."""

    def __init__(self, function_timeout_s: float | None, max_threads: int = 32) -> None:
        self.function_timeout_s = function_timeout_s
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="devhost-fn")
        self._running_threads = 0
        self._lock = threading.Lock()

    async def invoke(
        self, spec: FunctionSpec, argument: Any, fields: Mapping[str, Any] | None = None
    ) -> Invocation:
        """Never raises for the function's own errors: the outcome says what happened. A
        cancellation of the caller (host shutdown past its grace period) is reported as
        CANCELLED and not re-raised, so the caller can still settle what it holds."""
        invocation_id = str(uuid.uuid4())
        started = time.perf_counter()
        extra = dict(fields or {})
        log.debug(
            key_values(
                {
                    "event": "function.started",
                    "function": spec.name,
                    "invocation_id": invocation_id,
                    **extra,
                }
            )
        )
        error: BaseException | None = None
        value: Any = None
        try:
            async with asyncio.timeout(self.function_timeout_s):
                value = await self._call(spec, argument)
            outcome = Outcome.SUCCEEDED
        except TimeoutError as exc:
            outcome, error = Outcome.TIMED_OUT, exc
        except asyncio.CancelledError as exc:
            outcome, error = Outcome.CANCELLED, exc
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception as exc:  # the function's failure is its outcome
            outcome, error = Outcome.FAILED, exc
        duration_ms = round((time.perf_counter() - started) * 1000)
        self._log(
            spec,
            invocation_id=invocation_id,
            outcome=outcome,
            duration_ms=duration_ms,
            error=error,
            extra=extra,
        )
        return Invocation(invocation_id, outcome, duration_ms, value, error)

    async def _call(self, spec: FunctionSpec, argument: Any) -> Any:
        kwargs = {spec.arg_name: argument}
        if spec.is_async:
            return await spec.func(**kwargs)
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, self._in_thread, spec.func, kwargs)
        return await loop.run_in_executor(self._executor, call)

    def _in_thread(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            self._running_threads += 1
        try:
            return fn(**kwargs)
        finally:
            with self._lock:
                self._running_threads -= 1

    def _log(
        self,
        spec: FunctionSpec,
        *,
        invocation_id: str,
        outcome: Outcome,
        duration_ms: int,
        error: BaseException | None,
        extra: dict[str, Any],
    ) -> None:
        fields = without_none(
            event=f"function.{outcome.value}",
            function=spec.name,
            trigger=spec.trigger_type,
            invocation_id=invocation_id,
            duration_ms=duration_ms,
            outcome=outcome.value,
            error_type=type(error).__name__ if outcome is Outcome.FAILED and error else None,
            timeout_s=self.function_timeout_s if outcome is Outcome.TIMED_OUT else None,
            **extra,
        )
        if outcome is Outcome.SUCCEEDED:
            log.info(key_values(fields), extra=fields)
        elif outcome is Outcome.FAILED and error is not None:
            log.warning(key_values(fields), extra=fields, exc_info=error)
        else:
            log.warning(key_values(fields), extra=fields)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def busy_threads(self) -> int:
        """Worker threads still running a function (a sync function past its grace period)."""
        with self._lock:
            return self._running_threads
