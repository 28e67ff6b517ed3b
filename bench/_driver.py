"""A load driver in a process of its own: one client, one workload, one JSON line out.

    <python> -m bench._driver spec.json

Run by the resilience benchmarks, never by hand. The client is one of
- `bare`: `openai.AsyncAzureOpenAI` called directly (SDK retries off);
- `port`: `shared.inference.model_clients.ModelClients` called directly (the model port that the
  resilient client wraps: the SDK call plus reading the answer, with no resilience);
- `ours`: `shared.resilience.client.ResilientModelClient` around `ModelClients`;
- `litellm`: LiteLLM's `Router` (runs under bench/.venv-litellm; see bench/requirements.txt).
Each runs in its own process so that `time.process_time()` is that client's CPU and nothing else's
(the simulator is another process), and so that LiteLLM can live in its own virtual environment.

This module imports only the standard library at the top: each client's imports happen inside
its factory, in the interpreter that runs it.

Workloads:
- `closed`: `requests` calls with `concurrency` in flight, after `warmup` unmeasured calls;
  reports CPU seconds (`time.process_time`) and wall seconds of the measured calls.
- `open`: arrivals evenly spaced at each phase's rate (an open loop: a slow answer does not slow
  the arrivals), from the monotonic time `start_at`; then waits for every request until
  `deadline_at`. A request unresolved then is `lost` (its task is cancelled).
Every request gives a record `[submitted, finished, outcome, deployment, attempts, detail]`, times
in `time.monotonic()` seconds (one clock for every process of the machine).
"""

# The clients' imports are deferred on purpose: this module runs under two interpreters.
# ruff: noqa: PLC0415

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

TENANT = "bench"
MODEL_GROUP = "pool"
UNLIMITED_TPM = 1_000_000_000

Call = Callable[[], Awaitable[tuple[str | None, int]]]
"""One request: returns (the deployment that served it, attempts made)."""


class CallFailed(Exception):
    """A request failed to the caller; `outcome` says how (`try_later`, `failed`)."""

    def __init__(self, outcome: str, detail: str, attempts: int = 0) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.attempts = attempts


# ---- clients ------------------------------------------------------------------------------------


class Client:
    call: Call

    def stats(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        return None


def _messages(spec: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": spec["prompt"]}]


class BareClient(Client):
    def __init__(self, spec: dict[str, Any]) -> None:
        from openai import AsyncAzureOpenAI

        self._client = AsyncAzureOpenAI(
            azure_endpoint=spec["url"],
            api_key=spec["api_key"],
            api_version=spec["api_version"],
            max_retries=0,
            timeout=spec["timeout_s"],
        )
        self._names = [d["name"] for d in spec["deployments"]]
        self._next = 0
        self._messages = _messages(spec)
        self._max_tokens = spec["max_tokens"]

    async def call(self) -> tuple[str | None, int]:
        name = self._names[self._next % len(self._names)]
        self._next += 1
        await self._client.chat.completions.create(
            model=name,
            messages=self._messages,  # type: ignore[arg-type]
            max_tokens=self._max_tokens,
            extra_headers={"x-tenant-id": TENANT},
        )
        return name, 1

    async def close(self) -> None:
        await self._client.close()


class OursClient(Client):
    def __init__(self, spec: dict[str, Any]) -> None:
        from shared.contracts import ChatMessage, InferenceParameters
        from shared.inference.model_clients import ModelClients
        from shared.resilience.client import ResiliencePolicy, ResilientModelClient, TryLater
        from shared.tenancy.registry import parse_registry
        from shared.tenancy.registry_source import StaticRegistry

        document = {
            "version": 1,
            "deployments": [
                {
                    "name": d["name"],
                    "kind": "azure_openai",
                    "mode": "pooled",
                    "endpoint": spec["url"],
                    "model": d["name"],
                    "capacity": {
                        "tokens_per_minute": d.get("tpm") or UNLIMITED_TPM,
                        **({"requests_per_minute": d["rpm"]} if d.get("rpm") else {}),
                    },
                    "priority": 0,
                }
                for d in spec["deployments"]
            ],
            "tenants": [{"id": TENANT, "mode": "pooled"}],
        }
        registry = StaticRegistry(parse_registry(json.dumps(document), env={}))
        models = ModelClients(
            api_key=spec["api_key"], api_version=spec["api_version"], timeout_s=spec["timeout_s"]
        )
        self._try_later = TryLater
        self.models = models
        self.registry = registry
        self.client = ResilientModelClient(
            models, registry, policy=ResiliencePolicy(**spec.get("policy", {}))
        )
        self._messages = [ChatMessage(role="user", content=spec["prompt"])]
        self._parameters = InferenceParameters(max_tokens=spec["max_tokens"])
        self.try_later_reasons: Counter[str] = Counter()

    async def call(self) -> tuple[str | None, int]:
        try:
            result = await self.client.complete(TENANT, self._messages, self._parameters)
        except self._try_later as exc:
            self.try_later_reasons[exc.reason] += 1
            raise CallFailed(
                "try_later", f"TryLater({exc.reason}, {exc.retry_after_s:.2f}s)", exc.attempts
            ) from None
        return result.deployment.name, result.attempts

    def stats(self) -> dict[str, Any]:
        return {
            "client_stats": dict(self.client.stats),
            "breaker_transitions": {
                f"{name} {move}": n for (name, move), n in self.client.breakers.transitions.items()
            },
            "try_later_reasons": dict(self.try_later_reasons),
        }

    async def close(self) -> None:
        await self.client.close()


class PortClient(OursClient):
    """`ModelClients.complete` on the first deployment, no resilience layer."""

    async def call(self) -> tuple[str | None, int]:
        registry = await self.registry.get()
        deployment = registry.deployments[0]
        await self.models.complete(deployment, self._messages, self._parameters, tenant_id=TENANT)
        return deployment.name, 1


class LiteLLMClient(Client):
    def __init__(self, spec: dict[str, Any]) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm
        from litellm import Router

        litellm.suppress_debug_info = True
        litellm.telemetry = False
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        model_list = []
        for d in spec["deployments"]:
            params: dict[str, Any] = {
                "model": f"azure/{d['name']}",
                "api_base": spec["url"],
                "api_key": spec["api_key"],
                "api_version": spec["api_version"],
            }
            if d.get("tpm"):
                params["tpm"] = d["tpm"]
            if d.get("rpm"):
                params["rpm"] = d["rpm"]
            model_list.append(
                {
                    "model_name": MODEL_GROUP,
                    "litellm_params": params,
                    "model_info": {"id": d["name"]},
                }
            )
        self.router = Router(model_list=model_list, timeout=spec["timeout_s"], **spec["router"])
        self._messages = _messages(spec)
        self._max_tokens = spec["max_tokens"]
        self.errors: Counter[str] = Counter()

    async def call(self) -> tuple[str | None, int]:
        try:
            response = await self.router.acompletion(
                model=MODEL_GROUP,
                messages=self._messages,
                max_tokens=self._max_tokens,
                extra_headers={"x-tenant-id": TENANT},
            )
        except Exception as exc:  # every error reaches the caller: count it
            kind = type(exc).__name__
            self.errors[kind] += 1
            raise CallFailed("failed", kind) from None
        hidden = getattr(response, "_hidden_params", None) or {}
        return hidden.get("model_id"), 1

    def stats(self) -> dict[str, Any]:
        return {"errors": dict(self.errors)}


CLIENTS: dict[str, Callable[[dict[str, Any]], Client]] = {
    "bare": BareClient,
    "port": PortClient,
    "ours": OursClient,
    "litellm": LiteLLMClient,
}


# ---- workloads ----------------------------------------------------------------------------------


async def _one(call: Call, record: list[Any]) -> None:
    try:
        deployment, attempts = await call()
    except CallFailed as exc:
        record[1:] = [time.monotonic(), exc.outcome, None, exc.attempts, exc.detail]
    except Exception as exc:  # a failure to the caller, whatever its type
        record[1:] = [time.monotonic(), "failed", None, 0, type(exc).__name__]
    else:
        record[1:] = [time.monotonic(), "ok", deployment, attempts, None]


async def _closed_batch(call: Call, count: int, concurrency: int) -> list[list[Any]]:
    records: list[list[Any]] = []
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            record: list[Any] = [time.monotonic(), None, "lost", None, 0, None]
            records.append(record)
            await _one(call, record)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


async def run_closed(client: Client, workload: dict[str, Any]) -> dict[str, Any]:
    await _closed_batch(client.call, workload["warmup"], workload["concurrency"])
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    records = await _closed_batch(client.call, workload["requests"], workload["concurrency"])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_s": cpu, "wall_s": wall, "records": records}


async def run_open(client: Client, workload: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, workload["start_at"] - time.monotonic()))
    start_at = time.monotonic()  # not before start_at; later if this process started late
    records: list[list[Any]] = []
    tasks: list[asyncio.Task[None]] = []
    phase_start = start_at
    for rate, seconds in workload["phases"]:
        count = round(rate * seconds)
        for k in range(count):
            delay = phase_start + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            record: list[Any] = [time.monotonic(), None, "lost", None, 0, None]
            records.append(record)
            tasks.append(asyncio.create_task(_one(client.call, record)))
        phase_start += seconds
    offered_until = time.monotonic()
    if tasks:
        _, pending = await asyncio.wait(
            tasks, timeout=max(0.0, workload["deadline_at"] - time.monotonic())
        )
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
    return {"started": start_at, "offered_until": offered_until, "records": records}


async def main_async(spec: dict[str, Any]) -> dict[str, Any]:
    client = CLIENTS[spec["client"]](spec)
    try:
        workload = spec["workload"]
        if workload["kind"] == "closed":
            result = await run_closed(client, workload)
        else:
            result = await run_open(client, workload)
        result["stats"] = client.stats()
    finally:
        await client.close()
    return result


async def main_and_exit(spec: dict[str, Any]) -> None:
    result = await main_async(spec)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    # LiteLLM's Router leaves background tasks that never end when cancelled, so asyncio.run's
    # clean-up would wait for ever: the answer is out, the process ends here.
    os._exit(0)


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    asyncio.run(main_and_exit(spec))
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
