"""Sending a reply to the queue a tenant named in `reply_to`, or a rescheduled request back to its
own queue (with `scheduled_enqueue_time_utc`): the port and its Service Bus adapter.

The adapter is built from the same settings as the trigger's connection: `ServiceBusConnection`
(a connection string, local broker) or `ServiceBusConnection__fullyQualifiedNamespace` with the
managed identity (Azure). One client, one sender per queue, opened on first use and reused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from azure.core.credentials_async import AsyncTokenCredential
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient, ServiceBusSender

from shared.settings import Settings

JSON_CONTENT = "application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    queue: str
    body: bytes
    correlation_id: str
    message_id: str
    session_id: str | None = None
    subject: str | None = None
    application_properties: Mapping[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    reply_to_session_id: str | None = None
    scheduled_enqueue_time_utc: datetime | None = None


class ReplySender(Protocol):
    async def send(self, reply: Reply) -> None: ...

    async def close(self) -> None: ...


class ServiceBusReplySender:
    """The port over `azure.servicebus.aio`."""

    def __init__(self, client: ServiceBusClient) -> None:
        self._client = client
        self._senders: dict[str, tuple[ServiceBusSender, asyncio.Lock]] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, credential: AsyncTokenCredential | None
    ) -> ServiceBusReplySender:
        if settings.servicebus_connection_string:
            client = ServiceBusClient.from_connection_string(settings.servicebus_connection_string)
            return cls(client)
        if settings.servicebus_namespace and credential is not None:
            return cls(ServiceBusClient(settings.servicebus_namespace, credential))
        raise ValueError(
            "replies need ServiceBusConnection or ServiceBusConnection__fullyQualifiedNamespace"
        )

    async def _sender(self, queue: str) -> tuple[ServiceBusSender, asyncio.Lock]:
        """One open sender per queue. The SDK's sender is not coroutine-safe (concurrent first
        sends race on opening the link), so it is opened here once and used under its own lock."""
        entry = self._senders.get(queue)
        if entry is not None:
            return entry
        async with self._lock:
            entry = self._senders.get(queue)
            if entry is None:
                sender = self._client.get_queue_sender(queue)
                await sender.__aenter__()
                entry = (sender, asyncio.Lock())
                self._senders[queue] = entry
            return entry

    async def send(self, reply: Reply) -> None:
        sender, lock = await self._sender(reply.queue)
        async with lock:
            await self._send(sender, reply)

    @staticmethod
    async def _send(sender: ServiceBusSender, reply: Reply) -> None:
        await sender.send_messages(
            ServiceBusMessage(
                reply.body,
                content_type=JSON_CONTENT,
                correlation_id=reply.correlation_id,
                message_id=reply.message_id,
                session_id=reply.session_id,
                subject=reply.subject,
                application_properties=dict(reply.application_properties),  # type: ignore[arg-type]
                reply_to=reply.reply_to,
                reply_to_session_id=reply.reply_to_session_id,
                scheduled_enqueue_time_utc=reply.scheduled_enqueue_time_utc,
            )
        )

    async def close(self) -> None:
        senders, self._senders = list(self._senders.values()), {}
        for sender, _ in senders:
            await sender.close()
        await self._client.close()


class UnconfiguredReplySender:
    """Stands in when no Service Bus setting is present: a reply is a configuration error, raised
    so the message is retried once the setting is fixed rather than completed without its reply."""

    async def send(self, reply: Reply) -> None:
        raise RuntimeError(
            "a reply was asked for, but neither ServiceBusConnection nor "
            "ServiceBusConnection__fullyQualifiedNamespace is set"
        )

    async def close(self) -> None:
        return None
