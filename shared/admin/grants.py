"""Granting a tenant app's identity exactly its queues: Azure RBAC role assignments on each queue.

    tenant_app_grants("northwind") ->
        Azure Service Bus Data Sender    on queue inference-requests   (send requests)
        Azure Service Bus Data Sender    on queue feedback             (send ratings)
        Azure Service Bus Data Receiver  on queue replies-northwind     (read its own replies)

Nothing on the namespace, no other queue: the app cannot read another tenant's replies, nor
receive requests. `RoleAssigner` makes and removes these assignments through Azure Resource
Manager (`PUT/DELETE {scope}/providers/Microsoft.Authorization/roleAssignments/{name}`,
api-version 2022-04-01) as the operator (DefaultAzureCredential). The operator needs
`Microsoft.Authorization/roleAssignments/write` on the namespace: Owner, User Access
Administrator or Role Based Access Control Administrator (whoever ran `azd up` has one, since the
Bicep makes role assignments too).

Assignment names are `uuid5` of (scope, principal, role), like Bicep's `guid(...)`, so running
`tenants add` again changes nothing, and `tenants remove` finds what `add` made. An assignment of
the same role that exists under another name is answered 409 `RoleAssignmentExists`: taken as done.

Libraries weighed: azure-mgmt-authorization wraps the same two calls in generated models; one PUT
and one DELETE through azure-core's pipeline (already a dependency, with its bearer-token and
retry policies) did not justify another package in the app's requirements.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Final

from azure.core import AsyncPipelineClient
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline import policies
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import HttpRequest

from shared.admin.tenants import reply_queue_name
from shared.storage import names

ARM_ENDPOINT: Final = "https://management.azure.com"
ARM_SCOPE: Final = "https://management.azure.com/.default"
API_VERSION: Final = "2022-04-01"
# Built-in role definition ids (the same as infra/main.bicep's role variables; a test compares).
SERVICE_BUS_DATA_SENDER: Final = "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
SERVICE_BUS_DATA_RECEIVER: Final = "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
STORAGE_BLOB_DATA_CONTRIBUTOR: Final = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
ROLE_NAMES: Final = {
    SERVICE_BUS_DATA_SENDER: "Azure Service Bus Data Sender",
    SERVICE_BUS_DATA_RECEIVER: "Azure Service Bus Data Receiver",
    STORAGE_BLOB_DATA_CONTRIBUTOR: "Storage Blob Data Contributor",
}


@dataclass(frozen=True)
class Grant:
    queue: str
    role_id: str
    why: str

    @property
    def role_name(self) -> str:
        return ROLE_NAMES[self.role_id]


def tenant_app_grants(tenant_id: str) -> list[Grant]:
    return [
        Grant(names.INFERENCE_REQUESTS, SERVICE_BUS_DATA_SENDER, "send inference requests"),
        Grant(names.FEEDBACK, SERVICE_BUS_DATA_SENDER, "send feedback"),
        Grant(reply_queue_name(tenant_id), SERVICE_BUS_DATA_RECEIVER, "receive its replies"),
    ]


@dataclass(frozen=True)
class NamespaceRef:
    subscription_id: str
    resource_group: str
    namespace: str

    def queue_scope(self, queue: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ServiceBus/namespaces/{self.namespace}/queues/{queue}"
        )


def assignment_name(scope: str, principal_id: str, role_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{scope.lower()}|{principal_id}|{role_id}"))


class RoleAssigner:
    def __init__(
        self,
        credential: AsyncTokenCredential,
        namespace: NamespaceRef,
        *,
        endpoint: str = ARM_ENDPOINT,
        transport: AsyncHttpTransport[Any, Any] | None = None,
    ) -> None:
        self._namespace = namespace
        self._endpoint = endpoint.rstrip("/")
        self._client: AsyncPipelineClient[Any, Any] = AsyncPipelineClient(
            endpoint,
            policies=[
                policies.HeadersPolicy(),
                policies.AsyncRetryPolicy(),
                policies.AsyncBearerTokenCredentialPolicy(credential, ARM_SCOPE),
                policies.NetworkTraceLoggingPolicy(),
            ],
            transport=transport,
        )

    def _url(self, scope: str, principal_id: str, role_id: str) -> str:
        name = assignment_name(scope, principal_id, role_id)
        return f"{self._endpoint}{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"

    async def assign(
        self, principal_id: str, grant: Grant, principal_type: str = "ServicePrincipal"
    ) -> bool:
        """Make the assignment; False if it already existed. HttpResponseError otherwise."""
        return await self.assign_at(
            self._namespace.queue_scope(grant.queue),
            principal_id,
            grant.role_id,
            f"tenant app: {grant.why} (shared.admin)",
            principal_type,
        )

    async def assign_at(
        self,
        scope: str,
        principal_id: str,
        role_id: str,
        description: str,
        principal_type: str = "ServicePrincipal",
    ) -> bool:
        """Assign `role_id` to the principal on `scope` (a resource id); False if it held it."""
        body = {
            "properties": {
                "roleDefinitionId": f"/subscriptions/{self._namespace.subscription_id}"
                f"/providers/Microsoft.Authorization/roleDefinitions/{role_id}",
                "principalId": principal_id,
                "principalType": principal_type,
                "description": description,
            }
        }
        request = HttpRequest(
            "PUT",
            self._url(scope, principal_id, role_id),
            params={"api-version": API_VERSION},
            headers={"Content-Type": "application/json"},
            content=json.dumps(body).encode(),
        )
        response = await self._client.send_request(request)
        if response.status_code == 409 and b"RoleAssignmentExists" in await response.read():
            return False
        if response.status_code >= 300:
            raise HttpResponseError(response=response)
        return bool(response.status_code == 201)

    async def revoke(self, principal_id: str, grant: Grant) -> bool:
        """Remove the assignment `assign` made; False if there was none."""
        scope = self._namespace.queue_scope(grant.queue)
        request = HttpRequest(
            "DELETE",
            self._url(scope, principal_id, grant.role_id),
            params={"api-version": API_VERSION},
        )
        response = await self._client.send_request(request)
        if response.status_code in (204, 404):
            return False
        if response.status_code >= 300:
            raise HttpResponseError(response=response)
        return True

    async def close(self) -> None:
        await self._client.close()
