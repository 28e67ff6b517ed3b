"""The first registry after `azd up`: built from the Bicep's outputs, uploaded by the azd hook.

`infra/hooks/postprovision.py` (azure.yaml `postprovision`) runs `main()` with azd's environment:

1. Azure only (no `AzureWebJobsStorage` connection string): assigns the deploying user
   (`AZURE_PRINCIPAL_ID`, type `AZURE_PRINCIPAL_TYPE`, default User) **Storage Blob Data
   Contributor on the `config` container**: what this one upload needs, nothing wider.
2. Builds the registry from the Bicep outputs, so the Bicep `tenants` parameter and the registry
   cannot disagree:
       POOLED_DEPLOYMENTS  [{name, model, version, sku, capacity}]  -> pooled deployments
                           (capacity in thousands of tokens per minute, as the Bicep takes it)
       TENANTS             [{id, mode, deployments?}]  -> tenants (`tenants.add_tenant`),
                           a dedicated tenant with its own deployments, each with `replies-<id>`
   Endpoints stay `${AZURE_OPENAI_ENDPOINT}`: the app expands them from its settings.
3. Writes it to TENANT_REGISTRY: created if there is none (If-None-Match); otherwise only what is
   missing is added (a pooled deployment, a Bicep tenant), through `RegistryStore.update`, so a
   registry that `shared.admin` or promotion changed since is never overwritten. A 403 while the
   new role assignment propagates (minutes, in Azure) is retried for up to `PROPAGATION_S`.

Run it locally against devhost with the env file's settings and the two outputs set by hand
(tests/e2e/test_onboarding.py does). Exit status 0, or 1 with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.identity.aio import DefaultAzureCredential

from shared.admin.connect import AdminSettings
from shared.admin.grants import STORAGE_BLOB_DATA_CONTRIBUTOR, NamespaceRef, RoleAssigner
from shared.admin.tenants import AdminError, NewDeployment, TenantSpec, add_tenant
from shared.storage import names
from shared.storage.blob_store import AzureBlobStore, BlobStore
from shared.tenancy.registry import IsolationMode, RegistryError, blob_location
from shared.tenancy.registry_store import Document, RegistryStore

PROPAGATION_S = 300.0
_RETRY_S = 15.0


def _json_list(env: Mapping[str, str], name: str) -> list[dict[str, Any]]:
    raw = env.get(name, "").strip() or "[]"
    try:
        value = json.loads(raw)
    except ValueError:
        raise AdminError(f"{name} is not JSON: {raw[:80]!r}") from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise AdminError(f"{name} must be a JSON array of objects")
    return value


def pooled_deployment(d: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": d["name"],
        "kind": "azure_openai",
        "mode": IsolationMode.POOLED.value,
        "endpoint": "${AZURE_OPENAI_ENDPOINT}",
        "model": d["name"],
        "capacity": {"tokens_per_minute": int(d.get("capacity", 1)) * 1000},
    }
    if d.get("version"):
        entry["model_version"] = str(d["version"])
    return entry


def tenant_specs(tenants: list[dict[str, Any]]) -> list[TenantSpec]:
    specs = []
    for t in tenants:
        mode = IsolationMode(t["mode"])
        own = tuple(
            NewDeployment(
                d["name"], int(d.get("capacity", 1)) * 1000, model_version=d.get("version")
            )
            for d in t.get("deployments", [])
        )
        specs.append(TenantSpec(id=t["id"], mode=mode, new_deployments=own))
    return specs


def initial_registry(env: Mapping[str, str]) -> Callable[[Document], None]:
    """A change that adds what the outputs declare and the document lacks."""
    pooled = [pooled_deployment(d) for d in _json_list(env, "POOLED_DEPLOYMENTS")]
    changes = [add_tenant(spec) for spec in tenant_specs(_json_list(env, "TENANTS"))]

    def change(document: Document) -> None:
        document.setdefault("version", 1)
        deployments = document.setdefault("deployments", [])
        document.setdefault("tenants", [])
        known = {d.get("name") for d in deployments}
        deployments[:0] = [d for d in pooled if d["name"] not in known]
        for add in changes:
            add(document)

    return change


async def _grant_upload(env: Mapping[str, str], settings: AdminSettings, out: Any) -> None:
    principal = env.get("AZURE_PRINCIPAL_ID")
    account = env.get("AZURE_STORAGE_ACCOUNT_NAME")
    if not principal or not account or not settings.subscription_id or not settings.resource_group:
        out("grant: skipped (AZURE_PRINCIPAL_ID or the storage account is not known)")
        return
    scope = (
        f"/subscriptions/{settings.subscription_id}/resourceGroups/{settings.resource_group}"
        f"/providers/Microsoft.Storage/storageAccounts/{account}"
        f"/blobServices/default/containers/{names.CONFIG_CONTAINER}"
    )
    ref = NamespaceRef(settings.subscription_id, settings.resource_group, "-")
    async with DefaultAzureCredential() as credential:
        assigner = RoleAssigner(credential, ref)
        try:
            made = await assigner.assign_at(
                scope,
                principal,
                STORAGE_BLOB_DATA_CONTRIBUTOR,
                "deploying user: upload the initial tenant registry (azd postprovision hook)",
                env.get("AZURE_PRINCIPAL_TYPE", "User"),
            )
        finally:
            await assigner.close()
    out(f"grant: Storage Blob Data Contributor on container config ({'made' if made else 'held'})")


async def run(env: Mapping[str, str], out: Any = print) -> Document:
    values: dict[str, Any] = dict(env)
    settings = AdminSettings(**values)
    if not settings.storage_connection_string:
        await _grant_upload(env, settings, out)
    store: BlobStore | None = None
    credential = None
    if blob_location(settings.tenant_registry) is not None:
        if settings.storage_connection_string:
            store = AzureBlobStore.from_connection_string(settings.storage_connection_string)
        elif settings.storage_blob_uri:
            credential = DefaultAzureCredential()
            store = AzureBlobStore.from_account_url(settings.storage_blob_uri, credential)
        else:
            raise AdminError("set AzureWebJobsStorage__blobServiceUri (an output of the Bicep)")
    registry = RegistryStore(settings.tenant_registry, store)
    change = initial_registry(env)
    deadline = asyncio.get_running_loop().time() + PROPAGATION_S
    try:
        while True:
            try:
                empty: Document = {"version": 1, "deployments": [], "tenants": []}
                change(empty)
                if await registry.create(empty):
                    out(f"registry: {settings.tenant_registry} created")
                    return empty
                written = await registry.update(change)
                out(f"registry: {settings.tenant_registry} kept; what the outputs add is in it")
                return written.document
            except HttpResponseError as exc:
                if exc.status_code != 403 or asyncio.get_running_loop().time() > deadline:
                    raise
                out("registry: not allowed yet (the role assignment propagates); retrying ...")
                await asyncio.sleep(_RETRY_S)
    finally:
        if store is not None:
            await store.close()
        if credential is not None:
            await credential.close()


def main(env: Mapping[str, str] | None = None) -> int:
    try:
        asyncio.run(run(dict(os.environ) if env is None else env))
    except (AdminError, RegistryError, AzureError) as exc:
        print(f"postprovision: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
