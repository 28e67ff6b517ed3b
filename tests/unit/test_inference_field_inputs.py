"""Field inputs of issue 8 through the inference handler and the real SDK adapters (faked only at
their HTTP transports): each ends as a result or a rejection with its reason, never an exception.

- item 1: a request holding a lone UTF-16 surrogate (the openai client raised UnicodeEncodeError
  before any call; 5 deliveries, dead letter);
- item 2: a 200 answer with null token counts (TypeError after the model was paid for), and one
  whose text holds a lone surrogate (the result could not be written);
- item 4: a tuned tenant not tuned yet (rejected `no_usable_deployment`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from shared.inference.handler import Outcome, handle_inference_request
from shared.inference.model_clients import ModelClients
from shared.messages import InboundMessage
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import Registry, parse_registry
from tests.fakes import RecordingReplySender, ScriptedModel, memory_runtime
from tests.transport_fakes import AzureTransport

DEVHOST_REGISTRY = Path(__file__).resolve().parents[2] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}


def answer(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "The Business plan."},
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
    }
    body.update(changes)
    return json.dumps(body).encode()  # ASCII JSON: a surrogate travels as its \\u escape


class Harness:
    """The handler over in-memory storage and replies, with the real ModelClients whose openai
    and azure-core transports answer `status`/`body`; pins the tenant to one kind of deployment."""

    def __init__(self, body: bytes, *, kind: str = "azure_openai", status: int = 200) -> None:
        self.http_calls: list[httpx2.Request] = []

        def openai_answer(request: httpx2.Request) -> httpx2.Response:
            self.http_calls.append(request)
            return httpx2.Response(
                status, content=body, headers={"content-type": "application/json"}
            )

        self.azure = AzureTransport(status, body)
        self.models = ModelClients(
            api_key="k",
            openai_http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(openai_answer)),
            azure_transport=self.azure,
        )
        self.store, self.replies = MemoryBlobStore(), RecordingReplySender()
        deployment = "phi-4-pool" if kind == "ai_inference" else "gpt-4o-mini-pool-a"
        self.runtime = memory_runtime(
            pinned_registry(deployment), model=self.models, replies=self.replies, store=self.store
        )  # type: ignore[arg-type]

    @property
    def model_calls(self) -> int:
        return len(self.http_calls) + len(self.azure.requests)

    async def deliver(self, body: bytes, message_id: str = "m-1") -> Outcome:
        message = InboundMessage(
            body=body, message_id=message_id, reply_to="inference-results", delivery_count=1
        )
        return await handle_inference_request(message, self.runtime)

    def blobs(self, container: str) -> list[dict[str, Any]]:
        return [json.loads(self.store.text(container, n)) for n in self.store.names(container)]

    def usage_lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for name in self.store.names("usage"):
            lines += [json.loads(x) for x in self.store.text("usage", name).splitlines() if x]
        return lines


def pinned_registry(deployment: str) -> Registry:
    doc = json.loads(DEVHOST_REGISTRY.read_text())
    next(t for t in doc["tenants"] if t["id"] == "tailwind")["deployments"] = [deployment]
    return parse_registry(json.dumps(doc), env=ENV)


def request(content: str = "Which plan has priority support?", **extra: Any) -> bytes:
    doc = {
        "tenant_id": "tailwind",
        "request_id": "req-1",
        "messages": [{"role": "user", "content": content}],
        **extra,
    }
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "body",
    [
        # The exact bytes of p11: a sender's ASCII JSON of a truncated emoji.
        b'{"tenant_id": "tailwind", "request_id": "req-1", "messages": [{"role": "user", '
        b'"content": "Lunch at the caf\\u00e9 \\ud83d was great"}]}',
        request(parameters={"stop": ["\udc97"]}),
        request(feature="faq\ud800"),
    ],
)
async def test_a_request_with_text_no_client_can_encode_is_rejected_and_answered(
    body: bytes,
) -> None:
    harness = Harness(answer())
    assert await harness.deliver(body) == Outcome.REJECTED
    assert harness.model_calls == 0
    [record] = harness.blobs("rejected")
    assert (record["reason"], record["tenant_id"], record["request_id"]) == (
        "invalid_request",
        "tailwind",
        "req-1",
    )
    assert "lone UTF-16 surrogate" in record["detail"]
    assert [r.subject for r in harness.replies.sent] == ["inference.rejected"]
    await harness.models.close()


@pytest.mark.parametrize("kind", ["azure_openai", "ai_inference"])
@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        ({"prompt_tokens": 9, "completion_tokens": None, "total_tokens": 9}, (9, 0, 9)),
        ({"prompt_tokens": 9, "completion_tokens": None, "total_tokens": 13}, (9, 4, 13)),
        (None, (0, 0, 0)),
    ],
)
async def test_an_answer_with_null_token_counts_is_completed_metered_once_and_replied(
    kind: str, usage: dict[str, Any] | None, tokens: tuple[int, int, int]
) -> None:
    harness = Harness(answer(usage=usage), kind=kind)
    assert await harness.deliver(request()) == Outcome.COMPLETED
    [line] = harness.usage_lines()
    assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == tokens
    [result] = harness.blobs("results")
    assert result["message"]["content"] == "The Business plan."
    assert [r.subject for r in harness.replies.sent] == ["inference.result"]
    assert harness.model_calls == 1
    await harness.models.close()


@pytest.mark.parametrize("kind", ["azure_openai", "ai_inference"])
async def test_an_answer_with_null_message_finish_reason_and_model_is_a_result(kind: str) -> None:
    choice = {"index": 0, "finish_reason": None, "message": None}
    harness = Harness(answer(choices=[choice], model=None), kind=kind)
    assert await harness.deliver(request()) == Outcome.COMPLETED
    [result] = harness.blobs("results")
    assert (result["message"]["content"], result["finish_reason"], result["model"]) == (
        "",
        None,
        None,
    )
    await harness.models.close()


@pytest.mark.parametrize("kind", ["azure_openai", "ai_inference"])
async def test_an_answer_holding_a_lone_surrogate_is_stored_with_u_fffd(kind: str) -> None:
    choice = {"index": 0, "finish_reason": "length", "message": {"content": "caf\u00e9 \ud83d"}}
    harness = Harness(answer(choices=[choice]), kind=kind)
    assert await harness.deliver(request()) == Outcome.COMPLETED
    [result] = harness.blobs("results")
    assert result["message"]["content"] == "caf\u00e9 \ufffd"
    await harness.models.close()


async def test_a_tuned_tenant_not_tuned_yet_is_served_by_the_pool() -> None:
    doc = {
        "version": 1,
        "deployments": [
            {
                "name": "pool-a",
                "kind": "azure_openai",
                "mode": "pooled",
                "endpoint": "https://aoai.example",
                "capacity": {"tokens_per_minute": 100_000},
            }
        ],
        "tenants": [{"id": "northwind", "mode": "tuned"}],
    }
    model, store = ScriptedModel(), MemoryBlobStore()
    runtime = memory_runtime(parse_registry(json.dumps(doc), env={}), model=model, store=store)
    body = json.dumps(
        {
            "tenant_id": "northwind",
            "request_id": "r-1",
            "messages": [{"role": "user", "content": "Draft a reply."}],
        }
    ).encode()
    outcome = await handle_inference_request(
        InboundMessage(body=body, message_id="m-1", delivery_count=1), runtime
    )
    assert outcome == Outcome.COMPLETED
    assert [c.deployment for c in model.calls] == ["pool-a"]
    assert store.names("rejected") == []
