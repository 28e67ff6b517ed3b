"""Sending batch rows to `inference-requests`: many messages per send, as Service Bus batches.

`ServiceBusRowSender` fills `ServiceBusMessageBatch`es (the SDK sizes them against the queue's
limit) and sends each with one call; the message ids are the rows' request ids, so a resumed
fan-out that sends a row again is dropped by the queue's duplicate detection (and the handler is
idempotent by request id anyway). `ReplyRowSender` sends one at a time through the reply port,
for tests and a process without Service Bus settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from azure.core.credentials_async import AsyncTokenCredential
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient, ServiceBusSender

from shared.inference.replies import Reply, ReplySender
from shared.settings import Settings

JSON_CONTENT = "application/json"


@dataclass(frozen=True, slots=True)
class RowMessage:
    body: bytes
    message_id: str
    subject: str
    application_properties: Mapping[str, str | int] = field(default_factory=dict)
    scheduled_enqueue_time_utc: datetime | None = None


class RowSender(Protocol):
    async def send_rows(self, queue: str, rows: Sequence[RowMessage]) -> None: ...

    async def close(self) -> None: ...


class ServiceBusRowSender:
    def __init__(self, client: ServiceBusClient) -> None:
        self._client = client
        self._senders: dict[str, ServiceBusSender] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, credential: AsyncTokenCredential | None
    ) -> ServiceBusRowSender:
        if settings.servicebus_connection_string:
            return cls(
                ServiceBusClient.from_connection_string(settings.servicebus_connection_string)
            )
        if settings.servicebus_namespace and credential is not None:
            return cls(ServiceBusClient(settings.servicebus_namespace, credential))
        raise ValueError("batch rows need ServiceBusConnection or its __fullyQualifiedNamespace")

    async def send_rows(self, queue: str, rows: Sequence[RowMessage]) -> None:
        async with self._lock:  # the SDK's sender is not coroutine-safe
            sender = self._senders.get(queue)
            if sender is None:
                sender = self._client.get_queue_sender(queue)
                await sender.__aenter__()
                self._senders[queue] = sender
            batch = await sender.create_message_batch()
            for row in rows:
                message = _message(row)
                try:
                    batch.add_message(message)
                except ValueError:  # the batch is full: send it, start the next
                    if len(batch) == 0:
                        raise
                    await sender.send_messages(batch)
                    batch = await sender.create_message_batch()
                    batch.add_message(message)
            if len(batch):
                await sender.send_messages(batch)

    async def close(self) -> None:
        senders, self._senders = list(self._senders.values()), {}
        for sender in senders:
            await sender.close()
        await self._client.close()


class ReplyRowSender:
    """One message per send, through the reply port."""

    def __init__(self, replies: ReplySender) -> None:
        self._replies = replies

    async def send_rows(self, queue: str, rows: Sequence[RowMessage]) -> None:
        for row in rows:
            await self._replies.send(
                Reply(
                    queue=queue,
                    body=row.body,
                    correlation_id=row.message_id,
                    message_id=row.message_id,
                    subject=row.subject,
                    application_properties=dict(row.application_properties),
                    scheduled_enqueue_time_utc=row.scheduled_enqueue_time_utc,
                )
            )

    async def close(self) -> None:
        return None  # the reply port is closed by its owner


def _message(row: RowMessage) -> ServiceBusMessage:
    properties: dict[Any, Any] = dict(row.application_properties)
    return ServiceBusMessage(
        row.body,
        content_type=JSON_CONTENT,
        message_id=row.message_id,
        correlation_id=row.message_id,
        subject=row.subject,
        application_properties=properties,
        scheduled_enqueue_time_utc=row.scheduled_enqueue_time_utc,
    )
