"""Injected faults: per deployment, for a period of time, a number of calls, or a fraction of calls.

A fault applies to calls that reach a known deployment with a valid key and a valid body, before
the rate limiter: a faulted call is not charged against the deployment's limits. A fraction is
spread deterministically (rate 0.5 fails every second call, 0.25 every fourth), so tests need no
seed and no luck.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal[
    "500", "503", "429", "timeout", "disconnect", "content_filter", "content_filter_completion"
]

ANY_DEPLOYMENT = "*"


class FaultSpec(BaseModel):
    """What to break and when. Times are seconds from the moment the fault is installed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Annotated[
        FaultKind,
        Field(
            description="500 / 503 / 429: answer with that status and an Azure error body; "
            "timeout: hang for hang_s, then drop the connection; "
            "disconnect: drop the connection without an answer; "
            "content_filter: Azure OpenAI's 400 for a filtered prompt (violence); "
            "content_filter_completion: a 200 whose answer the filter withheld "
            "(content_filter.py)"
        ),
    ]
    rate: Annotated[float, Field(gt=0.0, le=1.0, description="fraction of calls to fail")] = 1.0
    after_s: Annotated[float, Field(ge=0.0, description="start this long after install")] = 0.0
    duration_s: Annotated[
        float | None, Field(gt=0.0, description="stop this long after start; null = forever")
    ] = None
    count: Annotated[int | None, Field(ge=1, description="stop after failing this many")] = None
    hang_s: Annotated[
        float,
        Field(gt=0.0, description="timeout: seconds to hang (longer than openai's 600 s default)"),
    ] = 900.0
    retry_after_s: Annotated[
        float | None, Field(ge=0.0, description="send retry-after headers (default 1 s for 429)")
    ] = None


@dataclass(slots=True)
class ActiveFault:
    id: str
    deployment: str
    spec: FaultSpec
    starts_at: float
    ends_at: float | None
    seen: int = 0
    fired: int = 0

    def expired(self, now: float) -> bool:
        if self.ends_at is not None and now >= self.ends_at:
            return True
        return self.spec.count is not None and self.fired >= self.spec.count

    def trigger(self, now: float) -> bool:
        """Count one call in the fault's window; True when this call is to fail."""
        if now < self.starts_at or self.expired(now):
            return False
        self.seen += 1
        rate = self.spec.rate
        if rate < 1.0 and math.floor(self.seen * rate) == math.floor((self.seen - 1) * rate):
            return False
        self.fired += 1
        return True

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "deployment": self.deployment,
            **self.spec.model_dump(),
            "active": self.starts_at <= now and not self.expired(now),
            "seen": self.seen,
            "fired": self.fired,
        }


class FaultBoard:
    """The faults in force, by deployment name (or '*' for every deployment)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._by_deployment: dict[str, list[ActiveFault]] = {}
        self._ids = itertools.count(1)

    def add(self, deployment: str, spec: FaultSpec) -> ActiveFault:
        now = self._clock()
        starts = now + spec.after_s
        ends = starts + spec.duration_s if spec.duration_s is not None else None
        fault = ActiveFault(f"fault-{next(self._ids)}", deployment, spec, starts, ends)
        self._by_deployment.setdefault(deployment, []).append(fault)
        return fault

    def clear(self, deployment: str | None = None) -> int:
        if deployment is None:
            n = sum(len(v) for v in self._by_deployment.values())
            self._by_deployment.clear()
            return n
        return len(self._by_deployment.pop(deployment, []))

    def pick(self, deployment: str) -> FaultSpec | None:
        """The fault this call suffers, if any. The common case (no faults) is one dict check."""
        if not self._by_deployment:
            return None
        now = self._clock()
        for key in (deployment, ANY_DEPLOYMENT):
            faults = self._by_deployment.get(key)
            if not faults:
                continue
            for fault in faults:
                if fault.trigger(now):
                    return fault.spec
            alive = [f for f in faults if not f.expired(now)]
            if alive:
                self._by_deployment[key] = alive
            else:
                del self._by_deployment[key]
        return None

    def describe(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [f.describe(now) for fs in self._by_deployment.values() for f in fs]
