"""function_app.py: the trigger binding, and the decorated function called with a real message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.functions.servicebus import ServiceBusMessage

import function_app
from shared.inference.model_errors import ModelConfigurationError, ModelServerError
from shared.runtime import Runtime, set_runtime
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import read_registry_file
from tests.fakes import RecordingReplySender, ScriptedModel, memory_runtime

ROOT = Path(__file__).resolve().parents[2]
ENV = {"AZURE_OPENAI_ENDPOINT": "https://aoai.example"}


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    registry = read_registry_file(ROOT / "devhost" / "registry.json", env=ENV)
    rt = memory_runtime(registry, store=MemoryBlobStore(), replies=RecordingReplySender())
    previous = set_runtime(rt)
    try:
        yield rt
    finally:
        set_runtime(previous)


def sb_message(body: bytes, **fields: object) -> ServiceBusMessage:
    return ServiceBusMessage(
        body=body,
        message_id=str(fields.pop("message_id", "m-1")),
        application_properties=dict(fields.pop("application_properties", {})),  # type: ignore[call-overload]
        user_properties={},
        delivery_count=1,
        enqueued_time_utc=datetime(2025, 1, 2, 3, 4, 0, tzinfo=UTC),
        **fields,  # type: ignore[arg-type]
    )


# Not app.get_functions(): it may be called once per process (it registers the names), and the
# local Functions host calls it. The decorated object builds and calls the same function.


def test_the_trigger_listens_on_inference_requests_with_the_servicebus_connection() -> None:
    fn = function_app.infer.build()
    assert fn.get_function_name() == "infer"
    [binding] = json.loads(fn.get_function_json())["bindings"]
    assert binding == {
        "direction": "IN",
        "type": "serviceBusTrigger",
        "name": "msg",
        "connection": "ServiceBusConnection",
        "queueName": names.INFERENCE_REQUESTS,
    }


def test_the_message_is_handed_over_field_by_field() -> None:
    inbound = function_app.inbound_message(
        sb_message(
            b"{}",
            message_id="m-9",
            reply_to="inference-results",
            reply_to_session_id="s-1",
            session_id="in-1",
            correlation_id="c-1",
            application_properties={"type": "inference.request"},
        )
    )
    assert inbound.body == b"{}"
    assert inbound.message_id == "m-9"
    assert (inbound.reply_to, inbound.reply_to_session_id) == ("inference-results", "s-1")
    assert (inbound.session_id, inbound.correlation_id) == ("in-1", "c-1")
    assert inbound.application_properties == {"type": "inference.request"}
    assert inbound.delivery_count == 1
    assert inbound.enqueued_time == datetime(2025, 1, 2, 3, 4, 0, tzinfo=UTC)


async def test_calling_the_function_completes_a_request(runtime: Runtime) -> None:
    body = json.dumps(
        {
            "tenant_id": "contoso",
            "request_id": "r-1",
            "messages": [{"role": "user", "content": "x"}],
        }
    ).encode()
    await function_app.infer(sb_message(body, reply_to="inference-results"))
    store = runtime.store
    assert isinstance(store, MemoryBlobStore)
    assert store.names(names.RESULTS_CONTAINER) == ["contoso/r-1.json"]
    replies = runtime.replies
    assert isinstance(replies, RecordingReplySender)
    assert [r.correlation_id for r in replies.sent] == ["r-1"]


async def test_a_configuration_error_propagates_to_the_host(runtime: Runtime) -> None:
    model = runtime.models
    assert isinstance(model, ScriptedModel)
    model.failures.append(ModelConfigurationError("403", deployment="d", status_code=403))
    body = json.dumps(
        {
            "tenant_id": "contoso",
            "request_id": "r-2",
            "messages": [{"role": "user", "content": "x"}],
        }
    ).encode()
    with pytest.raises(ModelConfigurationError):
        await function_app.infer(sb_message(body))


async def test_a_transient_failure_is_retried_not_raised_to_the_host(runtime: Runtime) -> None:
    model = runtime.models
    assert isinstance(model, ScriptedModel)
    model.failures.append(ModelServerError("503", deployment="d", status_code=503))
    body = json.dumps(
        {
            "tenant_id": "contoso",
            "request_id": "r-3",
            "messages": [{"role": "user", "content": "x"}],
        }
    ).encode()
    await function_app.infer(sb_message(body))
    assert len(model.calls) == 2  # contoso has one deployment: retried there after a backoff
    store = runtime.store
    assert isinstance(store, MemoryBlobStore)
    assert store.names(names.RESULTS_CONTAINER) == ["contoso/r-3.json"]


def test_host_json_sets_the_service_bus_options() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    sb = host["extensions"]["serviceBus"]
    assert sb["autoCompleteMessages"] is True
    assert sb["maxConcurrentCalls"] >= 1
    assert sb["prefetchCount"] == 0
    assert sb["maxAutoLockRenewalDuration"] == host["functionTimeout"]
