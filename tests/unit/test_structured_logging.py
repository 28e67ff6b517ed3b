"""The JSON log formatter writes the extra= fields and nothing of the standard record noise."""

from __future__ import annotations

import json
import logging

from shared.structured_logging import JsonLogFormatter, fields_of, key_values, without_none


def test_extra_fields_become_json_keys() -> None:
    record = logging.LogRecord(
        "shared.x", logging.INFO, "f.py", 1, "inference.completed", None, None
    )
    for key, value in without_none(tenant_id="tailwind", request_id="r", deployment=None).items():
        setattr(record, key, value)
    assert fields_of(record) == {"tenant_id": "tailwind", "request_id": "r"}
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["message"] == "inference.completed"
    assert entry["level"] == "INFO"
    assert entry["tenant_id"] == "tailwind"
    assert "deployment" not in entry
    assert "args" not in entry
    assert "pathname" not in entry


def test_exceptions_are_named_not_dumped() -> None:
    try:
        raise ValueError("content that might be personal")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, "f", 1, "failed", None, sys.exc_info())
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["error_type"] == "ValueError"
    assert "personal" not in json.dumps(entry)


def test_key_values_puts_the_event_first_and_quotes_text_with_spaces() -> None:
    text = key_values({"tenant_id": "t", "event": "inference.rejected", "detail": "a b", "n": 3})
    assert text == 'inference.rejected tenant_id=t detail="a b" n=3'
