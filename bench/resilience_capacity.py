"""Goodput at and over capacity: the resilient client beside LiteLLM's Router, on the same limits.

Three pooled deployments (30k / 20k / 10k tokens per minute by default; requests per minute by
Azure's rule, 6 per 1,000 TPM, unless `--rpm` sets them) on the model simulator, which enforces
both limits as Azure does: each request is charged at admission its prompt estimate plus its
`max_tokens` over a sliding minute, and RPM/6 requests per 10-second window; refusals are real
429s with retry-after headers. Every request is the same, so the ceiling the limits allow
together is exact: the sum over deployments of min(TPM / charge, RPM) requests per minute.

Arrivals are an open loop, evenly spaced (a slow answer does not slow the arrivals), and start on
a boundary of the simulator's 10-second RPM windows (they follow the machine's monotonic clock).
Goodput is read from the simulator, which counts a success when it admits the request: its count
is sampled just before every window boundary, so what each client got served in each window is
exact, and a fraction of the ceiling is that over the ceiling's share of the same windows
(seconds are rounded to whole windows; a window that straddles a phase would mix two loads).
(a) At capacity: the ceiling's rate for `--at-seconds`. Goodput = served in the windows of the
    arrivals / the ceiling over them; 429s received per success (counted by the simulator, so a
    retry inside any SDK counts too). Targets: >= 0.97 of the ceiling, <= 0.02 429s per success.
(b) Over capacity: 3x the ceiling for `--window` seconds, then no more arrivals while the
    backlog drains. Failed = requests that ended in an error to the caller (for ours that
    includes `TryLater`: the caller asked for an answer and did not get one); lost = requests with
    no answer and no error by the deadline (the window + the time budget + 60 s). Goodput while
    draining = served in the windows after the last arrival in which a backlog waited all along
    (up to, not including, the last window that served anything) / the ceiling over them; also
    429s per success and p50/p99 latency of the successes, arrival to answer. Targets: 0 failed,
    0 lost, >= 0.97 of the ceiling while draining, <= 0.05 429s per success.

Ours: `ResilientModelClient` with a 300 s time budget and a 65 s longest single wait (a library
caller that would rather wait for capacity than fail; the Functions handler reschedules instead);
its other settings at their defaults. LiteLLM: `Router`, usage-based routing v2 over the same
deployments' tpm/rpm, 3 retries, default cooldowns. Each client has a simulator of its own, and
the two run side by side in the same run; each phase starts from fresh limiters.

    .venv/bin/python -m bench.resilience_capacity --window 60
"""

from __future__ import annotations

import argparse
import math
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
    percentile,
    print_json,
    request_charge,
)
from bench._sim import SimDeployment, SimulatorProcess, deployment_counts

START_DELAY_S = 4.0
RPM_WINDOW_S = 10.0  # the simulator, as Azure, admits RPM/6 requests per fixed 10 s window
SAMPLE_BEFORE_BOUNDARY_S = 0.05
TARGETS = {
    "at_capacity_goodput_min": 0.97,
    "at_capacity_429_per_success_max": 0.02,
    "overload_failed_max": 0,
    "overload_lost_max": 0,
    "overload_drain_goodput_min": 0.97,
    "overload_429_per_success_max": 0.05,
}


def effective_rpm(tpm: int, rpm: int | None) -> int:
    return rpm if rpm else tpm * 6 // 1000


def ceiling_per_second(deployments: list[dict[str, Any]], charge: int) -> float:
    """Requests per second the TPM and RPM limits allow together (RPM as RPM/6 per 10 s)."""
    per_minute = 0.0
    for d in deployments:
        rpm = (d["rpm"] // 6) * 6
        per_minute += min(d["tpm"] / charge, rpm)
    return per_minute / 60.0


class WindowSampler(threading.Thread):
    """Reads a simulator's served count just before each 10 s RPM window boundary, so the
    requests it admitted in each window are known exactly (the simulator counts a success when
    it admits the request, before its latency)."""

    def __init__(self, sim: SimulatorProcess, first_boundary: float) -> None:
        super().__init__(daemon=True)
        self.sim = sim
        self.first_boundary = first_boundary
        self.served: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        k = 0
        while True:
            at = self.first_boundary + k * RPM_WINDOW_S - SAMPLE_BEFORE_BOUNDARY_S
            if self.stopping.wait(max(0.0, at - time.monotonic())):
                return
            counts = deployment_counts(self.sim.stats())
            self.served.append(sum(c["ok"] for c in counts.values()))
            k += 1

    def per_window(self) -> list[int]:
        return [b - a for a, b in zip(self.served, self.served[1:], strict=False)]


def phase(
    args: argparse.Namespace,
    sims: dict[str, SimulatorProcess],
    deployments: list[dict[str, Any]],
    phases: list[list[float]],
    deadline_s: float,
) -> dict[str, dict[str, Any]]:
    """Run every client at once, each against its own simulator; its records, the simulator's
    counts and what it admitted in each RPM window. Arrivals start on a window boundary (the
    simulator's windows are aligned to the machine's monotonic clock)."""
    for sim in sims.values():
        sim.reset()
    boundary = math.ceil((time.monotonic() + START_DELAY_S) / RPM_WINDOW_S) * RPM_WINDOW_S
    start_at = boundary + 0.02
    samplers = {c: WindowSampler(sim, boundary) for c, sim in sims.items()}
    for sampler in samplers.values():
        sampler.start()
    drivers = {
        client: Driver(
            base_spec(
                client,
                sim.url,
                deployments,
                prompt=DEFAULT_PROMPT,
                max_tokens=args.max_tokens,
                policy={"time_budget_s": args.time_budget, "max_wait_s": args.max_wait},
                workload={
                    "kind": "open",
                    "phases": phases,
                    "start_at": start_at,
                    "deadline_at": start_at + deadline_s,
                },
            )
        )
        for client, sim in sims.items()
    }
    results = {
        client: driver.result(timeout_s=START_DELAY_S + RPM_WINDOW_S + deadline_s + 120)
        for client, driver in drivers.items()
    }
    for client, result in results.items():
        samplers[client].stopping.set()
        samplers[client].join()
        counts = deployment_counts(sims[client].stats())
        samplers[client].served.append(sum(c["ok"] for c in counts.values()))  # the last window
        result["simulator"] = counts
        result["served_per_window"] = samplers[client].per_window()
    return results


def summarise(
    result: dict[str, Any], ceiling: float, offered_windows: int, *, drain: bool
) -> dict[str, Any]:
    records = result["records"]
    per_window = result["served_per_window"]
    window_ceiling = ceiling * RPM_WINDOW_S
    started, offered_until = result["started"], result["offered_until"]
    ok = [r for r in records if r[2] == "ok"]
    failed = [r for r in records if r[2] not in ("ok", "lost")]
    lost = [r for r in records if r[2] == "lost"]
    counts = result["simulator"]
    throttled = sum(c["throttled"] for c in counts.values())
    last_ok = max((r[1] for r in ok), default=started)
    out: dict[str, Any] = {
        "offered": len(records),
        "succeeded": len(ok),
        "failed": len(failed),
        "lost": len(lost),
        "failure_kinds": _kinds(failed),
        "throttled_429": throttled,
        "429_per_success": throttled / len(ok) if ok else None,
        "latency_p50_s": percentile([r[1] - r[0] for r in ok], 50),
        "latency_p99_s": percentile([r[1] - r[0] for r in ok], 99),
        "served_by": {n: c["ok"] for n, c in counts.items()},
        "throttled_by": {n: c["throttled"] for n, c in counts.items()},
        "served_per_rpm_window": per_window,
        "client": result["stats"],
    }
    offered = per_window[:offered_windows]
    fraction = sum(offered) / (window_ceiling * len(offered)) if offered else None
    if not drain:
        out["goodput_fraction"] = fraction
        out["seconds_to_last_success"] = last_ok - started
        return out
    # Draining: the windows after the last arrival in which a backlog waited all along, i.e.
    # up to (not including) the last window in which anything was served.
    last = max((i for i, n in enumerate(per_window) if n), default=-1)
    draining = per_window[offered_windows:last]
    out.update(
        goodput_fraction_during_window=fraction,
        drain_s=max(0.0, last_ok - offered_until),
        succeeded_while_draining=sum(1 for r in ok if r[1] > offered_until),
        draining_full_windows=len(draining),
        goodput_fraction_while_draining=(
            sum(draining) / (window_ceiling * len(draining)) if draining else None
        ),
    )
    return out


def _kinds(failed: list[list[Any]]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for r in failed:
        detail = str(r[5] or r[2])
        # "TryLater(reason, 1.23s)" -> "TryLater(reason)"; "APIError" stays as it is
        tail = ")" if r[2] == "try_later" else ""
        key = detail.partition("," if tail else "(")[0] + tail
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


def verdicts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, bool]:
    def le(value: Any, bound: float) -> bool:
        return value is not None and value <= bound

    def ge(value: Any, bound: float) -> bool:
        return value is not None and value >= bound

    return {
        "at_capacity_goodput": ge(a["goodput_fraction"], TARGETS["at_capacity_goodput_min"]),
        "at_capacity_429_per_success": le(
            a["429_per_success"], TARGETS["at_capacity_429_per_success_max"]
        ),
        "overload_failed": b["failed"] <= TARGETS["overload_failed_max"],
        "overload_lost": b["lost"] <= TARGETS["overload_lost_max"],
        "overload_drain_goodput": ge(
            b["goodput_fraction_while_draining"], TARGETS["overload_drain_goodput_min"]
        ),
        "overload_429_per_success": le(
            b["429_per_success"], TARGETS["overload_429_per_success_max"]
        ),
    }


def _windows(seconds: float) -> int:
    return max(1, round(seconds / RPM_WINDOW_S))


def run(args: argparse.Namespace) -> dict[str, Any]:
    tpms = [int(x) for x in args.tpm.split(",")]
    rpms = [int(x) for x in args.rpm.split(",")] if args.rpm else [0] * len(tpms)
    if len(rpms) != len(tpms):
        raise SystemExit("--rpm needs one value per --tpm value")
    deployments: list[dict[str, Any]] = [
        {"name": f"pool-{tpm // 1000}k-{i}", "tpm": tpm, "rpm": effective_rpm(tpm, rpm)}
        for i, (tpm, rpm) in enumerate(zip(tpms, rpms, strict=True))
    ]
    charge = request_charge(DEFAULT_PROMPT, args.max_tokens)
    ceiling = ceiling_per_second(deployments, charge)
    clients = ["ours"] + (["litellm"] if args.litellm else [])
    sim_deployments = [
        SimDeployment(d["name"], d["tpm"], d["rpm"], latency_base_ms=args.latency_ms)
        for d in deployments
    ]
    sims = {c: SimulatorProcess(sim_deployments) for c in clients}
    try:
        for sim in sims.values():
            sim.start()
        at = phase(
            args,
            sims,
            deployments,
            [[ceiling * args.at_load, _windows(args.at_seconds) * RPM_WINDOW_S]],
            args.at_seconds + args.time_budget + 60,
        )
        over = phase(
            args,
            sims,
            deployments,
            [[ceiling * args.over_load, _windows(args.window) * RPM_WINDOW_S]],
            args.window + args.time_budget + 60,
        )
    finally:
        for sim in sims.values():
            sim.stop()
    figures: dict[str, Any] = {
        "deployments": deployments,
        "request_charge_tokens": charge,
        "ceiling_requests_per_second": ceiling,
        "at_capacity": {
            "load": args.at_load,
            "seconds": _windows(args.at_seconds) * RPM_WINDOW_S,
        },
        "over_capacity": {
            "load": args.over_load,
            "window_s": _windows(args.window) * RPM_WINDOW_S,
        },
        "targets": TARGETS,
        "results": {},
    }
    for client in clients:
        a = summarise(at[client], ceiling, _windows(args.at_seconds), drain=False)
        b = summarise(over[client], ceiling, _windows(args.window), drain=True)
        figures["results"][client] = {"at_capacity": a, "over_capacity": b, "met": verdicts(a, b)}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tpm", default="30000,20000,10000", help="TPM of each deployment")
    parser.add_argument("--rpm", default="", help="RPM of each (default: 6 per 1,000 TPM)")
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="simulated latency")
    parser.add_argument("--at-load", type=float, default=1.0, help="(a) x the ceiling")
    parser.add_argument("--at-seconds", type=float, default=60.0, help="(a) arrivals for this long")
    parser.add_argument("--over-load", type=float, default=3.0, help="(b) x the ceiling")
    parser.add_argument("--window", type=float, default=30.0, help="(b) overload window, seconds")
    parser.add_argument("--time-budget", type=float, default=300.0, help="ours: per request")
    parser.add_argument("--max-wait", type=float, default=300.0, help="ours: longest single wait")
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
        "deployments: "
        + ", ".join(f"{d['name']} ({d['tpm']} TPM, {d['rpm']} RPM)" for d in figures["deployments"])
    )
    print(
        f"request charge: {figures['request_charge_tokens']} tokens; ceiling "
        f"{figures['ceiling_requests_per_second']:.2f} requests/s"
    )
    for client, label in (("ours", "ResilientModelClient"), ("litellm", "LiteLLM Router")):
        if client not in figures["results"]:
            continue
        r = figures["results"][client]
        a, b, met = r["at_capacity"], r["over_capacity"], r["met"]
        print(f"\n{label}")
        print(
            f"  (a) {args.at_load:g}x for {args.at_seconds:g}s: goodput "
            f"{fmt(a['goodput_fraction'])} of ceiling, {fmt(a['429_per_success'])} 429s/success, "
            f"failed {a['failed']}, lost {a['lost']}"
        )
        print(
            f"  (b) {args.over_load:g}x for {args.window:g}s, then drain: failed {b['failed']}, "
            f"lost {b['lost']}, goodput while draining {fmt(b['goodput_fraction_while_draining'])}"
            f" (during window {fmt(b['goodput_fraction_during_window'])}), "
            f"{fmt(b['429_per_success'])} 429s/success, p50 {fmt(b['latency_p50_s'], '.2f')} s, "
            f"p99 {fmt(b['latency_p99_s'], '.2f')} s"
        )
        if b["failure_kinds"]:
            print(f"      failures: {b['failure_kinds']}")
        marks = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items())
        print(f"  targets: {marks}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
