"""The broker's management API through the real `ServiceBusAdministrationClient`: queues created,
changed and deleted at run time, used at once over AMQP, kept across a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from devhost.servicebus.launcher import BrokerProcess
from shared.admin.queues import REPLY_QUEUE_SETTINGS, ServiceBusQueueAdmin, admin_client


async def _send_and_receive(connection: str, queue: str, message_id: str) -> str:
    """(A new message id each time: the queue detects duplicates, as Bicep's queues do.)"""
    async with ServiceBusClient.from_connection_string(connection) as bus:
        async with bus.get_queue_sender(queue) as sender:
            await sender.send_messages(ServiceBusMessage("hello", message_id=message_id))
        async with bus.get_queue_receiver(queue, max_wait_time=5) as receiver:
            (message,) = await receiver.receive_messages(max_wait_time=5)
            await receiver.complete_message(message)
            return str(message)


def test_a_queue_created_at_run_time_is_served_and_survives_a_restart(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker()

    async def create_and_use() -> None:
        admin = ServiceBusQueueAdmin.from_connection_string(broker.admin_connection_string)
        try:
            assert await admin.ensure_queue("replies-northwind") is True
            assert await admin.ensure_queue("replies-northwind") is False  # idempotent
        finally:
            await admin.close()
        assert (
            await _send_and_receive(broker.connection_string, "replies-northwind", "m-1") == "hello"
        )
        async with admin_client(broker.admin_connection_string) as client:
            queue = await client.get_queue("replies-northwind")
            assert queue.lock_duration == timedelta(minutes=1)
            assert queue.max_delivery_count == REPLY_QUEUE_SETTINGS["max_delivery_count"]
            assert queue.requires_duplicate_detection is True
            with pytest.raises(ResourceExistsError):
                await client.create_queue("replies-northwind")

    asyncio.run(create_and_use())
    broker.restart()

    async def still_there() -> None:
        async with admin_client(broker.admin_connection_string) as client:
            names = [q.name async for q in client.list_queues()]
            assert "replies-northwind" in names
            await client.delete_queue("inference-results")  # one the config file declares
        assert (
            await _send_and_receive(broker.connection_string, "replies-northwind", "m-2") == "hello"
        )

    asyncio.run(still_there())
    broker.restart()

    async def deleted_stays_deleted() -> None:
        async with admin_client(broker.admin_connection_string) as client:
            with pytest.raises(ResourceNotFoundError):
                await client.get_queue("inference-results")
            with pytest.raises(ResourceNotFoundError):
                await client.delete_queue("inference-results")

    asyncio.run(deleted_stays_deleted())


def test_runtime_counts_and_a_wrong_key(start_broker: Callable[..., BrokerProcess]) -> None:
    broker = start_broker({"work": {"MaxDeliveryCount": 1}})

    async def scenario() -> None:
        async with ServiceBusClient.from_connection_string(broker.connection_string) as bus:
            async with bus.get_queue_sender("work") as sender:
                await sender.send_messages([ServiceBusMessage(f"m{i}") for i in range(3)])
            async with bus.get_queue_receiver("work", max_wait_time=5) as receiver:
                (message,) = await receiver.receive_messages(max_message_count=1)
                await receiver.dead_letter_message(message, reason="bad", error_description="x")
        async with admin_client(broker.admin_connection_string) as client:
            runtime = await client.get_queue_runtime_properties("work")
            assert (runtime.active_message_count, runtime.dead_letter_message_count) == (2, 1)
        wrong = broker.admin_connection_string.replace("SAS_KEY_VALUE", "not-the-key")
        async with admin_client(wrong) as client:
            with pytest.raises(ClientAuthenticationError):
                await client.get_queue("work")

    asyncio.run(scenario())


def test_a_deleted_queue_detaches_its_receivers_and_refuses_sends(
    start_broker: Callable[..., BrokerProcess],
) -> None:
    broker = start_broker({"work": {}, "gone": {}})

    async def scenario() -> None:
        async with (
            ServiceBusClient.from_connection_string(broker.connection_string, retry_total=0) as bus,
            bus.get_queue_sender("gone") as sender,
        ):
            await sender.send_messages(ServiceBusMessage("before"))
            async with admin_client(broker.admin_connection_string) as client:
                await client.delete_queue("gone")
            with pytest.raises(Exception, match=r"could not be found"):
                await sender.send_messages(ServiceBusMessage("after"))

    asyncio.run(scenario())
