"""Shared by the feedback and drift unit tests: the devhost registry, in-memory ports, and a
helper that answers a request through the real inference handler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.inference.handler import Outcome, handle_inference_request
from shared.messages import InboundMessage
from shared.runtime import Runtime
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import Registry, parse_registry, read_registry_file
from tests.fakes import RecordingReplySender, ScriptedModel, TickingClock, memory_runtime

DEVHOST_REGISTRY = Path(__file__).resolve().parents[3] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}


def devhost_registry(**policies: dict[str, Any]) -> Registry:
    """The devhost registry, with some tenants' policies replaced."""
    document = json.loads(DEVHOST_REGISTRY.read_text())
    for tenant in document["tenants"]:
        if tenant["id"] in policies:
            tenant["policy"] = policies[tenant["id"]]
    return parse_registry(json.dumps(document), env=ENV)


@pytest.fixture
def registry() -> Registry:
    return read_registry_file(DEVHOST_REGISTRY, env=ENV)


@pytest.fixture
def store() -> MemoryBlobStore:
    return MemoryBlobStore()


@pytest.fixture
def replies() -> RecordingReplySender:
    return RecordingReplySender()


@pytest.fixture
def runtime(registry: Registry, store: MemoryBlobStore, replies: RecordingReplySender) -> Runtime:
    return build_runtime(registry, store, replies)


def build_runtime(
    registry: Registry,
    store: MemoryBlobStore,
    replies: RecordingReplySender,
    *,
    check_every: int = 50,
) -> Runtime:
    rt = memory_runtime(registry, model=ScriptedModel(), store=store, replies=replies)
    rt.clock = TickingClock()
    rt.drift_check_every = check_every
    return rt


async def answer(
    runtime: Runtime, tenant_id: str, request_id: str, text: str = "How do I reset it?"
) -> None:
    body = json.dumps(
        {
            "tenant_id": tenant_id,
            "request_id": request_id,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": text},
            ],
            "feature": "faq",
        }
    ).encode()
    outcome = await handle_inference_request(
        InboundMessage(body=body, message_id=f"m-{tenant_id}-{request_id}", delivery_count=1),
        runtime,
    )
    assert outcome is Outcome.COMPLETED


def feedback_body(tenant_id: str, request_id: str, rating: object = "up", **more: Any) -> bytes:
    return json.dumps(
        {"tenant_id": tenant_id, "request_id": request_id, "rating": rating, **more}
    ).encode()


def feedback_message(body: bytes, message_id: str = "f-1") -> InboundMessage:
    return InboundMessage(body=body, message_id=message_id, delivery_count=1)
