"""Tenant changes to the registry document through RegistryStore, on a copy of devhost's."""

# ruff: noqa: ASYNC240 - small local files read in tests

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

import pytest

from shared.admin.tenants import (
    AdminError,
    NewDeployment,
    TenantSpec,
    add_tenant,
    remove_tenant,
    reply_queue_name,
    set_policy,
)
from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import IsolationMode, RegistryError
from shared.tenancy.registry_store import RegistryStore

ROOT = Path(__file__).resolve().parents[3]
ENV = {"AZURE_OPENAI_ENDPOINT": "http://sim", "AZURE_AI_SERVICES_ENDPOINT": "http://sim/models"}


@pytest.fixture
def store(tmp_path: Path) -> RegistryStore:
    path = tmp_path / "registry.json"
    shutil.copy(ROOT / "devhost" / "registry.json", path)
    return RegistryStore(str(path), env=ENV)


async def test_a_pooled_tenant_is_added_with_its_own_reply_queue(store: RegistryStore) -> None:
    written = await store.update(add_tenant(TenantSpec("northwind", IsolationMode.POOLED)))
    tenant = written.registry.tenant("northwind")
    assert tenant is not None
    assert tenant.reply_queues == ("replies-northwind", "inference-results")
    assert {d.name for d in written.registry.allowed_for(tenant)} == {
        "gpt-4o-mini-pool-a",
        "gpt-4o-mini-pool-b",
        "phi-4-pool",
    }


async def test_adding_again_changes_nothing_and_another_mode_is_refused(
    store: RegistryStore,
) -> None:
    spec = TenantSpec("northwind", IsolationMode.POOLED, quota={"tokens_per_minute": 900})
    first = await store.update(add_tenant(spec))
    again = await store.update(add_tenant(spec))
    assert again.document == first.document
    with pytest.raises(AdminError, match="exists with mode 'pooled'"):
        await store.update(add_tenant(TenantSpec("northwind", IsolationMode.TUNED)))


@pytest.mark.parametrize("bad", ["Northwind", "-x", "x_y", "a" * 64, "", "tenant/../x"])
def test_an_id_outside_the_registry_pattern_is_refused(bad: str) -> None:
    with pytest.raises(AdminError, match="not a valid tenant id"):
        add_tenant(TenantSpec(bad, IsolationMode.POOLED))


async def test_a_dedicated_tenant_gets_its_own_deployment_and_loses_it_on_removal(
    store: RegistryStore,
) -> None:
    spec = TenantSpec(
        "globex", IsolationMode.DEDICATED, new_deployments=(NewDeployment("globex-gpt", 9000),)
    )
    written = await store.update(add_tenant(spec))
    own = written.registry.deployment_by_name["globex-gpt"]
    assert (own.owner_tenant, own.mode, own.capacity.tokens_per_minute) == (
        "globex",
        IsolationMode.DEDICATED,
        9000,
    )
    stored = json.loads(Path(store.reference).read_text())
    assert stored["deployments"][-1]["endpoint"] == "${AZURE_OPENAI_ENDPOINT}"
    removed = await store.update(remove_tenant("globex"))
    assert removed.registry.tenant("globex") is None
    assert "globex-gpt" not in removed.registry.deployment_by_name


async def test_a_tenant_cannot_be_given_another_tenants_deployment(store: RegistryStore) -> None:
    before = Path(store.reference).read_bytes()
    spec = TenantSpec("mallory", IsolationMode.POOLED, deployments=("contoso-gpt-4o",))
    with pytest.raises(RegistryError, match="contoso-gpt-4o"):
        await store.update(add_tenant(spec))
    assert Path(store.reference).read_bytes() == before


async def test_set_policy_changes_only_the_named_fields(store: RegistryStore) -> None:
    written = await store.update(
        set_policy(
            "tailwind",
            policy={"allow_tuning": True},
            quota={"tokens_per_minute": 1234, "max_concurrent": None},
        )
    )
    tenant = written.registry.tenant("tailwind")
    assert tenant is not None
    assert tenant.policy.allow_tuning is True
    assert tenant.policy.log_prompts is True  # kept
    assert tenant.quota.tokens_per_minute == 1234
    assert tenant.quota.max_concurrent is None  # removed
    assert tenant.quota.requests_per_minute == 300  # kept


async def test_unknown_tenants_are_named_in_the_error(store: RegistryStore) -> None:
    with pytest.raises(AdminError, match="no tenant 'nobody'"):
        await store.update(remove_tenant("nobody"))
    with pytest.raises(AdminError, match="no tenant 'nobody'"):
        await store.update(set_policy("nobody", policy={"log_prompts": True}))


def test_onboarding_under_concurrent_writers_loses_no_tenant(tmp_path: Path) -> None:
    """Twelve operators add twelve tenants at once while a thirteenth changes a policy."""
    path = tmp_path / "registry.json"
    shutil.copy(ROOT / "devhost" / "registry.json", path)
    ids = [f"t{i:02d}" for i in range(12)]

    def write(change: object) -> None:
        asyncio.run(RegistryStore(str(path), env=ENV, attempts=60).update(change))  # type: ignore[arg-type]

    changes: list[object] = [add_tenant(TenantSpec(t, IsolationMode.POOLED)) for t in ids]
    changes.append(set_policy("contoso", quota={"tokens_per_minute": 777}))
    threads = [threading.Thread(target=write, args=(c,)) for c in changes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    document = json.loads(path.read_text())
    stored = {t["id"]: t for t in document["tenants"]}
    assert set(ids) <= set(stored)
    assert stored["contoso"]["quota"]["tokens_per_minute"] == 777


async def test_blob_registry_racing_writer_is_reapplied_not_overwritten() -> None:
    blobs = MemoryBlobStore()
    await blobs.put("config", "registry.json", (ROOT / "devhost" / "registry.json").read_bytes())
    store = RegistryStore("blob://config/registry.json", blobs, env=ENV)
    raced = False
    add = add_tenant(TenantSpec("northwind", IsolationMode.POOLED))

    def racing(document: dict[str, object]) -> None:
        nonlocal raced
        if not raced:  # another operator writes between our read and our write
            raced = True
            other = json.loads((ROOT / "devhost" / "registry.json").read_text())
            other["tenants"].append({"id": "globex", "mode": "pooled"})
            blobs.blobs[("config", "registry.json")] = bytearray(json.dumps(other).encode())
            blobs._touch(("config", "registry.json"))
        add(document)

    written = await store.update(racing)
    assert {"northwind", "globex"} <= {t.id for t in written.registry.tenants}


def test_reply_queue_name() -> None:
    assert reply_queue_name("northwind") == "replies-northwind"
