"""Breaker and quota events, read back from the Functions host's log (structured key=value lines).

A host log line is `<date> <time> <LEVEL> <logger>: <event> key=value key="a value" ...`
(shared/structured_logging.py `key_values`). The events kept:

    breaker.transition        deployment, from_state, to_state, why
    inference.rescheduled     only with reason=tenant_quota:* (a tenant over its quota)
    quota.store_unavailable   the shared counters are away (quotas become per instance)
    quota.store_recovered

Each becomes {"at", "event", "tenant_id", "deployment", "detail"}; a line that is not one of these
(or does not parse) is skipped.
"""

from __future__ import annotations

import re
import shlex
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_LINE = re.compile(r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ \w+ [\w.]+: (?P<text>.*)$")
_KEPT = ("breaker.transition", "inference.rescheduled", "quota.store_")


def parse_events(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    for raw in lines:
        match = _LINE.match(raw.rstrip("\n"))
        if match is None or not match["text"].startswith(_KEPT):
            continue
        try:
            event, *pairs = shlex.split(match["text"])
        except ValueError:
            continue
        fields = dict(pair.partition("=")[::2] for pair in pairs if "=" in pair)
        if event == "inference.rescheduled":
            if not fields.get("reason", "").startswith("tenant_quota"):
                continue
            detail = f"{fields['reason']}, retry in {fields.get('retry_after_s', '?')} s"
        elif event == "breaker.transition":
            detail = (
                f"{fields.get('from_state', '?')} -> {fields.get('to_state', '?')}"
                f" ({fields.get('why', '')})"
            )
        else:
            detail = fields.get("error", fields.get("store", ""))
        yield {
            "at": match["at"],
            "event": event,
            "tenant_id": fields.get("tenant_id"),
            "deployment": fields.get("deployment"),
            "detail": detail,
        }


def recent_events(log: Path, limit: int) -> list[dict[str, Any]]:
    """The last `limit` events of the log ([] when there is no log yet)."""
    if not log.exists():
        return []
    with log.open(encoding="utf-8", errors="replace") as lines:
        return list(deque(parse_events(lines), maxlen=limit))
