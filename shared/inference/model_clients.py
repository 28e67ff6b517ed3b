"""The model port and its adapters: `openai.AsyncAzureOpenAI` and `azure.ai.inference.aio`.

`ModelClients` builds one SDK client per (kind, endpoint) the first time a deployment there is
called, and reuses it: deployments of one Azure OpenAI resource share one connection pool, as the
deployment name travels in each call. In Azure the clients authenticate with the managed identity
(a bearer-token provider for openai, the credential itself for azure-ai-inference); locally with
`MODEL_API_KEY`. The SDKs' own retries are off: retrying belongs to the resilience layer, which
sees the SDK-neutral errors of `shared.inference.model_errors`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
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

from shared.contracts import ChatMessage, InferenceParameters
from shared.inference.model_errors import (
    ModelCallError,
    ModelConfigurationError,
    ModelConnectionError,
    ModelServerError,
    ModelTimeout,
    error_for_status,
)
from shared.tenancy.registry import Deployment, DeploymentKind

COGNITIVE_SERVICES_SCOPE: Final = "https://cognitiveservices.azure.com/.default"
TENANT_HEADER: Final = "x-tenant-id"


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str | None


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
    response = await client.chat.completions.create(
        model=deployment.model,
        messages=[_openai_message(m) for m in messages],
        extra_headers=headers,
        **parameters.given(),
    )
    if not response.choices:
        raise ModelServerError(
            f"deployment {deployment.name!r} answered with no choices", deployment=deployment.name
        )
    choice = response.choices[0]
    usage = response.usage
    return Completion(
        content=choice.message.content or "",
        finish_reason=choice.finish_reason,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        model=response.model,
    )


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
    response = await client.complete(
        messages=[_inference_message(m) for m in messages],
        model=deployment.model,
        headers=headers,
        **parameters.given(),
    )
    if not isinstance(response, ChatCompletions) or not response.choices:
        raise ModelServerError(
            f"deployment {deployment.name!r} answered with no choices", deployment=deployment.name
        )
    choice = response.choices[0]
    usage = response.usage
    finish = choice.finish_reason
    return Completion(
        content=choice.message.content or "",
        finish_reason=getattr(finish, "value", finish),  # an enum of str in this SDK
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        model=response.model,
    )


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
            exc.status_code, deployment=deployment, headers=dict(exc.response.headers)
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
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        response: Any = exc.response
        headers = dict(response.headers) if response is not None else {}
        return error_for_status(exc.status_code, deployment=deployment, headers=headers)
    return ModelConfigurationError(
        f"deployment {deployment!r}: {type(exc).__name__}", deployment=deployment
    )
