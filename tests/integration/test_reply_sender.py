"""The Service Bus reply port against the real broker: concurrent replies all arrive, intact; a
reply too large for the queue is told apart from a transient failure."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from azure.servicebus.aio import ServiceBusClient

from devhost.servicebus.launcher import BrokerProcess
from shared.inference.handler import Outcome, handle_inference_request
from shared.inference.model_clients import Completion
from shared.inference.replies import Reply, ServiceBusReplySender
from shared.messages import InboundMessage
from shared.storage import names
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import read_registry_file
from tests.fakes import ScriptedModel, memory_runtime

DEVHOST_REGISTRY = Path(__file__).resolve().parents[2] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}


async def test_concurrent_replies_on_one_sender_all_arrive(broker: BrokerProcess) -> None:
    replies = ServiceBusReplySender(
        ServiceBusClient.from_connection_string(broker.connection_string)
    )
    try:
        await asyncio.gather(
            *(
                replies.send(
                    Reply(
                        queue="replies-tailwind",
                        body=f'{{"n": {i}}}'.encode(),
                        correlation_id=f"req-{i}",
                        message_id=f"reply-{i}",
                        session_id=None,
                        subject="inference.result",
                        application_properties={"tenant_id": "tailwind"},
                    )
                )
                for i in range(40)
            )
        )
    finally:
        await replies.close()
    got: dict[str, bytes] = {}
    async with (
        ServiceBusClient.from_connection_string(broker.connection_string) as bus,
        bus.get_queue_receiver("replies-tailwind") as receiver,
    ):
        while len(got) < 40:
            batch = await receiver.receive_messages(max_message_count=40, max_wait_time=3)
            assert batch, f"only {len(got)} of 40 replies arrived"
            for msg in batch:
                got[str(msg.correlation_id)] = b"".join(msg.body)
                assert msg.subject == "inference.result"
                assert msg.content_type == "application/json"
                await receiver.complete_message(msg)
    assert got == {f"req-{i}": f'{{"n": {i}}}'.encode() for i in range(40)}


async def test_a_reply_too_large_for_the_queue_becomes_a_pointer_and_the_sender_lives_on(
    broker: BrokerProcess,
) -> None:
    """A ~300 KB answer (max_tokens allows it) exceeds the 256 KB message limit: the tenant gets a
    compact reply pointing to the result blob, a redelivery does not repeat the doomed send, and
    the shared sender still serves the next tenant request."""
    model = ScriptedModel(
        completion=Completion(
            content=" ".join(["lorem"] * 52_000),
            finish_reason="stop",
            prompt_tokens=6,
            completion_tokens=52_000,
            model="fake",
        )
    )
    store = MemoryBlobStore()
    replies = ServiceBusReplySender(
        ServiceBusClient.from_connection_string(broker.connection_string)
    )
    registry = read_registry_file(DEVHOST_REGISTRY, env=ENV)
    runtime = memory_runtime(registry, model=model, replies=replies, store=store)

    def request(request_id: str) -> InboundMessage:
        body = {
            "tenant_id": "tailwind",
            "request_id": request_id,
            "messages": [{"role": "user", "content": "Write the full handbook."}],
            "parameters": {"max_tokens": 40000},  # within tailwind's 50k tokens a minute
        }
        return InboundMessage(
            body=json.dumps(body).encode(), message_id=request_id, reply_to="replies-tailwind"
        )

    try:
        assert await handle_inference_request(request("big-1"), runtime) is Outcome.COMPLETED
        model.completion = Completion(
            content="The Business plan.",
            finish_reason="stop",
            prompt_tokens=6,
            completion_tokens=4,
            model="fake",
        )
        assert await handle_inference_request(request("small-1"), runtime) is Outcome.COMPLETED
        assert await handle_inference_request(request("big-1"), runtime) is Outcome.DUPLICATE
    finally:
        await replies.close()
    got: dict[str, dict[str, object]] = {}
    async with (
        ServiceBusClient.from_connection_string(broker.connection_string) as bus,
        bus.get_queue_receiver("replies-tailwind") as receiver,
    ):
        while not {"big-1", "small-1"} <= set(got):
            batch = await receiver.receive_messages(max_message_count=10, max_wait_time=3)
            assert batch, f"replies missing: got {sorted(got)}"
            for msg in batch:
                got[str(msg.correlation_id)] = json.loads(b"".join(msg.body))
                await receiver.complete_message(msg)
    assert sorted(got) == ["big-1", "small-1"]  # one reply each: the redelivery sent none
    assert got["big-1"]["truncated"] is True
    assert got["big-1"]["message"] is None
    assert got["big-1"]["result_blob"] == "results/tailwind/big-1.json"
    assert got["small-1"]["message"] == {"role": "assistant", "content": "The Business plan."}
    assert len(store.text(names.RESULTS_CONTAINER, "tailwind/big-1.json")) > 256 * 1024
