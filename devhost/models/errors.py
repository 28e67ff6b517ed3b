"""Error responses in Azure's shape: `{"error": {"code": ..., "message": ...}}`.

Both SDKs read this shape: openai-python maps the status to its error types (401
AuthenticationError, 404 NotFoundError, 429 RateLimitError, 5xx InternalServerError) and keeps
the body; azure-core maps it to ClientAuthenticationError / ResourceNotFoundError /
HttpResponseError with `.error.code`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal

from aiohttp import web

QUOTA_URL = "https://aka.ms/oai/quotaincrease"


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message, **extra}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def retry_after_headers(seconds: float) -> dict[str, str]:
    """retry-after-ms (integer ms, at least 1) and retry-after (whole seconds, rounded up)."""
    ms = max(1, math.ceil(seconds * 1000))
    return {"retry-after-ms": str(ms), "retry-after": str(max(1, math.ceil(ms / 1000)))}


def unauthorized(missing: bool) -> web.Response:
    if missing:
        message = (
            "Access denied due to missing subscription key. Make sure to include a subscription "
            "key (api-key header or Authorization: Bearer) when making requests to an API."
        )
    else:
        message = (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
            "provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource."
        )
    return error_response(401, "401", message)


def deployment_not_found(name: str) -> web.Response:
    return error_response(
        404,
        "DeploymentNotFound",
        f"The API deployment {name!r} for this resource does not exist. If you created the "
        "deployment within the last 5 minutes, please wait a moment and try again.",
    )


def resource_not_found() -> web.Response:
    return error_response(404, "404", "Resource not found")


def bad_request(message: str, param: str | None = None) -> web.Response:
    return error_response(400, "BadRequest", message, param=param, type="invalid_request_error")


def throttled(
    api_version: str,
    limit: Literal["requests", "tokens"] | None,
    retry_after_s: float,
    headers: dict[str, str],
) -> web.Response:
    rate = "call rate limit" if limit == "requests" else "token rate limit"
    retry = retry_after_headers(retry_after_s)
    headers.update(retry)
    return error_response(
        429,
        "429",
        f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
        f"{api_version} have exceeded {rate} of your current OpenAI S0 pricing tier. Please "
        f"retry after {retry['retry-after']} seconds. Please go here: {QUOTA_URL} if you would "
        "like to further increase the default rate limit.",
        headers,
    )


def injected(status: int, retry_after_s: float | None) -> web.Response:
    headers = retry_after_headers(retry_after_s) if retry_after_s is not None else None
    if status == 429:
        return error_response(
            429,
            "429",
            "Requests to the ChatCompletions_Create Operation have been throttled (injected "
            "fault). Please retry after "
            f"{headers['retry-after'] if headers else 1} seconds.",
            headers or retry_after_headers(1.0),
        )
    if status == 503:
        return error_response(
            503,
            "ServiceUnavailable",
            "The service is temporarily unable to process your request (injected fault). "
            "Please try again later.",
            headers,
        )
    return error_response(
        500,
        "InternalServerError",
        "The server had an error while processing your request (injected fault).",
        headers,
    )
