"""The resilient client over the real model clients (openai and azure-ai-inference SDKs) against
the real simulator: real 429s with retry-after headers, real TPM limits, injected 500s.

Each test starts its own simulator with the deployments it needs (zero latency) and runs on the
real clock, in a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from devhost.models import RunningSimulator
from shared.contracts import ChatMessage, InferenceParameters
from shared.inference.model_clients import ModelClients
from shared.resilience.breaker import BreakerPolicy, BreakerState
from shared.resilience.client import ResiliencePolicy, ResilientModelClient
from shared.resilience.rate_budget import admission_tokens
from shared.tenancy.registry import Registry, parse_registry
from shared.tenancy.registry_source import StaticRegistry
from tests.fixtures.models import (
    TEST_API_KEY,
    SimulatorFactory,
    make_models_config,
    model_deployment,
)

HELLO = [ChatMessage(role="user", content="Hello, simulator: how are you today?")]
KIND_OF = {"aoai": "azure_openai", "phi": "ai_inference"}
TENANT = "t1"


def registry_for(sim: RunningSimulator, *deployments: dict[str, Any]) -> Registry:
    """A pooled tenant over `deployments` ({name, kind, tpm, rpm, priority})."""
    doc = {
        "version": 1,
        "deployments": [
            {
                "name": d["name"],
                "kind": d["kind"],
                "mode": "pooled",
                "endpoint": sim.url if d["kind"] == "azure_openai" else f"{sim.url}/models",
                "capacity": {"tokens_per_minute": d["tpm"], "requests_per_minute": d["rpm"]},
                "priority": d["priority"],
            }
            for d in deployments
        ],
        "tenants": [{"id": TENANT, "mode": "pooled"}],
    }
    return parse_registry(json.dumps(doc), env={})


async def start(
    factory: SimulatorFactory, *deployments: dict[str, Any]
) -> tuple[RunningSimulator, Registry]:
    """The simulator enforces the same limits the registry declares."""
    sim = await factory(
        make_models_config(
            *(
                model_deployment(d["name"], kind=d["kind"], tpm=d["tpm"], rpm=d["rpm"])
                for d in deployments
            )
        )
    )
    return sim, registry_for(sim, *deployments)


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., ResilientModelClient]]:
    built: list[ResilientModelClient] = []

    def make(registry: Registry, **policy: Any) -> ResilientModelClient:
        client = ResilientModelClient(
            ModelClients(api_key=TEST_API_KEY, timeout_s=5.0),
            StaticRegistry(registry),
            policy=ResiliencePolicy(**{"max_wait_s": 2.0, "time_budget_s": 8.0, **policy}),
        )
        built.append(client)
        return client

    try:
        yield make
    finally:
        for client in built:
            await client.close()


def deployment_stats(sim: RunningSimulator, name: str) -> dict[str, Any]:
    report: dict[str, Any] = sim.stats()["deployments"].get(name, {})
    return report


# ---- a deployment throttled with real 429s ------------------------------------------------


@pytest.mark.parametrize(("throttled", "other"), [("aoai", "phi"), ("phi", "aoai")])
async def test_a_real_429_fails_over_to_the_other_deployment_at_once(
    model_simulator_factory: SimulatorFactory,
    clients: Callable[..., ResilientModelClient],
    throttled: str,
    other: str,
) -> None:
    """Another instance spent the throttled deployment's minute; this client does not know, gets
    a 429 through its SDK (retry-after ~60 s), fails over without waiting, and keeps away."""
    sim, registry = await start(
        model_simulator_factory,
        {"name": throttled, "kind": KIND_OF[throttled], "tpm": 2000, "rpm": 600, "priority": 0},
        {"name": other, "kind": KIND_OF[other], "tpm": 2000, "rpm": 600, "priority": 1},
    )
    elsewhere = ModelClients(api_key=TEST_API_KEY, timeout_s=5.0)
    try:
        await elsewhere.complete(
            registry.deployment_by_name[throttled],
            HELLO,
            InferenceParameters(max_tokens=1900),
            tenant_id="someone-else",
        )
    finally:
        await elsewhere.close()
    client = clients(registry)

    started = time.monotonic()
    result = await client.complete(TENANT, HELLO, InferenceParameters(max_tokens=100))
    took = time.monotonic() - started

    assert result.deployment.name == other
    assert (result.attempts, result.failovers, result.throttled) == (2, 1, 1)
    assert took < 1.5  # no wait: the other deployment had room
    # the service's retry-after (~60 s, read from the SDK's error) keeps the client away
    breaker = client.breakers[throttled]
    assert breaker.state is BreakerState.OPEN
    assert breaker.available_at() - time.monotonic() > 50
    assert client.budget(registry.deployment_by_name[throttled]).room_at(1) > time.monotonic() + 50
    for _ in range(3):
        again = await client.complete(TENANT, HELLO, InferenceParameters(max_tokens=100))
        assert again.deployment.name == other
        assert again.throttled == 0
    assert deployment_stats(sim, throttled)["throttled"] == 1
    assert deployment_stats(sim, other)["ok"] == 4


# ---- a burst over one deployment's TPM ---------------------------------------------------


async def test_a_burst_over_one_deployments_tpm_is_routed_around_without_429s(
    model_simulator_factory: SimulatorFactory,
    clients: Callable[..., ResilientModelClient],
) -> None:
    sim, registry = await start(
        model_simulator_factory,
        {"name": "small", "kind": "azure_openai", "tpm": 3000, "rpm": 600, "priority": 0},
        {"name": "big", "kind": "ai_inference", "tpm": 1_000_000, "rpm": 6000, "priority": 1},
    )
    parameters = InferenceParameters(max_tokens=200)
    charge = admission_tokens([m.content for m in HELLO], 200, 256)
    fits = 3000 // charge
    burst = 30
    assert fits < burst

    # the control: the same burst straight at `small` through the bare SDK is throttled
    bare = ModelClients(api_key=TEST_API_KEY, timeout_s=5.0)
    small = registry.deployment_by_name["small"]
    try:
        outcomes = await asyncio.gather(
            *(bare.complete(small, HELLO, parameters, tenant_id=TENANT) for _ in range(burst)),
            return_exceptions=True,
        )
    finally:
        await bare.close()
    assert sum(isinstance(o, Exception) for o in outcomes) == burst - fits
    sim.reset()

    client = clients(registry)
    results = await asyncio.gather(
        *(client.complete(TENANT, HELLO, parameters) for _ in range(burst))
    )
    served = [r.deployment.name for r in results]
    assert served.count("small") == fits  # filled to its TPM, not past it
    assert served.count("big") == burst - fits
    assert sum(r.throttled for r in results) == 0
    assert sim.stats()["totals"]["throttled"] == 0
    assert deployment_stats(sim, "small")["ok"] == fits


# ---- an outage: 500s for a window ---------------------------------------------------------


async def test_a_500_window_opens_the_breaker_and_traffic_returns_after_it_closes(
    model_simulator_factory: SimulatorFactory,
    clients: Callable[..., ResilientModelClient],
) -> None:
    sim, registry = await start(
        model_simulator_factory,
        {"name": "a", "kind": "azure_openai", "tpm": 1_000_000, "rpm": 60_000, "priority": 0},
        {"name": "b", "kind": "ai_inference", "tpm": 1_000_000, "rpm": 60_000, "priority": 1},
    )
    client = clients(
        registry,
        breaker=BreakerPolicy(
            consecutive_failures=2, min_calls_in_window=1000, cool_down_s=0.5, half_open_probes=1
        ),
    )
    window_s = 1.0
    started = time.monotonic()
    sim.add_fault("a", {"kind": "500", "duration_s": window_s})
    served: list[tuple[float, str]] = []
    while time.monotonic() - started < window_s + 2.0:
        result = await client.complete(TENANT, HELLO, InferenceParameters(max_tokens=10))
        served.append((time.monotonic() - started, result.deployment.name))
        await asyncio.sleep(0.02)

    during = [name for at, name in served if at < window_s]
    assert during
    assert set(during) == {"b"}  # every request was served, by b, while a failed
    faults = deployment_stats(sim, "a")["faults"]
    # traffic left a: two failures opened the breaker, then only a probe per cool-down
    assert faults <= 2 + int(window_s / 0.5) + 1
    assert faults < len(during) / 2
    back = [at for at, name in served if name == "a"]
    assert back  # a is used again
    assert window_s <= back[0] <= window_s + 2 * 0.5 + 0.3  # a cool-down or two after recovery
    after = [name for at, name in served if at > back[0]]
    assert after
    assert set(after) == {"a"}  # closed: a is the first choice again
    assert client.breakers["a"].state is BreakerState.CLOSED
    transitions = client.breakers.transitions
    assert transitions[("a", "closed->open")] == 1
    assert transitions[("a", "half_open->closed")] == 1
    assert transitions[("a", "open->half_open")] >= 1


# ---- what other instances spent: x-ratelimit-remaining-* ---------------------------------


async def test_the_services_remaining_count_steers_this_instance_away_without_a_429(
    model_simulator_factory: SimulatorFactory,
    clients: Callable[..., ResilientModelClient],
) -> None:
    """rate_budget: the service's `x-ratelimit-remaining-tokens` on each answer corrects this
    instance's view for what other instances spent."""
    sim, registry = await start(
        model_simulator_factory,
        {"name": "a", "kind": "azure_openai", "tpm": 3000, "rpm": 600, "priority": 0},
        {"name": "b", "kind": "azure_openai", "tpm": 1_000_000, "rpm": 6000, "priority": 1},
    )
    first, second = clients(registry), clients(registry)
    for _ in range(2):  # the first instance spends ~2,450 of a's 3,000
        spent = await first.complete(TENANT, HELLO, InferenceParameters(max_tokens=1200))
        assert spent.deployment.name == "a"
    probe = await second.complete(TENANT, HELLO, InferenceParameters(max_tokens=20))
    assert probe.deployment.name == "a"
    assert probe.completion.remaining_tokens is not None  # the answer's header, read
    # ~500 left at a by the service's count; 600 more would be a 429 there
    result = await second.complete(TENANT, HELLO, InferenceParameters(max_tokens=600))
    assert result.deployment.name == "b"
    assert result.throttled == 0
    assert deployment_stats(sim, "a")["throttled"] == 0
