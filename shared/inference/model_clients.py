"""The model port and its adapters: `openai.AsyncAzureOpenAI` and `azure.ai.inference.aio`.

`ModelClients` builds one SDK client per (kind, endpoint) the first time a deployment there is
called, and reuses it: deployments of one Azure OpenAI resource share one connection pool, as the
deployment name travels in each call. In Azure the clients authenticate with the managed identity
(a bearer-token provider for openai, the credential itself for azure-ai-inference); locally with
`MODEL_API_KEY`. The SDKs' own retries are off: retrying belongs to the resilience layer, which
sees the SDK-neutral errors of `shared.inference.model_errors`.

Reading an answer (`read_completion`, the same for both SDKs): neither SDK validates what the
service sends (openai-python builds its models with `construct`, azure-ai-inference reads its
dict-backed models lazily), so every field may be missing, null or of another type, as gateways,
OpenAI-compatible deployments and cached answers do (567-labs/instructor#358,
microsoft/autogen#6352). The rules:
- no choices (missing, null, empty, or a null first choice): ModelServerError "answered with no
  choices", a fault of the service this time;
- a content filter's verdict (a withheld choice, `finish_reason: content_filter`, or a prompt
  annotated `filtered: true`) is `Completion.content_filter` (`shared.inference.content_filter`),
  and a 400 `content_filter` is `ContentFiltered`: the result is `filtered`;
- message or content missing or null: the answer is "" (e.g. a content-filtered answer), content
  given as a list of parts: the text parts joined; any other content: ModelServerError;
- finish_reason missing, null or not text: None; an unknown text is kept as it is;
- model missing, null or not text: None;
- usage missing or null: 0 tokens; a count that is missing, null, negative or not a whole number is
  unknown: derived from the others when `total_tokens` allows (prompt = total - completion,
  completion = total - prompt, a lone total counted as prompt so the total stays right), else 0;
- text the service sent with a lone UTF-16 surrogate (which no JSON writer or blob can encode) is
  repaired: each surrogate becomes U+FFFD.
A body that is not JSON at all is a ModelServerError ("gave an unreadable answer").
Error bodies give `ModelCallError.error_code` (`model_errors.service_error_code`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Protocol

import openai
from azure.ai.inference.aio import ChatCompletionsClient
from azure.ai.inference.models import (
    AssistantMessage,
    ChatCompletions,
    ChatRequestMessage,
    SystemMessage,
    UserMessage,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    DecodeError,
    HttpResponseError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.identity.aio import get_bearer_token_provider
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)

from shared.contracts import ChatMessage, ContentFilter, InferenceParameters
from shared.inference.content_filter import completion_filter, prompt_filter
from shared.inference.model_errors import (
    ModelCallError,
    ModelConfigurationError,
    ModelConnectionError,
    ModelRequestRejected,
    ModelServerError,
    ModelTimeout,
    error_for_status,
    service_error_code,
)
from shared.tenancy.registry import Deployment, DeploymentKind

COGNITIVE_SERVICES_SCOPE: Final = "https://cognitiveservices.azure.com/.default"
TENANT_HEADER: Final = "x-tenant-id"
UNENCODABLE_REQUEST: Final = "unencodable_request"
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_MAX_FINISH_REASON: Final = 64


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str | None
    remaining_tokens: int | None = None
    """`x-ratelimit-remaining-tokens` of the answer: the deployment's TPM left (None: not sent)."""
    remaining_requests: int | None = None
    """`x-ratelimit-remaining-requests`: requests left in the deployment's current RPM window."""
    content_filter: ContentFilter | None = None
    """Set when a content filter withheld the answer (`finish_reason: content_filter`) or refused
    the prompt (`shared.inference.content_filter`): the result is `filtered`, not `succeeded`."""


class ModelPort(Protocol):
    async def complete(
        self,
        deployment: Deployment,
        messages: Sequence[ChatMessage],
        parameters: InferenceParameters,
        *,
        tenant_id: str,
    ) -> Completion:
        """One chat completion; raises a `shared.model_errors.ModelCallError` on failure.

        The tenant id travels as the `x-tenant-id` header (for per-tenant metering at a gateway
        or the simulator), never in the prompt."""
        ...

    async def close(self) -> None: ...


_ModelClient = openai.AsyncAzureOpenAI | ChatCompletionsClient


class ModelClients:
    """The model port over the real SDKs, one client per (kind, endpoint), built on first use."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        credential: AsyncTokenCredential | None = None,
        api_version: str = "2024-10-21",
        timeout_s: float = 60.0,
        openai_http_client: Any = None,
        azure_transport: AsyncHttpTransport[Any, Any] | None = None,
    ) -> None:
        if api_key is None and credential is None:
            raise ValueError("model clients need MODEL_API_KEY (local) or a credential (Azure)")
        self._api_key = api_key
        self._credential = credential
        self._api_version = api_version
        self._timeout_s = timeout_s
        self._openai_http_client = openai_http_client  # tests: an httpx2 client with a mock
        self._azure_transport = azure_transport  # tests: an azure-core transport fake
        self._clients: dict[tuple[DeploymentKind, str], _ModelClient] = {}

    def client_for(self, deployment: Deployment) -> _ModelClient:
        if deployment.endpoint is None:
            raise ModelConfigurationError(
                f"deployment {deployment.name!r} has no endpoint ({deployment.endpoint_problem})",
                deployment=deployment.name,
            )
        key = (deployment.kind, deployment.endpoint)
        client = self._clients.get(key)
        if client is None:
            client = self._build(deployment.kind, deployment.endpoint)
            self._clients[key] = client
        return client

    def _build(self, kind: DeploymentKind, endpoint: str) -> _ModelClient:
        if kind is DeploymentKind.AZURE_OPENAI:
            auth: dict[str, Any] = (
                {"api_key": self._api_key}
                if self._api_key is not None
                else {
                    "azure_ad_token_provider": get_bearer_token_provider(
                        self._credential,  # type: ignore[arg-type]
                        COGNITIVE_SERVICES_SCOPE,
                    )
                }
            )
            return openai.AsyncAzureOpenAI(
                azure_endpoint=endpoint,
                api_version=self._api_version,
                max_retries=0,
                timeout=self._timeout_s,
                http_client=self._openai_http_client,
                **auth,
            )
        extra: dict[str, Any] = {}
        if self._azure_transport is not None:
            extra["transport"] = self._azure_transport
        credential: AzureKeyCredential | AsyncTokenCredential = (
            AzureKeyCredential(self._api_key) if self._api_key is not None else self._credential  # type: ignore[assignment]
        )
        return ChatCompletionsClient(
            endpoint,
            credential,
            credential_scopes=[COGNITIVE_SERVICES_SCOPE],
            retry_total=0,
            connection_timeout=min(10.0, self._timeout_s),
            read_timeout=self._timeout_s,
            **extra,
        )

    async def complete(
        self,
        deployment: Deployment,
        messages: Sequence[ChatMessage],
        parameters: InferenceParameters,
        *,
        tenant_id: str,
    ) -> Completion:
        client = self.client_for(deployment)
        headers = {TENANT_HEADER: tenant_id}
        try:
            async with asyncio.timeout(self._timeout_s):
                if isinstance(client, openai.AsyncAzureOpenAI):
                    return await _openai_complete(client, deployment, messages, parameters, headers)
                return await _inference_complete(client, deployment, messages, parameters, headers)
        except ModelCallError:
            raise
        except UnicodeEncodeError:
            # The contract refuses such text; should any reach here, it can never be sent.
            raise ModelRequestRejected(
                f"deployment {deployment.name!r}: the request holds text UTF-8 cannot encode",
                deployment=deployment.name,
                error_code=UNENCODABLE_REQUEST,
            ) from None
        except TimeoutError:
            raise ModelTimeout(
                f"deployment {deployment.name!r} did not answer in {self._timeout_s:g}s",
                deployment=deployment.name,
            ) from None
        except openai.APIError as exc:
            raise _from_openai(exc, deployment.name) from exc
        except AzureError as exc:
            raise _from_azure(exc, deployment.name) from exc

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()


async def _openai_complete(
    client: openai.AsyncAzureOpenAI,
    deployment: Deployment,
    messages: Sequence[ChatMessage],
    parameters: InferenceParameters,
    headers: dict[str, str],
) -> Completion:
    raw = await client.chat.completions.with_raw_response.create(
        model=deployment.model,
        messages=[_openai_message(m) for m in messages],
        extra_headers=headers,
        **parameters.given(),
    )
    try:
        response: object = raw.parse()
    except (ValueError, TypeError) as exc:  # not JSON, or JSON of no object shape
        raise unreadable_answer(deployment.name, exc) from None
    return with_rate_limits(read_completion(response, deployment.name), raw.headers)


def _openai_message(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return ChatCompletionSystemMessageParam(role="system", content=message.content)
    if message.role == "assistant":
        return ChatCompletionAssistantMessageParam(role="assistant", content=message.content)
    return ChatCompletionUserMessageParam(role="user", content=message.content)


async def _inference_complete(
    client: ChatCompletionsClient,
    deployment: Deployment,
    messages: Sequence[ChatMessage],
    parameters: InferenceParameters,
    headers: dict[str, str],
) -> Completion:
    seen: dict[str, str] = {}

    def keep_headers(pipeline_response: Any) -> None:
        seen.update(pipeline_response.http_response.headers)

    try:
        response = await client.complete(
            messages=[_inference_message(m) for m in messages],
            model=deployment.model,
            headers=headers,
            raw_response_hook=keep_headers,
            **parameters.given(),
        )
    except ValueError as exc:  # the SDK's response.json() on a 200 whose body is not JSON
        raise unreadable_answer(deployment.name, exc) from None
    if not isinstance(response, ChatCompletions):
        raise ModelServerError(
            f"deployment {deployment.name!r} answered with no choices", deployment=deployment.name
        )
    return with_rate_limits(read_completion(response, deployment.name), seen)


def with_rate_limits(completion: Completion, headers: Mapping[str, str]) -> Completion:
    """The completion with the deployment's `x-ratelimit-remaining-tokens` / `-requests` (Azure
    OpenAI sends both on every answer); a header that is absent or not a count stays None."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return dataclasses.replace(
        completion,
        remaining_tokens=_header_count(lowered.get("x-ratelimit-remaining-tokens")),
        remaining_requests=_header_count(lowered.get("x-ratelimit-remaining-requests")),
    )


def _header_count(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def read_completion(response: object, deployment: str) -> Completion:
    """The Completion in an answer of either SDK, by the rules in this module's docstring."""
    try:
        choices = _field(response, "choices")
        choice = choices[0] if isinstance(choices, Sequence) and choices else None
        if choice is None:
            raise ModelServerError(
                f"deployment {deployment!r} answered with no choices", deployment=deployment
            )
        prompt_tokens, completion_tokens = _token_counts(_field(response, "usage"))
        return Completion(
            content=_content(_field(_field(choice, "message"), "content"), deployment),
            finish_reason=_finish_reason(_field(choice, "finish_reason")),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=_text(_field(response, "model")),
            content_filter=completion_filter(response, choice),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a shape beyond the rules
        raise unreadable_answer(deployment, exc) from None


def unreadable_answer(deployment: str, exc: BaseException) -> ModelServerError:
    return ModelServerError(
        f"deployment {deployment!r} gave an unreadable answer ({type(exc).__name__})",
        deployment=deployment,
    )


def _field(value: object, name: str) -> object:
    """A field of an SDK model, or of the raw JSON object the SDK left in its place (openai's
    `construct` keeps a value of an unexpected shape as is; azure-ai-inference models are
    mappings over the JSON); None when absent."""
    if isinstance(value, Mapping):
        return value.get(name)
    return getattr(value, name, None)


def _content(value: object, deployment: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return repair_text(value)
    if isinstance(value, Sequence):  # content parts: [{"type": "text", "text": "..."}]
        texts = [_field(part, "text") for part in value]
        return "".join(repair_text(t) for t in texts if isinstance(t, str))
    raise ModelServerError(
        f"deployment {deployment!r} gave an unreadable answer (content is {type(value).__name__})",
        deployment=deployment,
    )


def _finish_reason(value: object) -> str | None:
    if isinstance(value, Enum):  # azure-ai-inference: CompletionsFinishReason, an enum of str
        value = value.value
    text = _text(value)
    return None if text is None else text[:_MAX_FINISH_REASON]


def _text(value: object) -> str | None:
    return repair_text(value) if isinstance(value, str) else None


def repair_text(text: str) -> str:
    """Text with each lone UTF-16 surrogate replaced by U+FFFD, so it can be encoded."""
    return _SURROGATE.sub("\ufffd", text)


def _token_counts(usage: object) -> tuple[int, int]:
    """(prompt, completion); unknown counts derived from total_tokens where it allows, else 0."""
    prompt = _count(_field(usage, "prompt_tokens"))
    completion = _count(_field(usage, "completion_tokens"))
    total = _count(_field(usage, "total_tokens"))
    if total is not None:
        if prompt is None and completion is None:
            prompt = total
        elif prompt is None and completion is not None and total >= completion:
            prompt = total - completion
        elif completion is None and prompt is not None and total >= prompt:
            completion = total - prompt
    return prompt or 0, completion or 0


def _count(value: object) -> int | None:
    """A token count the service gave: a non-negative whole number, else None (unknown)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def _inference_message(message: ChatMessage) -> ChatRequestMessage:
    if message.role == "system":
        return SystemMessage(content=message.content)
    if message.role == "assistant":
        return AssistantMessage(content=message.content)
    return UserMessage(content=message.content)


def _from_openai(exc: openai.APIError, deployment: str) -> ModelCallError:
    if isinstance(exc, openai.APITimeoutError):
        return ModelTimeout(f"deployment {deployment!r} timed out", deployment=deployment)
    if isinstance(exc, openai.APIConnectionError):
        return ModelConnectionError(
            f"deployment {deployment!r} could not be reached", deployment=deployment
        )
    if isinstance(exc, openai.APIStatusError):
        return error_for_status(
            exc.status_code,
            deployment=deployment,
            headers=dict(exc.response.headers),
            error_code=service_error_code(exc.body),  # openai keeps the body's `error` object
            content_filter=prompt_filter(exc.body),
        )
    return ModelServerError(
        f"deployment {deployment!r} gave an unreadable answer ({type(exc).__name__})",
        deployment=deployment,
    )


def _from_azure(exc: AzureError, deployment: str) -> ModelCallError:
    if isinstance(exc, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
        return ModelTimeout(f"deployment {deployment!r} timed out", deployment=deployment)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return ModelConnectionError(
            f"deployment {deployment!r} could not be reached", deployment=deployment
        )
    status = exc.status_code if isinstance(exc, HttpResponseError) else None
    if (status is None and isinstance(exc, DecodeError)) or (status is not None and status < 400):
        return unreadable_answer(deployment, exc)  # e.g. a 200 whose body is not JSON
    if isinstance(exc, HttpResponseError) and status is not None:
        response: Any = exc.response
        headers = dict(response.headers) if response is not None else {}
        body = _error_body(response)
        return error_for_status(
            status,
            deployment=deployment,
            headers=headers,
            error_code=service_error_code(body),
            content_filter=prompt_filter(body),
        )
    return ModelConfigurationError(
        f"deployment {deployment!r}: {type(exc).__name__}", deployment=deployment
    )


def _error_body(response: Any) -> object:
    """The JSON of an azure-core error response, or None when it has none."""
    if response is None:
        return None
    try:
        return json.loads(response.text())
    except Exception:  # no readable body is an answer too: no code
        return None
