"""What operators and tenant apps ask of the fine-tuning loop over HTTP (function_app.py).

- `GET /api/tenants/{tenant_id}/models` (function key): the tenant's model timeline (registered,
  promoted, rejected, rolled back; who, why, when), the version serving now, and its jobs with
  their states, evaluation numbers and history. 404 for an unknown tenant.
- `POST /api/tenants/{tenant_id}/models/rollback` (master key), body `{"by": "...", "why": "..."}`:
  serve the version promoted before the current one; 200 with the timeline entry, 409 when there is
  nothing to roll back, 400 for a body without `by` and `why`, 404 for an unknown tenant.

Bodies are JSON; errors are `{"error": <code>, "detail": <text>}`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from shared.contracts import TENANT_ID_PATTERN
from shared.finetune.jobs import JobState, JobStore
from shared.finetune.versions import ModelVersions, VersionError
from shared.tenancy.registry_source import RegistryProvider
from shared.tenancy.registry_store import RegistryStore

_MAX_TEXT = 500


class _Runtime(Protocol):
    @property
    def registry(self) -> RegistryProvider: ...
    @property
    def jobs(self) -> JobStore: ...
    @property
    def model_versions(self) -> ModelVersions: ...
    @property
    def registry_store(self) -> RegistryStore: ...


def _error(status: int, code: str, detail: str) -> tuple[int, str]:
    return status, json.dumps({"error": code, "detail": detail})


async def _known(runtime: _Runtime, tenant_id: str) -> bool:
    if not re.match(TENANT_ID_PATTERN, tenant_id):
        return False
    return (await runtime.registry.get()).tenant(tenant_id) is not None


async def models_view(runtime: _Runtime, tenant_id: str) -> tuple[int, str]:
    if not await _known(runtime, tenant_id):
        return _error(404, "unknown_tenant", "the tenant is not registered")
    timeline = await runtime.model_versions.timeline(tenant_id)
    jobs = await runtime.jobs.list(tenant_id)
    registry = (await runtime.registry_store.read()).registry  # as stored now, not as cached
    tenant = registry.tenant(tenant_id)
    serving = tenant.tuned_deployment if tenant else None
    body: dict[str, Any] = {
        "tenant_id": tenant_id,
        "serving": serving,
        "serving_version": (
            registry.deployment_by_name[serving].model_version
            if serving and serving in registry.deployment_by_name
            else None
        ),
        "timeline": [e.model_dump(mode="json") for e in timeline],
        "jobs": [
            {
                "job_id": j.job_id,
                "state": j.state.value,
                "backend": j.backend,
                "train_examples": j.train_examples,
                "heldout_examples": j.heldout_examples,
                "gpu_minutes": j.gpu_minutes,
                "metrics": j.metrics,
                "lineage": j.lineage,
                "candidate": j.candidate.model_dump() if j.candidate else None,
                "evaluation": j.evaluation,
                "history": [h.model_dump(mode="json") for h in j.history],
            }
            for j in jobs
        ],
    }
    return 200, json.dumps(body)


async def rollback_now(runtime: _Runtime, tenant_id: str, body: bytes) -> tuple[int, str]:
    if not await _known(runtime, tenant_id):
        return _error(404, "unknown_tenant", "the tenant is not registered")
    try:
        document = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return _error(400, "invalid_json", "the body is not JSON")
    by, why = (document.get(k) if isinstance(document, dict) else None for k in ("by", "why"))
    if not (isinstance(by, str) and by.strip() and isinstance(why, str) and why.strip()):
        return _error(400, "invalid_request", "give `by` (who) and `why` (the reason) as text")
    try:
        entry = await runtime.model_versions.rollback(
            tenant_id, by=by.strip()[:_MAX_TEXT], why=why.strip()[:_MAX_TEXT]
        )
    except VersionError as exc:
        return _error(409, "nothing_to_roll_back", str(exc))
    if entry.job_id:
        job = await runtime.jobs.find(tenant_id, entry.job_id)
        if job is not None and job.state is JobState.PROMOTED:
            await runtime.jobs.transition(
                tenant_id,
                entry.job_id,
                JobState.ROLLED_BACK,
                at=entry.at,
                reason=f"rolled back by {entry.by}: {entry.why}",
                by=entry.by,
            )
    return 200, json.dumps(entry.model_dump(mode="json"))
