"""Messages per second through the whole pipeline, beside bare SDK calls, in one run.

Pipeline: broker → Functions host → router → model simulator → result blob → complete, with the
simulator at zero latency and no limits (and a registry that says so: no tenant quota, capacities
far above the load, so the resilience layer's budgets and quotas never hold a request back and
what is measured is the system's cost, not its throttling). With the host running, N requests
are sent and the clock runs from the first send until all N result blobs exist. Baseline: the
same N chat completions made directly with `openai.AsyncAzureOpenAI` against the same simulator at
the host's concurrency (`maxConcurrentCalls` in host.json). The ratio is what the system costs
over calling the model.

    python -m bench.pipeline --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import BlobServiceClient
from openai import AsyncAzureOpenAI

from devhost.stack import (
    MODEL_API_KEY,
    MODELS_CONFIG,
    REGISTRY,
    LocalStack,
    StackOptions,
    fresh_data_dir,
)
from devhost.tenant_keys import Signers, proven_message
from shared.storage import names

TENANT = "tailwind"
ROOT = Path(__file__).resolve().parent.parent


def zero_latency_config(path: Path) -> Path:
    config = json.loads(MODELS_CONFIG.read_text())
    for deployment in config["deployments"]:
        deployment.update(tpm=0, rpm=0, latency_ms={"base": 0, "per_token": 0})
        deployment.pop("faults", None)
    path.write_text(json.dumps(config))
    return path


def unlimited_registry(path: Path) -> Path:
    registry = json.loads(REGISTRY.read_text())
    for deployment in registry["deployments"]:
        deployment["capacity"] = {"tokens_per_minute": 100_000_000, "requests_per_minute": 600_000}
    for tenant in registry["tenants"]:
        tenant.pop("quota", None)
    path.write_text(json.dumps(registry))
    return path


def host_concurrency() -> int:
    host = json.loads((ROOT / "host.json").read_text())
    return int(host["extensions"]["serviceBus"]["maxConcurrentCalls"])


def request_body(request_id: str) -> str:
    return json.dumps(
        {
            "type": "inference.request",
            "version": 1,
            "tenant_id": TENANT,
            "request_id": request_id,
            "messages": [{"role": "user", "content": "How do I rotate my API key?"}],
            "parameters": {"max_tokens": 32},
        }
    )


async def enqueue(servicebus: str, count: int, signers: Signers) -> None:
    async with (
        ServiceBusClient.from_connection_string(servicebus) as bus,
        bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender,
    ):
        for start in range(0, count, 100):
            ids = [f"bench-{uuid.uuid4()}" for _ in range(start, min(count, start + 100))]
            await sender.send_messages(
                [proven_message(signers(TENANT), request_body(rid), message_id=rid) for rid in ids]
            )


async def wait_for_results(storage: str, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        container = blobs.get_container_client(names.RESULTS_CONTAINER)
        while time.monotonic() < deadline:
            found = 0
            async for _ in container.list_blobs(name_starts_with=f"{TENANT}/"):
                found += 1
            if found >= count:
                return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"only {found} of {count} results within {timeout_s}s")


async def bare_calls(models_url: str, count: int, concurrency: int) -> float:
    """Calls per second of the bare SDK, `concurrency` calls in flight."""
    client = AsyncAzureOpenAI(
        azure_endpoint=models_url, api_key=MODEL_API_KEY, api_version="2024-10-21", max_retries=0
    )
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            await client.chat.completions.create(
                model="gpt-4o-mini-pool-a",
                messages=[{"role": "user", "content": "How do I rotate my API key?"}],
                max_tokens=32,
                extra_headers={"x-tenant-id": "bench"},
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    return count / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    concurrency = host_concurrency()
    data_dir = fresh_data_dir("bench-pipeline")  # kept afterwards: logs/ tells what happened
    options = StackOptions(
        data_dir=data_dir,
        models_config=zero_latency_config(data_dir / "models.json"),
        registry=unlimited_registry(data_dir / "registry.json"),
    )
    with LocalStack(options).start(with_host=False) as stack:
        settings = stack.app_settings()
        baseline = asyncio.run(
            bare_calls(settings["AZURE_OPENAI_ENDPOINT"], args.requests, concurrency)
        )
        stack.start_host()
        started = time.perf_counter()
        asyncio.run(
            enqueue(settings["ServiceBusConnection"], args.requests, Signers(stack.keys_file))
        )
        asyncio.run(wait_for_results(settings["AzureWebJobsStorage"], args.requests, args.timeout))
        pipeline = args.requests / (time.perf_counter() - started)
    print(f"requests: {args.requests}, concurrency: {concurrency}")
    print(f"bare AsyncAzureOpenAI calls:  {baseline:8.1f} calls/s")
    print(f"whole pipeline:               {pipeline:8.1f} messages/s")
    print(f"pipeline / bare SDK ratio:    {pipeline / baseline:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
