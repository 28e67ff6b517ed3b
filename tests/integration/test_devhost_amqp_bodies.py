"""Every AMQP body section the SDK can send reaches the function as the Functions host hands it
(issue 8, item 5), through the real azure-servicebus SDK and the local broker.

Non-.NET senders (JMS/Qpid, rhea, relays) put their payload in an AMQP value or sequence section,
not a data section (Azure/azure-sdk-for-net#6912). Before, a map value reached the host with bytes
keys (the SDK decodes AMQP strings to bytes), `json.dumps` refused it, and the host abandoned the
message until it was dead-lettered; the broker refused a map keyed by binary at send; a sequence
became the text of a Python generator.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusReceivedMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.amqp import AmqpAnnotatedMessage, AmqpMessageProperties

from devhost.host import FunctionsHost
from devhost.host.servicebus_trigger import body_bytes
from devhost.servicebus.launcher import BrokerProcess
from shared.inference.handler import Outcome, handle_inference_request
from shared.messages import InboundMessage
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import read_registry_file
from tests.fakes import RecordingReplySender, ScriptedModel, memory_runtime
from tests.integration.sample_app.recorder import read_events

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = Path(__file__).resolve().parent / "sample_app" / "servicebus_body" / "function_app.py"
QUEUES = {"work": {"LockDuration": "PT30S", "MaxDeliveryCount": 3}}
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}


def request(request_id: str) -> dict[str, Any]:
    return {
        "tenant_id": "tailwind",
        "request_id": request_id,
        "messages": [{"role": "user", "content": "What does the Basic plan include?"}],
        "parameters": {"max_tokens": 20, "stop": ["\n"]},
    }


def nested(depth: int) -> list[Any]:
    """Lists in lists; the SDK's receiver itself cannot decode much deeper (about 60)."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# (name, AmqpAnnotatedMessage body keyword, the bytes the function must get)
BODIES: list[tuple[str, dict[str, Any], bytes]] = [
    ("data", {"data_body": b'{"a": 1}'}, b'{"a": 1}'),
    ("data-sections", {"data_body": [b"ab", b"cd"]}, b"abcd"),
    ("value-str", {"value_body": '{"a": "\u00e9"}'}, '{"a": "\u00e9"}'.encode()),
    ("value-binary", {"value_body": b"\x00\xff"}, b"\x00\xff"),
    ("value-int", {"value_body": 5}, b"5"),
    ("value-negative", {"value_body": -7}, b"-7"),
    ("value-float", {"value_body": 1.5}, b"1.5"),
    ("value-nan", {"value_body": float("nan")}, b'"nan"'),
    ("value-bool", {"value_body": True}, b"true"),
    ("value-null", {"value_body": None}, b"null"),
    ("value-uuid", {"value_body": uuid.UUID(int=1)}, b'"00000000-0000-0000-0000-000000000001"'),
    (
        "value-timestamp",  # the SDK hands an AMQP timestamp over as epoch milliseconds
        {"value_body": dt.datetime(2025, 1, 2, tzinfo=dt.UTC)},
        b"1735776000000",
    ),
    ("value-list", {"value_body": [1, "a", b"\xff\xfe"]}, b'[1, "a", "//4="]'),
    (
        "value-map",
        {"value_body": {"a": 1, "b": {"c": ["d"]}, "e": None}},
        b'{"a": 1, "b": {"c": ["d"]}, "e": null}',
    ),
    (
        "value-map-binary-keys",
        {"value_body": {b"k": b"v", b"\xff": 2, 3: True}},
        b'{"k": "v", "/w==": 2, "3": true}',
    ),
    ("sequence", {"sequence_body": [[1, "a", {"x": b"y"}]]}, b'[1, "a", {"x": "y"}]'),
    ("sequences", {"sequence_body": [[1], ["b"]]}, b'[[1], ["b"]]'),
    ("value-nested", {"value_body": nested(40)}, b"[" * 41 + b"]" * 41),
]


@pytest.fixture
def sb(start_broker: Callable[..., BrokerProcess]) -> BrokerProcess:
    return start_broker(QUEUES)


@pytest.fixture
async def sb_client(sb: BrokerProcess) -> AsyncIterator[ServiceBusClient]:
    async with ServiceBusClient.from_connection_string(
        sb.connection_string, retry_total=1, retry_backoff_factor=0.1
    ) as client:
        yield client


async def send_all(client: ServiceBusClient, bodies: list[tuple[str, dict[str, Any]]]) -> None:
    async with client.get_queue_sender("work") as sender:
        for name, body in bodies:
            properties = AmqpMessageProperties(message_id=name)
            await sender.send_messages(AmqpAnnotatedMessage(properties=properties, **body))


async def receive_all(client: ServiceBusClient, count: int) -> list[ServiceBusReceivedMessage]:
    got: list[ServiceBusReceivedMessage] = []
    async with client.get_queue_receiver("work", max_wait_time=5) as receiver:
        while len(got) < count:
            batch = await receiver.receive_messages(max_message_count=count, max_wait_time=5)
            if not batch:
                break
            for message in batch:
                await receiver.complete_message(message)
            got += batch
    return got


async def test_every_body_section_becomes_the_bytes_the_functions_host_hands_over(
    sb_client: ServiceBusClient,
) -> None:
    await send_all(sb_client, [(name, body) for name, body, _ in BODIES])
    received = {str(m.message_id): m for m in await receive_all(sb_client, len(BODIES))}
    assert sorted(received) == sorted(name for name, _, _ in BODIES)  # the broker took them all
    for name, _, expected in BODIES:
        assert body_bytes(received[name]) == expected, name


async def test_each_body_reaches_the_function_once_and_nothing_is_dead_lettered(
    tmp_path: Path,
    records: Path,
    sb: BrokerProcess,
    sb_client: ServiceBusClient,
) -> None:
    root = tmp_path / "app"
    root.mkdir()
    shutil.copy(SAMPLE, root / "function_app.py")
    (root / "host.json").write_text(json.dumps({"version": "2.0"}))
    settings = {"SampleServiceBus": sb.connection_string, "SAMPLE_QUEUE": "work"}
    async with FunctionsHost(root, settings, servicebus_receive_wait_s=0.25):
        await send_all(sb_client, [(name, body) for name, body, _ in BODIES])
        deadline = time.monotonic() + 20
        while len(read_events(records)) < len(BODIES):
            assert time.monotonic() < deadline, read_events(records)
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the last settlements
        async with sb_client.get_queue_receiver("work") as receiver:
            assert await receiver.peek_messages(max_message_count=50) == []
        async with sb_client.get_queue_receiver(
            "work", sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as dlq:
            assert await dlq.peek_messages(max_message_count=50) == []
    got = {e["message_id"]: bytes.fromhex(e["body_hex"]) for e in read_events(records)}
    assert len(read_events(records)) == len(BODIES)  # once each: nothing was redelivered
    for name, _, expected in BODIES:
        assert got[name] == expected, name


@pytest.fixture
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "records"
    folder.mkdir()
    monkeypatch.setenv("SAMPLE_RECORD_DIR", str(folder))
    return folder


async def test_a_request_in_a_value_map_is_answered_and_an_unreadable_value_is_rejected(
    sb_client: ServiceBusClient,
) -> None:
    """The inference handler over what the host hands it: the map is served; a value that is not
    a JSON object is an `invalid_json` rejection with a reply, never an exception."""
    bodies = [
        ("as-map", {"value_body": request("r-map")}),
        ("as-string", {"value_body": json.dumps(request("r-string"))}),
        ("as-sequence", {"sequence_body": [[request("r-sequence")]]}),
        ("as-int", {"value_body": 5}),
        ("as-nan", {"value_body": float("nan")}),
    ]
    await send_all(sb_client, bodies)
    received = {str(m.message_id): m for m in await receive_all(sb_client, len(bodies))}
    registry = read_registry_file(ROOT / "devhost" / "registry.json", env=ENV)
    model, replies, store = ScriptedModel(), RecordingReplySender(), MemoryBlobStore()
    runtime = memory_runtime(registry, model=model, replies=replies, store=store)
    outcomes = {}
    for name, message in received.items():
        inbound = InboundMessage(
            body=body_bytes(message), message_id=name, reply_to="inference-results"
        )
        outcomes[name] = await handle_inference_request(inbound, runtime)
    assert outcomes == {
        "as-map": Outcome.COMPLETED,
        "as-string": Outcome.COMPLETED,
        "as-sequence": Outcome.REJECTED,  # a list holding the request is not the contract
        "as-int": Outcome.REJECTED,
        "as-nan": Outcome.REJECTED,
    }
    assert len(model.calls) == 2
    assert [r.subject for r in replies.sent] == ["inference.result"] * 2
    rejected = [json.loads(store.text("rejected", n)) for n in store.names("rejected")]
    assert sorted(r["message_id"] for r in rejected) == ["as-int", "as-nan", "as-sequence"]
    assert {r["reason"] for r in rejected} == {"invalid_json"}
