"""The Service Bus reply adapter, through its port (the broker itself is tested elsewhere)."""

from __future__ import annotations

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from shared.inference.replies import Reply, ServiceBusReplySender, UnconfiguredReplySender
from shared.settings import Settings


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[ServiceBusMessage] = []
        self.closed = False

    async def send_messages(self, message: ServiceBusMessage) -> None:
        self.sent.append(message)

    async def __aenter__(self) -> FakeSender:
        return self

    async def close(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self) -> None:
        self.senders: dict[str, FakeSender] = {}
        self.closed = False

    def get_queue_sender(self, queue: str) -> FakeSender:
        return self.senders.setdefault(queue, FakeSender())

    async def __aenter__(self) -> FakeSender:
        return self

    async def close(self) -> None:
        self.closed = True


async def test_a_reply_becomes_a_service_bus_message_on_its_queue() -> None:
    client = FakeClient()
    sender = ServiceBusReplySender(client)  # type: ignore[arg-type]
    reply = Reply(
        queue="inference-results",
        body=b'{"x": 1}',
        correlation_id="req-1",
        message_id="req-1",
        session_id="app-7",
        subject="inference.result",
        application_properties={"type": "inference.result", "version": 1},
    )
    await sender.send(reply)
    await sender.send(reply)
    [queue_sender] = client.senders.values()  # one sender per queue, reused
    message = queue_sender.sent[0]
    assert b"".join(message.body) == b'{"x": 1}'
    assert message.correlation_id == "req-1"
    assert message.message_id == "req-1"
    assert message.session_id == "app-7"
    assert message.subject == "inference.result"
    assert message.content_type == "application/json"
    assert message.application_properties == {"type": "inference.result", "version": 1}
    await sender.close()
    assert queue_sender.closed
    assert client.closed


async def test_built_from_a_connection_string_without_connecting() -> None:
    settings = Settings.model_validate(
        {
            "ServiceBusConnection": "Endpoint=sb://localhost:5672/;SharedAccessKeyName=k;"
            "SharedAccessKey=c2VjcmV0;UseDevelopmentEmulator=true"
        }
    )
    sender = ServiceBusReplySender.from_settings(settings, None)
    assert isinstance(sender._client, ServiceBusClient)
    await sender.close()


def test_identity_needs_a_credential() -> None:
    settings = Settings.model_validate(
        {"ServiceBusConnection__fullyQualifiedNamespace": "ns.servicebus.windows.net"}
    )
    with pytest.raises(ValueError, match="ServiceBusConnection"):
        ServiceBusReplySender.from_settings(settings, None)


async def test_the_unconfigured_sender_raises_so_the_message_waits() -> None:
    with pytest.raises(RuntimeError, match="ServiceBusConnection"):
        await UnconfiguredReplySender().send(
            Reply(queue="q", body=b"", correlation_id="c", message_id="m")
        )
