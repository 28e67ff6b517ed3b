"""The registry document: loading, ${ENV} expansion, isolation checks, readable errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from shared.storage.blob_store import MemoryBlobStore
from shared.tenancy.registry import (
    IsolationMode,
    Registry,
    RegistryError,
    blob_location,
    expand_environment,
    parse_registry,
    read_registry_file,
)
from shared.tenancy.registry_source import RegistrySource

DEVHOST_REGISTRY = Path(__file__).resolve().parents[2] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}


def document() -> dict[str, Any]:
    return copy.deepcopy(json.loads(DEVHOST_REGISTRY.read_text()))


def load(doc: dict[str, Any], env: dict[str, str] | None = None) -> Registry:
    return parse_registry(json.dumps(doc), source="test", env=ENV if env is None else env)


def problems(doc: dict[str, Any]) -> str:
    with pytest.raises(RegistryError) as caught:
        load(doc)
    return str(caught.value)


def tenant(doc: dict[str, Any], tenant_id: str) -> dict[str, Any]:
    return next(t for t in doc["tenants"] if t["id"] == tenant_id)


def deployment(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in doc["deployments"] if d["name"] == name)


def test_the_local_registry_loads_with_its_three_modes() -> None:
    registry = read_registry_file(DEVHOST_REGISTRY, env=ENV)
    modes = {t.id: t.mode for t in registry.tenants}
    assert modes == {
        "tailwind": IsolationMode.POOLED,
        "contoso": IsolationMode.DEDICATED,
        "fabrikam": IsolationMode.TUNED,
    }
    pool_a = registry.deployment_by_name["gpt-4o-mini-pool-a"]
    assert pool_a.endpoint == "https://aoai.example"
    assert pool_a.capacity.tokens_per_minute == 200_000
    assert registry.deployment_by_name["phi-4-pool"].endpoint == "https://ais.example/models"
    assert registry.deployment_by_name["fabrikam-ft-v1"].base == "gpt-4o-mini-pool-a"
    assert registry.tenant("contoso") is not None
    assert registry.tenant("contoso").quota.max_concurrent == 16  # type: ignore[union-attr]


def test_yaml_documents_load_too(tmp_path: Path) -> None:
    yaml_text = """
version: 1
deployments:
  - name: shared-1
    kind: ai_inference
    mode: pooled
    endpoint: https://${HOST}/models
    capacity: {tokens_per_minute: 1000}
tenants:
  - {id: solo, mode: pooled}
"""
    path = tmp_path / "registry.yaml"
    path.write_text(yaml_text)
    registry = read_registry_file(path, env={"HOST": "ais.example"})
    assert registry.deployments[0].endpoint == "https://ais.example/models"
    assert registry.deployments[0].model == "shared-1"  # model defaults to the name


def test_expansion_replaces_every_reference_and_reports_the_missing() -> None:
    assert expand_environment("${A}/x/${B}", {"A": "a", "B": "b"}) == ("a/x/b", None)
    assert expand_environment("no refs", {}) == ("no refs", None)
    endpoint, problem = expand_environment("${A}${MISSING}", {"A": "a"})
    assert endpoint is None
    assert problem == "environment variable(s) not set: MISSING"


def test_an_unset_endpoint_variable_makes_only_that_deployment_unusable() -> None:
    registry = load(document(), env={"AZURE_OPENAI_ENDPOINT": "https://aoai.example"})
    phi = registry.deployment_by_name["phi-4-pool"]
    assert not phi.usable
    assert phi.endpoint_problem == "environment variable(s) not set: AZURE_AI_SERVICES_ENDPOINT"
    assert registry.deployment_by_name["gpt-4o-mini-pool-a"].usable


def test_default_allowed_deployments_per_mode() -> None:
    doc = document()
    for t in doc["tenants"]:
        t.pop("deployments")
    registry = load(doc)

    def allowed(tenant_id: str) -> list[str]:
        t = registry.tenant(tenant_id)
        assert t is not None
        return [d.name for d in registry.allowed_for(t)]

    assert allowed("tailwind") == ["gpt-4o-mini-pool-a", "gpt-4o-mini-pool-b", "phi-4-pool"]
    assert allowed("contoso") == ["contoso-gpt-4o"]
    # Its tuned deployment and the pool, base included (the router puts tuned, base first).
    assert allowed("fabrikam") == [
        "gpt-4o-mini-pool-a",
        "gpt-4o-mini-pool-b",
        "phi-4-pool",
        "fabrikam-ft-v1",
    ]


def test_listing_another_tenants_dedicated_deployment_is_refused_at_load() -> None:
    doc = document()
    tenant(doc, "tailwind")["deployments"].append("contoso-gpt-4o")
    assert (
        "tenant 'tailwind': deployment 'contoso-gpt-4o' is a dedicated deployment of tenant "
        in (problems(doc))
    )


def test_listing_another_tenants_tuned_deployment_is_refused_at_load() -> None:
    doc = document()
    tenant(doc, "contoso")["deployments"].append("fabrikam-ft-v1")
    assert "deployment 'fabrikam-ft-v1' is a tuned deployment of tenant 'fabrikam'" in problems(doc)


def test_a_tuned_tenant_cannot_adopt_another_tenants_tuned_model() -> None:
    doc = document()
    doc["tenants"].append(
        {"id": "northwind", "mode": "tuned", "tuned_deployment": "fabrikam-ft-v1"}
    )
    text = problems(doc)
    assert "tenant 'northwind': tuned_deployment 'fabrikam-ft-v1' must be a tuned deployment" in (
        text
    )


def test_dedicated_tenants_reach_no_pooled_deployment() -> None:
    doc = document()
    tenant(doc, "contoso")["deployments"].append("gpt-4o-mini-pool-a")
    assert "a dedicated tenant reaches only its own" in problems(doc)


def test_a_dedicated_tenant_may_list_pooled_deployments_only_with_fallback_to_pooled() -> None:
    doc = document()
    tenant(doc, "contoso")["deployments"].append("gpt-4o-mini-pool-a")
    assert "(unless fallback_to_pooled)" in problems(doc)
    tenant(doc, "contoso")["fallback_to_pooled"] = True
    contoso = load(doc).tenant("contoso")
    assert contoso is not None
    assert contoso.fallback_to_pooled
    assert contoso.deployments == ("contoso-gpt-4o", "gpt-4o-mini-pool-a")


@pytest.mark.parametrize("tenant_id", ["tailwind", "fabrikam"])
def test_fallback_to_pooled_is_for_dedicated_tenants_only(tenant_id: str) -> None:
    doc = document()
    tenant(doc, tenant_id)["fallback_to_pooled"] = True
    assert f"tenant {tenant_id!r}: fallback_to_pooled is for dedicated tenants only" in problems(
        doc
    )


def test_fallback_to_pooled_is_off_unless_set() -> None:
    assert all(not t.fallback_to_pooled for t in load(document()).tenants)


def test_tuned_tenants_must_list_their_base() -> None:
    doc = document()
    tenant(doc, "fabrikam")["deployments"] = ["fabrikam-ft-v1"]
    assert "deployments must include 'gpt-4o-mini-pool-a' (tuned and its base)" in problems(doc)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: deployment(d, "contoso-gpt-4o").pop("owner_tenant"),
            "deployment 'contoso-gpt-4o': a dedicated deployment needs owner_tenant",
        ),
        (
            lambda d: deployment(d, "contoso-gpt-4o").update(owner_tenant="nobody"),
            "owner_tenant 'nobody' is not a tenant of this registry",
        ),
        (
            lambda d: deployment(d, "gpt-4o-mini-pool-a").update(owner_tenant="tailwind"),
            "deployment 'gpt-4o-mini-pool-a': a pooled deployment has no owner_tenant",
        ),
        (
            lambda d: deployment(d, "fabrikam-ft-v1").update(base="contoso-gpt-4o"),
            "base 'contoso-gpt-4o' must be a pooled deployment",
        ),
        (
            lambda d: deployment(d, "fabrikam-ft-v1").pop("base"),
            "a tuned deployment needs base",
        ),
        (
            lambda d: tenant(d, "tailwind")["deployments"].append("gpt-5"),
            "tenant 'tailwind': deployment 'gpt-5' is not in the registry",
        ),
        (
            lambda d: d["deployments"].append(deployment(d, "phi-4-pool")),
            "deployments: 'phi-4-pool' is listed more than once",
        ),
        (
            lambda d: d["tenants"].append({"id": "contoso", "mode": "pooled"}),
            "tenants: 'contoso' is listed more than once",
        ),
        (
            lambda d: tenant(d, "tailwind").update(reply_queues=["inference-requests"]),
            "tenant 'tailwind': reply_queues may not name an input queue of the app",
        ),
        (
            lambda d: tenant(d, "tailwind").update(tuned_deployment="fabrikam-ft-v1"),
            "tenant 'tailwind': only tuned tenants have a tuned_deployment",
        ),
    ],
)
def test_inconsistent_documents_name_the_entry_and_the_problem(change: Any, expected: str) -> None:
    doc = document()
    change(doc)
    assert expected in problems(doc)


def test_field_errors_name_the_entry_not_just_its_index() -> None:
    doc = document()
    deployment(doc, "phi-4-pool")["kind"] = "openai"
    deployment(doc, "gpt-4o-mini-pool-b")["capacity"] = {"tokens_per_minute": 0}
    tenant(doc, "contoso")["quota"]["burst"] = 5
    text = problems(doc)
    assert (
        "deployments[2] ('phi-4-pool').kind: Input should be 'azure_openai' or 'ai_inference'"
        in (text)
    )
    assert "deployments[1] ('gpt-4o-mini-pool-b').capacity.tokens_per_minute: Input should be " in (
        text
    )
    assert "tenants[1] ('contoso').quota.burst: Extra inputs are not permitted" in text


def test_all_problems_are_reported_together() -> None:
    doc = document()
    tenant(doc, "tailwind")["deployments"].append("contoso-gpt-4o")
    tenant(doc, "contoso")["deployments"].append("fabrikam-ft-v1")
    assert len(problems(doc).splitlines()) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deployments: [", "test: neither JSON nor YAML"),
        ("[1, 2]", "test: the document must be a mapping"),
        ('{"deployments": [], "tenants": [], "version": 2}', "version: Input should be 1"),
        ('{"tenants": []}', "deployments: Field required"),
    ],
)
def test_unreadable_documents_say_why(text: str, expected: str) -> None:
    with pytest.raises(RegistryError, match=None) as caught:
        parse_registry(text, source="test", env=ENV)
    assert expected in str(caught.value)


def test_a_missing_file_is_a_registry_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot be read"):
        read_registry_file(tmp_path / "nope.json")


def test_blob_references() -> None:
    assert blob_location("blob://config/registry.json") == ("config", "registry.json")
    assert blob_location("blob://config/a/b.yaml") == ("config", "a/b.yaml")
    assert blob_location("devhost/registry.json") is None
    with pytest.raises(RegistryError, match="expected blob://<container>/<name>"):
        blob_location("blob://config")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_source_reads_a_blob_and_refreshes_after_the_interval() -> None:
    store = MemoryBlobStore()
    doc = document()
    await store.put("config", "registry.json", json.dumps(doc).encode())
    clock = Clock()
    source = RegistrySource(
        "blob://config/registry.json", store, refresh_seconds=60, env=ENV, clock=clock
    )
    first = await source.get()
    assert first.tenant("tailwind") is not None

    doc["tenants"].append({"id": "northwind", "mode": "pooled"})
    await store.put("config", "registry.json", json.dumps(doc).encode())
    clock.now = 59
    assert (await source.get()).tenant("northwind") is None  # still the cached one
    clock.now = 60
    assert (await source.get()).tenant("northwind") is not None


async def test_source_keeps_the_last_good_registry_when_a_reload_fails() -> None:
    store = MemoryBlobStore()
    await store.put("config", "r.json", json.dumps(document()).encode())
    clock = Clock()
    source = RegistrySource("blob://config/r.json", store, refresh_seconds=1, env=ENV, clock=clock)
    good = await source.get()
    await store.put("config", "r.json", b"{broken")
    clock.now = 5
    assert await source.get() is good


async def test_source_without_a_first_registry_raises() -> None:
    source = RegistrySource("blob://config/missing.json", MemoryBlobStore(), env=ENV)
    with pytest.raises(RegistryError, match="no such blob"):
        await source.get()


async def test_source_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(document()))
    source = RegistrySource(str(path), None, env=ENV)
    assert (await source.get()).tenant("fabrikam") is not None
