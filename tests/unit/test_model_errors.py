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
    service_error_code,
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
        # Every hint azure-core's RetryPolicy reads, ms headers first (issue 8, item 6):
        ({"x-ms-retry-after-ms": "5000"}, 5.0),
        ({"X-Ms-Retry-After-Ms": "5000"}, 5.0),
        ({"x-ms-retry-after-ms": "5000", "retry-after": "9"}, 5.0),
        ({"retry-after-ms": "250", "x-ms-retry-after-ms": "5000", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "-1", "x-ms-retry-after-ms": "5000"}, 5.0),
        ({"retry-after-ms": "nan", "x-ms-retry-after-ms": "inf", "retry-after": "2"}, 2.0),
        ({"x-ms-retry-after-ms": "soon", "retry-after": "Thu, 02 Jan 2025 03:04:15 GMT"}, 10.0),
        ({"retry-after": "inf"}, None),
        ({"retry-after": ""}, None),
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


def test_the_error_code_is_kept_on_the_error_and_named_in_its_message() -> None:
    error = error_for_status(400, deployment="d", headers={}, error_code="content_filter")
    assert type(error) is ModelRequestRejected
    assert error.error_code == "content_filter"
    assert str(error) == "deployment 'd' answered HTTP 400 (content_filter)"
    assert error_for_status(400, deployment="d", headers={}).error_code is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"error": {"code": "content_filter", "innererror": {"code": "Responsible"}}},
            "content_filter",
        ),
        ({"code": "context_length_exceeded", "message": "too long"}, "context_length_exceeded"),
        (
            {
                "error": {
                    "code": "BadRequest",
                    "innererror": {"code": "ResponsibleAIPolicyViolation"},
                }
            },
            "ResponsibleAIPolicyViolation",
        ),
        (
            {
                "error": {
                    "code": "invalid_request_error",
                    "innererror": {"innererror": {"code": "X1"}},
                }
            },
            "X1",
        ),
        (
            {"error": {"code": "InvalidRequest", "innererror": {"message": "no code"}}},
            "InvalidRequest",
        ),
        ({"error": {"code": "400"}}, None),
        ({"error": {"code": 400}}, None),
        ({"error": {"code": "has spaces, so it is text"}}, None),
        ({"error": {"code": "x" * 65}}, None),
        ({"error": "a string"}, None),
        ({"message": "no code"}, None),
        ("<html>", None),
        (None, None),
        ([1, 2], None),
    ],
)
def test_service_error_code(body: object, expected: str | None) -> None:
    assert service_error_code(body) == expected
