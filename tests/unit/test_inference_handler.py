"""The inference handler over in-memory ports: outcomes, idempotency, replies, rejections, logs."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.contracts import RejectionReason
from shared.inference.handler import Outcome, handle_inference_request
from shared.inference.model_errors import (
    ModelConfigurationError,
    ModelRateLimited,
    ModelRequestRejected,
    ModelServerError,
)
from shared.inference.results import REPLY_SENT_AT
from shared.messages import InboundMessage
from shared.runtime import Runtime
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from shared.structured_logging import JsonLogFormatter
from shared.tenancy.registry import Registry, RegistryError, read_registry_file
from shared.tenancy.registry_source import RegistrySource
from shared.tenancy.routing import IsolationViolation
from tests.fakes import RecordingReplySender, ScriptedModel, fixed_clock, memory_runtime

DEVHOST_REGISTRY = Path(__file__).resolve().parents[2] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}
SECRET = "my password is hunter2"
POOL = {"gpt-4o-mini-pool-a", "gpt-4o-mini-pool-b"}  # tailwind's priority-0 deployments


@pytest.fixture
def registry() -> Registry:
    return read_registry_file(DEVHOST_REGISTRY, env=ENV)


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def replies() -> RecordingReplySender:
    return RecordingReplySender()


@pytest.fixture
def store() -> MemoryBlobStore:
    return MemoryBlobStore()


@pytest.fixture
def runtime(
    registry: Registry, model: ScriptedModel, replies: RecordingReplySender, store: MemoryBlobStore
) -> Runtime:
    return memory_runtime(registry, model=model, replies=replies, store=store)


def request_body(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "tenant_id": "tailwind",
        "request_id": "req-1",
        "messages": [{"role": "user", "content": SECRET}],
        "parameters": {"max_tokens": 20},
        "feature": "faq",
    }
    doc.update(changes)
    return json.dumps(doc).encode()


def message(body: bytes | None = None, **fields: Any) -> InboundMessage:
    return InboundMessage(
        body=request_body() if body is None else body,
        message_id=fields.pop("message_id", "msg-1"),
        delivery_count=fields.pop("delivery_count", 1),
        **fields,
    )


def stored_json(store: MemoryBlobStore, container: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(store.text(container, name))
    return data


async def test_a_request_becomes_a_result_and_a_usage_line(
    runtime: Runtime, model: ScriptedModel, store: MemoryBlobStore
) -> None:
    assert await handle_inference_request(message(), runtime) is Outcome.COMPLETED

    [call] = model.calls
    assert call.deployment in POOL
    assert call.tenant_id == "tailwind"
    assert model.calls[0].parameters == {"max_tokens": 20}
    result = stored_json(store, names.RESULTS_CONTAINER, "tailwind/req-1.json")
    assert result["type"] == "inference.result"
    assert result["message"] == {"role": "assistant", "content": "ok"}
    assert result["deployment"] == call.deployment
    assert result["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    assert result["feature"] == "faq"
    lines = store.text(names.USAGE_CONTAINER, "tailwind/2025-01-02.jsonl").splitlines()
    assert len(lines) == 1
    usage = json.loads(lines[0])
    assert usage["request_id"] == "req-1"
    assert usage["deployment"] == call.deployment
    assert usage["kind"] == "azure_openai"
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["calls"]) == (11, 7, 1)
    assert usage["feature"] == "faq"
    assert store.names(names.REJECTED_CONTAINER) == []


async def test_each_mode_reaches_its_deployment(runtime: Runtime, model: ScriptedModel) -> None:
    for tenant in ("contoso", "fabrikam"):
        body = request_body(tenant_id=tenant, request_id=f"r-{tenant}")
        assert await handle_inference_request(message(body), runtime) is Outcome.COMPLETED
    assert [c.deployment for c in model.calls] == ["contoso-gpt-4o", "fabrikam-ft-v1"]


async def test_a_redelivered_request_does_not_call_the_model_again(
    runtime: Runtime, model: ScriptedModel, store: MemoryBlobStore
) -> None:
    assert await handle_inference_request(message(), runtime) is Outcome.COMPLETED
    first = store.text(names.RESULTS_CONTAINER, "tailwind/req-1.json")
    again = message(message_id="msg-1", delivery_count=2)
    assert await handle_inference_request(again, runtime) is Outcome.DUPLICATE
    assert len(model.calls) == 1
    assert store.text(names.RESULTS_CONTAINER, "tailwind/req-1.json") == first
    assert len(store.text(names.USAGE_CONTAINER, "tailwind/2025-01-02.jsonl").splitlines()) == 1


async def test_request_ids_are_per_tenant(runtime: Runtime, model: ScriptedModel) -> None:
    await handle_inference_request(message(request_body(tenant_id="tailwind")), runtime)
    other = message(request_body(tenant_id="contoso"), message_id="msg-2")
    assert await handle_inference_request(other, runtime) is Outcome.COMPLETED
    assert len(model.calls) == 2


async def test_the_reply_goes_to_reply_to_with_the_request_id_as_correlation_id(
    runtime: Runtime, replies: RecordingReplySender, store: MemoryBlobStore
) -> None:
    msg = message(reply_to=names.INFERENCE_RESULTS, reply_to_session_id="tailwind-app-1")
    assert await handle_inference_request(msg, runtime) is Outcome.COMPLETED

    [reply] = replies.sent
    assert reply.queue == names.INFERENCE_RESULTS
    assert reply.correlation_id == "req-1"
    assert reply.session_id == "tailwind-app-1"
    assert reply.subject == "inference.result"
    assert reply.application_properties == {
        "type": "inference.result",
        "version": 1,
        "tenant_id": "tailwind",
        "request_id": "req-1",
    }
    assert reply.body.decode() == store.text(names.RESULTS_CONTAINER, "tailwind/req-1.json")
    meta = store.metadata[(names.RESULTS_CONTAINER, "tailwind/req-1.json")]
    assert REPLY_SENT_AT in meta

    assert await handle_inference_request(msg, runtime) is Outcome.DUPLICATE
    assert len(replies.sent) == 1  # sent once only


async def test_without_reply_to_nothing_is_sent(
    runtime: Runtime, replies: RecordingReplySender
) -> None:
    await handle_inference_request(message(), runtime)
    assert replies.sent == []


async def test_a_reply_that_failed_is_resent_on_redelivery_without_a_model_call(
    runtime: Runtime, model: ScriptedModel, replies: RecordingReplySender
) -> None:
    replies.failures.append(ConnectionError("bus down"))
    msg = message(reply_to=names.INFERENCE_RESULTS)
    with pytest.raises(ConnectionError):
        await handle_inference_request(msg, runtime)  # abandoned: redelivered later
    assert await handle_inference_request(msg, runtime) is Outcome.DUPLICATE
    assert len(model.calls) == 1
    assert [r.correlation_id for r in replies.sent] == ["req-1"]


async def test_a_concurrent_writer_wins_and_its_result_is_the_one_replied(
    registry: Registry, replies: RecordingReplySender
) -> None:
    class RacingStore(MemoryBlobStore):
        async def create(self, container: str, name: str, data: bytes, **kw: Any) -> bool:
            if container == names.RESULTS_CONTAINER and (container, name) not in self.blobs:
                await super().create(container, name, b'{"winner": true}')  # the other instance
            return await super().create(container, name, data, **kw)

    store = RacingStore()
    runtime = memory_runtime(registry, replies=replies, store=store)
    msg = message(reply_to=names.INFERENCE_RESULTS)
    assert await handle_inference_request(msg, runtime) is Outcome.COMPLETED
    assert store.text(names.RESULTS_CONTAINER, "tailwind/req-1.json") == '{"winner": true}'
    assert [r.body for r in replies.sent] == [b'{"winner": true}']


async def test_a_configuration_error_is_raised_for_redelivery(
    runtime: Runtime,
    model: ScriptedModel,
    store: MemoryBlobStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model.failures.append(ModelConfigurationError("401", deployment="d", status_code=401))
    with pytest.raises(ModelConfigurationError):
        await handle_inference_request(message(), runtime)
    assert len(model.calls) == 1  # not retried: no other request could succeed either
    assert store.names(names.RESULTS_CONTAINER) == []
    assert store.names(names.USAGE_CONTAINER) == []
    assert store.names(names.REJECTED_CONTAINER) == []
    [record] = [r for r in caplog.records if r.__dict__.get("event") == "inference.model_failed"]
    assert record.__dict__["tenant_id"] == "tailwind"
    assert record.__dict__["status_code"] == 401

    # The redelivery succeeds.
    assert await handle_inference_request(message(delivery_count=2), runtime) is Outcome.COMPLETED


@pytest.mark.parametrize(
    "error",
    [
        ModelRateLimited("429", deployment="d", status_code=429, retry_after_s=3),
        ModelServerError("503", deployment="d", status_code=503),
    ],
)
async def test_a_transient_failure_fails_over_to_another_candidate_at_once(
    runtime: Runtime,
    model: ScriptedModel,
    store: MemoryBlobStore,
    error: Exception,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model.failures.append(error)
    with caplog.at_level(logging.INFO):
        assert await handle_inference_request(message(), runtime) is Outcome.COMPLETED
    first, second = (call.deployment for call in model.calls)
    assert first != second
    assert {first, second} <= POOL
    result = stored_json(store, names.RESULTS_CONTAINER, "tailwind/req-1.json")
    assert result["deployment"] == second
    [done] = [r for r in caplog.records if r.__dict__.get("event") == "inference.completed"]
    assert (done.__dict__["attempts"], done.__dict__["failovers"]) == (2, 1)
    assert len(store.names(names.USAGE_CONTAINER)) == 1  # one line: one call answered


async def test_a_request_the_model_refuses_is_rejected_not_retried(
    runtime: Runtime, model: ScriptedModel, store: MemoryBlobStore
) -> None:
    model.failures.append(ModelRequestRejected("400", deployment="d", status_code=400))
    assert await handle_inference_request(message(), runtime) is Outcome.REJECTED
    record = stored_json(store, names.REJECTED_CONTAINER, "tailwind/msg-1.json")
    assert record["reason"] == RejectionReason.MODEL_REJECTED_REQUEST
    assert record["request_id"] == "req-1"
    assert "HTTP 400" in record["detail"]


@pytest.mark.parametrize(
    ("body", "blob", "reason", "detail"),
    [
        (b"{oops", "_unknown/msg-1.json", RejectionReason.INVALID_JSON, "not valid UTF-8 JSON"),
        (
            json.dumps({"tenant_id": "tailwind", "request_id": "r"}).encode(),
            "tailwind/msg-1.json",
            RejectionReason.INVALID_REQUEST,
            "messages: Field required",
        ),
        (
            json.dumps({"request_id": "r", "messages": []}).encode(),
            "_unknown/msg-1.json",
            RejectionReason.INVALID_REQUEST,
            "tenant_id: Field required",
        ),
        (
            request_body(tenant_id="initech"),
            "_unknown/msg-1.json",
            RejectionReason.UNKNOWN_TENANT,
            "tenant 'initech' is not registered",
        ),
        (
            request_body(version=3),
            "tailwind/msg-1.json",
            RejectionReason.UNSUPPORTED_VERSION,
            "this endpoint takes 1",
        ),
    ],
)
async def test_bad_input_is_recorded_and_completed(
    *,
    runtime: Runtime,
    model: ScriptedModel,
    store: MemoryBlobStore,
    body: bytes,
    blob: str,
    reason: str,
    detail: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert await handle_inference_request(message(body), runtime) is Outcome.REJECTED
    assert model.calls == []
    assert store.names(names.REJECTED_CONTAINER) == [blob]
    record = stored_json(store, names.REJECTED_CONTAINER, blob)
    assert record["type"] == "inference.rejected"
    assert record["reason"] == reason
    assert detail in record["detail"]
    assert record["message_id"] == "msg-1"
    assert record["delivery_count"] == 1
    [log] = [r for r in caplog.records if r.__dict__.get("event") == "inference.rejected"]
    assert log.levelno == logging.WARNING
    assert log.__dict__["reason"] == reason
    assert log.__dict__["rejection_blob"] == blob


async def test_a_tenant_with_no_usable_deployment_is_rejected(registry: Registry) -> None:
    reg = read_registry_file(DEVHOST_REGISTRY, env={})  # no endpoint variables at all
    store = MemoryBlobStore()
    runtime = memory_runtime(reg, store=store)
    body = request_body(tenant_id="contoso")
    assert await handle_inference_request(message(body), runtime) is Outcome.REJECTED
    record = stored_json(store, names.REJECTED_CONTAINER, "contoso/msg-1.json")
    assert record["reason"] == RejectionReason.NO_USABLE_DEPLOYMENT


async def test_a_rejection_of_a_known_tenant_is_also_replied(
    runtime: Runtime, replies: RecordingReplySender
) -> None:
    body = json.dumps({"tenant_id": "tailwind", "request_id": "r-7", "messages": "hi"}).encode()
    msg = message(body, reply_to=names.INFERENCE_RESULTS, reply_to_session_id="s")
    assert await handle_inference_request(msg, runtime) is Outcome.REJECTED
    [reply] = replies.sent
    assert reply.correlation_id == "r-7"
    assert reply.session_id == "s"
    assert reply.subject == "inference.rejected"
    assert json.loads(reply.body)["reason"] == RejectionReason.INVALID_REQUEST


async def test_an_unknown_tenant_gets_no_reply(
    runtime: Runtime, replies: RecordingReplySender
) -> None:
    msg = message(request_body(tenant_id="initech"), reply_to=names.INFERENCE_RESULTS)
    assert await handle_inference_request(msg, runtime) is Outcome.REJECTED
    assert replies.sent == []


@pytest.mark.parametrize("queue", [names.INFERENCE_REQUESTS, "contoso-replies", names.FEEDBACK])
async def test_a_reply_to_outside_the_tenants_reply_queues_is_rejected_before_the_model(
    runtime: Runtime,
    model: ScriptedModel,
    replies: RecordingReplySender,
    store: MemoryBlobStore,
    queue: str,
) -> None:
    assert await handle_inference_request(message(reply_to=queue), runtime) is Outcome.REJECTED
    assert model.calls == []
    assert replies.sent == []
    record = stored_json(store, names.REJECTED_CONTAINER, "tailwind/msg-1.json")
    assert record["reason"] == RejectionReason.REPLY_TO_NOT_ALLOWED


async def test_an_unsafe_message_id_is_hashed_in_the_blob_name(
    runtime: Runtime, store: MemoryBlobStore
) -> None:
    msg = message(b"nope", message_id="../../results/contoso/x")
    assert await handle_inference_request(msg, runtime) is Outcome.REJECTED
    [name] = store.names(names.REJECTED_CONTAINER)
    assert name.startswith("_unknown/sha256-")
    assert stored_json(store, names.REJECTED_CONTAINER, name)["message_id"] == (
        "../../results/contoso/x"
    )


async def test_a_registry_that_cannot_load_makes_the_message_wait(
    model: ScriptedModel, store: MemoryBlobStore
) -> None:
    runtime = memory_runtime(Registry(deployments=(), tenants=()), model=model, store=store)
    runtime.registry = RegistrySource("blob://config/missing.json", store)
    with pytest.raises(RegistryError):
        await handle_inference_request(message(), runtime)
    assert store.names(names.REJECTED_CONTAINER) == []


async def test_an_isolation_violation_is_raised_and_logged(
    registry: Registry, model: ScriptedModel, caplog: pytest.LogCaptureFixture
) -> None:
    tailwind = registry.tenant("tailwind")
    assert tailwind is not None
    broken = Registry.model_construct(
        version=1,
        deployments=registry.deployments,
        tenants=(tailwind.model_copy(update={"deployments": ("contoso-gpt-4o",)}),),
    )
    runtime = memory_runtime(broken, model=model)
    with pytest.raises(IsolationViolation):
        await handle_inference_request(message(), runtime)
    assert model.calls == []
    assert any(r.__dict__.get("event") == "inference.isolation_violation" for r in caplog.records)


async def test_logs_carry_ids_and_numbers_but_never_content(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    enqueued = fixed_clock() - timedelta(milliseconds=250)
    await handle_inference_request(message(enqueued_time=enqueued), runtime)
    await handle_inference_request(
        message(b'{"tenant_id": "tailwind", "x": "' + b"hunter2" + b'"}'), runtime
    )
    formatter = JsonLogFormatter()
    text = "\n".join(formatter.format(r) for r in caplog.records)
    assert "hunter2" not in text
    assert "sim-key" not in text
    done = next(r for r in caplog.records if r.__dict__.get("event") == "inference.completed")
    fields = done.__dict__
    assert fields["tenant_id"] == "tailwind"
    assert fields["request_id"] == "req-1"
    assert fields["deployment"] in POOL
    assert fields["queued_ms"] == 250
    assert fields["prompt_tokens"] == 11
    entry = json.loads(formatter.format(done))
    assert entry["event"] == "inference.completed"
    assert entry["message_id"] == "msg-1"
    assert done.getMessage().startswith("inference.completed message_id=msg-1 delivery_count=1")
    assert "tenant_id=tailwind request_id=req-1 deployment=gpt-4o-mini-pool-" in done.getMessage()


async def test_usage_goes_to_the_day_of_the_call(
    registry: Registry, store: MemoryBlobStore
) -> None:
    runtime = memory_runtime(registry, store=store)
    runtime.clock = lambda: datetime(2025, 3, 4, 23, 59, tzinfo=UTC)
    await handle_inference_request(message(), runtime)
    assert store.names(names.USAGE_CONTAINER) == ["tailwind/2025-03-04.jsonl"]
