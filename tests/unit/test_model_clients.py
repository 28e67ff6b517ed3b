"""The model adapters: one client per endpoint, SDK retries off, errors mapped to our types.

The openai path is faked at its HTTP transport (httpx2.MockTransport) with real response bodies;
the azure-ai-inference path runs against the model simulator in tests/integration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from azure.ai.inference.aio import ChatCompletionsClient
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseTimeoutError,
)

from shared.contracts import ChatMessage, InferenceParameters
from shared.inference.model_clients import (
    COGNITIVE_SERVICES_SCOPE,
    TENANT_HEADER,
    ModelClients,
    _from_azure,
)
from shared.inference.model_errors import (
    ModelConfigurationError,
    ModelConnectionError,
    ModelRateLimited,
    ModelRequestRejected,
    ModelServerError,
    ModelTimeout,
)
from shared.tenancy.registry import Capacity, Deployment, DeploymentKind, IsolationMode

MESSAGES = [ChatMessage(role="system", content="s"), ChatMessage(role="user", content="u")]


def deployment(
    name: str = "gpt-4o-mini-pool-a",
    endpoint: str | None = "https://aoai.example",
    kind: DeploymentKind = DeploymentKind.AZURE_OPENAI,
) -> Deployment:
    return Deployment(
        name=name,
        kind=kind,
        mode=IsolationMode.POOLED,
        endpoint=endpoint,
        capacity=Capacity(tokens_per_minute=1000),
    )


def completion_body(model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


class Recorder:
    def __init__(self, answer: Callable[[httpx2.Request], httpx2.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return self.answer(request)


def clients_with(recorder: Recorder, **kwargs: Any) -> ModelClients:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(recorder))
    return ModelClients(api_key="sim-key", openai_http_client=http, **kwargs)


async def test_openai_call_goes_to_the_deployment_with_key_tenant_and_parameters() -> None:
    recorder = Recorder(lambda _: httpx2.Response(200, json=completion_body()))
    clients = clients_with(recorder)
    result = await clients.complete(
        deployment(),
        MESSAGES,
        InferenceParameters(max_tokens=9, temperature=0.5),
        tenant_id="tailwind",
    )
    assert (result.content, result.finish_reason, result.model) == ("hello", "stop", "gpt-4o-mini")
    assert (result.prompt_tokens, result.completion_tokens) == (5, 2)
    [request] = recorder.requests
    assert request.url.path == "/openai/deployments/gpt-4o-mini-pool-a/chat/completions"
    assert request.url.params["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == "sim-key"
    assert request.headers[TENANT_HEADER] == "tailwind"
    sent = json.loads(request.content)
    assert sent["messages"] == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
    ]
    assert (sent["max_tokens"], sent["temperature"]) == (9, 0.5)
    assert "top_p" not in sent  # only what the tenant set
    await clients.close()


async def test_deployments_of_one_endpoint_share_a_client() -> None:
    clients = ModelClients(api_key="k")
    a = clients.client_for(deployment("a"))
    assert clients.client_for(deployment("b")) is a
    assert clients.client_for(deployment("c", endpoint="https://other.example")) is not a
    inference = clients.client_for(deployment("p", kind=DeploymentKind.AI_INFERENCE))
    assert inference is not a
    await clients.close()


async def test_a_deployment_without_endpoint_is_a_configuration_error() -> None:
    clients = ModelClients(api_key="k")
    with pytest.raises(ModelConfigurationError, match="has no endpoint"):
        clients.client_for(deployment(endpoint=None))


def test_without_key_or_credential_nothing_can_be_built() -> None:
    with pytest.raises(ValueError, match="MODEL_API_KEY"):
        ModelClients()


@pytest.mark.parametrize(
    ("status", "headers", "expected", "retry_after"),
    [
        (429, {"retry-after-ms": "1500", "retry-after": "9"}, ModelRateLimited, 1.5),
        (429, {"retry-after": "4"}, ModelRateLimited, 4.0),
        (500, {}, ModelServerError, None),
        (503, {"retry-after": "1"}, ModelServerError, 1.0),
        (408, {}, ModelServerError, None),
        (400, {}, ModelRequestRejected, None),
        (401, {}, ModelConfigurationError, None),
        (404, {}, ModelConfigurationError, None),
    ],
)
async def test_openai_status_errors_are_mapped_and_not_retried_by_the_sdk(
    status: int, headers: dict[str, str], expected: type[Exception], retry_after: float | None
) -> None:
    body = {"error": {"code": str(status), "message": "nope"}}
    recorder = Recorder(lambda _: httpx2.Response(status, json=body, headers=headers))
    clients = clients_with(recorder)
    with pytest.raises(expected) as caught:
        await clients.complete(deployment(), MESSAGES, InferenceParameters(), tenant_id="t")
    assert len(recorder.requests) == 1  # max_retries=0: retrying is the resilience layer's job
    error = caught.value
    assert getattr(error, "status_code", None) == status
    assert getattr(error, "retry_after_s", None) == retry_after
    assert getattr(error, "deployment", None) == "gpt-4o-mini-pool-a"
    await clients.close()


async def test_openai_connection_failures_are_transient() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    clients = clients_with(Recorder(refuse))
    with pytest.raises(ModelConnectionError):
        await clients.complete(deployment(), MESSAGES, InferenceParameters(), tenant_id="t")
    await clients.close()


async def test_openai_timeouts_are_transient() -> None:
    def slow(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("slow", request=request)

    clients = clients_with(Recorder(slow))
    with pytest.raises(ModelTimeout):
        await clients.complete(deployment(), MESSAGES, InferenceParameters(), tenant_id="t")
    await clients.close()


async def test_an_answer_without_choices_is_a_server_error() -> None:
    body = {**completion_body(), "choices": []}
    clients = clients_with(Recorder(lambda _: httpx2.Response(200, json=body)))
    with pytest.raises(ModelServerError, match="no choices"):
        await clients.complete(deployment(), MESSAGES, InferenceParameters(), tenant_id="t")
    await clients.close()


class _StubResponse:
    request = None

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.reason = "stub"
        self.headers = headers

    def text(self, encoding: str | None = None) -> str:
        return "{}"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ServiceRequestError("no route"), ModelConnectionError),
        (ServiceResponseTimeoutError("slow"), ModelTimeout),
        (HttpResponseError(response=_StubResponse(429, {"retry-after": "2"})), ModelRateLimited),
        (HttpResponseError(response=_StubResponse(502, {})), ModelServerError),
        (HttpResponseError(response=_StubResponse(422, {})), ModelRequestRejected),
        (ClientAuthenticationError("no identity"), ModelConfigurationError),
    ],
)
def test_azure_core_errors_are_mapped(error: Exception, expected: type[Exception]) -> None:
    assert isinstance(_from_azure(error, "phi-4-pool"), expected)  # type: ignore[arg-type]


class FakeCredential:
    """An AsyncTokenCredential that records the scopes it was asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("entra-token", int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_in_azure_openai_calls_carry_an_entra_token_for_cognitive_services() -> None:
    credential = FakeCredential()
    recorder = Recorder(lambda _: httpx2.Response(200, json=completion_body()))
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(recorder))
    clients = ModelClients(credential=credential, openai_http_client=http)
    await clients.complete(deployment(), MESSAGES, InferenceParameters(), tenant_id="t")
    [request] = recorder.requests
    assert request.headers["authorization"] == "Bearer entra-token"
    assert "api-key" not in request.headers
    assert credential.scopes == [(COGNITIVE_SERVICES_SCOPE,)]
    await clients.close()


async def test_in_azure_ai_inference_uses_the_credential_and_cognitive_services_scope() -> None:
    credential = FakeCredential()
    clients = ModelClients(credential=credential)
    client = clients.client_for(deployment("phi", kind=DeploymentKind.AI_INFERENCE))
    assert isinstance(client, ChatCompletionsClient)
    assert client._config.credential is credential
    assert client._config.credential_scopes == [COGNITIVE_SERVICES_SCOPE]
    await clients.close()
