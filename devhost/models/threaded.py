"""A simulator on its own thread and event loop, for callers that have no loop of their own
(synchronous code, or pytest fixtures shared across tests that each run in their own loop)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from devhost.models.config import SimulatorConfig
from devhost.models.faults import FaultSpec
from devhost.models.server import RunningSimulator, start_simulator

T = TypeVar("T")

START_TIMEOUT_S = 30.0


class ThreadedSimulator:
    def __init__(self, config: SimulatorConfig | str | Path, host: str, port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._started: Future[RunningSimulator] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(config, host, port), name="models-simulator", daemon=True
        )
        self._thread.start()
        self.running = self._started.result(timeout=START_TIMEOUT_S)

    def _run(self, config: SimulatorConfig | str | Path, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            running = self._loop.run_until_complete(start_simulator(config, host, port))
        except BaseException as err:  # handed to the starting thread, which re-raises it
            self._started.set_exception(err)
            self._loop.close()
            return
        self._started.set_result(running)
        self._loop.run_forever()
        self._loop.close()

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def port(self) -> int:
        return self.running.port

    def call(self, fn: Callable[[], T]) -> T:
        """Run fn on the simulator's loop (its state belongs to that thread); return its value."""

        async def _call() -> T:
            return fn()

        return self._submit(_call())

    def _submit(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=START_TIMEOUT_S)

    def stats(self) -> dict[str, Any]:
        return self.call(self.running.stats)

    def reset(self) -> None:
        self.call(self.running.reset)

    def add_fault(self, deployment: str, spec: FaultSpec | Mapping[str, Any]) -> str:
        return self.call(lambda: self.running.add_fault(deployment, spec))

    def clear_faults(self, deployment: str | None = None) -> int:
        return self.call(lambda: self.running.clear_faults(deployment))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._submit(self.running.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=START_TIMEOUT_S)


def start_simulator_in_thread(
    config: SimulatorConfig | str | Path, host: str = "127.0.0.1", port: int = 0
) -> ThreadedSimulator:
    """Start a simulator on a background thread; `.stop()` ends it and the thread."""
    return ThreadedSimulator(config, host, port)
