"""A tenant's model versions: register a candidate, promote it, roll back; the timeline.

Every trained model becomes a new tuned deployment in the registry, owned by the tenant:
`<tenant>-ft-v<N>` with `model_version` `ft-<N>`, N one more than the tenant's highest so far. The
registry keeps every version (older ones serve nothing: routing uses only the promoted
`tuned_deployment`), so a rollback is one switch back. Registration does not change what serves.

`promote` switches the tenant's `tuned_deployment` to the candidate in one ETag-guarded registry
write (`RegistryStore.update`): every reader sees the old route or the new one, never a mix. A
pooled tenant whose first tuned model is promoted becomes a `tuned` tenant (its candidates then
stay its own: the registry's isolation checks refuse any other tenant naming them). `rollback`
returns to the version promoted before the current one (or, if there was none, to the base
models). Both append a line to the tenant's timeline `jobs/<tenant>/_models.jsonl` with who, why,
when, from and to; the registry write comes first, so the timeline never claims a switch that did
not happen (a crash between the two leaves the switch unrecorded, not invented).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from shared.finetune.backends.port import ServedModel
from shared.finetune.jobs import Candidate
from shared.security.paths import tenant_path
from shared.storage import names
from shared.storage.blob_store import BlobStore
from shared.tenancy.registry import IsolationMode, Registry, RegistryError, parse_registry
from shared.tenancy.registry_store import Document, RegistryStore

_VERSION: Final = re.compile(r"^ft-(\d{1,6})$")


class VersionError(Exception):
    """The switch cannot be made (unknown tenant or deployment, nothing to roll back to)."""


class TimelineEntry(BaseModel):
    """One line of `jobs/<tenant>/_models.jsonl`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime
    action: Literal["registered", "promoted", "rolled_back", "rejected"]
    deployment: str | None
    model_version: str | None
    previous: str | None
    by: str
    why: str
    job_id: str | None = None


def timeline_blob(tenant_id: str) -> str:
    return tenant_path(tenant_id, "_models", suffix=".jsonl")


def next_version(registry: Registry, tenant_id: str) -> int:
    """One more than the highest `ft-N` among the tenant's tuned deployments."""
    highest = 0
    for d in registry.deployments:
        if d.owner_tenant == tenant_id and d.mode is IsolationMode.TUNED:
            found = _VERSION.match(d.model_version or "")
            if found:
                highest = max(highest, int(found.group(1)))
    return highest + 1


class ModelVersions:
    def __init__(
        self,
        registry: RegistryStore,
        store: BlobStore,
        *,
        clock: Callable[[], datetime],
        container: str = names.JOBS_CONTAINER,
    ) -> None:
        self._registry = registry
        self._store = store
        self._clock = clock
        self._container = container

    async def register(
        self,
        tenant_id: str,
        *,
        base: str,
        served: ServedModel,
        job_id: str,
    ) -> Candidate:
        """Add the served model as the tenant's next tuned version (idempotent: a deployment of
        the tenant that already serves `served.model` is returned as it is)."""
        chosen: dict[str, str] = {}

        def change(document: Document) -> None:
            deployments: list[dict[str, Any]] = document["deployments"]
            for d in deployments:
                if d.get("owner_tenant") == tenant_id and d.get("model") == served.model:
                    chosen.update(name=d["name"], version=str(d.get("model_version")))
                    return
            current = _parsed(document)
            number = next_version(current, tenant_id)
            base_entry = next((d for d in deployments if d.get("name") == base), None)
            if base_entry is None:
                raise RegistryError(f"base deployment {base!r} is not in the registry")
            name = _free_name(current, f"{tenant_id}-ft-v{number}")
            deployments.append(
                {
                    "name": name,
                    "kind": served.kind,
                    "mode": "tuned",
                    "owner_tenant": tenant_id,
                    "base": base,
                    "endpoint": served.endpoint,
                    "model": served.model,
                    "capacity": base_entry.get("capacity", {"tokens_per_minute": 10_000}),
                    "priority": 0,
                    "model_version": f"ft-{number}",
                }
            )
            chosen.update(name=name, version=f"ft-{number}")

        await self._registry.update(change)
        candidate = Candidate(
            deployment=chosen["name"], model_version=chosen["version"], model=served.model
        )
        await self._record(
            tenant_id,
            TimelineEntry(
                at=self._clock(),
                action="registered",
                deployment=candidate.deployment,
                model_version=candidate.model_version,
                previous=None,
                by="watcher",
                why=f"trained by job {job_id}",
                job_id=job_id,
            ),
        )
        return candidate

    async def current(self, tenant_id: str) -> str | None:
        """The tenant's promoted tuned deployment (None: served by base models)."""
        tenant = (await self._registry.read()).registry.tenant(tenant_id)
        if tenant is None:
            raise VersionError(f"tenant {tenant_id!r} is not registered")
        return tenant.tuned_deployment

    async def promote(
        self, tenant_id: str, deployment: str, *, by: str, why: str, job_id: str | None = None
    ) -> TimelineEntry:
        """Serve `deployment` (the tenant's own tuned deployment) to the tenant from now on."""
        previous: list[str | None] = []

        def change(document: Document) -> None:
            tenant = _tenant(document, tenant_id)
            target = next((d for d in document["deployments"] if d.get("name") == deployment), None)
            if target is None or target.get("owner_tenant") != tenant_id:
                raise VersionError(f"{deployment!r} is not a tuned deployment of {tenant_id!r}")
            previous.append(tenant.get("tuned_deployment"))
            _switch(tenant, target)

        await self._update(change)
        return await self._record(
            tenant_id,
            TimelineEntry(
                at=self._clock(),
                action="promoted",
                deployment=deployment,
                model_version=await self._version_of(deployment),
                previous=previous[-1],
                by=by,
                why=why,
                job_id=job_id,
            ),
        )

    async def rollback(self, tenant_id: str, *, by: str, why: str) -> TimelineEntry:
        """Serve what was promoted before the current version (None: the base models)."""
        entries = await self.timeline(tenant_id)
        current = await self.current(tenant_id)
        promotion = next(
            (e for e in reversed(entries) if e.action == "promoted" and e.deployment == current),
            None,
        )
        if current is None or promotion is None:
            raise VersionError(f"tenant {tenant_id!r} has no promoted version to roll back")
        back_to = promotion.previous

        def change(document: Document) -> None:
            tenant = _tenant(document, tenant_id)
            if tenant.get("tuned_deployment") != current:
                raise VersionError(f"{tenant_id!r} changed version meanwhile; look again")
            if back_to is None:
                tenant.pop("tuned_deployment", None)
                return
            target = next((d for d in document["deployments"] if d.get("name") == back_to), None)
            if target is None:
                raise VersionError(f"{back_to!r} is no longer in the registry")
            _switch(tenant, target)

        await self._update(change)
        return await self._record(
            tenant_id,
            TimelineEntry(
                at=self._clock(),
                action="rolled_back",
                deployment=back_to,
                model_version=await self._version_of(back_to) if back_to else None,
                previous=current,
                by=by,
                why=why,
                job_id=promotion.job_id,
            ),
        )

    async def note_rejected(
        self, tenant_id: str, candidate: Candidate, *, why: str, job_id: str
    ) -> TimelineEntry:
        return await self._record(
            tenant_id,
            TimelineEntry(
                at=self._clock(),
                action="rejected",
                deployment=candidate.deployment,
                model_version=candidate.model_version,
                previous=None,
                by="gate",
                why=why,
                job_id=job_id,
            ),
        )

    async def timeline(self, tenant_id: str) -> list[TimelineEntry]:
        blob = await self._store.read(self._container, timeline_blob(tenant_id))
        if blob is None:
            return []
        return [
            TimelineEntry.model_validate_json(line)
            for line in blob.data.decode("utf-8").splitlines()
            if line.strip()
        ]

    async def _update(self, change: Callable[[Document], None]) -> None:
        try:
            await self._registry.update(change)
        except RegistryError as exc:
            raise VersionError(str(exc)) from None

    async def _version_of(self, deployment: str) -> str | None:
        found = (await self._registry.read()).registry.deployment_by_name.get(deployment)
        return found.model_version if found else None

    async def _record(self, tenant_id: str, entry: TimelineEntry) -> TimelineEntry:
        line = json.dumps(entry.model_dump(mode="json"), separators=(",", ":")) + "\n"
        await self._store.append(self._container, timeline_blob(tenant_id), line.encode("utf-8"))
        return entry


def _parsed(document: Document) -> Registry:
    """The document as a reader sees it (endpoints unexpanded: only names and versions count)."""
    return parse_registry(json.dumps(document), env={})


def _free_name(registry: Registry, wanted: str) -> str:
    name, n = wanted, 1
    while name in registry.deployment_by_name:
        n += 1
        name = f"{wanted}-{n}"
    return name


def _tenant(document: Document, tenant_id: str) -> dict[str, Any]:
    tenants: list[dict[str, Any]] = document["tenants"]
    for t in tenants:  # the document's own dicts: changed in place
        if t.get("id") == tenant_id:
            return t
    raise VersionError(f"tenant {tenant_id!r} is not registered")


def _switch(tenant: dict[str, Any], target: dict[str, Any]) -> None:
    """Route the tenant to `target` (a tuned deployment); a listed tenant lists it and its base."""
    tenant["mode"] = "tuned"
    tenant["tuned_deployment"] = target["name"]
    listed = tenant.get("deployments")
    if isinstance(listed, list):
        for needed in (target["name"], target.get("base")):
            if needed and needed not in listed:
                listed.append(needed)
