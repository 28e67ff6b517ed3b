"""What can go wrong calling a model, in SDK-neutral types (after openai-python's hierarchy).

The adapters translate `openai` and `azure-core` exceptions into these, so one predicate
(`is_transient`) decides between "try again later" (the message is abandoned and redelivered, or
the resilience layer retries) and "this request cannot succeed" (the message is rejected).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


class ModelCallError(Exception):
    """A model call failed; carries what the service said, never the request's content."""

    def __init__(
        self,
        message: str,
        *,
        deployment: str,
        status_code: int | None = None,
        retry_after_s: float | None = None,
        service_request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.deployment = deployment
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.service_request_id = service_request_id


class TransientModelError(ModelCallError):
    """Worth trying again (later, or on another deployment)."""


class ModelRateLimited(TransientModelError):
    """429: the deployment's TPM/RPM is spent; retry_after_s says for how long."""


class ModelServerError(TransientModelError):
    """5xx (and 408): the service failed this time."""


class ModelTimeout(TransientModelError):
    """No answer within the time limit."""


class ModelConnectionError(TransientModelError):
    """The service could not be reached."""


class ModelRequestRejected(ModelCallError):
    """4xx that the request itself caused (400, 413, 422: content filter, context too long):
    the same request would fail again anywhere."""


class ModelConfigurationError(ModelCallError):
    """401 / 403 / 404 and the like: our deployment or identity is wrong; no request can succeed
    until someone fixes it. Raised to the host, so messages wait (and dead-letter in the end)."""


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TransientModelError)


_REQUEST_FAULTS = frozenset({400, 413, 422})
_SERVER_FAULTS = frozenset({408, 409})


def error_for_status(
    status_code: int,
    *,
    deployment: str,
    headers: Mapping[str, str],
    now: datetime | None = None,
) -> ModelCallError:
    """The error type for an HTTP status, with the service's retry hint and request id."""
    kind: type[ModelCallError]
    if status_code == 429:
        kind = ModelRateLimited
    elif status_code >= 500 or status_code in _SERVER_FAULTS:
        kind = ModelServerError
    elif status_code in _REQUEST_FAULTS:
        kind = ModelRequestRejected
    else:
        kind = ModelConfigurationError
    return kind(
        f"deployment {deployment!r} answered HTTP {status_code}",
        deployment=deployment,
        status_code=status_code,
        retry_after_s=retry_after_seconds(headers, now=now),
        service_request_id=_header(headers, "apim-request-id") or _header(headers, "x-request-id"),
    )


def retry_after_seconds(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """`retry-after-ms`, else `retry-after` (seconds or an HTTP date); None when absent or bad."""
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0:
            return value
    text = _header(headers, "retry-after")
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        return max(seconds, 0.0)
    return seconds if seconds >= 0 else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None
