"""The Service Bus reply port against the real broker: concurrent replies all arrive, intact."""

from __future__ import annotations

import asyncio

from azure.servicebus.aio import ServiceBusClient

from devhost.servicebus.launcher import BrokerProcess
from shared.inference.replies import Reply, ServiceBusReplySender


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
