"""RegistryStore: ETag-guarded changes to the registry document, as a file and as a blob."""

# ruff: noqa: ASYNC240 - small local files read in tests

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import RegistryError
from shared.tenancy.registry_store import RegistryConflict, RegistryStore

ROOT = Path(__file__).resolve().parents[3]
DEVHOST_REGISTRY = ROOT / "devhost" / "registry.json"
ENV = {"AZURE_OPENAI_ENDPOINT": "http://sim", "AZURE_AI_SERVICES_ENDPOINT": "http://sim/models"}


def _add_tenant(tenant_id: str) -> Any:
    def change(document: dict[str, Any]) -> None:
        document["tenants"].append({"id": tenant_id, "mode": "pooled"})

    return change


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    path = tmp_path / "registry.json"
    shutil.copy(DEVHOST_REGISTRY, path)
    return path


async def test_a_file_change_is_written_and_env_references_are_kept(registry_file: Path) -> None:
    store = RegistryStore(str(registry_file), env=ENV)
    written = await store.update(_add_tenant("northwind"))
    assert written.registry.tenant("northwind") is not None
    stored = json.loads(registry_file.read_text())
    assert stored["deployments"][0]["endpoint"] == "${AZURE_OPENAI_ENDPOINT}"
    assert [t["id"] for t in stored["tenants"]][-1] == "northwind"


async def test_an_invalid_change_writes_nothing(registry_file: Path) -> None:
    before = registry_file.read_bytes()
    store = RegistryStore(str(registry_file), env=ENV)

    def steal(document: dict[str, Any]) -> None:
        document["tenants"].append(
            {"id": "mallory", "mode": "pooled", "deployments": ["contoso-gpt-4o"]}
        )

    with pytest.raises(RegistryError, match="contoso-gpt-4o"):
        await store.update(steal)
    assert registry_file.read_bytes() == before


def test_concurrent_file_writers_lose_no_change(registry_file: Path) -> None:
    ids = [f"t{i:02d}" for i in range(12)]

    def write(tenant_id: str) -> None:
        asyncio.run(
            RegistryStore(str(registry_file), env=ENV, attempts=50).update(_add_tenant(tenant_id))
        )

    threads = [threading.Thread(target=write, args=(t,)) for t in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = {t["id"] for t in json.loads(registry_file.read_text())["tenants"]}
    assert set(ids) <= stored


async def test_concurrent_blob_writers_lose_no_change() -> None:
    blobs = MemoryBlobStore()
    store = RegistryStore("blob://config/registry.json", blobs, env=ENV, attempts=50)
    assert await store.create(json.loads(DEVHOST_REGISTRY.read_text()))
    assert not await store.create(json.loads(DEVHOST_REGISTRY.read_text()))
    ids = [f"t{i:02d}" for i in range(10)]
    await asyncio.gather(*(store.update(_add_tenant(t)) for t in ids))
    stored = {t["id"] for t in json.loads(blobs.text("config", "registry.json"))["tenants"]}
    assert set(ids) <= stored


async def test_a_write_that_ignores_the_etag_would_lose_a_change() -> None:
    """The check above can fail: a writer that read before another wrote, and writes without
    If-Match, drops the other's tenant (what update's compare-and-write prevents)."""
    blobs = MemoryBlobStore()
    store = RegistryStore("blob://config/registry.json", blobs, env=ENV)
    await store.create(json.loads(DEVHOST_REGISTRY.read_text()))
    stale = await store.read()
    await store.update(_add_tenant("first"))
    document = stale.document
    document["tenants"].append({"id": "second", "mode": "pooled"})
    await blobs.put("config", "registry.json", json.dumps(document).encode())
    stored = {t["id"] for t in json.loads(blobs.text("config", "registry.json"))["tenants"]}
    assert "first" not in stored


async def test_endless_conflict_gives_up() -> None:
    blobs = MemoryBlobStore()
    store = RegistryStore("blob://config/registry.json", blobs, env=ENV, attempts=3)
    await store.create(json.loads(DEVHOST_REGISTRY.read_text()))
    other = RegistryStore("blob://config/registry.json", blobs, env=ENV)
    n = 0

    def change_with_interference(document: dict[str, Any]) -> None:
        nonlocal n
        n += 1
        document["tenants"].append({"id": f"x{n}", "mode": "pooled"})

    original_read = store._read_raw

    async def read_then_interfere() -> tuple[bytes | None, str | None]:
        raw = await original_read()
        await other.update(_add_tenant(f"o{n}"))
        return raw

    store._read_raw = read_then_interfere  # type: ignore[method-assign]
    with pytest.raises(RegistryConflict):
        await store.update(change_with_interference)
    assert n == 3


async def test_missing_document() -> None:
    with pytest.raises(RegistryError, match="no registry document"):
        await RegistryStore("blob://config/registry.json", MemoryBlobStore()).read()
