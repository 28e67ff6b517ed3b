"""Rescheduling a request that cannot be served now, instead of burning its deliveries.

When the resilient client raises `TryLater`, the handler does not raise to the host (Service Bus
would redeliver at once and dead-letter the message after MaxDeliveryCount attempts, whatever the
service's retry-after said: Azure/azure-functions-servicebus-extension#161). It sends a copy of the
request back to its queue with `scheduled_enqueue_time_utc` at the earliest time a deployment (or
the tenant's quota) has room, plus jitter so that rescheduled requests do not return as a herd,
then completes the original.

The copy carries, as application properties, the attempt counter (`reschedule_attempt`), the time
the request was first enqueued (`first_enqueued_at`, ISO 8601), the model calls made so far
(`model_attempts`) and why it was put back (`reschedule_reason`). Its `message_id` is derived from
the tenant, the request id and the attempt number, so a handler that is redelivered after sending
the copy sends the same id again and the queue's duplicate detection drops it: one copy per
attempt, however often the original is redelivered.

After `deadline_s` since the first enqueue, or `max_reschedules` copies, the request ends as a
`failed` result with the reason: the tenant hears back either way.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

ATTEMPT_PROPERTY: Final = "reschedule_attempt"
FIRST_ENQUEUED_PROPERTY: Final = "first_enqueued_at"
MODEL_ATTEMPTS_PROPERTY: Final = "model_attempts"
REASON_PROPERTY: Final = "reschedule_reason"


@dataclass(frozen=True, slots=True)
class ReschedulePolicy:
    deadline_s: float = 900.0
    """From the first enqueue to a `failed` result (the tenant's longest wait)."""
    max_reschedules: int = 50
    jitter_fraction: float = 0.2
    """Up to this fraction of the delay (at most `max_jitter_s`) is added at random."""
    max_jitter_s: float = 2.0
    quota_spread_s: float = 60.0
    """A request over its tenant's per-minute quota returns at a random point of the next this
    many seconds, so a tenant's backlog comes back spread over the quota's window, not as a herd
    that one freed slot would send round again."""


@dataclass(frozen=True, slots=True)
class History:
    """What the message's properties say of its earlier rounds."""

    reschedules: int
    first_enqueued_at: datetime
    model_attempts: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Either a copy to schedule (`at`, `message_id`, `properties`) or give up (`give_up`)."""

    give_up: bool
    at: datetime
    message_id: str
    properties: dict[str, Any]
    history: History


def history_of(
    properties: Mapping[str, Any], enqueued_time: datetime | None, now: datetime
) -> History:
    """Read the counters a previous round wrote; a first delivery has none (bad values count as
    absent: a tenant cannot extend its own deadline by setting them, only shorten it)."""
    first = _datetime(properties.get(FIRST_ENQUEUED_PROPERTY))
    own = enqueued_time or now
    return History(
        reschedules=_count(properties.get(ATTEMPT_PROPERTY)),
        first_enqueued_at=min(first, own) if first is not None else own,
        model_attempts=_count(properties.get(MODEL_ATTEMPTS_PROPERTY)),
    )


def plan(
    *,
    tenant_id: str,
    request_id: str,
    properties: Mapping[str, Any],
    history: History,
    attempts_now: int,
    delay_s: float,
    reason: str,
    now: datetime,
    policy: ReschedulePolicy,
    rng: random.Random,
) -> Plan:
    """The next round for a request that must wait `delay_s` seconds."""
    attempt = history.reschedules + 1
    delay_s = min(delay_s, policy.deadline_s + policy.max_jitter_s)  # past it: give up anyway
    if reason.startswith("tenant_quota"):
        jitter = rng.uniform(0.0, policy.quota_spread_s)
    else:
        jitter = rng.uniform(0.0, min(policy.max_jitter_s, delay_s * policy.jitter_fraction))
    at = now + timedelta(seconds=delay_s + jitter)
    deadline = history.first_enqueued_at + timedelta(seconds=policy.deadline_s)
    give_up = attempt > policy.max_reschedules or at > deadline
    props = {
        **{k: v for k, v in properties.items() if isinstance(k, str)},
        ATTEMPT_PROPERTY: attempt,
        FIRST_ENQUEUED_PROPERTY: history.first_enqueued_at.isoformat(),
        MODEL_ATTEMPTS_PROPERTY: history.model_attempts + attempts_now,
        REASON_PROPERTY: reason,
    }
    return Plan(
        give_up=give_up,
        at=at,
        message_id=reschedule_message_id(tenant_id, request_id, attempt),
        properties=props,
        history=history,
    )


def reschedule_message_id(tenant_id: str, request_id: str, attempt: int) -> str:
    """Deterministic per (tenant, request, attempt); at most 64 characters."""
    digest = hashlib.sha256(f"{tenant_id}\x00{request_id}".encode()).hexdigest()[:40]
    return f"rs-{digest}-{attempt}"


def _count(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, str | bytes):
        try:
            return max(0, int(value))
        except ValueError:
            return 0
    return 0


def _datetime(value: object) -> datetime | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value if value.tzinfo else None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
