"""The demo: three tenant apps talk to the system over Service Bus, as they would in Azure.

One pooled, one dedicated and one tuned tenant each send requests in one burst with the real
azure-servicebus SDK, each message proving its tenant (an HMAC with the tenant's key, from the
stack's keys file), and wait for replies on their own reply queue; a stranger sends garbage and
claims to be contoso without contoso's key (refused: tenant_proof_missing / _invalid).
Judged as a tenant would: every well-formed request must be answered (not failed, not
dead-lettered), each broken one rejected with a reason; routing is checked against the simulator's
own counts. Then the drift act (devhost/demo_drift.py): fabrikam's tuned model decays, its users'
ratings show it, and exactly one fine-tune request must follow, with a report and a chart; then
the fine-tuning act (devhost/demo_finetune.py): that request is trained by the local job runner,
evaluated, promoted, and fabrikam's users rate the new version well again. The
table also shows, from the Functions host's log, how the resilience layer got there: retries,
failovers and reschedules per tenant and circuit-breaker transitions per deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from azure.servicebus import ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient
from azure.storage.blob.aio import BlobServiceClient

from devhost.demo_batch import batch_act
from devhost.demo_batch import describe as describe_batch_act
from devhost.demo_drift import describe as describe_drift_act
from devhost.demo_drift import run_drift_act
from devhost.demo_finetune import describe as describe_finetune_act
from devhost.demo_finetune import run_finetune_act
from devhost.tenant_keys import Signers, proven_message
from shared.security.proof import ProofReason
from shared.security.sign import TenantSigner
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
# What Azure OpenAI does on a bad day, injected into the simulator as the burst starts: the tuned
# deployment throttles with a long retry-after (its breaker opens, fabrikam fails over to its base),
# one pooled deployment fails with 500s (tailwind fails over), and contoso's only deployment asks
# for 12 s, longer than a handler waits in-process: contoso's requests are rescheduled on Service
# Bus for when it has room, and answered then, never dead-lettered.
BAD_DAY: tuple[dict[str, Any], ...] = (
    {"deployment": "fabrikam-ft-v1", "kind": "429", "count": 2, "retry_after_s": 20},
    {"deployment": "gpt-4o-mini-pool-b", "kind": "500", "count": 6},
    {"deployment": "contoso-gpt-4o", "kind": "429", "count": 1, "retry_after_s": 12},
)
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
    failed: set[str] = field(default_factory=set)
    expected_rejections: set[str] = field(default_factory=set)
    expected_reasons: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    dead_lettered: set[str] = field(default_factory=set)
    tokens: int = 0
    deployments: Counter[str] = field(default_factory=Counter)

    @property
    def pending(self) -> set[str]:
        done = set(self.answered) | self.rejected | self.failed | self.dead_lettered
        return set(self.sent_at) - done

    def not_served(self) -> list[str]:
        """What this tenant would complain about: a good request not answered, a bad one not
        rejected."""
        good = set(self.sent_at) - self.expected_rejections
        problems = []
        if missed := good - set(self.answered):
            problems.append(f"{len(missed)} of {len(good)} requests not answered")
        if unrejected := self.expected_rejections - self.rejected:
            problems.append(f"{len(unrejected)} broken request(s) not rejected")
        for message_id, reason in self.expected_reasons.items():
            got = self.reasons.get(message_id)
            if message_id in self.rejected and got != reason:
                problems.append(f"{message_id} rejected as {got}, expected {reason}")
        return problems

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


async def play_tenant(bus: ServiceBusClient, tally: Tally, count: int, *, signers: Signers) -> None:
    """A tenant app: its requests (and one it got wrong) onto `inference-requests`, each
    proving its tenant with the tenant's key."""
    reply_queue = f"replies-{tally.tenant}"
    signer = signers(tally.tenant)
    async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
        for start in range(0, count, 20):
            batch = []
            for i in range(start, min(count, start + 20)):
                request_id = f"{tally.tenant}-{uuid.uuid4()}"
                batch.append(
                    proven_message(
                        signer,
                        json.dumps(_request(tally.tenant, request_id, i)),
                        message_id=request_id,
                        reply_to=reply_queue,
                    )
                )
                tally.sent_at[request_id] = time.monotonic()
            await sender.send_messages(batch)
        broken_id = f"{tally.tenant}-broken-{uuid.uuid4()}"
        broken = _request(tally.tenant, broken_id, 0)
        del broken["messages"]
        tally.sent_at[broken_id] = time.monotonic()
        tally.expected_rejections.add(broken_id)
        await sender.send_messages(
            proven_message(signer, json.dumps(broken), message_id=broken_id, reply_to=reply_queue)
        )


async def play_stranger(bus: ServiceBusClient, tally: Tally) -> None:
    """Garbage from nobody the registry knows, and a spoof: it claims to be contoso, once with
    no proof and once signed with a key it made up, naming contoso's reply queue. Each must end
    as a `rejected/_unknown/...` record with its reason, never as an answer."""
    async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
        bad_json, unknown, bare, forged = (f"stranger-{uuid.uuid4()}" for _ in range(4))
        for message_id in (bad_json, unknown, bare, forged):
            tally.sent_at[message_id] = time.monotonic()
        tally.expected_rejections |= {bad_json, unknown, bare, forged}
        tally.expected_reasons |= {bare: ProofReason.MISSING, forged: ProofReason.INVALID}
        guessed = TenantSigner("contoso", "k-guess", "not-contosos-key")
        await sender.send_messages(
            [
                ServiceBusMessage(b"{not json", message_id=bad_json),
                ServiceBusMessage(json.dumps(_request("globex", unknown, 0)), message_id=unknown),
                ServiceBusMessage(
                    json.dumps(_request("contoso", bare, 0)),
                    message_id=bare,
                    reply_to="replies-contoso",
                ),
                proven_message(
                    guessed,
                    json.dumps(_request("contoso", forged, 0)),
                    message_id=forged,
                    reply_to="replies-contoso",
                ),
            ]
        )


async def collect_replies(bus: ServiceBusClient, tally: Tally, deadline: float) -> None:
    async with bus.get_queue_receiver(f"replies-{tally.tenant}", prefetch_count=50) as receiver:
        while tally.pending and time.monotonic() < deadline:
            for msg in await receiver.receive_messages(max_message_count=50, max_wait_time=1):
                body = json.loads(b"".join(msg.body))
                request_id = str(msg.correlation_id)
                if body.get("type") == "inference.result" and body.get("status") == "failed":
                    tally.failed.add(request_id)
                elif body.get("type") == "inference.result":
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
                blob = container.get_blob_client(f"_unknown/{message_id}.json")
                if await blob.exists():
                    record = json.loads(await (await blob.download_blob()).readall())
                    tally.reasons[message_id] = str(record.get("reason"))
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


async def install_faults(models_url: str, faults: Iterable[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as http:
        for fault in faults:
            async with http.post(f"{models_url}/admin/faults", json=fault) as resp:
                resp.raise_for_status()


async def simulator_stats(models_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{models_url}/admin/stats") as resp:
        data: dict[str, Any] = await resp.json()
        return data


async def models_of_the_loop(storage: str) -> dict[str, set[str]]:
    """What the fine-tuning loop may add to a tenant's calls, from the registry as stored now:
    its own tuned versions (the gate scores candidates, promotion serves one) and, for tenants
    whose data may reach pooled deployments, the judge the gate asks."""
    async with BlobServiceClient.from_connection_string(storage) as blobs:
        blob = blobs.get_blob_client(names.CONFIG_CONTAINER, "registry.json")
        registry = json.loads(await (await blob.download_blob()).readall())
    extra: dict[str, set[str]] = {tenant: set() for tenant in ALLOWED}
    for d in registry["deployments"]:
        owner = d.get("owner_tenant")
        if owner in extra and d.get("mode") == "tuned":
            extra[owner].add(d.get("model") or d["name"])
        if d.get("purpose") == "evaluation":
            for tenant in ("tailwind", "fabrikam"):  # contoso's data stays on its own
                extra[tenant].add(d.get("model") or d["name"])
    return extra


def routing_violations(stats: dict[str, Any], also: dict[str, set[str]] | None = None) -> list[str]:
    """Each tenant's calls, as the simulator counted them, reached only what its mode allows
    (plus `also`: what the fine-tuning loop added for it)."""
    problems = []
    for tenant, modes in ALLOWED.items():
        used = set(stats.get("tenants", {}).get(tenant, {}).get("deployments", {}))
        allowed = modes | (also or {}).get(tenant, set())
        if used - allowed:
            problems.append(f"{tenant} reached {sorted(used - allowed)}")
    return problems


def log_fields(lines: Iterable[str]) -> Iterable[dict[str, str]]:
    """The `key=value` fields of each structured log line of the host (`event` included)."""
    for line in lines:
        for event in ("inference.", "breaker.transition"):
            at = line.find(f": {event}")
            if at >= 0:
                text = line[at + 2 :]
                # key=value pairs; a value with spaces is in JSON quotes (key_values' format)
                try:
                    name, *pairs = shlex.split(text)
                except ValueError:  # not one of ours after all (e.g. a quoted traceback line)
                    break
                fields = dict(pair.partition("=")[::2] for pair in pairs if "=" in pair)
                fields["event"] = name
                yield fields
                break


@dataclass
class Resilience:
    """What the host's log says the resilience layer did."""

    per_tenant: dict[str, Counter[str]] = field(default_factory=dict)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)

    @classmethod
    def from_log(cls, path: Path | None) -> Resilience:
        seen = cls()
        if path is None or not path.exists():
            return seen
        with path.open(encoding="utf-8", errors="replace") as lines:
            for f in log_fields(lines):
                if f["event"] == "breaker.transition":
                    seen.transitions[(f.get("deployment", "?"), f.get("to_state", "?"))] += 1
                    continue
                counts = seen.per_tenant.setdefault(f.get("tenant_id", "-"), Counter())
                if f["event"] == "inference.completed":
                    counts["retries"] += int(f.get("retries", 0))
                    counts["failovers"] += int(f.get("failovers", 0))
                    counts["throttled"] += int(f.get("throttled", 0))
                elif f["event"] == "inference.rescheduled":
                    counts["reschedules"] += 1
                    counts["throttled"] += int(f.get("throttled", 0))
        return seen


def render_table(tallies: list[Tally], seen: Resilience | None = None) -> str:
    seen = seen or Resilience()
    header = (
        "tenant",
        "mode",
        "sent",
        "answered",
        "rejected",
        "failed",
        "dead-lettered",
        "retries",
        "failovers",
        "reschedules",
        "429s",
        "p50 ms",
        "p95 ms",
        "tokens",
    )
    rows = [header]
    for t in tallies:
        lat = t.latencies_ms()
        p50 = f"{statistics.median(lat):.0f}" if lat else "-"
        p95 = f"{lat[min(len(lat) - 1, int(len(lat) * 0.95))]:.0f}" if lat else "-"
        counts = seen.per_tenant.get(t.tenant, Counter())
        rows.append(
            (
                t.tenant,
                t.mode,
                str(len(t.sent_at)),
                str(len(t.answered)),
                str(len(t.rejected)),
                str(len(t.failed)),
                str(len(t.dead_lettered)),
                str(counts["retries"]),
                str(counts["failovers"]),
                str(counts["reschedules"]),
                str(counts["throttled"]),
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
    lines.append("circuit breakers (transitions into each state, from the host's log):")
    deployments = sorted({d for d, _ in seen.transitions})
    for d in deployments:
        order = {"open": 0, "half_open": 1, "closed": 2}
        moved = [(s, n) for (dd, s), n in seen.transitions.items() if dd == d]
        moves = ", ".join(f"{s} x{n}" for s, n in sorted(moved, key=lambda m: order.get(m[0], 3)))
        lines.append(f"  {d}: {moves}")
    if not deployments:
        lines.append("  none: every breaker stayed closed")
    return "\n".join(lines)


async def run_demo(
    servicebus: str,
    storage: str,
    models_url: str,
    per_tenant: int,
    timeout_s: float,
    *,
    host_log: Path | None = None,
    bad_day: bool = True,
    drift_requests: int = 420,
    chart_to: Path | None = None,
    host_url: str = "",
    keys_file: Path,
) -> int:
    signers = Signers(keys_file)
    tallies = [Tally(tenant, mode) for tenant, mode in TENANTS]
    stranger = Tally("(unknown)", "-")
    done = asyncio.Event()
    drift = None
    if drift_requests:
        # First, on a calm provider: the act needs fabrikam's own deployment, not its fallback
        # (the bad day below opens its breaker for 20 s). Its account is printed after the table.
        print(f"drift act: fabrikam's app sends {drift_requests} requests and rates each answer")
        drift = await run_drift_act(
            servicebus,
            storage,
            host_url,
            requests=drift_requests,
            timeout_s=timeout_s,
            chart_to=chart_to,
            signers=signers,
        )
    deadline = time.monotonic() + timeout_s
    if bad_day:
        print(
            "a bad day at the model provider: "
            + "; ".join(
                f"{f['deployment']} answers {f['kind']} to its next {f['count']} calls"
                + (f" (retry-after {f['retry_after_s']} s)" if "retry_after_s" in f else "")
                for f in BAD_DAY
            )
        )
        await install_faults(models_url, BAD_DAY)
    async with ServiceBusClient.from_connection_string(servicebus) as bus:
        await asyncio.gather(
            *(play_tenant(bus, t, per_tenant, signers=signers) for t in tallies),
            play_stranger(bus, stranger),
        )
        bar = asyncio.create_task(progress([*tallies, stranger], done))
        await asyncio.gather(
            *(collect_replies(bus, t, deadline) for t in tallies),
            collect_unknown(storage, stranger, deadline),
            collect_dead_letters(bus, [*tallies, stranger], deadline),
        )
        done.set()
        await bar
    print(render_table([*tallies, stranger], Resilience.from_log(host_log)))
    problems = routing_violations(
        await simulator_stats(models_url), await models_of_the_loop(storage)
    )
    for t in [*tallies, stranger]:
        problems += [f"{t.tenant}: {p}" for p in t.not_served()]
    dead = sum(len(t.dead_lettered) for t in [*tallies, stranger])
    if dead:
        problems.append(f"{dead} message(s) dead-lettered")
    if drift is not None:
        print()
        print("\n".join(describe_drift_act(drift)))
        problems += [f"drift act: {p}" for p in drift.problems]
        if not drift.problems:
            print()
            print("fine-tuning act: following fabrikam's job, then its users rate the new model")
            tuned = await run_finetune_act(
                servicebus, host_url, drift, timeout_s=timeout_s, signers=signers
            )
            print("\n".join(describe_finetune_act(tuned)))
            problems += [f"fine-tuning act: {p}" for p in tuned.problems]
    print()
    batch = await batch_act(
        storage,
        http_url=f"{host_url}/api" if host_url else None,
        timeout_s=timeout_s,
        signers=signers,
    )
    print("\n".join(describe_batch_act(batch)))
    problems += [f"batch act: {p}" for p in batch.problems]
    for p in problems:
        print(f"FAILED: {p}", file=sys.stderr)
    if not problems:
        print(
            "every tenant's requests were answered, every broken one rejected with a reason, "
            "the stranger's spoofed contoso requests refused (tenant_proof_missing, "
            "tenant_proof_invalid), nothing dead-lettered; isolation kept"
            + (
                "; the decayed model was detected, retrained, evaluated and promoted, and "
                "fabrikam's users rate it well again"
                if drift_requests
                else ""
            )
        )
    return 1 if problems else 0
