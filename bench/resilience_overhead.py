"""Client CPU per request of the resilient client, beside the bare SDK and LiteLLM's Router.

The simulator answers at once with no limits (zero latency, no TPM/RPM), in a process of its own.
Each client runs in a process of its own (`bench._driver`) that does nothing but call: N chat
completions with C in flight, after a warm-up; `time.process_time()` over the measured calls,
divided by N, is that client's CPU per request. The clients:
- bare: `openai.AsyncAzureOpenAI` (SDK retries off), what the resilient client wraps;
- ours: `ResilientModelClient` around `ModelClients` (routing, rate budget, breaker, retry
  policy, answer reading), time budget 300 s as a library caller would set it;
- LiteLLM: `Router` with usage-based routing v2, in bench/.venv-litellm (bench/requirements.txt).
A fourth line, `ModelClients` called directly (the SDK call and reading the answer, no
resilience), splits ours into what the model port costs and what the resilience layer adds.

The clients run one after another, `--rounds` times in turn (bare, port, ours, LiteLLM, bare,
...). The headline figure of each is its least CPU per request over the rounds: on a shared
machine a neighbour's burst only ever adds CPU time (cache and core contention), so the least is
the figure least disturbed; the medians are printed beside it, and the ratio of each round's
ours to that round's bare. Target: ours <= 1.15x bare.

    .venv/bin/python -m bench.resilience_overhead --requests 1000 --concurrency 16 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from bench._common import (
    DEFAULT_PROMPT,
    LITELLM_SETUP,
    Driver,
    base_spec,
    fmt,
    litellm_available,
    print_json,
    ratio,
)
from bench._sim import SimDeployment, SimulatorProcess

DEPLOYMENT = "bench-overhead"
TARGET = 1.15


def run(args: argparse.Namespace) -> dict[str, Any]:
    clients = ["bare", "port", "ours"] + (["litellm"] if args.litellm else [])
    cpu: dict[str, list[float]] = {c: [] for c in clients}
    wall: dict[str, list[float]] = {c: [] for c in clients}
    failures: dict[str, int] = dict.fromkeys(clients, 0)
    extra: dict[str, Any] = {}
    with SimulatorProcess([SimDeployment(DEPLOYMENT)]) as sim:
        for _ in range(args.rounds):
            for client in clients:
                spec = base_spec(
                    client,
                    sim.url,
                    [{"name": DEPLOYMENT}],
                    prompt=DEFAULT_PROMPT,
                    max_tokens=args.max_tokens,
                    policy={"time_budget_s": 300.0, "max_wait_s": 300.0},
                    workload={
                        "kind": "closed",
                        "requests": args.requests,
                        "concurrency": args.concurrency,
                        "warmup": args.warmup,
                    },
                )
                result = Driver(spec).result(timeout_s=args.timeout)
                cpu[client].append(result["cpu_s"] / args.requests)
                wall[client].append(args.requests / result["wall_s"])
                failures[client] += sum(1 for r in result["records"] if r[2] != "ok")
                extra[client] = result["stats"]
    per_request_ms = {c: min(v) * 1000 for c, v in cpu.items()}
    median_ms = {c: statistics.median(v) * 1000 for c, v in cpu.items()}
    figures: dict[str, Any] = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "cpu_ms_per_request": per_request_ms,
        "cpu_ms_per_request_median": median_ms,
        "cpu_ms_per_request_rounds": {c: [x * 1000 for x in v] for c, v in cpu.items()},
        "calls_per_second": {c: max(v) for c, v in wall.items()},
        "failed_calls": failures,
        "ours_over_bare": ratio(per_request_ms["ours"], per_request_ms["bare"]),
        "ours_over_bare_median": ratio(median_ms["ours"], median_ms["bare"]),
        "ours_over_bare_per_round_median": statistics.median(
            o / b for o, b in zip(cpu["ours"], cpu["bare"], strict=True)
        ),
        "port_over_bare": ratio(per_request_ms["port"], per_request_ms["bare"]),
        "ours_over_port": ratio(per_request_ms["ours"], per_request_ms["port"]),
        "litellm_over_bare": ratio(per_request_ms.get("litellm"), per_request_ms["bare"]),
        "target_ours_over_bare_max": TARGET,
        "client_stats": extra,
    }
    figures["target_met"] = (
        figures["ours_over_bare"] is not None and figures["ours_over_bare"] <= TARGET
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="measured calls per round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each client, in turn")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=300.0, help="per client run, seconds")
    parser.add_argument("--no-litellm", dest="litellm", action="store_false")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args()
    if min(args.requests, args.concurrency, args.rounds) < 1 or args.warmup < 0:
        parser.error("--requests, --concurrency and --rounds must be at least 1")
    if args.litellm and not litellm_available():
        parser.error(f"LiteLLM is not installed for the benchmarks: {LITELLM_SETUP}")
    figures = run(args)
    if args.json:
        print_json(figures)
        return 0
    ms = figures["cpu_ms_per_request"]
    cps = figures["calls_per_second"]
    print(
        f"requests: {args.requests} x {args.rounds} rounds, concurrency: {args.concurrency}, "
        "zero-latency simulator, no limits"
    )
    med = figures["cpu_ms_per_request_median"]
    for client, label in (
        ("bare", "bare AsyncAzureOpenAI"),
        ("port", "ModelClients (no resilience)"),
        ("ours", "ResilientModelClient"),
        ("litellm", "LiteLLM Router"),
    ):
        if client in ms:
            print(
                f"{label:<29} {ms[client]:7.3f} ms CPU/request (median {med[client]:.3f})   "
                f"{cps[client]:7.1f} calls/s   failed {figures['failed_calls'][client]}"
            )
    print(
        f"ours / bare CPU ratio:        {fmt(figures['ours_over_bare'])}   "
        f"(target <= {TARGET}: {'met' if figures['target_met'] else 'MISSED'}; medians "
        f"{fmt(figures['ours_over_bare_median'])}, per round "
        f"{fmt(figures['ours_over_bare_per_round_median'])})"
    )
    print(f"ModelClients / bare:          {fmt(figures['port_over_bare'])}")
    print(f"ours / ModelClients:          {fmt(figures['ours_over_port'])}")
    print(f"LiteLLM / bare CPU ratio:     {fmt(figures['litellm_over_bare'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
