"""Creating and deleting a tenant's reply queue with `azure.servicebus.management`.

`QueueAdmin` is the port; `ServiceBusQueueAdmin` is its adapter over the SDK's
`ServiceBusAdministrationClient` (the Service Bus ATOM management API):

- In Azure, `from_namespace(fqns, credential)` signs in as the operator (DefaultAzureCredential),
  never as the app. Creating or deleting a queue needs Manage rights on the namespace:
  **Azure Service Bus Data Owner** on the namespace (infra/README.md, "Onboard a tenant").
- Locally, `from_connection_string(conn)` takes an emulator connection string whose endpoint is
  the management port (`ServiceBusAdminConnection`, written by `dev.py up`): devhost's broker and
  Microsoft's Service Bus emulator both serve the management API over plain HTTP there.
  azure-servicebus 7.15 reads `UseDevelopmentEmulator=true` but its administration client still
  builds `https://` URLs, so for such a connection the transport sends the same request over
  `http://` (`_EmulatorTransport`); nothing else differs.

Reply queues get the settings the Bicep gives every queue (`REPLY_QUEUE_SETTINGS`, the defaults of
infra/main.bicep's `serviceBus*` parameters; a test compares them).

Errors: the SDK's `ClientAuthenticationError` (no or wrong credential), `HttpResponseError` with
status 401/403 (the identity lacks the role), `ServiceRequestError` (nothing listens there).
"""

from __future__ import annotations

from typing import Any, Protocol

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.core.pipeline.transport import AioHttpTransport
from azure.servicebus.aio.management import ServiceBusAdministrationClient

# The settings of every queue in infra/main.bicep (its serviceBus* parameter defaults).
REPLY_QUEUE_SETTINGS: dict[str, Any] = {
    "lock_duration": "PT1M",
    "max_delivery_count": 10,
    "default_message_time_to_live": "P14D",
    "dead_lettering_on_message_expiration": True,
    "requires_duplicate_detection": True,
    "duplicate_detection_history_time_window": "PT10M",
}


class QueueAdmin(Protocol):
    async def ensure_queue(self, name: str) -> bool:
        """Create the queue unless it exists; True if it was created."""
        ...

    async def delete_queue(self, name: str) -> bool:
        """Delete the queue and its messages; False if there was none."""
        ...

    async def queue_exists(self, name: str) -> bool: ...

    async def close(self) -> None: ...


class _EmulatorTransport(AioHttpTransport):  # type: ignore[misc]  # azure-core exports it lazily
    """Plain HTTP for an emulator's management endpoint (see the module docstring)."""

    async def send(self, request: Any, **kwargs: Any) -> Any:
        if request.url.startswith("https://"):
            request.url = "http://" + request.url[len("https://") :]
        return await super().send(request, **kwargs)


def is_emulator(connection_string: str) -> bool:
    parts = dict(
        p.split("=", 1) for p in connection_string.strip().strip(";").split(";") if "=" in p
    )
    return parts.get("UseDevelopmentEmulator", "").lower() == "true"


def admin_client(connection_string: str) -> ServiceBusAdministrationClient:
    """The SDK's administration client for a connection string (an emulator's over HTTP)."""
    extra: dict[str, Any] = {}
    if is_emulator(connection_string):
        extra["transport"] = _EmulatorTransport()
    return ServiceBusAdministrationClient.from_connection_string(connection_string, **extra)


class ServiceBusQueueAdmin:
    def __init__(self, client: ServiceBusAdministrationClient) -> None:
        self._client = client

    @classmethod
    def from_connection_string(cls, connection_string: str) -> ServiceBusQueueAdmin:
        return cls(admin_client(connection_string))

    @classmethod
    def from_namespace(
        cls, fully_qualified_namespace: str, credential: AsyncTokenCredential
    ) -> ServiceBusQueueAdmin:
        return cls(ServiceBusAdministrationClient(fully_qualified_namespace, credential))

    async def ensure_queue(self, name: str) -> bool:
        try:
            await self._client.create_queue(name, **REPLY_QUEUE_SETTINGS)
        except ResourceExistsError:
            return False
        return True

    async def delete_queue(self, name: str) -> bool:
        try:
            await self._client.delete_queue(name)
        except ResourceNotFoundError:
            return False
        return True

    async def queue_exists(self, name: str) -> bool:
        try:
            await self._client.get_queue(name)
        except ResourceNotFoundError:
            return False
        return True

    async def close(self) -> None:
        await self._client.close()
