"""Runtime.from_settings picks the adapters the settings describe, without any I/O."""

from __future__ import annotations

import pytest

from devhost.azurite import connection_string
from shared.inference.model_clients import ModelClients
from shared.inference.replies import ServiceBusReplySender, UnconfiguredReplySender
from shared.runtime import Runtime, close_runtime, get_runtime, set_runtime
from shared.security.content_safety import ContentSafetyGuard
from shared.security.tenant_senders import ProvingReplySender
from shared.settings import Settings
from shared.storage.blob_store import AzureBlobStore
from shared.tenancy.registry_source import RegistrySource

LOCAL = {
    "AzureWebJobsStorage": connection_string("127.0.0.1", 10000),
    "ServiceBusConnection": "Endpoint=sb://127.0.0.1:5672/;SharedAccessKeyName=k;"
    "SharedAccessKey=c2VjcmV0;UseDevelopmentEmulator=true",
    "MODEL_API_KEY": "sim-key",
    "TENANT_REGISTRY": "devhost/registry.json",
}


async def test_the_local_stack_needs_no_identity() -> None:
    runtime = Runtime.from_settings(Settings.model_validate(LOCAL))
    assert runtime.credential is None
    assert isinstance(runtime.store, AzureBlobStore)
    # TENANT_PROOF is required by default: the app's own copies leave through a proving port.
    assert isinstance(runtime.replies, ProvingReplySender)
    assert isinstance(runtime.replies.inner, ServiceBusReplySender)
    assert isinstance(runtime.models, ContentSafetyGuard)  # passes unflagged deployments through
    assert isinstance(runtime.models.inner, ModelClients)
    assert isinstance(runtime.registry, RegistrySource)
    await runtime.close()


async def test_azure_uses_the_managed_identity() -> None:
    settings = Settings.model_validate(
        {
            "AzureWebJobsStorage__blobServiceUri": "https://acct.blob.core.windows.net",
            "ServiceBusConnection__fullyQualifiedNamespace": "ns.servicebus.windows.net",
            "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
        }
    )
    runtime = Runtime.from_settings(settings)
    assert runtime.credential is not None
    assert isinstance(runtime.store, AzureBlobStore)
    assert isinstance(runtime.replies, ProvingReplySender)
    assert isinstance(runtime.replies.inner, ServiceBusReplySender)
    await runtime.close()


async def test_without_service_bus_settings_replies_are_refused_not_dropped() -> None:
    settings = Settings.model_validate({k: v for k, v in LOCAL.items() if "ServiceBus" not in k})
    runtime = Runtime.from_settings(settings)
    assert isinstance(runtime.replies, ProvingReplySender)
    assert isinstance(runtime.replies.inner, UnconfiguredReplySender)
    await runtime.close()


def test_storage_is_required() -> None:
    with pytest.raises(ValueError, match="AzureWebJobsStorage"):
        Runtime.from_settings(Settings.model_validate({"MODEL_API_KEY": "k"}))


async def test_the_process_runtime_is_built_once_and_replaceable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.settings import get_settings

    for key, value in LOCAL.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    previous = set_runtime(None)
    try:
        first = get_runtime()
        assert get_runtime() is first
        await close_runtime()
        assert get_runtime() is not first
        await close_runtime()
    finally:
        set_runtime(previous)
        get_settings.cache_clear()
