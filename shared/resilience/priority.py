"""Two kinds of traffic: interactive requests first, batch rows with what is left.

A request message marked `traffic=batch` (the batch fan-out marks each row so) is a batch row.
When its tenant is near its quota, the tenant's interactive requests are served first:
- a batch row may use only `ResiliencePolicy.batch_quota_share` of the tenant's per-minute
  quotas (requests and tokens): past that share it gets `TryLater` and is rescheduled, while an
  interactive request still finds the rest of the quota free;
- a batch row never waits in a deployment's line: when no candidate has room now, or requests
  are already waiting for one, it is rescheduled instead of queuing ahead of them;
- a batch row that waited in the queue longer than `batch_max_queued_s` steps aside: the host is
  behind, and interactive requests are waiting in the same queue behind it. It is rescheduled
  `batch_step_aside_s` later (a new message, behind them) without a model call, so a backlog of
  batch rows costs the host little and drains out of the interactive requests' way.
Marking one's own interactive requests as batch only lowers their own priority.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Final

TRAFFIC_PROPERTY: Final = "traffic"


class Priority(StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


def queued_seconds(enqueued_time: datetime | None, now: datetime) -> float:
    """How long a message waited in the queue before this delivery (0 when unknown)."""
    if enqueued_time is None:
        return 0.0
    return max(0.0, (now - enqueued_time).total_seconds())


def traffic_priority(properties: Mapping[str, object]) -> Priority:
    value = properties.get(TRAFFIC_PROPERTY)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return Priority.BATCH if value == Priority.BATCH.value else Priority.INTERACTIVE
