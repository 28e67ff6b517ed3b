"""The demo: three tenant apps talk to the system over Service Bus, as they would in Azure.

One pooled, one dedicated and one tuned tenant each send requests with the real azure-servicebus
SDK and wait for replies on their own reply queue; a stranger sends garbage. Every message must
end as an answer or a rejection record; routing is checked against the simulator's own counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import BlobServiceClient

from shared.storage import names

TENANTS: tuple[tuple[str, str], ...] = (
    ("tailwind", "pooled"),
    ("contoso", "dedicated"),
    ("fabrikam", "tuned"),
)
ALLOWED: dict[str, set[str]] = {
    "tailwind": {"gpt-4o-mini-pool-a", "gpt-4o-mini-pool-b", "phi-4-pool"},
    "contoso": {"contoso-gpt-4o"},
    "fabrikam": {"fabrikam-ft-v1", "gpt-4o-mini-pool-a"},
}
QUESTIONS = (
    "Which plan includes priority support?",
    "Summarise our refund policy in one sentence.",
    "How do I rotate my API key?",
    "What is the uptime commitment of the Business plan?",
)


@dataclass
class Tally:
    tenant: str
    mode: str
    sent_at: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)
    dead_lettered: set[str] = field(default_factory=set)
    tokens: int = 0
    deployments: Counter[str] = field(default_factory=Counter)

    @property
    def pending(self) -> set[str]:
        return set(self.sent_at) - set(self.answered) - self.rejected - self.dead_lettered

    def latencies_ms(self) -> list[float]:
        return sorted((self.answered[r] - self.sent_at[r]) * 1000 for r in self.answered)


def _request(tenant: str, request_id: str, i: int) -> dict[str, Any]:
    return {
        "type": "inference.request",
        "version": 1,
        "tenant_id": tenant,
        "request_id": request_id,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
        ],
        "parameters": {"max_tokens": 64, "temperature": 0.2},
        "feature": "faq",
    }


async def play_tenant(bus: ServiceBusClient, tally: Tally, count: int) -> None:
    """A tenant app: its requests (and one it got wrong) onto `inference-requests`."""
    reply_queue = f"replies-{tally.tenant}"
    async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
        for start in range(0, count, 20):
            batch = []
            for i in range(start, min(count, start + 20)):
                request_id = f"{tally.tenant}-{uuid.uuid4()}"
                batch.append(
                    ServiceBusMessage(
                        json.dumps(_request(tally.tenant, request_id, i)),
                        message_id=request_id,
                        reply_to=reply_queue,
                        content_type="application/json",
                    )
                )
                tally.sent_at[request_id] = time.monotonic()
            await sender.send_messages(batch)
        broken_id = f"{tally.tenant}-broken-{uuid.uuid4()}"
        broken = _request(tally.tenant, broken_id, 0)
        del broken["messages"]
        tally.sent_at[broken_id] = time.monotonic()
        await sender.send_messages(
            ServiceBusMessage(json.dumps(broken), message_id=broken_id, reply_to=reply_queue)
        )


async def play_stranger(bus: ServiceBusClient, tally: Tally) -> None:
    """Garbage from nobody the registry knows: it must end as `rejected/_unknown/...` records."""
    async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
        bad_json = f"stranger-{uuid.uuid4()}"
        unknown = f"stranger-{uuid.uuid4()}"
        tally.sent_at[bad_json] = tally.sent_at[unknown] = time.monotonic()
        await sender.send_messages(
            [
                ServiceBusMessage(b"{not json", message_id=bad_json),
                ServiceBusMessage(json.dumps(_request("globex", unknown, 0)), message_id=unknown),
            ]
        )


async def collect_replies(bus: ServiceBusClient, tally: Tally, deadline: float) -> None:
    async with bus.get_queue_receiver(f"replies-{tally.tenant}", prefetch_count=50) as receiver:
        while tally.pending and time.monotonic() < deadline:
            for msg in await receiver.receive_messages(max_message_count=50, max_wait_time=1):
                body = json.loads(b"".join(msg.body))
                request_id = str(msg.correlation_id)
                if body.get("type") == "inference.result":
                    tally.answered[request_id] = time.monotonic()
                    tally.tokens += int(body["usage"]["total_tokens"])
                    tally.deployments[body["deployment"]] += 1
                else:
                    tally.rejected.add(request_id)
                await receiver.complete_message(msg)


async def collect_dead_letters(
    bus: ServiceBusClient, tallies: list[Tally], deadline: float
) -> None:
    """Requests the system gave up on (retries exhausted) end in the dead-letter queue, with a
    reason: accounted for, and shown, rather than lost."""
    owner = {rid: t for t in tallies for rid in t.sent_at}
    async with bus.get_queue_receiver(
        names.INFERENCE_REQUESTS, sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ) as receiver:
        while any(t.pending for t in tallies) and time.monotonic() < deadline:
            for msg in await receiver.receive_messages(max_message_count=50, max_wait_time=1):
                tally = owner.get(str(msg.message_id))
                if tally is not None:
                    tally.dead_lettered.add(str(msg.message_id))
                await receiver.complete_message(msg)


async def collect_unknown(storage: str, tally: Tally, deadline: float) -> None:
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        container = blobs.get_container_client(names.REJECTED_CONTAINER)
        while tally.pending and time.monotonic() < deadline:
            for message_id in list(tally.pending):
                if await container.get_blob_client(f"_unknown/{message_id}.json").exists():
                    tally.rejected.add(message_id)
            await asyncio.sleep(0.5)


async def progress(tallies: list[Tally], done: asyncio.Event) -> None:
    total = sum(len(t.sent_at) for t in tallies) or 1
    shown = -1
    width = 40
    while True:
        finished = sum(len(t.sent_at) - len(t.pending) for t in tallies)
        if finished != shown:
            shown = finished
            filled = int(width * finished / max(total, finished))
            sys.stderr.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {finished}/{total}")
            sys.stderr.flush()
        if done.is_set():
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.3)
    sys.stderr.write("\n")


async def simulator_stats(models_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{models_url}/admin/stats") as resp:
        data: dict[str, Any] = await resp.json()
        return data


def routing_violations(stats: dict[str, Any]) -> list[str]:
    """Each tenant's calls, as the simulator counted them, reached only what its mode allows."""
    problems = []
    for tenant, allowed in ALLOWED.items():
        used = set(stats.get("tenants", {}).get(tenant, {}).get("deployments", {}))
        if used - allowed:
            problems.append(f"{tenant} reached {sorted(used - allowed)}")
    return problems


def render_table(tallies: list[Tally]) -> str:
    header = (
        "tenant",
        "mode",
        "sent",
        "answered",
        "rejected",
        "dead-lettered",
        "p50 ms",
        "p95 ms",
        "tokens",
    )
    rows = [header]
    for t in tallies:
        lat = t.latencies_ms()
        p50 = f"{statistics.median(lat):.0f}" if lat else "-"
        p95 = f"{lat[min(len(lat) - 1, int(len(lat) * 0.95))]:.0f}" if lat else "-"
        rows.append(
            (
                t.tenant,
                t.mode,
                str(len(t.sent_at)),
                str(len(t.answered)),
                str(len(t.rejected)),
                str(len(t.dead_lettered)),
                p50,
                p95,
                str(t.tokens),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for t in tallies:
        if t.deployments:
            used = ", ".join(f"{d} x{n}" for d, n in sorted(t.deployments.items()))
            lines.append(f"  {t.tenant}: {used}")
    return "\n".join(lines)


async def run_demo(
    servicebus: str, storage: str, models_url: str, per_tenant: int, timeout_s: float
) -> int:
    tallies = [Tally(tenant, mode) for tenant, mode in TENANTS]
    stranger = Tally("(unknown)", "-")
    done = asyncio.Event()
    deadline = time.monotonic() + timeout_s
    async with ServiceBusClient.from_connection_string(servicebus) as bus:
        await asyncio.gather(
            *(play_tenant(bus, t, per_tenant) for t in tallies), play_stranger(bus, stranger)
        )
        bar = asyncio.create_task(progress([*tallies, stranger], done))
        await asyncio.gather(
            *(collect_replies(bus, t, deadline) for t in tallies),
            collect_unknown(storage, stranger, deadline),
            collect_dead_letters(bus, [*tallies, stranger], deadline),
        )
        done.set()
        await bar
    print(render_table([*tallies, stranger]))
    problems = routing_violations(await simulator_stats(models_url))
    missing = sum(len(t.pending) for t in [*tallies, stranger])
    if missing:
        problems.append(f"{missing} message(s) unaccounted for")
    for p in problems:
        print(f"FAILED: {p}", file=sys.stderr)
    if not problems:
        print("every message is accounted for (answer, rejection or dead letter); isolation kept")
    return 1 if problems else 0
