"""Routing: the three modes, weighted spread, fallback order, isolation whatever the document."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shared.contracts import RejectionReason
from shared.tenancy.registry import Registry, Tenant, parse_registry
from shared.tenancy.routing import (
    IsolationViolation,
    Router,
    RoutingError,
    reachable,
    weighted_order,
)

DEVHOST_REGISTRY = Path(__file__).resolve().parents[2] / "devhost" / "registry.json"
ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://aoai.example",
    "AZURE_AI_SERVICES_ENDPOINT": "https://ais.example/models",
}


def document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DEVHOST_REGISTRY.read_text())
    return doc


def registry(doc: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Registry:
    return parse_registry(json.dumps(doc or document()), env=ENV if env is None else env)


def tenant_of(reg: Registry, tenant_id: str) -> Tenant:
    t = reg.tenant(tenant_id)
    assert t is not None
    return t


def names(reg: Registry, tenant_id: str, seed: int = 1) -> list[str]:
    router = Router(random.Random(seed))
    return [d.name for d in router.candidates(reg, tenant_of(reg, tenant_id))]


def test_pooled_tenant_gets_the_pool_then_lower_priority_fallbacks() -> None:
    reg = registry()
    for seed in range(20):
        order = names(reg, "tailwind", seed)
        assert set(order[:2]) == {"gpt-4o-mini-pool-a", "gpt-4o-mini-pool-b"}
        assert order[2] == "phi-4-pool"  # priority 1: tried only after both priority-0 ones


def test_pooled_spread_follows_capacity() -> None:
    reg = registry()
    router = Router(random.Random(42))
    tailwind = tenant_of(reg, "tailwind")
    firsts = Counter(router.candidates(reg, tailwind)[0].name for _ in range(30_000))
    share_a = firsts["gpt-4o-mini-pool-a"] / 30_000
    assert share_a == pytest.approx(200 / 300, abs=0.015)  # 200k vs 100k TPM
    assert firsts["phi-4-pool"] == 0


def test_weighted_order_is_proportional_for_three_weights() -> None:
    doc = document()
    for d in doc["deployments"]:
        d["priority"] = 0
    reg = registry(doc)
    pooled = [d for d in reg.serving_by_name.values() if d.shared]  # 200k, 100k, 50k
    rng = random.Random(3)
    firsts = Counter(weighted_order(pooled, rng)[0].name for _ in range(35_000))
    assert firsts["gpt-4o-mini-pool-a"] / 35_000 == pytest.approx(200 / 350, abs=0.015)
    assert firsts["gpt-4o-mini-pool-b"] / 35_000 == pytest.approx(100 / 350, abs=0.015)
    assert firsts["phi-4-pool"] / 35_000 == pytest.approx(50 / 350, abs=0.015)


def test_dedicated_tenant_reaches_only_its_own() -> None:
    reg = registry()
    for seed in range(10):
        assert names(reg, "contoso", seed) == ["contoso-gpt-4o"]


def test_dedicated_tenant_with_several_deployments_spreads_over_them_only() -> None:
    doc = document()
    second = {**doc["deployments"][3], "name": "contoso-gpt-4o-eu", "priority": 1}
    doc["deployments"].append(second)
    doc["tenants"][1]["deployments"].append("contoso-gpt-4o-eu")
    assert names(registry(doc), "contoso") == ["contoso-gpt-4o", "contoso-gpt-4o-eu"]


def test_tuned_tenant_gets_its_tuned_model_then_the_base() -> None:
    assert names(registry(), "fabrikam") == ["fabrikam-ft-v1", "gpt-4o-mini-pool-a"]


def test_tuned_tenant_falls_back_to_other_pooled_deployments_it_lists() -> None:
    doc = document()
    doc["tenants"][2]["deployments"].append("gpt-4o-mini-pool-b")
    assert names(registry(doc), "fabrikam") == [
        "fabrikam-ft-v1",
        "gpt-4o-mini-pool-a",
        "gpt-4o-mini-pool-b",
    ]


def test_tuned_tenant_without_a_tuned_model_yet_uses_the_pool() -> None:
    doc = document()
    fabrikam = doc["tenants"][2]
    fabrikam.pop("tuned_deployment")
    fabrikam["deployments"] = ["gpt-4o-mini-pool-a", "gpt-4o-mini-pool-b"]
    assert set(names(registry(doc), "fabrikam")) == {"gpt-4o-mini-pool-a", "gpt-4o-mini-pool-b"}


def test_an_unusable_tuned_model_leaves_the_base_first() -> None:
    doc = document()
    doc["deployments"][4]["endpoint"] = "${FT_ENDPOINT}"
    assert names(registry(doc), "fabrikam") == ["gpt-4o-mini-pool-a"]


def test_unusable_deployments_are_skipped_and_none_left_is_a_routing_error() -> None:
    reg = registry(env={"AZURE_OPENAI_ENDPOINT": "https://aoai.example"})
    assert "phi-4-pool" not in names(reg, "tailwind")
    reg = registry(env={})
    with pytest.raises(RoutingError) as caught:
        Router().candidates(reg, tenant_of(reg, "contoso"))
    assert caught.value.reason == RejectionReason.NO_USABLE_DEPLOYMENT
    assert "tenant 'contoso' (dedicated) has no usable deployment" in caught.value.detail


def test_no_tenant_is_ever_routed_to_another_tenants_private_deployment() -> None:
    reg = registry()
    router = Router(random.Random(0))
    private = {d.name: d.owner_tenant for d in reg.deployments if not d.shared}
    for t in reg.tenants:
        for _ in range(200):
            for d in router.candidates(reg, t):
                assert private.get(d.name, t.id) == t.id


def test_a_registry_that_bypassed_validation_is_still_refused_at_routing() -> None:
    # A document that wrongly lists another tenant's deployment cannot be loaded (see
    # test_tenancy); this builds such a registry without validation to prove the router's check.
    reg = registry()
    tailwind = tenant_of(reg, "tailwind").model_copy(
        update={"deployments": ("gpt-4o-mini-pool-a", "contoso-gpt-4o")}
    )
    fabrikam = tenant_of(reg, "fabrikam").model_copy(
        update={"tuned_deployment": "contoso-gpt-4o", "deployments": ("contoso-gpt-4o",)}
    )
    bad = Registry.model_construct(
        version=1, deployments=reg.deployments, tenants=(tailwind, fabrikam)
    )
    for t in (tailwind, fabrikam):
        with pytest.raises(IsolationViolation, match="must not reach deployment 'contoso-gpt-4o'"):
            Router().candidates(bad, t)


def test_reachability_rules() -> None:
    reg = registry()
    by = reg.deployment_by_name
    tailwind, contoso, fabrikam = (tenant_of(reg, t) for t in ("tailwind", "contoso", "fabrikam"))
    assert reachable(tailwind, by["gpt-4o-mini-pool-a"])
    assert not reachable(tailwind, by["contoso-gpt-4o"])
    assert not reachable(tailwind, by["fabrikam-ft-v1"])
    assert reachable(contoso, by["contoso-gpt-4o"])
    assert not reachable(contoso, by["gpt-4o-mini-pool-a"])
    assert reachable(fabrikam, by["fabrikam-ft-v1"])
    assert reachable(fabrikam, by["gpt-4o-mini-pool-a"])
    assert not reachable(fabrikam, by["contoso-gpt-4o"])


# --- The table of registry shapes -> candidates (issue 8, item 4) ------------------------------
# One row of the table in shared/tenancy/registry.py (and docs/contracts.md) per test, over a
# small document: two priority-0 pooled deployments, one priority-1 pooled, one dedicated and one
# tuned deployment of their tenants, and whatever tenant the row describes.

TABLE_DEPLOYMENTS: list[dict[str, Any]] = [
    {"name": "pool-a", "mode": "pooled", "capacity": {"tokens_per_minute": 200_000}},
    {"name": "pool-b", "mode": "pooled", "capacity": {"tokens_per_minute": 100_000}},
    {"name": "pool-c", "mode": "pooled", "priority": 1, "capacity": {"tokens_per_minute": 50_000}},
    {
        "name": "own-1",
        "mode": "dedicated",
        "owner_tenant": "northwind",
        "capacity": {"tokens_per_minute": 50_000},
    },
    {
        "name": "own-2",
        "mode": "dedicated",
        "owner_tenant": "northwind",
        "priority": 1,
        "capacity": {"tokens_per_minute": 50_000},
    },
    {
        "name": "ft-1",
        "mode": "tuned",
        "owner_tenant": "woodgrove",
        "base": "pool-b",
        "capacity": {"tokens_per_minute": 30_000},
    },
    {
        "name": "ft-0",  # an older tuned deployment of the same tenant: never routed to
        "mode": "tuned",
        "owner_tenant": "woodgrove",
        "base": "pool-a",
        "capacity": {"tokens_per_minute": 30_000},
    },
]
OWNERS = [{"id": "northwind", "mode": "dedicated"}, {"id": "woodgrove", "mode": "tuned"}]


def table_registry(row_tenant: dict[str, Any], env: dict[str, str] | None = None) -> Registry:
    deployments = [
        {"kind": "azure_openai", "endpoint": "${ENDPOINT}", **d} for d in TABLE_DEPLOYMENTS
    ]
    tenants = [t for t in OWNERS if t["id"] != row_tenant["id"]] + [row_tenant]
    doc = {"version": 1, "deployments": deployments, "tenants": tenants}
    return parse_registry(
        json.dumps(doc), env={"ENDPOINT": "https://x.example"} if env is None else env
    )


def orders(reg: Registry, tenant_id: str, seeds: int = 40) -> set[tuple[str, ...]]:
    """Every candidate order the router gives over a number of seeds."""
    return {tuple(names(reg, tenant_id, seed)) for seed in range(seeds)}


POOL_ORDERS = {("pool-a", "pool-b", "pool-c"), ("pool-b", "pool-a", "pool-c")}


def test_row_pooled_without_list_gets_every_pooled_deployment() -> None:
    reg = table_registry({"id": "tailwind", "mode": "pooled"})
    assert orders(reg, "tailwind") == POOL_ORDERS


def test_row_pooled_with_list_gets_the_listed() -> None:
    reg = table_registry({"id": "tailwind", "mode": "pooled", "deployments": ["pool-c", "pool-b"]})
    assert orders(reg, "tailwind") == {("pool-b", "pool-c")}


def test_row_dedicated_without_list_gets_every_deployment_it_owns() -> None:
    reg = table_registry({"id": "northwind", "mode": "dedicated"})
    assert orders(reg, "northwind") == {("own-1", "own-2")}


def test_row_dedicated_with_list_gets_the_listed() -> None:
    reg = table_registry({"id": "northwind", "mode": "dedicated", "deployments": ["own-2"]})
    assert orders(reg, "northwind") == {("own-2",)}


def test_row_dedicated_with_fallback_gets_its_own_then_every_pooled_deployment() -> None:
    reg = table_registry({"id": "northwind", "mode": "dedicated", "fallback_to_pooled": True})
    assert orders(reg, "northwind") == {("own-1", "own-2", *pool) for pool in POOL_ORDERS}


def test_row_dedicated_with_list_and_fallback_gets_the_listed_own_then_listed_pooled() -> None:
    reg = table_registry(
        {
            "id": "northwind",
            "mode": "dedicated",
            "deployments": ["pool-c", "own-2"],
            "fallback_to_pooled": True,
        }
    )
    assert orders(reg, "northwind") == {("own-2", "pool-c")}


def test_row_tuned_not_tuned_yet_without_list_gets_every_pooled_deployment() -> None:
    # The field input of issue 8, item 4: rejected no_usable_deployment before.
    reg = table_registry({"id": "woodgrove", "mode": "tuned"})
    assert orders(reg, "woodgrove") == POOL_ORDERS


def test_row_tuned_not_tuned_yet_with_list_gets_the_listed() -> None:
    reg = table_registry({"id": "woodgrove", "mode": "tuned", "deployments": ["pool-c"]})
    assert orders(reg, "woodgrove") == {("pool-c",)}


def test_row_tuned_without_list_gets_tuned_then_base_then_the_other_pooled() -> None:
    reg = table_registry({"id": "woodgrove", "mode": "tuned", "tuned_deployment": "ft-1"})
    assert orders(reg, "woodgrove") == {("ft-1", "pool-b", "pool-a", "pool-c")}


def test_row_tuned_with_list_gets_tuned_then_base_then_the_other_listed() -> None:
    reg = table_registry(
        {
            "id": "woodgrove",
            "mode": "tuned",
            "tuned_deployment": "ft-1",
            "deployments": ["pool-c", "ft-0", "ft-1", "pool-b"],
        }
    )
    assert orders(reg, "woodgrove") == {("ft-1", "pool-b", "pool-c")}  # ft-0 is not promoted


def test_every_row_skips_unconfigured_deployments_and_none_left_is_no_usable_deployment() -> None:
    reg = table_registry({"id": "woodgrove", "mode": "tuned"}, env={})
    with pytest.raises(RoutingError) as caught:
        Router().candidates(reg, tenant_of(reg, "woodgrove"))
    assert caught.value.reason == RejectionReason.NO_USABLE_DEPLOYMENT


def test_a_dedicated_tenant_reaches_pooled_deployments_only_with_fallback_to_pooled() -> None:
    strict = table_registry({"id": "northwind", "mode": "dedicated"})
    lenient = table_registry({"id": "northwind", "mode": "dedicated", "fallback_to_pooled": True})
    pool_a = strict.deployment_by_name["pool-a"]
    assert not reachable(tenant_of(strict, "northwind"), pool_a)
    assert reachable(tenant_of(lenient, "northwind"), pool_a)
    # Either way, never another tenant's deployment.
    for reg in (strict, lenient):
        assert not reachable(tenant_of(reg, "northwind"), reg.deployment_by_name["ft-1"])


def test_a_dedicated_tenant_without_fallback_is_refused_pooled_even_by_a_bad_registry() -> None:
    reg = table_registry({"id": "northwind", "mode": "dedicated"})
    northwind = tenant_of(reg, "northwind").model_copy(update={"deployments": ("own-1", "pool-a")})
    bad = Registry.model_construct(version=1, deployments=reg.deployments, tenants=(northwind,))
    with pytest.raises(IsolationViolation, match="must not reach deployment 'pool-a'"):
        Router().candidates(bad, northwind)
    allowed = northwind.model_copy(update={"fallback_to_pooled": True})
    good = Registry.model_construct(version=1, deployments=reg.deployments, tenants=(allowed,))
    assert [d.name for d in Router().candidates(good, allowed)] == ["own-1", "pool-a"]
