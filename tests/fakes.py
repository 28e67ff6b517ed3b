"""In-memory stand-ins for the ports, for tests of this app and of the layers built on it.

- `ScriptedModel`: answers every call with one fixed completion, or raises the errors queued in
  `failures` first; records which deployment each call went to (never branches on the prompt).
- `RecordingReplySender`: keeps the replies it was asked to send; can be told to fail.
- `memory_runtime(registry)`: a `Runtime` over `MemoryBlobStore` and the two fakes above.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.contracts import ChatMessage, InferenceParameters
from shared.inference.model_clients import Completion
from shared.inference.replies import Reply
from shared.runtime import Runtime
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import Deployment, Registry
from shared.tenancy.registry_source import StaticRegistry
from shared.tenancy.routing import Router


@dataclass(frozen=True, slots=True)
class ModelCall:
    deployment: str
    tenant_id: str
    message_count: int
    parameters: dict[str, object]


@dataclass
class ScriptedModel:
    completion: Completion = field(
        default_factory=lambda: Completion(
            content="ok", finish_reason="stop", prompt_tokens=11, completion_tokens=7, model="fake"
        )
    )
    failures: list[BaseException] = field(default_factory=list)
    calls: list[ModelCall] = field(default_factory=list)
    closed: bool = False

    async def complete(
        self,
        deployment: Deployment,
        messages: Sequence[ChatMessage],
        parameters: InferenceParameters,
        *,
        tenant_id: str,
    ) -> Completion:
        self.calls.append(ModelCall(deployment.name, tenant_id, len(messages), parameters.given()))
        if self.failures:
            raise self.failures.pop(0)
        return self.completion

    async def close(self) -> None:
        self.closed = True


@dataclass
class RecordingReplySender:
    sent: list[Reply] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)

    async def send(self, reply: Reply) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(reply)

    async def close(self) -> None:
        return None


@dataclass
class FakeTime:
    """A monotonic clock and an async sleep that advances it at once, recording each wait."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def fixed_clock(at: datetime | None = None) -> datetime:
    return at or datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def memory_runtime(
    registry: Registry,
    *,
    model: ScriptedModel | None = None,
    replies: RecordingReplySender | None = None,
    store: MemoryBlobStore | None = None,
    seed: int = 7,
    fake_time: FakeTime | None = None,
) -> Runtime:
    ticks = fake_time or FakeTime()
    return Runtime(
        store=store or MemoryBlobStore(),
        registry=StaticRegistry(registry),
        models=model or ScriptedModel(),
        replies=replies or RecordingReplySender(),
        router=Router(random.Random(seed)),
        clock=fixed_clock,
        monotonic=ticks.monotonic,
        sleep=ticks.sleep,
        rng=random.Random(seed),
    )


@dataclass
class TickingClock:
    """A UTC clock that moves `step` forward on every reading (distinct, ordered timestamps)."""

    at: datetime = field(default_factory=lambda: datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    step: timedelta = field(default_factory=lambda: timedelta(milliseconds=10))

    def __call__(self) -> datetime:
        self.at += self.step
        return self.at
