"""What can go wrong calling a model, in SDK-neutral types (after openai-python's hierarchy).

The adapters translate `openai` and `azure-core` exceptions into these, so one predicate
(`is_transient`) decides between "try again later" (the message is abandoned and redelivered, or
the resilience layer retries) and "this request cannot succeed" (the message is rejected).

Each error carries what the service said about itself and nothing of the request: the status, the
retry hint (`retry_after_seconds`), the service's request id and its error code
(`service_error_code`: `content_filter`, `context_length_exceeded`, ...), so that two refusals a
tenant must handle differently can be told apart without the message text or the prompt.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

from shared.contracts import ContentFilter


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
        error_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.deployment = deployment
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.service_request_id = service_request_id
        # The service's machine-readable code (`content_filter`, ...); see service_error_code.
        self.error_code = error_code


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
    """4xx that the request itself caused (400, 413, 422: context too long, a content filter:
    `ContentFiltered`): the same request would fail again anywhere."""


class ContentFiltered(ModelRequestRejected):
    """400 `content_filter` (or a Content Safety pre-check): the prompt was refused by a content
    filter. Final like every refusal (never retried, never failed over); the resilient client
    turns it into a filtered completion, so the tenant gets a result with `status: filtered`.
    `content_filter` holds the stage, source and categories, never the text."""

    def __init__(
        self,
        message: str,
        *,
        deployment: str,
        content_filter: ContentFilter,
        status_code: int | None = 400,
        service_request_id: str | None = None,
        error_code: str | None = "content_filter",
    ) -> None:
        super().__init__(
            message,
            deployment=deployment,
            status_code=status_code,
            service_request_id=service_request_id,
            error_code=error_code,
        )
        self.content_filter = content_filter


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
    error_code: str | None = None,
    content_filter: ContentFilter | None = None,
) -> ModelCallError:
    """The error type for an HTTP status, with the service's retry hint, request id and error
    code (the adapters read it from the error body with `service_error_code`); a request fault
    that a content filter caused (`content_filter`, read with
    `shared.inference.content_filter.prompt_filter`) is a `ContentFiltered`."""
    if content_filter is not None and status_code in _REQUEST_FAULTS:
        return ContentFiltered(
            f"deployment {deployment!r} answered HTTP {status_code} (content_filter)",
            deployment=deployment,
            content_filter=content_filter,
            status_code=status_code,
            error_code=error_code or "content_filter",
            service_request_id=_header(headers, "apim-request-id")
            or _header(headers, "x-request-id"),
        )
    kind: type[ModelCallError]
    if status_code == 429:
        kind = ModelRateLimited
    elif status_code >= 500 or status_code in _SERVER_FAULTS:
        kind = ModelServerError
    elif status_code in _REQUEST_FAULTS:
        kind = ModelRequestRejected
    else:
        kind = ModelConfigurationError
    suffix = f" ({error_code})" if error_code else ""
    return kind(
        f"deployment {deployment!r} answered HTTP {status_code}{suffix}",
        deployment=deployment,
        status_code=status_code,
        retry_after_s=retry_after_seconds(headers, now=now),
        service_request_id=_header(headers, "apim-request-id") or _header(headers, "x-request-id"),
        error_code=error_code,
    )


# The retry hints, in the order they are read; the first present and readable one wins.
# azure-core's RetryPolicy (azure/core/pipeline/policies/_utils.py, get_retry_after) reads these
# three (Azure/azure-sdk-for-python#9092); openai-python (_base_client._parse_retry_after_header)
# reads `retry-after-ms` before `retry-after`. The millisecond headers come first here, as in
# openai-python: they are the precise value that Azure OpenAI rounds up into `retry-after`.
RETRY_AFTER_MS_HEADERS: Final = ("retry-after-ms", "x-ms-retry-after-ms")
RETRY_AFTER_HEADER: Final = "retry-after"


def retry_after_seconds(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """The service's retry hint in seconds: `retry-after-ms`, then `x-ms-retry-after-ms`, then
    `retry-after` (seconds or an HTTP date, in the past read as 0). Header names are matched
    without regard to case; a hint that is absent, unreadable, negative or not finite is skipped.
    None when no header gives one."""
    for name in RETRY_AFTER_MS_HEADERS:
        millis = _number(_header(headers, name))
        if millis is not None:
            return millis / 1000.0
    text = _header(headers, RETRY_AFTER_HEADER)
    if text is None:
        return None
    seconds = _number(text)
    if seconds is not None:
        return seconds
    return _seconds_until(text, now or datetime.now(UTC))


def _number(text: str | None) -> float | None:
    """A non-negative finite number, or None."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _seconds_until(http_date: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(http_date.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


_CODE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
# Codes that say only "the request was bad"; a more specific inner code is preferred to them.
_GENERIC_CODES: Final = frozenset(
    {
        "badrequest",
        "error",
        "invalidargument",
        "invalidinput",
        "invalidpayload",
        "invalidrequest",
        "invalidrequesterror",
        "unknown",
        "usererror",
    }
)
_MAX_INNER_DEPTH: Final = 8


def service_error_code(body: object) -> str | None:
    """The service's error code from an error body, or None.

    Reads `{"error": {"code": ..., "innererror": {"code": ...}}}` (Azure OpenAI, Azure AI model
    inference; the Microsoft REST API guidelines' error shape), or the inner object alone (what
    openai-python keeps as `APIStatusError.body`). The top code wins unless it is generic
    (`BadRequest`, `InvalidRequest`, a number, ...); then the first specific code down the
    `innererror` chain (`ResponsibleAIPolicyViolation`) does. Only code-shaped values count
    (a letter, then letters, digits, `_.-`, at most 64): never the message, never the prompt.
    """
    error = body.get("error") if isinstance(body, Mapping) else None
    node: object = error if isinstance(error, Mapping) else body
    first: str | None = None
    for _ in range(_MAX_INNER_DEPTH):
        if not isinstance(node, Mapping):
            break
        code = _code(node.get("code"))
        if code is not None and _specific(code):
            return code
        first = first or code
        node = node.get("innererror")
    return first


def _code(value: object) -> str | None:
    return value if isinstance(value, str) and _CODE.match(value) else None


def _specific(code: str) -> bool:
    return re.sub(r"[_.-]", "", code).lower() not in _GENERIC_CODES


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None
