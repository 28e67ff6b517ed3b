"""Retry hints and the transient / permanent split."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.inference.model_errors import (
    ModelConfigurationError,
    ModelRateLimited,
    ModelRequestRejected,
    ModelServerError,
    error_for_status,
    is_transient,
    retry_after_seconds,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After-Ms": "250", "Retry-After": "7"}, 0.25),
        ({"retry-after-ms": "bad", "retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "Thu, 02 Jan 2025 03:04:15 GMT"}, 10.0),
        ({"retry-after": "Thu, 02 Jan 2025 03:04:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == expected


@pytest.mark.parametrize(
    ("status", "kind", "transient"),
    [
        (429, ModelRateLimited, True),
        (500, ModelServerError, True),
        (503, ModelServerError, True),
        (408, ModelServerError, True),
        (400, ModelRequestRejected, False),
        (413, ModelRequestRejected, False),
        (401, ModelConfigurationError, False),
        (403, ModelConfigurationError, False),
        (404, ModelConfigurationError, False),
    ],
)
def test_status_classes(status: int, kind: type[Exception], transient: bool) -> None:
    error = error_for_status(status, deployment="d", headers={"x-request-id": "abc"})
    assert type(error) is kind
    assert is_transient(error) is transient
    assert error.service_request_id == "abc"
    assert str(error) == f"deployment 'd' answered HTTP {status}"
