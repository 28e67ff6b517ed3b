"""Structured logs: fields go in `extra=`, and the message repeats them as `key=value`.

With OpenTelemetry logging (azure-monitor-opentelemetry) `extra` fields become custom dimensions
in Application Insights; without it the host keeps only the message text, which is why the text
carries the same fields (`inference.completed tenant_id=tailwind request_id=... ...`). Locally
(devhost, tests) `JsonLogFormatter` prints one JSON object per line. Fields carry ids (tenant,
request, deployment, message), codes and numbers, never message content, keys or personal data.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def without_none(**fields: Any) -> dict[str, Any]:
    """`extra=` without the fields that have no value."""
    return {k: v for k, v in fields.items() if v is not None}


def key_values(fields: dict[str, Any]) -> str:
    """`event key=value ...`: the event first, then the other fields in the order given."""
    parts = [str(fields.get("event", ""))]
    parts += [f"{k}={_text(v)}" for k, v in fields.items() if k != "event"]
    return " ".join(p for p in parts if p)


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)
