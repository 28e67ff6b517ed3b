"""The process-wide dependencies of the handlers, built once from settings and reused.

`Runtime.from_settings` picks the adapters the settings describe: a connection string (local
stack) or the managed identity (Azure) for Storage and Service Bus, `MODEL_API_KEY` (local) or
the managed identity for the models. Constructing it does no I/O; clients connect on first use.
Tests build their own `Runtime` from fakes; `set_runtime` installs one for code that calls
`get_runtime()` (the functions in function_app.py).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import DefaultAzureCredential

from shared.inference.model_clients import ModelClients, ModelPort
from shared.inference.rejections import RejectionLog
from shared.inference.replies import ReplySender, ServiceBusReplySender, UnconfiguredReplySender
from shared.inference.results import ResultStore
from shared.inference.usage import UsageMeter
from shared.resilience.client import QuotaPort, ResiliencePolicy, ResilientModelClient
from shared.resilience.quotas import TenantQuotas
from shared.resilience.reschedule import ReschedulePolicy
from shared.resilience.time_budget import message_time_budget, read_host_json
from shared.settings import Settings, get_settings
from shared.storage.blob_store import AzureBlobStore, BlobStore
from shared.tenancy.registry_source import RegistryProvider, RegistrySource
from shared.tenancy.routing import Router


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    store: BlobStore
    registry: RegistryProvider
    models: ModelPort
    replies: ReplySender
    router: Router = field(default_factory=Router)
    clock: Callable[[], datetime] = utc_now
    credential: AsyncTokenCredential | None = None
    policy: ResiliencePolicy = field(default_factory=ResiliencePolicy)
    reschedule_policy: ReschedulePolicy = field(default_factory=ReschedulePolicy)
    quotas: QuotaPort | None = None
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    @cached_property
    def resilient(self) -> ResilientModelClient:
        """The model port behind retries, breakers, rate budgets, failover and tenant quotas."""
        return ResilientModelClient(
            self.models,
            self.registry,
            policy=self.policy,
            router=self.router,
            quotas=self.quotas,
            clock=self.monotonic,
            sleep=self.sleep,
            rng=self.rng,
        )

    @cached_property
    def results(self) -> ResultStore:
        return ResultStore(self.store)

    @cached_property
    def usage(self) -> UsageMeter:
        return UsageMeter(self.store)

    @cached_property
    def rejections(self) -> RejectionLog:
        return RejectionLog(self.store)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        needs_identity = (
            not settings.storage_connection_string
            or not settings.model_api_key
            or not settings.servicebus_connection_string
        )
        credential: AsyncTokenCredential | None = None
        if needs_identity:
            credential = DefaultAzureCredential(
                managed_identity_client_id=settings.managed_identity_client_id
            )
        store = _blob_store(settings, credential)
        replies: ReplySender
        if settings.servicebus_connection_string or settings.servicebus_namespace:
            replies = ServiceBusReplySender.from_settings(settings, credential)
        else:
            replies = UnconfiguredReplySender()
        return cls(
            store=store,
            registry=RegistrySource(
                settings.tenant_registry,
                store,
                refresh_seconds=settings.tenant_registry_refresh_seconds,
            ),
            models=ModelClients(
                api_key=settings.model_api_key,
                credential=None if settings.model_api_key else credential,
                api_version=settings.azure_openai_api_version,
                timeout_s=settings.model_timeout_seconds,
            ),
            replies=replies,
            credential=credential,
            quotas=TenantQuotas(settings.redis_url),
            policy=resilience_policy(settings),
            reschedule_policy=ReschedulePolicy(
                deadline_s=settings.reschedule_deadline_seconds,
                max_reschedules=settings.reschedule_max_attempts,
            ),
        )

    async def close(self) -> None:
        await self.models.close()
        await self.replies.close()
        await self.store.close()
        if self.quotas is not None:
            await self.quotas.close()
        if self.credential is not None:
            await self.credential.close()


APP_ROOT = Path(__file__).resolve().parent.parent


def resilience_policy(settings: Settings) -> ResiliencePolicy:
    """The policy from the app settings, its time budget from host.json (`time_budget`)."""
    root = Path(settings.script_root) if settings.script_root else APP_ROOT
    budget = message_time_budget(
        read_host_json(root / "host.json"), model_timeout_s=settings.model_timeout_seconds
    )
    return ResiliencePolicy(
        time_budget_s=budget,
        max_wait_s=min(settings.resilience_max_wait_seconds, budget),
        max_attempts=settings.resilience_max_attempts,
        default_max_tokens=settings.model_default_max_tokens,
    )


def _blob_store(settings: Settings, credential: AsyncTokenCredential | None) -> BlobStore:
    if settings.storage_connection_string:
        return AzureBlobStore.from_connection_string(settings.storage_connection_string)
    if settings.storage_blob_uri and credential is not None:
        return AzureBlobStore.from_account_url(settings.storage_blob_uri, credential)
    raise ValueError("storage needs AzureWebJobsStorage or AzureWebJobsStorage__blobServiceUri")


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process's runtime, built from get_settings() on first use."""
    global _runtime  # noqa: PLW0603 - the one process-wide instance, replaceable by set_runtime
    if _runtime is None:
        _runtime = Runtime.from_settings(get_settings())
    return _runtime


def set_runtime(runtime: Runtime | None) -> Runtime | None:
    """Install a runtime (tests, the local host); returns the one it replaces (not closed)."""
    global _runtime
    previous, _runtime = _runtime, runtime
    return previous


async def close_runtime() -> None:
    runtime = set_runtime(None)
    if runtime is not None:
        await runtime.close()
