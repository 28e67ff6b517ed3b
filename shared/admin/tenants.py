"""Changes to the registry document for one tenant: add, remove, set its policy and quota.

Each function returns a `registry_store.Change`: it is applied to a fresh copy of the stored
document inside `RegistryStore.update`, so a concurrent writer's change is re-read and kept, and
`parse_registry` checks the result (isolation, references) before anything is written.

    add_tenant(TenantSpec(id="northwind", mode=POOLED))      tenants += {id, mode, reply_queues}
    add_tenant(TenantSpec("contoso", DEDICATED, new_deployments=(NewDeployment("c-gpt", 10000),)))
                                                              + its own deployment(s)
    remove_tenant("northwind")                                tenants -= it; deployments it owns too
    set_policy("northwind", policy={"log_prompts": True}, quota={"tokens_per_minute": 9000})

Errors: `AdminError` (an id that does not match the registry's TENANT_ID_PATTERN, a tenant that
exists with another mode, an unknown tenant); `RegistryError` from the store when the result is
not a valid registry (the message names the problem).

Every tenant gets its own reply queue `replies-<id>`: the same name Bicep gives the tenants of its
`tenants` parameter (`'replies-${t.id}'` in infra/main.bicep; a test compares them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.contracts import TENANT_ID_PATTERN
from shared.storage import names
from shared.storage.blob_store import BlobStore
from shared.tenancy.registry import IsolationMode
from shared.tenancy.registry_store import Change, Document

REPLY_QUEUE_PREFIX = "replies-"
# Where a new dedicated deployment is served, as the checked-in registries write it.
OPENAI_ENDPOINT = "${AZURE_OPENAI_ENDPOINT}"


class AdminError(Exception):
    """The operation cannot be done as asked; the message says why, for the operator."""


def reply_queue_name(tenant_id: str) -> str:
    return f"{REPLY_QUEUE_PREFIX}{tenant_id}"


def check_tenant_id(tenant_id: str) -> str:
    if not re.fullmatch(TENANT_ID_PATTERN, tenant_id):
        raise AdminError(
            f"{tenant_id!r} is not a valid tenant id: 1-63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return tenant_id


@dataclass(frozen=True)
class NewDeployment:
    """A deployment only this tenant reaches (dedicated), added with it if the registry lacks it;
    in Azure it must exist on the Azure OpenAI account (the Bicep `tenants` parameter)."""

    name: str
    tokens_per_minute: int = 50_000
    requests_per_minute: int | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class TenantSpec:
    id: str
    mode: IsolationMode
    deployments: tuple[str, ...] | None = None
    new_deployments: tuple[NewDeployment, ...] = ()
    quota: Mapping[str, int] = field(default_factory=dict)
    policy: Mapping[str, Any] = field(default_factory=dict)
    fallback_to_pooled: bool = False


def _tenants(document: Document) -> list[dict[str, Any]]:
    tenants = document.setdefault("tenants", [])
    if not isinstance(tenants, list):
        raise AdminError("the registry's `tenants` is not a list")
    return tenants


def find_tenant(document: Document, tenant_id: str) -> dict[str, Any] | None:
    for tenant in _tenants(document):
        if isinstance(tenant, dict) and tenant.get("id") == tenant_id:
            return tenant
    return None


def add_tenant(spec: TenantSpec) -> Change:
    """Add the tenant; a tenant that already exists with the same mode is left as it is (so `add`
    can be run again to create a missing queue or grant), with another mode it is an error."""
    check_tenant_id(spec.id)
    if spec.new_deployments and spec.mode is not IsolationMode.DEDICATED:
        raise AdminError("only a dedicated tenant has deployments of its own")

    def change(document: Document) -> None:
        existing = find_tenant(document, spec.id)
        if existing is not None:
            if existing.get("mode") != spec.mode.value:
                raise AdminError(
                    f"tenant {spec.id!r} exists with mode {existing.get('mode')!r}, not "
                    f"{spec.mode.value!r}; remove it first or keep its mode"
                )
            return
        deployments = document.setdefault("deployments", [])
        known = {d.get("name") for d in deployments if isinstance(d, dict)}
        own = []
        for new in spec.new_deployments:
            own.append(new.name)
            if new.name in known:
                continue
            capacity: dict[str, int] = {"tokens_per_minute": new.tokens_per_minute}
            if new.requests_per_minute:
                capacity["requests_per_minute"] = new.requests_per_minute
            entry: dict[str, Any] = {
                "name": new.name,
                "kind": "azure_openai",
                "mode": IsolationMode.DEDICATED.value,
                "owner_tenant": spec.id,
                "endpoint": OPENAI_ENDPOINT,
                "model": new.name,
                "capacity": capacity,
            }
            if new.model_version:
                entry["model_version"] = new.model_version
            deployments.append(entry)
        tenant: dict[str, Any] = {"id": spec.id, "mode": spec.mode.value}
        listed = list(spec.deployments or ()) + [
            n for n in own if n not in (spec.deployments or ())
        ]
        if listed:
            tenant["deployments"] = listed
        if spec.quota:
            tenant["quota"] = dict(spec.quota)
        tenant["reply_queues"] = [reply_queue_name(spec.id), names.INFERENCE_RESULTS]
        if spec.fallback_to_pooled:
            tenant["fallback_to_pooled"] = True
        if spec.policy:
            tenant["policy"] = dict(spec.policy)
        _tenants(document).append(tenant)

    return change


def remove_tenant(tenant_id: str) -> Change:
    """Remove the tenant and the deployments it owns (no other tenant may reach them)."""
    check_tenant_id(tenant_id)

    def change(document: Document) -> None:
        tenants = _tenants(document)
        if find_tenant(document, tenant_id) is None:
            raise AdminError(f"no tenant {tenant_id!r} in the registry")
        document["tenants"] = [t for t in tenants if t.get("id") != tenant_id]
        document["deployments"] = [
            d for d in document.get("deployments", []) if d.get("owner_tenant") != tenant_id
        ]

    return change


def set_policy(
    tenant_id: str,
    *,
    policy: Mapping[str, Any] | None = None,
    quota: Mapping[str, int | None] | None = None,
) -> Change:
    """Change some fields of the tenant's data policy and quota (a None quota value removes that
    limit); the fields not named keep their values."""
    check_tenant_id(tenant_id)

    def change(document: Document) -> None:
        tenant = find_tenant(document, tenant_id)
        if tenant is None:
            raise AdminError(f"no tenant {tenant_id!r} in the registry")
        if policy:
            tenant["policy"] = {**tenant.get("policy", {}), **policy}
        if quota:
            merged = {**tenant.get("quota", {}), **quota}
            tenant["quota"] = {k: v for k, v in merged.items() if v is not None}

    return change


def owned_deployments(document: Document, tenant_id: str) -> list[str]:
    return [
        str(d.get("name"))
        for d in document.get("deployments", [])
        if isinstance(d, dict) and d.get("owner_tenant") == tenant_id
    ]


async def leftover_data(store: BlobStore, tenant_id: str) -> list[str]:
    """The app's containers that still hold blobs under `<tenant_id>/` (a removed tenant's data
    stays: results, usage, feedback, training pool, jobs, models). A new tenant must not take it
    over by reusing the id unknowingly."""
    held = []
    for container in names.CONTAINERS:
        if container == names.CONFIG_CONTAINER:
            continue
        if await store.list_names(container, f"{tenant_id}/"):
            held.append(container)
    return held
