"""Noisy neighbour through the whole pipeline: one tenant floods at 10x its quota while two others
send steadily. Does the flood hurt them?

Everything is real: broker, Functions host, Redis (tenant quotas), model simulator. Three pooled
tenants share two pooled deployments of 20k TPM / 120 RPM each (240 RPM together). Each tenant's
quota is 30 requests per minute. `steady-a` and `steady-b` each send at 20 RPM; `flood` sends at
10x its quota (300 RPM, more than both deployments can take). Runs, each on a fresh stack:
- `calm`: the steady tenants alone (the baseline);
- `flood`: the same, plus the flood;
- `flood-no-quota` (with --contrast): the flood without tenant quotas, to show what they prevent.

Figures per run: the steady tenants' success rate within the window and p95 latency (send to
reply), the ratio of flood p95 to calm p95 (target <= 1.5), and Jain's fairness index over each
tenant's goodput as a fraction of its fair share (served / min(offered, quota)); 1.0 is fair.

    python -m bench.noisy_neighbour [--window 40] [--contrast] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.servicebus import ServiceBusSubQueue
from azure.servicebus.aio import ServiceBusClient

from devhost.stack import MODELS_CONFIG, LocalStack, StackOptions, fresh_data_dir
from devhost.tenant_keys import Signers, proven_message
from shared.storage import names

STEADY = ("steady-a", "steady-b")
FLOOD = "flood"
QUOTA_RPM = 30
STEADY_RPM = 20
FLOOD_RPM = 10 * QUOTA_RPM
DEPLOYMENTS = (("gpt-4o-mini-pool-a", 20_000, 120), ("gpt-4o-mini-pool-b", 20_000, 120))


def models_config(path: Path) -> Path:
    config = json.loads(MODELS_CONFIG.read_text())
    limits = {name: (tpm, rpm) for name, tpm, rpm in DEPLOYMENTS}
    for d in config["deployments"]:
        if d["name"] in limits:
            d["tpm"], d["rpm"] = limits[d["name"]]
    path.write_text(json.dumps(config))
    return path


def registry(path: Path, *, quotas: bool) -> Path:
    quota = {"requests_per_minute": QUOTA_RPM} if quotas else {}
    document = {
        "version": 1,
        "deployments": [
            {
                "name": name,
                "kind": "azure_openai",
                "mode": "pooled",
                "endpoint": "${AZURE_OPENAI_ENDPOINT}",
                "capacity": {"tokens_per_minute": tpm, "requests_per_minute": rpm},
            }
            for name, tpm, rpm in DEPLOYMENTS
        ],
        "tenants": [{"id": t, "mode": "pooled", "quota": quota} for t in (*STEADY, FLOOD)],
    }
    path.write_text(json.dumps(document))
    return path


@dataclass
class TenantLoad:
    tenant: str
    rpm: float
    sent: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    def latencies_ms(self) -> list[float]:
        return sorted((self.answered[r] - self.sent[r]) * 1000 for r in self.answered)


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(len(values) * 0.95))]


def jain(shares: list[float]) -> float:
    """Jain's fairness index: (sum x)^2 / (n * sum x^2); 1.0 when every x is equal."""
    if not shares or not any(shares):
        return 0.0
    return sum(shares) ** 2 / (len(shares) * sum(x * x for x in shares))


def body(tenant: str, request_id: str) -> str:
    return json.dumps(
        {
            "tenant_id": tenant,
            "request_id": request_id,
            "messages": [{"role": "user", "content": "Which plan includes priority support?"}],
            "parameters": {"max_tokens": 64},
        }
    )


async def send_at_rate(
    bus: ServiceBusClient, load: TenantLoad, window_s: float, signers: Signers
) -> None:
    """`load.rpm` requests per minute for `window_s`, in ticks of 0.5 s."""
    tick = 0.5
    per_tick = load.rpm / 60 * tick
    owed = 0.0
    started = time.monotonic()
    async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
        while time.monotonic() - started < window_s:
            owed += per_tick
            batch = []
            while owed >= 1:
                owed -= 1
                rid = f"{load.tenant}-{uuid.uuid4()}"
                batch.append(
                    proven_message(
                        signers(load.tenant),
                        body(load.tenant, rid),
                        message_id=rid,
                        reply_to=names.INFERENCE_RESULTS,
                    )
                )
                load.sent[rid] = time.monotonic()
            if batch:
                await sender.send_messages(batch)
            await asyncio.sleep(tick)


async def collect(
    bus: ServiceBusClient,
    loads: dict[str, TenantLoad],
    until: float,
    wanted: tuple[str, ...] = STEADY,
) -> None:
    """Replies until `until`, or until every `wanted` tenant's requests have theirs."""
    async with bus.get_queue_receiver(names.INFERENCE_RESULTS, prefetch_count=100) as receiver:
        while time.monotonic() < until:
            for msg in await receiver.receive_messages(max_message_count=100, max_wait_time=1):
                reply = json.loads(b"".join(msg.body))
                load = loads.get(str(reply.get("tenant_id")))
                rid = str(msg.correlation_id)
                if load is not None and rid in load.sent:
                    if reply.get("status") == "succeeded":
                        load.answered[rid] = time.monotonic()
                    else:
                        load.failed.add(rid)
                await receiver.complete_message(msg)
            done = all(
                len(loads[t].answered) + len(loads[t].failed) >= len(loads[t].sent) for t in wanted
            )
            if done and (wanted != STEADY or time.monotonic() > until - 1):
                break


async def dead_letters(bus: ServiceBusClient) -> int:
    async with bus.get_queue_receiver(
        names.INFERENCE_REQUESTS, sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ) as dlq:
        return len(await dlq.peek_messages(max_message_count=500))


async def warm_up(bus: ServiceBusClient, signers: Signers) -> None:
    """One request per tenant, answered, before the clock starts (connections, first imports)."""
    warm = {t: TenantLoad(t, 0) for t in (*STEADY, FLOOD)}
    async with bus.get_queue_sender(names.INFERENCE_REQUESTS) as sender:
        for load in warm.values():
            rid = f"{load.tenant}-warm-{uuid.uuid4()}"
            load.sent[rid] = time.monotonic()
            await sender.send_messages(
                proven_message(
                    signers(load.tenant),
                    body(load.tenant, rid),
                    message_id=rid,
                    reply_to=names.INFERENCE_RESULTS,
                )
            )
    await collect(bus, warm, time.monotonic() + 30, wanted=(*STEADY, FLOOD))


async def play(
    connection: str, signers: Signers, *, flood: bool, window_s: float, grace_s: float
) -> dict[str, Any]:
    loads = {t: TenantLoad(t, STEADY_RPM) for t in STEADY}
    if flood:
        loads[FLOOD] = TenantLoad(FLOOD, FLOOD_RPM)
    async with ServiceBusClient.from_connection_string(connection) as bus:
        await warm_up(bus, signers)
        collecting = asyncio.create_task(collect(bus, loads, time.monotonic() + window_s + grace_s))
        await asyncio.gather(
            *(send_at_rate(bus, load, window_s, signers) for load in loads.values())
        )
        await collecting
        dead = await dead_letters(bus)
    figures: dict[str, Any] = {"dead_lettered": dead, "tenants": {}}
    shares = []
    for t, load in loads.items():
        fair = min(len(load.sent), QUOTA_RPM * window_s / 60)
        share = min(1.0, len(load.answered) / fair) if fair else 0.0
        shares.append(share)
        lat = load.latencies_ms()
        figures["tenants"][t] = {
            "sent": len(load.sent),
            "answered": len(load.answered),
            "failed": len(load.failed),
            "success_rate": round(len(load.answered) / len(load.sent), 4) if load.sent else None,
            "p50_ms": round(statistics.median(lat)) if lat else None,
            "p95_ms": round(p95(lat) or 0) if lat else None,
            "share_of_fair": round(share, 3),
        }
    figures["jain"] = round(jain(shares), 3)
    steady_lat = sorted(x for t in STEADY for x in loads[t].latencies_ms())
    figures["steady_p95_ms"] = round(p95(steady_lat) or 0)
    sent = sum(len(loads[t].sent) for t in STEADY)
    figures["steady_success_rate"] = round(sum(len(loads[t].answered) for t in STEADY) / sent, 4)
    return figures


def run(name: str, *, flood: bool, quotas: bool, window_s: float, grace_s: float) -> dict[str, Any]:
    data = fresh_data_dir(f"bench-noisy-{name}")
    options = StackOptions(
        data_dir=data,
        models_config=models_config(data / "models.json"),
        registry=registry(data / "registry.json", quotas=quotas),
    )
    with LocalStack(options) as stack:
        connection = stack.app_settings()["ServiceBusConnection"]
        signers = Signers(stack.keys_file)
        return asyncio.run(
            play(connection, signers, flood=flood, window_s=window_s, grace_s=grace_s)
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=float, default=40.0, help="seconds of load per run")
    parser.add_argument("--grace", type=float, default=20.0, help="seconds to wait for replies")
    parser.add_argument("--contrast", action="store_true", help="also run the flood without quotas")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = {
        "calm": run("calm", flood=False, quotas=True, window_s=args.window, grace_s=args.grace),
        "flood": run("flood", flood=True, quotas=True, window_s=args.window, grace_s=args.grace),
    }
    if args.contrast:
        runs["flood-no-quota"] = run(
            "flood-no-quota", flood=True, quotas=False, window_s=args.window, grace_s=args.grace
        )
    calm_p95 = runs["calm"]["steady_p95_ms"] or 1
    summary = {
        "window_s": args.window,
        "runs": runs,
        "steady_p95_ratio_flood_vs_calm": round(runs["flood"]["steady_p95_ms"] / calm_p95, 2),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"window {args.window:g}s; quota {QUOTA_RPM} RPM per tenant; steady {STEADY_RPM} RPM each"
    )
    print(f"flood {FLOOD_RPM} RPM (10x quota); deployments 2 x 120 RPM")
    for name, figures in runs.items():
        print(
            f"{name:15} steady success {figures['steady_success_rate']:.1%}  "
            f"steady p95 {figures['steady_p95_ms']} ms  Jain {figures['jain']:.3f}  "
            f"dead letters {figures['dead_lettered']}"
        )
    print(
        f"steady p95, flood / calm: {summary['steady_p95_ratio_flood_vs_calm']:.2f} (target <= 1.5)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
