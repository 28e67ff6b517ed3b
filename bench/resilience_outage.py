"""An outage of one deployment of two: how fast traffic leaves it, what the tenant sees, how fast
it is used again. The resilient client beside LiteLLM's Router, in the same run.

Two pooled deployments of equal capacity, no rate limits, `--latency-ms` each. Arrivals are an
open loop at `--rate` requests per second for `--before` + `--outage` + `--after` seconds. After
`--before` seconds, the simulator's fault injection (`POST /admin/faults`, kind 500, every call,
for `--outage` seconds) makes the first deployment answer HTTP 500 to every call; then it
recovers by itself. The simulator's per-deployment counters are sampled every `--sample`
seconds, so every figure is what reached the service, whichever client sent it:
- seconds until traffic leaves it: from the fault's start to the last call it received before it
  first went `--quiet` seconds without a call (a circuit breaker's later probes are counted apart,
  as calls to it after it was left); n/a when it never went quiet during the outage;
- requests failed to the tenant: requests that ended in an error to the caller (target 0: the
  other deployment was healthy all along);
- seconds until used again: from the end of the outage to its first success after it, and to the
  first `--quiet`-second window in which it served at least half its share before the fault.
Ours: `ResilientModelClient`, a 300 s time budget, its breaker at its defaults (open after 5
failures in a row or half the calls of a 30 s window failing, for the retry-after or 10 s, then one
probe). LiteLLM: `Router`, usage-based routing v2, 3 retries, default cooldowns (a deployment
whose calls fail at more than half cools down for 5 s). Each client has a simulator of its own,
and the two run side by side.

    .venv/bin/python -m bench.resilience_outage --outage 30
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from bench._common import (
    DEFAULT_PROMPT,
    LITELLM_SETUP,
    Driver,
    base_spec,
    fmt,
    litellm_available,
    print_json,
)
from bench._sim import SimDeployment, SimulatorProcess, deployment_counts

FAILING = "outage-a"
HEALTHY = "outage-b"
START_DELAY_S = 4.0


class Sampler(threading.Thread):
    """Samples a simulator's per-deployment counters every `interval` seconds."""

    def __init__(self, sim: SimulatorProcess, interval: float) -> None:
        super().__init__(daemon=True)
        self.sim = sim
        self.interval = interval
        self.samples: list[tuple[float, dict[str, dict[str, int]]]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            at = time.monotonic()
            counts = deployment_counts(self.sim.stats())
            self.samples.append((at, counts))
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - at)))


def _count(sample: dict[str, dict[str, int]], deployment: str, key: str) -> int:
    return sample.get(deployment, {}).get(key, 0)


def summarise(
    result: dict[str, Any],
    samples: list[tuple[float, dict[str, dict[str, int]]]],
    fault_start: float,
    fault_end: float,
    quiet_s: float,
) -> dict[str, Any]:
    records = result["records"]
    failed = [r for r in records if r[2] != "ok"]
    # Moments at which calls reached the failing deployment (sample times where its count rose).
    calls_at: list[float] = []
    ok_at: list[tuple[float, int, int]] = []  # (time, its successes, all successes) per sample
    previous: dict[str, dict[str, int]] = {}
    for at, counts in samples:
        if _count(counts, FAILING, "requests") > _count(previous, FAILING, "requests"):
            calls_at.append(at)
        ok_at.append((at, _count(counts, FAILING, "ok"), sum(c["ok"] for c in counts.values())))
        previous = counts
    during = [t for t in calls_at if fault_start <= t <= fault_end]
    left_at = None
    for i, t in enumerate(during):
        following = during[i + 1] if i + 1 < len(during) else fault_end
        if following - t >= quiet_s:
            left_at = t
            break
    after_left = [t for t in during if left_at is not None and t > left_at]
    share_before = _share(ok_at, fault_start - max(5.0, quiet_s), fault_start)
    first_ok = next(
        (
            at
            for (at, mine, _), (_, before, _) in zip(ok_at[1:], ok_at, strict=False)
            if at > fault_end and mine > before
        ),
        None,
    )
    restored = None
    for at, _, _ in ok_at:
        if at <= fault_end + quiet_s:
            continue
        share = _share(ok_at, at - quiet_s, at)
        if share is not None and share_before and share >= share_before / 2:
            restored = at
            break
    faults_during = 0
    start_counts = _at(samples, fault_start)
    end_counts = _at(samples, fault_end + 1.0)
    if start_counts is not None and end_counts is not None:
        faults_during = _count(end_counts, FAILING, "faults") - _count(
            start_counts, FAILING, "faults"
        )
    return {
        "requests": len(records),
        "failed_to_tenant": len(failed),
        "failed_during_outage": sum(1 for r in failed if fault_start <= r[1] <= fault_end + 1),
        "failure_kinds": _kinds(failed),
        "seconds_until_traffic_leaves": None if left_at is None else left_at - fault_start,
        "calls_to_failing_during_outage": faults_during,
        "calls_to_failing_after_it_was_left": len(after_left),
        "seconds_until_used_again": None if first_ok is None else first_ok - fault_end,
        "seconds_until_share_restored": None if restored is None else restored - fault_end,
        "share_before_outage": share_before,
        "client": result["stats"],
    }


def _kinds(failed: list[list[Any]]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for r in failed:
        key = str(r[5] or r[2]).split("(")[0]
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


def _at(
    samples: list[tuple[float, dict[str, dict[str, int]]]], when: float
) -> dict[str, dict[str, int]] | None:
    """The last sample taken at or before `when`."""
    found = None
    for at, counts in samples:
        if at > when:
            break
        found = counts
    return found


def _share(ok_at: list[tuple[float, int, int]], start: float, end: float) -> float | None:
    """The failing deployment's share of the successes between two times."""
    inside = [(mine, total) for at, mine, total in ok_at if start <= at <= end]
    if len(inside) < 2:
        return None
    mine = inside[-1][0] - inside[0][0]
    total = inside[-1][1] - inside[0][1]
    return mine / total if total else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    clients = ["ours"] + (["litellm"] if args.litellm else [])
    deployments = [{"name": FAILING}, {"name": HEALTHY}]
    sim_deployments = [
        SimDeployment(d["name"], latency_base_ms=args.latency_ms) for d in deployments
    ]
    sims = {c: SimulatorProcess(sim_deployments) for c in clients}
    total_s = args.before + args.outage + args.after
    try:
        for sim in sims.values():
            sim.start()
        samplers = {c: Sampler(sim, args.sample) for c, sim in sims.items()}
        start_at = time.monotonic() + START_DELAY_S
        drivers = {
            client: Driver(
                base_spec(
                    client,
                    sim.url,
                    deployments,
                    prompt=DEFAULT_PROMPT,
                    max_tokens=args.max_tokens,
                    policy={"time_budget_s": 300.0, "max_wait_s": 300.0},
                    workload={
                        "kind": "open",
                        "phases": [[args.rate, total_s]],
                        "start_at": start_at,
                        "deadline_at": start_at + total_s + 360.0,
                    },
                )
            )
            for client, sim in sims.items()
        }
        for sampler in samplers.values():
            sampler.start()
        time.sleep(max(0.0, start_at + args.before - time.monotonic()))
        fault_start = time.monotonic()
        for sim in sims.values():
            sim.add_fault(FAILING, kind="500", duration_s=args.outage)
        fault_end = fault_start + args.outage
        results = {c: d.result(timeout_s=total_s + 480.0) for c, d in drivers.items()}
        for sampler in samplers.values():
            sampler.stopping.set()
            sampler.join()
    finally:
        for sim in sims.values():
            sim.stop()
    figures: dict[str, Any] = {
        "deployments": [FAILING, HEALTHY],
        "rate_per_second": args.rate,
        "before_s": args.before,
        "outage_s": args.outage,
        "after_s": args.after,
        "results": {
            c: summarise(results[c], samplers[c].samples, fault_start, fault_end, args.quiet)
            for c in clients
        },
    }
    for r in figures["results"].values():
        r["target_no_failures_met"] = r["failed_to_tenant"] == 0
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--before", type=float, default=10.0, help="seconds before the outage")
    parser.add_argument("--outage", type=float, default=20.0, help="seconds of HTTP 500s")
    parser.add_argument("--after", type=float, default=20.0, help="seconds after the outage")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--sample", type=float, default=0.1, help="sampling interval, seconds")
    parser.add_argument("--quiet", type=float, default=1.0, help="a gap that counts as left")
    parser.add_argument("--no-litellm", dest="litellm", action="store_false")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args()
    if args.litellm and not litellm_available():
        parser.error(f"LiteLLM is not installed for the benchmarks: {LITELLM_SETUP}")
    figures = run(args)
    if args.json:
        print_json(figures)
        return 0
    print(
        f"{FAILING} answers 500 for {args.outage:g}s ({args.before:g}s in), {HEALTHY} stays "
        f"healthy; {args.rate:g} requests/s for {args.before + args.outage + args.after:g}s"
    )
    for client, label in (("ours", "ResilientModelClient"), ("litellm", "LiteLLM Router")):
        if client not in figures["results"]:
            continue
        r = figures["results"][client]
        print(f"\n{label}")
        print(
            f"  seconds until traffic leaves it: {fmt(r['seconds_until_traffic_leaves'], '.2f')}"
            f"   (calls to it during the outage: {r['calls_to_failing_during_outage']}, "
            f"after it was left: {r['calls_to_failing_after_it_was_left']})"
        )
        print(
            f"  requests failed to the tenant:   {r['failed_to_tenant']} of {r['requests']}"
            f"   (target 0: {'met' if r['target_no_failures_met'] else 'MISSED'})"
        )
        if r["failure_kinds"]:
            print(f"      failures: {r['failure_kinds']}")
        print(
            f"  seconds until used again:        {fmt(r['seconds_until_used_again'], '.2f')}"
            f"   (until half its share is back: {fmt(r['seconds_until_share_restored'], '.2f')})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
