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
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import DefaultAzureCredential

from shared.batch.fanout import ReplyRowSender, RowSender, ServiceBusRowSender
from shared.batch.files import files_for
from shared.batch.policy import BatchPolicy
from shared.batch.service import Batches
from shared.drift.input_drift import prompt_features
from shared.drift.monitor import DriftMonitor
from shared.feedback.consent import Consent
from shared.feedback.handler import FeedbackIntake
from shared.feedback.inference_log import InferenceLog
from shared.feedback.store import FeedbackStore
from shared.finetune.admission import Admission
from shared.finetune.gate import EvaluationGate, GatePolicy
from shared.finetune.intake import FinetuneIntake
from shared.finetune.jobs import JobStore
from shared.finetune.launcher import Backends, Launcher
from shared.finetune.training_intake import TrainingUploads
from shared.finetune.versions import ModelVersions
from shared.finetune.watcher import JobWatcher
from shared.finetune.wiring import backends_from_settings
from shared.inference.model_clients import ModelClients, ModelPort
from shared.inference.rejections import RejectionLog
from shared.inference.replies import ReplySender, ServiceBusReplySender, UnconfiguredReplySender
from shared.inference.results import ResultStore
from shared.inference.usage import UsageMeter
from shared.resilience.client import QuotaPort, ResiliencePolicy, ResilientModelClient
from shared.resilience.quotas import TenantQuotas
from shared.resilience.reschedule import ReschedulePolicy
from shared.resilience.time_budget import message_time_budget, read_host_json
from shared.security.content_safety import ContentSafetyGuard, content_checker
from shared.security.tenant_check import TenantProofs
from shared.security.tenant_wiring import proving_senders, tenant_proofs_from_settings
from shared.settings import Settings, get_settings
from shared.storage.blob_store import AzureBlobStore, BlobStore
from shared.tenancy.registry_source import RegistryProvider, RegistrySource
from shared.tenancy.registry_store import RegistryStore
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
    drift_check_every: int = 50
    drift_window_days: int = 30
    row_sender: RowSender | None = None
    batch_policy: BatchPolicy = field(default_factory=BatchPolicy)
    registry_reference: str | None = None
    """Where the registry document lives, for its writers (promotion, rollback); None: read-only."""
    finetune_backends: Backends = field(default_factory=lambda: Backends({}))
    finetune_max_running: int = 1
    gate_policy: GatePolicy = field(default_factory=GatePolicy)
    judge_deployment: str | None = None
    tenant_proofs: TenantProofs = field(default_factory=TenantProofs)
    """The tenant proof check (shared/security/tenant_check.py); a Runtime built by hand has it
    off, one built from settings as TENANT_PROOF says (required by default)."""

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

    @cached_property
    def batches(self) -> Batches:
        """Batch uploads: intake and fan-out, the handler's row hook, progress."""
        return Batches(
            store=self.store,
            files=files_for(self.store),
            registry=self.registry,
            sender=self.row_sender or ReplyRowSender(self.replies),
            clock=self.clock,
            policy=self.batch_policy,
            default_max_tokens=self.policy.default_max_tokens,
        )

    @cached_property
    def consent(self) -> Consent:
        return Consent()

    @cached_property
    def training_uploads(self) -> TrainingUploads:
        """Training data uploads: checked, scrubbed into the tenant's pool, maybe a fine-tune."""
        return TrainingUploads(
            store=self.store,
            files=files_for(self.store),
            registry=self.registry,
            consent=self.consent,
            sender=self.replies,
            clock=self.clock,
        )

    @cached_property
    def registry_store(self) -> RegistryStore:
        if self.registry_reference is None:
            raise RuntimeError("this runtime has no registry_reference: the registry is read-only")
        return RegistryStore(self.registry_reference, self.store)

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.store)

    @cached_property
    def admission(self) -> Admission:
        return Admission(self.store, max_running=self.finetune_max_running, clock=self.clock)

    @cached_property
    def launcher(self) -> Launcher:
        return Launcher(self.jobs, self.admission, self.finetune_backends, clock=self.clock)

    @cached_property
    def model_versions(self) -> ModelVersions:
        return ModelVersions(self.registry_store, self.store, clock=self.clock)

    @cached_property
    def finetune_intake(self) -> FinetuneIntake:
        """finetune-jobs: validate, record, admit and submit (or wait) each fine-tune request."""
        return FinetuneIntake(
            store=self.store,
            registry=self.registry,
            jobs=self.jobs,
            launcher=self.launcher,
            sender=self.replies,
            rejections=self.rejections,
            clock=self.clock,
        )

    @cached_property
    def job_watcher(self) -> JobWatcher:
        """The timer's work: advance jobs, evaluate and promote candidates, fill GPU slots."""
        return JobWatcher(
            store=self.store,
            jobs=self.jobs,
            admission=self.admission,
            backends=self.finetune_backends,
            launcher=self.launcher,
            versions=self.model_versions,
            registry=self.registry_store,
            gate=EvaluationGate(
                self.resilient, judge=self.judge_deployment, policy=self.gate_policy
            ),
            clock=self.clock,
        )

    @cached_property
    def inference_log(self) -> InferenceLog:
        return InferenceLog(self.store, self.consent)

    @cached_property
    def feedback_store(self) -> FeedbackStore:
        return FeedbackStore(self.store)

    @cached_property
    def drift(self) -> DriftMonitor:
        return DriftMonitor(
            store=self.store,
            registry=self.registry,
            feedback=self.feedback_store,
            inference_log=self.inference_log,
            sender=self.replies,
            clock=self.clock,
            window_days=self.drift_window_days,
        )

    @cached_property
    def feedback(self) -> FeedbackIntake:
        return FeedbackIntake(
            registry=self.registry,
            results=self.results,
            feedback=self.feedback_store,
            consent=self.consent,
            rejections=self.rejections,
            clock=self.clock,
            drift_check=self._drift_check,
            check_every=self.drift_check_every,
            proofs=self.tenant_proofs,
        )

    async def _drift_check(self, tenant_id: str, key: str) -> object:
        return await self.drift.evaluate(tenant_id, key, trigger="feedback")

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
        row_sender: RowSender | None = None
        if settings.servicebus_connection_string or settings.servicebus_namespace:
            replies = ServiceBusReplySender.from_settings(settings, credential)
            row_sender = ServiceBusRowSender.from_settings(settings, credential)
        else:
            replies = UnconfiguredReplySender()
        proofs = tenant_proofs_from_settings(settings, credential, store=store, clock=utc_now)
        replies, row_sender = proving_senders(proofs, replies, row_sender)
        runtime = cls(
            store=store,
            registry=RegistrySource(
                settings.tenant_registry,
                store,
                refresh_seconds=settings.tenant_registry_refresh_seconds,
            ),
            models=ContentSafetyGuard(
                ModelClients(
                    api_key=settings.model_api_key,
                    credential=None if settings.model_api_key else credential,
                    api_version=settings.azure_openai_api_version,
                    timeout_s=settings.model_timeout_seconds,
                ),
                content_checker(settings, credential),
            ),
            replies=replies,
            credential=credential,
            quotas=TenantQuotas(settings.redis_url),
            policy=resilience_policy(settings),
            reschedule_policy=ReschedulePolicy(
                deadline_s=settings.reschedule_deadline_seconds,
                max_reschedules=settings.reschedule_max_attempts,
            ),
            row_sender=row_sender,
            batch_policy=BatchPolicy(
                max_upload_bytes=settings.batch_max_upload_bytes,
                quota_share=settings.batch_quota_share,
            ),
            registry_reference=settings.tenant_registry,
            finetune_backends=backends_from_settings(settings, store, credential),
            finetune_max_running=settings.finetune_max_running_jobs,
            gate_policy=GatePolicy(
                margin=settings.finetune_gate_margin,
                confidence=settings.finetune_gate_confidence,
            ),
            judge_deployment=settings.finetune_judge_deployment,
            tenant_proofs=proofs,
        )
        runtime.warm_up()
        return runtime

    def warm_up(self) -> threading.Thread:
        """Build what is slow on first use (the PII scrubber, about 1 s of CPU; the language
        identifier of the prompt features, about 0.75 s) in a background thread, so the first
        answer of a new instance does not wait for them."""

        def build() -> None:
            _ = self.consent.scrubber
            prompt_features("warm up", None)

        thread = threading.Thread(target=build, name="warm-up", daemon=True)
        thread.start()
        return thread

    async def close(self) -> None:
        await self.models.close()
        await self.replies.close()
        if self.row_sender is not None:
            await self.row_sender.close()
        await self.store.close()
        if self.quotas is not None:
            await self.quotas.close()
        await self.tenant_proofs.close()
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
        batch_quota_share=settings.batch_quota_share,
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
