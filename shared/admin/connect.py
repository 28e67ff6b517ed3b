"""Where the admin commands act: the registry, the namespace's queues, and Azure RBAC.

Read from the same settings the Function app uses (names as in shared/settings.py and the Bicep
outputs, so `azd env get-values` and devhost's env file both work), from the environment or from
`--env-file` (a `.env` file; its values win over the environment, since it was named):

    TENANT_REGISTRY                          a path, or blob://<container>/<name> (default)
    AzureWebJobsStorage                      local: a storage connection string (Azurite)
    AzureWebJobsStorage__blobServiceUri      Azure: the blob endpoint, reached as the operator
    ServiceBusAdminConnection                local: the management connection (dev.py up writes it)
    ServiceBusConnection__fullyQualifiedNamespace   Azure: the namespace, reached as the operator
    ServiceBusConnection                     local: printed for the tenant app (one shared key)
    AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZURE_SERVICEBUS_NAMESPACE   Azure: for grants
    TENANT_REGISTRY_REFRESH_SECONDS          how long the app keeps a registry (default 60)
    TENANT_KEYS_FILE                         local: the tenants' proof keys (dev.py up writes it)
    AZURE_KEY_VAULT_ENDPOINT                 Azure: the vault of the tenants' proof keys

In Azure every call signs in as the operator with `DefaultAzureCredential` (azd/az login), never
with a key. Errors: `AdminError` naming the missing setting.

Libraries weighed: python-dotenv (already installed with pydantic-settings) reads the env file, so
quoting follows the one format shells, docker and the Functions tooling share.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import DefaultAzureCredential
from dotenv import dotenv_values
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.admin.grants import NamespaceRef, RoleAssigner
from shared.admin.queues import QueueAdmin, ServiceBusQueueAdmin
from shared.admin.tenants import AdminError
from shared.security.keys import KeyStore
from shared.security.tenant_onboarding import admin_key_store
from shared.storage.blob_store import AzureBlobStore, BlobStore
from shared.tenancy.registry import blob_location
from shared.tenancy.registry_store import RegistryStore


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=True)

    tenant_registry: str = Field(
        default="blob://config/registry.json", validation_alias=AliasChoices("TENANT_REGISTRY")
    )
    storage_connection_string: str | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage")
    )
    storage_blob_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage__blobServiceUri")
    )
    servicebus_admin_connection: str | None = Field(
        default=None, validation_alias=AliasChoices("ServiceBusAdminConnection")
    )
    servicebus_namespace: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ServiceBusConnection__fullyQualifiedNamespace"),
    )
    servicebus_connection: str | None = Field(
        default=None, validation_alias=AliasChoices("ServiceBusConnection")
    )
    subscription_id: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_SUBSCRIPTION_ID")
    )
    resource_group: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_RESOURCE_GROUP")
    )
    servicebus_namespace_name: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_SERVICEBUS_NAMESPACE")
    )
    refresh_seconds: float = Field(
        default=60.0, ge=0, validation_alias=AliasChoices("TENANT_REGISTRY_REFRESH_SECONDS")
    )
    tenant_keys_file: str | None = Field(
        default=None, validation_alias=AliasChoices("TENANT_KEYS_FILE")
    )
    key_vault_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("AZURE_KEY_VAULT_ENDPOINT")
    )

    @classmethod
    def load(cls, env_file: Path | None = None) -> AdminSettings:
        if env_file is None:
            return cls()
        if not env_file.is_file():
            raise AdminError(f"{env_file}: no such env file (is `python3 dev.py up` running?)")
        values: dict[str, Any] = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
        return cls(**values)

    @property
    def local(self) -> bool:
        """Connection strings (devhost, an emulator) rather than identities (Azure)."""
        return self.servicebus_admin_connection is not None


@dataclass
class Connections:
    """What one admin command uses; `async with` closes every client it opened."""

    settings: AdminSettings
    registry: RegistryStore
    queues: QueueAdmin | None
    grants: RoleAssigner | None
    keys: KeyStore | None
    _blobs: BlobStore | None
    _credential: AsyncTokenCredential | None

    @property
    def blobs(self) -> BlobStore | None:
        """The app's storage, when the registry is a blob in it (else None)."""
        return self._blobs

    @classmethod
    def open(cls, settings: AdminSettings, *, need_queues: bool = True) -> Connections:
        credential: AsyncTokenCredential | None = None

        def identity() -> AsyncTokenCredential:
            nonlocal credential
            if credential is None:
                credential = DefaultAzureCredential()
            return credential

        blobs: BlobStore | None = None
        if blob_location(settings.tenant_registry) is not None:
            if settings.storage_connection_string:
                blobs = AzureBlobStore.from_connection_string(settings.storage_connection_string)
            elif settings.storage_blob_uri:
                blobs = AzureBlobStore.from_account_url(settings.storage_blob_uri, identity())
            else:
                raise AdminError(
                    f"TENANT_REGISTRY is {settings.tenant_registry}: set AzureWebJobsStorage "
                    "(local) or AzureWebJobsStorage__blobServiceUri (Azure), or pass --env-file"
                )
        registry = RegistryStore(settings.tenant_registry, blobs)
        queues: QueueAdmin | None = None
        grants: RoleAssigner | None = None
        if need_queues:
            if settings.servicebus_admin_connection:
                queues = ServiceBusQueueAdmin.from_connection_string(
                    settings.servicebus_admin_connection
                )
            elif settings.servicebus_namespace:
                queues = ServiceBusQueueAdmin.from_namespace(
                    settings.servicebus_namespace, identity()
                )
            else:
                raise AdminError(
                    "set ServiceBusAdminConnection (local) or "
                    "ServiceBusConnection__fullyQualifiedNamespace (Azure), or pass --env-file"
                )
            ref = _namespace_ref(settings)
            if not settings.local and ref is not None:
                grants = RoleAssigner(identity(), ref)
        keys = admin_key_store(
            keys_file=settings.tenant_keys_file,
            vault_endpoint=settings.key_vault_endpoint,
            credential=identity() if settings.key_vault_endpoint else None,
        )
        return cls(settings, registry, queues, grants, keys, blobs, credential)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for closable in (self.queues, self.grants, self.keys, self._blobs, self._credential):
            if closable is not None:
                await closable.close()


def _namespace_ref(settings: AdminSettings) -> NamespaceRef | None:
    if settings.subscription_id and settings.resource_group and settings.servicebus_namespace_name:
        return NamespaceRef(
            settings.subscription_id, settings.resource_group, settings.servicebus_namespace_name
        )
    return None
