"""Fakes at the HTTP transport of the model SDKs: the SDK itself runs, only the bytes are canned.

(openai-python's transport is faked with `httpx2.MockTransport` directly.)
"""

from __future__ import annotations

from typing import Any

from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest._http_response_impl_async import AsyncHttpResponseImpl
from azure.core.utils import case_insensitive_dict


class _Closable:
    async def close(self) -> None:
        return None


class AzureTransport(AsyncHttpTransport):  # type: ignore[type-arg]
    """An azure-core transport that answers every request with one canned HTTP response."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.status, self.body = status, body
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.requests: list[Any] = []

    async def send(self, request: Any, **kwargs: Any) -> AsyncHttpResponseImpl:
        self.requests.append(request)
        headers = case_insensitive_dict(self.headers)
        response = AsyncHttpResponseImpl(
            request=request,
            internal_response=_Closable(),
            status_code=self.status,
            reason="canned",
            content_type=headers.get("content-type"),
            headers=headers,
            stream_download_generator=None,
        )
        response._content = self.body
        response._is_stream_consumed = True
        return response

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> AzureTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
