"""Sending a `finetune.request`, and the cool-down record every sender respects.

Drift detection (`shared.drift.monitor`) and training uploads (`shared.finetune.uploads`) both ask
for fine-tuning the same way:

- the request goes to the `finetune-jobs` queue with `message_id = correlation_id = job_key`
  (Service Bus duplicate detection and the job intake, idempotent by job key, drop a repeat),
  `subject` and the application property `type` = `finetune.request`, and `tenant_id`;
- then the request itself is written to `drift/<tenant>/state/_tuning.json`, the tenant's
  cool-down record: no sender asks again for that tenant before `requested_at` plus the policy's
  `tuning_cooldown_hours`, whatever the reason of either request.

`training_scope` and `model_refs` are the shared rules for what a request names: a pooled
tenant's model is the shared one (`shared` scope), anyone else's its own (`tenant` scope); `base`
is the serving deployment's base when it is a tuned one, else the serving deployment itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import ValidationError

from shared.contracts import FINETUNE_REQUEST_TYPE, FinetuneRequest
from shared.contracts.finetune import DatasetRef, FinetuneReason, ModelRef
from shared.drift.training_set import TrainingSet
from shared.feedback.consent import TrainingScope
from shared.inference.replies import Reply, ReplySender
from shared.security.paths import tenant_path
from shared.storage import names
from shared.storage.blob_store import BlobStore
from shared.tenancy.registry import IsolationMode, Registry, Tenant


def training_scope(tenant: Tenant) -> TrainingScope:
    """`shared` for a pooled tenant (its model serves others too), `tenant` otherwise."""
    return "shared" if tenant.mode is IsolationMode.POOLED else "tenant"


def tuning_record_name(tenant_id: str) -> str:
    """The cool-down record's name in the drift container: `<tenant>/state/_tuning.json`."""
    return tenant_path(tenant_id, "state", "_tuning", suffix=".json")


def model_refs(registry: Registry, serving: str) -> tuple[ModelRef, ModelRef]:
    """(base, current) for a request whose tenant is served by the deployment `serving`; a name
    the registry does not know is named as it is, without model or version."""
    deployment = registry.deployment_by_name.get(serving)
    base_name = deployment.base if deployment and deployment.base else serving
    base = registry.deployment_by_name.get(base_name)
    return (
        ModelRef(
            deployment=base_name,
            model=base.model if base else None,
            model_version=base.model_version if base else None,
        ),
        ModelRef(
            deployment=serving,
            model=deployment.model if deployment else None,
            model_version=deployment.model_version if deployment else None,
        ),
    )


def finetune_request(
    registry: Registry,
    tenant: Tenant,
    *,
    job_key: str,
    serving: str,
    dataset: TrainingSet,
    reason: FinetuneReason,
    requested_at: datetime,
) -> FinetuneRequest:
    """The request to tune the model that serves `tenant` through the deployment `serving` on
    `dataset` (built and stored), in the tenant's `training_scope`. Raises pydantic's
    ValidationError for a malformed job key or an empty dataset."""
    base, current = model_refs(registry, serving)
    return FinetuneRequest(
        job_key=job_key,
        tenant_id=tenant.id,
        scope=training_scope(tenant),
        base=base,
        current=current,
        dataset=DatasetRef(
            blob=dataset.blob,
            manifest=dataset.manifest,
            sha256=dataset.sha256,
            examples=dataset.examples,
        ),
        reason=reason,
        tenants_in_dataset=dataset.tenants,
        requested_at=requested_at,
    )


def serving_deployment(registry: Registry, tenant: Tenant) -> str | None:
    """The deployment that serves the tenant now, for a request that no model key names (a
    training upload): its tuned deployment, else the first it may use (its own before pooled
    ones, then by priority, then document order); None when it may use none."""
    if tenant.mode is IsolationMode.TUNED and tenant.tuned_deployment:
        return tenant.tuned_deployment
    allowed = registry.allowed_for(tenant)
    if not allowed:
        return None
    return min(allowed, key=lambda d: (d.owner_tenant != tenant.id, d.priority)).name


class FinetuneRequests:
    """Sends requests and keeps the cool-down record (in `container`, the drift container)."""

    def __init__(
        self, store: BlobStore, sender: ReplySender, *, container: str = names.DRIFT_CONTAINER
    ) -> None:
        self._store = store
        self._sender = sender
        self._container = container

    async def last_requested_at(self, tenant_id: str) -> datetime | None:
        """When the tenant's last request was sent; None if never (or the record is unreadable)."""
        blob = await self._store.read(self._container, tuning_record_name(tenant_id))
        if blob is None:
            return None
        try:
            return FinetuneRequest.model_validate_json(blob.data).requested_at
        except ValidationError:
            return None

    async def cool_down_until(self, tenant: Tenant, now: datetime) -> datetime | None:
        """The end of the tenant's cool-down when `now` is inside it, else None."""
        last = await self.last_requested_at(tenant.id)
        if last is None:
            return None
        until = last + timedelta(hours=tenant.policy.tuning_cooldown_hours)
        return until if now < until else None

    async def send(self, request: FinetuneRequest) -> None:
        """Send `request` to `finetune-jobs`, then record it as the tenant's last request.
        Raises what the sender or the store raise (the caller's trigger retries; a repeat is
        dropped by message id)."""
        await self._sender.send(
            Reply(
                queue=names.FINETUNE_JOBS,
                body=request.model_dump_json().encode("utf-8"),
                correlation_id=request.job_key,
                message_id=request.job_key,
                subject=FINETUNE_REQUEST_TYPE,
                application_properties={
                    "tenant_id": request.tenant_id,
                    "type": FINETUNE_REQUEST_TYPE,
                },
            )
        )
        await self._store.put(
            self._container,
            tuning_record_name(request.tenant_id),
            request.model_dump_json().encode("utf-8"),
        )
