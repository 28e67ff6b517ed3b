"""The model adapters: one client per endpoint, SDK retries off, errors mapped to our types.

The openai path is faked at its HTTP transport (httpx2.MockTransport) with real response bodies,
the azure-ai-inference path at its azure-core transport (`AzureTransport` below); both also run
against the model simulator in tests/integration.
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
    Completion,
    ModelClients,
    _from_azure,
)
from shared.inference.model_errors import (
    ModelCallError,
    ModelConfigurationError,
    ModelConnectionError,
    ModelRateLimited,
    ModelRequestRejected,
    ModelServerError,
    ModelTimeout,
)
from shared.tenancy.registry import Capacity, Deployment, DeploymentKind, IsolationMode
from tests.transport_fakes import AzureTransport

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


# --- Answers with missing or null fields, on both adapters (issue 8, item 2) -------------------
# Faked at each SDK's HTTP transport: the bytes a service (or a gateway in front of it) sends.


KINDS = [DeploymentKind.AZURE_OPENAI, DeploymentKind.AI_INFERENCE]


async def call_kind(
    kind: DeploymentKind, status: int, body: bytes, headers: dict[str, str] | None = None
) -> Completion:
    """One call through the real SDK of `kind`, whose transport answers status/body/headers."""
    if kind is DeploymentKind.AZURE_OPENAI:
        answer = httpx2.Response(
            status, content=body, headers={"content-type": "application/json", **(headers or {})}
        )
        clients = clients_with(Recorder(lambda _: answer))
        target = deployment()
    else:
        clients = ModelClients(api_key="k", azure_transport=AzureTransport(status, body, headers))
        target = deployment("phi-4-pool", "https://ais.example/models", kind)
    try:
        return await clients.complete(target, MESSAGES, InferenceParameters(), tenant_id="t")
    finally:
        await clients.close()


def answer_bytes(*, usage: Any = ..., choice: Any = ..., message: Any = ..., **top: Any) -> bytes:
    """A completion body with fields replaced (None: null) or removed (`REMOVE`); ASCII JSON,
    so a lone surrogate travels as its `\\udXXX` escape, as a real service would send it."""
    body = completion_body()
    first = body["choices"][0]
    for target, key, value in (
        (body, "usage", usage),
        (first, "message", message),
    ):
        if value is REMOVE:
            target.pop(key)
        elif value is not ...:
            target[key] = value
    if choice is not ...:
        first.update(choice)
        for key in [k for k, v in first.items() if v is REMOVE]:
            first.pop(key)
    for key, value in top.items():
        if value is REMOVE:
            body.pop(key)
        else:
            body[key] = value
    return json.dumps(body).encode()


REMOVE = object()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        (answer_bytes(usage=REMOVE), (0, 0)),
        (answer_bytes(usage=None), (0, 0)),
        (answer_bytes(usage={}), (0, 0)),
        (
            answer_bytes(usage={"prompt_tokens": 9, "completion_tokens": None, "total_tokens": 9}),
            (9, 0),
        ),
        (
            answer_bytes(usage={"prompt_tokens": 9, "completion_tokens": None, "total_tokens": 12}),
            (9, 3),
        ),
        (answer_bytes(usage={"prompt_tokens": 9, "total_tokens": 12}), (9, 3)),
        (
            answer_bytes(usage={"prompt_tokens": None, "completion_tokens": 2, "total_tokens": 7}),
            (5, 2),
        ),
        (
            answer_bytes(usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": None}),
            (5, 2),
        ),
        (
            answer_bytes(
                usage={"prompt_tokens": None, "completion_tokens": None, "total_tokens": 7}
            ),
            (7, 0),
        ),
        (
            answer_bytes(
                usage={"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}
            ),
            (0, 0),
        ),
        (
            answer_bytes(usage={"prompt_tokens": 9, "completion_tokens": None, "total_tokens": 4}),
            (9, 0),
        ),
        (
            answer_bytes(
                usage={"prompt_tokens": -1, "completion_tokens": None, "total_tokens": 7.0}
            ),
            (7, 0),
        ),
        (
            answer_bytes(
                usage={"prompt_tokens": True, "completion_tokens": 2.5, "total_tokens": 3}
            ),
            (3, 0),
        ),
    ],
)
async def test_missing_or_null_token_counts_are_read_as_0_or_derived_from_the_total(
    kind: DeploymentKind, body: bytes, tokens: tuple[int, int]
) -> None:
    result = await call_kind(kind, 200, body)
    assert (result.prompt_tokens, result.completion_tokens) == tokens
    assert result.content == "hello"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("body", "content", "finish_reason", "model"),
    [
        (answer_bytes(message=None), "", "stop", "gpt-4o-mini"),
        (answer_bytes(message=REMOVE), "", "stop", "gpt-4o-mini"),
        (answer_bytes(message={"role": "assistant", "content": None}), "", "stop", "gpt-4o-mini"),
        (answer_bytes(message={"role": "assistant"}), "", "stop", "gpt-4o-mini"),
        (
            answer_bytes(
                message={"role": "assistant", "content": None},
                choice={"finish_reason": "content_filter"},
            ),
            "",
            "content_filter",
            "gpt-4o-mini",
        ),
        (
            answer_bytes(
                message={
                    "role": "assistant",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ),
            "ab",
            "stop",
            "gpt-4o-mini",
        ),
        (answer_bytes(choice={"finish_reason": None}), "hello", None, "gpt-4o-mini"),
        (answer_bytes(choice={"finish_reason": REMOVE}), "hello", None, "gpt-4o-mini"),
        (
            answer_bytes(choice={"finish_reason": "guardrail_intervened"}),
            "hello",
            "guardrail_intervened",
            "gpt-4o-mini",
        ),
        (answer_bytes(choice={"finish_reason": 3}), "hello", None, "gpt-4o-mini"),
        (answer_bytes(model=None), "hello", "stop", None),
        (answer_bytes(model=REMOVE), "hello", "stop", None),
        (
            answer_bytes(message={"role": "assistant", "content": "caf\u00e9 \ud83d!"}),
            "caf\u00e9 \ufffd!",
            "stop",
            "gpt-4o-mini",
        ),
    ],
)
async def test_missing_or_null_answer_fields_are_tolerated(
    kind: DeploymentKind,
    body: bytes,
    content: str,
    finish_reason: str | None,
    model: str | None,
) -> None:
    result = await call_kind(kind, 200, body)
    assert (result.content, result.finish_reason, result.model) == (content, finish_reason, model)
    result.content.encode("utf-8")  # storable: a repaired surrogate is U+FFFD


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("body", "match"),
    [
        (answer_bytes(choices=[]), "answered with no choices"),
        (answer_bytes(choices=None), "answered with no choices"),
        (answer_bytes(choices=REMOVE), "answered with no choices"),
        (answer_bytes(choices=[None]), "answered with no choices"),
        (b"null", "answered with no choices"),
        (b"<html>bad gateway</html>", "gave an unreadable answer"),
        (answer_bytes(message={"role": "assistant", "content": 42}), "gave an unreadable answer"),
    ],
)
async def test_an_answer_without_a_choice_is_a_transient_server_error(
    kind: DeploymentKind, body: bytes, match: str
) -> None:
    with pytest.raises(ModelServerError, match=match):
        await call_kind(kind, 200, body)


# --- Retry hints through the real SDKs (issue 8, item 6) ---------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "headers",
    [
        {"x-ms-retry-after-ms": "5000"},
        {"retry-after-ms": "5000"},
        {"retry-after": "5"},
        {"Retry-After-Ms": "5000", "Retry-After": "9"},
        {"x-ms-retry-after-ms": "5000", "retry-after": "9"},
        {"retry-after-ms": "bad", "x-ms-retry-after-ms": "5000", "retry-after": "9"},
    ],
)
async def test_every_retry_hint_azure_core_reads_gives_retry_after_on_both_adapters(
    kind: DeploymentKind, headers: dict[str, str]
) -> None:
    body = json.dumps({"error": {"code": "429", "message": "Rate limit exceeded."}}).encode()
    with pytest.raises(ModelRateLimited) as caught:
        await call_kind(kind, 429, body, headers)
    assert caught.value.retry_after_s == 5.0
    assert caught.value.status_code == 429


# --- The service's error code on refusals (issue 8, item 7) ------------------------------------

PROMPT_ECHO = "Your prompt 'tell me the secret plan' was filtered"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (
            400,
            {
                "code": "content_filter",
                "message": PROMPT_ECHO,
                "param": "prompt",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {"hate": {"filtered": True, "severity": "high"}},
                },
            },
            "content_filter",
        ),
        (
            400,
            {
                "message": "This model's maximum context length is 128000 tokens.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            },
            "context_length_exceeded",
        ),
        (
            400,
            {
                "code": "BadRequest",
                "message": PROMPT_ECHO,
                "innererror": {"code": "ResponsibleAIPolicyViolation"},
            },
            "ResponsibleAIPolicyViolation",
        ),
        (400, {"code": "400", "message": PROMPT_ECHO}, None),
        (400, {"code": PROMPT_ECHO, "message": "x"}, None),  # text, not a code
        (422, {"message": PROMPT_ECHO}, None),
        (429, {"code": "429", "message": "Rate limit"}, None),
        (
            404,
            {"code": "DeploymentNotFound", "message": "no such deployment"},
            "DeploymentNotFound",
        ),
    ],
)
async def test_refusals_carry_the_services_error_code_never_its_message(
    kind: DeploymentKind, status: int, error: dict[str, Any], code: str | None
) -> None:
    body = json.dumps({"error": error}).encode()
    with pytest.raises(ModelCallError) as caught:
        await call_kind(kind, status, body)
    assert caught.value.error_code == code
    assert "secret" not in str(caught.value)
    assert "secret" not in repr(vars(caught.value))


@pytest.mark.parametrize("kind", KINDS)
async def test_an_error_body_that_is_not_json_has_no_code(kind: DeploymentKind) -> None:
    with pytest.raises(ModelRequestRejected) as caught:
        await call_kind(kind, 400, b"<html>Bad Request</html>")
    assert caught.value.error_code is None
