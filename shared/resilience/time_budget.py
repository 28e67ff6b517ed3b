"""How long one message may spend on retries, derived from the Functions host settings.

A Service Bus-triggered invocation is bounded twice in `host.json`: `functionTimeout` (the host
cancels the invocation) and `extensions.serviceBus.maxAutoLockRenewalDuration` (after it the
message lock lapses and another instance may receive the message). The retry budget of a message
is the smaller of the two, less a safety margin for the steps after the model call (usage line,
result blob, reply) and less one model-call timeout, so that the last attempt started inside the
budget also ends inside it. When the budget is spent, the request is rescheduled on Service Bus
rather than retried in-process (`shared.resilience.client.TryLater`).

Sources: host.json reference for Azure Functions 2.x+ (`functionTimeout`; default 5 min on
Consumption, 30 min on Flex/Premium; -1 or absent means unbounded there) and the Service Bus
binding's host.json settings (`maxAutoLockRenewalDuration`, default 00:05:00).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

DEFAULT_FUNCTION_TIMEOUT_S: Final = 300.0  # Consumption's default when host.json sets none
DEFAULT_LOCK_RENEWAL_S: Final = 300.0  # the Service Bus extension's default
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?([01]?\d|2[0-3]):([0-5]\d):([0-5]\d(?:\.\d+)?)$")


class HostSettingsError(ValueError):
    """host.json holds a duration that is not a .NET TimeSpan ([d.]hh:mm:ss[.fff])."""


def parse_timespan(text: str) -> float | None:
    """A .NET TimeSpan (`00:05:00`, `1.00:00:00`, `00:00:00.80`) in seconds; None for `-1`
    (unbounded). Raises HostSettingsError for anything else."""
    if text.strip() == "-1":
        return None
    match = _TIMESPAN.match(text.strip())
    if match is None:
        raise HostSettingsError(f"{text!r} is not a TimeSpan ([d.]hh:mm:ss[.fff])")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def message_time_budget(
    host: Mapping[str, Any], *, model_timeout_s: float, margin_s: float = 15.0
) -> float:
    """Seconds one message may spend calling models, retries and waits included (at least 1)."""
    function_timeout = DEFAULT_FUNCTION_TIMEOUT_S
    if "functionTimeout" in host:
        function_timeout = _bounded(parse_timespan(str(host["functionTimeout"])))
    service_bus = host.get("extensions", {}).get("serviceBus", {})
    lock = DEFAULT_LOCK_RENEWAL_S
    if "maxAutoLockRenewalDuration" in service_bus:
        # 00:00:00 turns renewal off: the lock lapses within the queue's lock duration, so the
        # budget is the floor below, not unbounded.
        lock = _bounded(parse_timespan(str(service_bus["maxAutoLockRenewalDuration"])))
    bound = min(function_timeout, lock)
    if bound == float("inf"):
        bound = DEFAULT_LOCK_RENEWAL_S
    return max(1.0, bound - margin_s - model_timeout_s)


def _bounded(seconds: float | None) -> float:
    return float("inf") if seconds is None else seconds


def read_host_json(path: str | Path) -> dict[str, Any]:
    """host.json as a dict; {} when the file is absent (the defaults then apply)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    if not isinstance(document, dict):
        raise HostSettingsError(f"{path}: host.json must be a JSON object")
    return document
