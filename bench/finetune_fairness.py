"""Fine-tuning admission: small tenants' waits for a GPU slot, fair share vs FIFO.

`python -m bench.finetune_fairness [--slots 2] [--retry-every 5] [--large-jobs 12]` replays one
simulated stream (shared/finetune/fairness_sim.py: one large tenant sending a 60-minute job every
10 minutes, two small tenants one every 90) through `shared.finetune.admission.Admission` (the
fleet document, in memory) and, side by side, through FIFO admission without a per-tenant limit,
and prints each tenant's waits and the ratios small-tenant mean / p-max wait, FIFO over fair share.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from shared.finetune.fairness_sim import simulate, stream


def _row(name: str, waits: list[int]) -> str:
    return (
        f"  {name:<8} jobs {len(waits):>3}  mean wait {statistics.mean(waits):7.1f} min  "
        f"max {max(waits):5d} min"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--retry-every", type=int, default=5, help="reschedule delay, minutes")
    parser.add_argument("--large-jobs", type=int, default=12)
    args = parser.parse_args(argv)
    jobs = stream(large_jobs=args.large_jobs)
    fair = asyncio.run(simulate(jobs, slots=args.slots, retry_every=args.retry_every))
    fifo = asyncio.run(simulate(jobs, slots=args.slots, retry_every=args.retry_every, fifo=True))
    for title, waits in (("fair share (ours)", fair), ("FIFO baseline", fifo)):
        print(title)
        for tenant in sorted(waits):
            print(_row(tenant, waits[tenant]))
    small_fair = fair["small-a"] + fair["small-b"]
    small_fifo = fifo["small-a"] + fifo["small-b"]
    print(
        f"small tenants: mean wait FIFO/fair = "
        f"{statistics.mean(small_fifo) / max(statistics.mean(small_fair), 1e-9):.1f}x, "
        f"max wait FIFO/fair = {max(small_fifo) / max(*small_fair, 1):.1f}x; "
        f"large tenant: mean wait fair/FIFO = "
        f"{statistics.mean(fair['large']) / max(statistics.mean(fifo['large']), 1e-9):.1f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
