"""The batch fan-out's Service Bus adapter against the real broker: rows sent in batches arrive
whole, with their ids and properties; sent again, the queue's duplicate detection drops them;
a paced row waits for its time."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from azure.servicebus.aio import ServiceBusClient

from devhost.servicebus.launcher import BrokerProcess
from shared.batch.fanout import RowMessage, ServiceBusRowSender
from shared.storage import names


def rows(count: int, *, size: int = 200) -> list[RowMessage]:
    return [
        RowMessage(
            body=json.dumps({"line": i, "pad": "x" * size}).encode(),
            message_id=f"b{'0' * 24}:{i}",
            subject="inference.request",
            application_properties={"traffic": "batch", "batch_line": i},
        )
        for i in range(1, count + 1)
    ]


async def drain(connection: str, expected: int, wait_s: float = 5.0) -> list[tuple[str, dict]]:
    got: list[tuple[str, dict]] = []
    async with (
        ServiceBusClient.from_connection_string(connection) as bus,
        bus.get_queue_receiver(names.INFERENCE_REQUESTS) as receiver,
    ):
        deadline = asyncio.get_running_loop().time() + wait_s
        while asyncio.get_running_loop().time() < deadline:
            batch = await receiver.receive_messages(max_message_count=200, max_wait_time=1)
            for msg in batch:
                props = {
                    (k.decode() if isinstance(k, bytes) else k): (
                        v.decode() if isinstance(v, bytes) else v
                    )
                    for k, v in (msg.application_properties or {}).items()
                }
                got.append((str(msg.message_id), props))
                await receiver.complete_message(msg)
            if len(got) >= expected and not batch:
                break
    return got


async def test_rows_arrive_once_with_their_ids_and_properties(broker: BrokerProcess) -> None:
    sender = ServiceBusRowSender(ServiceBusClient.from_connection_string(broker.connection_string))
    try:
        sent = rows(600, size=1500)  # ~1 MB: more than one Service Bus batch
        await sender.send_rows(names.INFERENCE_REQUESTS, sent)
        await sender.send_rows(names.INFERENCE_REQUESTS, sent[:100])  # a resumed fan-out
    finally:
        await sender.close()
    got = await drain(broker.connection_string, 600)
    assert sorted(m for m, _ in got) == sorted(r.message_id for r in sent)
    assert all(p["traffic"] == "batch" for _, p in got)
    assert {p["batch_line"] for _, p in got} == set(range(1, 601))


async def test_a_paced_row_waits_for_its_time(broker: BrokerProcess) -> None:
    sender = ServiceBusRowSender(ServiceBusClient.from_connection_string(broker.connection_string))
    later = datetime.now(UTC) + timedelta(seconds=3)
    now_row, paced = rows(2)
    paced = RowMessage(
        body=paced.body,
        message_id=paced.message_id,
        subject=paced.subject,
        application_properties=paced.application_properties,
        scheduled_enqueue_time_utc=later,
    )
    try:
        await sender.send_rows(names.INFERENCE_REQUESTS, [now_row, paced])
    finally:
        await sender.close()
    first = await drain(broker.connection_string, 1, wait_s=1.5)
    assert [m for m, _ in first] == [now_row.message_id]
    second = await drain(broker.connection_string, 1, wait_s=6)
    assert [m for m, _ in second] == [paced.message_id]
