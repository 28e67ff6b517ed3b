"""Drift detection: our quality detector beside river's ADWIN, PageHinkley and HDDM_A on the same
seeded feedback streams, and the input-drift check's false-alarm rate and power.

Quality scenarios (each `--runs` seeded streams, every detector fed the same stream in one run):
the issue's three target streams (p0 -> p1 at --change-at; p0 -> p0 - 0.05; stationary p0 for
--stationary samples), the same at base rates 0.6 and 0.95, graded 1-5 ratings, a gradual drop
(linear over --gradual samples) and bursty feedback (one user rates 5-30 answers in a row, each
user's propensity drawn from Beta with mean p and concentration 10). Figures per detector: the
share of runs that detected within --post samples after the change, the median and p90 delay,
and the share of runs with a false alarm (before the change; in stationary streams, any alarm).

The baselines run at their river defaults (ADWIN delta=0.002, PageHinkley as shipped, HDDM_A
one-sided); they are fed the error indicator 1 - x, the orientation river's detectors are written
for (HDDM_A's one-sided test watches the error rate rise). Ours is fed x.

    python -m bench.drift [--runs 200] [--seed 1] [--json]
    python -m bench.drift --calibrate [--runs 1000]   # the threshold's calibration (docstring of
                                                      # shared.drift.quality)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench._common import fmt, percentile
from shared.drift.input_drift import PromptFeatures, input_drift
from shared.drift.quality import QualityDriftDetector

DETECTORS = ("ours", "ADWIN", "PageHinkley", "HDDM_A")
BURST_CONCENTRATION = 10.0


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "bernoulli", "graded" or "bursty"
    p0: float
    p1: float | None  # None: stationary
    change_at: int
    length: int
    gradual: int = 0  # samples over which the mean moves linearly from p0 to p1

    @property
    def stationary(self) -> bool:
        return self.p1 is None


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    c, post, st = args.change_at, args.post, args.stationary
    drop = args.p0 - args.p1
    out: list[Scenario] = []

    def trio(prefix: str, p0: float, kind: str = "bernoulli") -> None:
        out.append(Scenario(f"{prefix}{p0:g} -> {p0 - drop:g}", kind, p0, p0 - drop, c, c + post))
        small = round(p0 - args.small_drop, 4)
        out.append(Scenario(f"{prefix}{p0:g} -> {small:g}", kind, p0, small, c, c + post))
        out.append(Scenario(f"{prefix}stationary {p0:g}", kind, p0, None, c, st))

    trio("", args.p0)
    for base in args.other_bases:
        trio("", base)
    trio("graded 1-5: ", args.p0, "graded")
    out.append(
        Scenario(
            f"gradual {args.p0:g} -> {args.p1:g} over {args.gradual}",
            "bernoulli",
            args.p0,
            args.p1,
            c,
            c + post,
            args.gradual,
        )
    )
    trio("bursty: ", args.p0, "bursty")
    return out


# -- streams -----------------------------------------------------------------------------------


def means(s: Scenario) -> np.ndarray[Any, np.dtype[np.float64]]:
    p = np.full(s.length, s.p0)
    if s.p1 is not None:
        if s.gradual > 0:
            ramp = np.arange(s.length - s.change_at, dtype=np.float64) / s.gradual
            p[s.change_at :] = s.p0 + (s.p1 - s.p0) * np.minimum(ramp, 1.0)
        else:
            p[s.change_at :] = s.p1
    return p


def stream(s: Scenario, seed: int) -> list[float]:
    gen = np.random.default_rng(seed)
    p = means(s)
    if s.kind == "bernoulli":
        return (gen.random(s.length) < p).astype(np.float64).tolist()  # type: ignore[no-any-return]
    if s.kind == "graded":
        # A 1-5 rating r with r - 1 ~ Binomial(4, p), sent as (r - 1) / 4: mean p.
        return (gen.binomial(4, p) / 4.0).tolist()  # type: ignore[no-any-return]
    out = np.empty(s.length)
    i = 0
    while i < s.length:
        length = int(gen.integers(5, 31))
        q = gen.beta(p[i] * BURST_CONCENTRATION, (1.0 - p[i]) * BURST_CONCENTRATION)
        end = min(s.length, i + length)
        out[i:end] = gen.random(end - i) < q
        i = end
    return out.tolist()


# -- detectors ---------------------------------------------------------------------------------


def make(name: str) -> tuple[Any, Callable[[float], float]]:
    from river import drift  # noqa: PLC0415 - bench-only dependency, imported in the workers

    if name == "ours":
        return QualityDriftDetector(), lambda x: x
    factories: dict[str, Any] = {
        "ADWIN": drift.ADWIN,
        "PageHinkley": drift.PageHinkley,
        "HDDM_A": drift.binary.HDDMA,
    }
    return factories[name](), lambda x: 1.0 - x


def alarms(name: str, xs: list[float], change_at: int | None, stop_after: int) -> dict[str, Any]:
    """First alarm before the change (a false alarm) and first at or after it (a detection)."""
    detector, feed = make(name)
    false_alarm = None
    for t, x in enumerate(xs):
        detector.update(feed(x))
        if detector.drift_detected:
            if change_at is None or t < change_at:
                if false_alarm is None:
                    false_alarm = t
                if change_at is None:
                    break
            else:  # the delay: observations since the change, the alarming one included
                return {"false_alarm": false_alarm, "delay": t - change_at + 1}
        if t >= stop_after:
            break
    return {"false_alarm": false_alarm, "delay": None}


def one_run(job: tuple[Scenario, int]) -> dict[str, dict[str, Any]]:
    s, seed = job
    xs = stream(s, seed)
    change = None if s.stationary else s.change_at
    return {name: alarms(name, xs, change, s.length) for name in DETECTORS}


def summarise(s: Scenario, runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name in DETECTORS:
        results = [r[name] for r in runs]
        delays = [float(r["delay"]) for r in results if r["delay"] is not None]
        table[name] = {
            "false_alarm_share": sum(r["false_alarm"] is not None for r in results) / len(runs),
            "detection_rate": None if s.stationary else len(delays) / len(runs),
            "median_delay": statistics.median(delays) if delays else None,
            "p90_delay": percentile(delays, 90),
        }
    return {"scenario": s.__dict__, "runs": len(runs), "detectors": table}


def run_quality(args: argparse.Namespace, pool: ProcessPoolExecutor) -> list[dict[str, Any]]:
    out = []
    for k, s in enumerate(scenarios(args)):
        jobs = [(s, args.seed * 1_000_003 + k * 10_007 + r) for r in range(args.runs)]
        started = time.monotonic()
        runs = list(pool.map(one_run, jobs, chunksize=max(1, args.runs // (4 * args.workers))))
        summary = summarise(s, runs)
        summary["seconds"] = round(time.monotonic() - started, 1)
        out.append(summary)
        if not args.json:
            print_table(summary)
    return out


def print_table(summary: dict[str, Any]) -> None:
    s = summary["scenario"]
    where = "" if s["p1"] is None else f", change at {s['change_at']}, {s['length']} samples"
    print(f"\n{s['name']} ({s['kind']}{where}; {summary['runs']} runs, {summary['seconds']} s)")
    print("| detector | detected | median delay | p90 delay | false-alarm share |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in summary["detectors"].items():
        rate = row["detection_rate"]
        print(
            f"| {name} | {'-' if rate is None else f'{rate:.1%}'} | "
            f"{fmt(row['median_delay'], '.0f')} | {fmt(row['p90_delay'], '.0f')} | "
            f"{row['false_alarm_share']:.1%} |"
        )


# -- the oracle bound ---------------------------------------------------------------------------


def _oracle_glr(xs: np.ndarray[Any, np.dtype[np.float64]], split: int) -> Any:
    """Bernoulli GLR of [0, split) against [split, t) at every t = split + 10, split + 20, ..."""
    c = np.cumsum(xs, axis=1)
    t = np.arange(split + 10, xs.shape[1] + 1, 10)
    sr = c[:, split - 1 : split]
    sc = c[:, t - 1] - sr
    nr, nc = float(split), (t - split).astype(np.float64)
    mr, mc, mu = sr / nr, sc / nc, (sr + sc) / (nr + nc)

    def kl(p: Any, q: Any) -> Any:
        p, q = np.clip(p, 1e-12, 1 - 1e-12), np.clip(q, 1e-12, 1 - 1e-12)
        return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))

    return np.where(mc < mr, nr * kl(mr, mu) + nc * kl(mc, mu), 0.0), t


def oracle_bound(args: argparse.Namespace) -> dict[str, Any]:
    """What a detector that KNOWS the change point could do on the small drop: the GLR of the
    split at --change-at only, its threshold set for the same false-alarm rate (2% of stationary
    streams of --stationary samples), then its detection rate within --post samples. No detector
    that is not told where the change is can do better than this at that false-alarm rate."""
    gen = np.random.default_rng(args.seed + 99)
    small = round(args.p0 - args.small_drop, 6)
    maxima = []
    for _ in range(8):
        xs = (gen.random((500, args.stationary)) < args.p0).astype(np.float64)
        maxima.append(_oracle_glr(xs, args.change_at)[0].max(axis=1))
    threshold = float(np.quantile(np.concatenate(maxima), 0.98))
    rates = np.full(args.change_at + args.post, args.p0)
    rates[args.change_at :] = small
    xs = (gen.random((4000, len(rates))) < rates).astype(np.float64)
    glr, t = _oracle_glr(xs, args.change_at)
    hit = glr > threshold
    detected = hit.any(axis=1)
    delays = t[hit.argmax(axis=1)[detected]] - args.change_at
    out = {
        "p0": args.p0,
        "p1": small,
        "threshold": round(threshold, 3),
        "detection_rate": float(detected.mean()),
        "median_delay": float(np.median(delays)) if detected.any() else None,
    }
    if not args.json:
        print(
            f"\nOracle bound ({args.p0:g} -> {small:g}, knows the change point; 4000 null streams"
            f" set a 2% false-alarm rate over {args.stationary}): detects "
            f"{out['detection_rate']:.1%} within {args.post}, "
            f"median delay {fmt(out['median_delay'], '.0f')}"
        )
    return out


# -- input drift -------------------------------------------------------------------------------

LANGUAGES = (("en", 0.85), ("de", 0.08), ("fr", 0.07))
FEATURES = (("support", 0.6), ("search", 0.3), ("summarise", 0.1))


def prompts(
    gen: random.Random,
    n: int,
    *,
    languages: tuple[tuple[str, float], ...] = LANGUAGES,
    features: tuple[tuple[str, float], ...] = FEATURES,
    length_scale: float = 1.0,
    embedding_shift: float = 0.0,
) -> list[PromptFeatures]:
    out = []
    for _ in range(n):
        language = gen.choices([c for c, _ in languages], [w for _, w in languages])[0]
        feature = gen.choices([c for c, _ in features], [w for _, w in features])[0]
        chars = max(1, int(gen.lognormvariate(math.log(200), 0.7) * length_scale))
        embedding = tuple(gen.gauss(embedding_shift if i == 0 else 0.0, 1.0) for i in range(16))
        out.append(PromptFeatures(chars, max(1, chars // 6), language, feature, embedding))
    return out


INPUT_CASES: dict[str, dict[str, Any]] = {
    "unshifted": {},
    "language mix en 0.85 -> 0.65": {"languages": (("en", 0.65), ("de", 0.2), ("fr", 0.15))},
    "feature mix support 0.6 -> 0.45": {
        "features": (("support", 0.45), ("search", 0.4), ("summarise", 0.15))
    },
    "length x1.25": {"length_scale": 1.25},
    "embedding mean shift 0.35 sd": {"embedding_shift": 0.35},
}


def input_trial(job: tuple[str, int, int, int]) -> bool:
    case, seed, window, permutations = job
    gen = random.Random(seed)
    reference = prompts(gen, window)
    recent = prompts(gen, window, **INPUT_CASES[case])
    result = input_drift(reference, recent, permutations=permutations, rng=random.Random(seed))
    return result.detected


def run_input(args: argparse.Namespace, pool: ProcessPoolExecutor) -> dict[str, Any]:
    out: dict[str, Any] = {
        "window": args.input_window,
        "trials": args.input_runs,
        "alpha": 0.01,
        "permutations": args.permutations,
    }
    cases = {}
    for k, case in enumerate(INPUT_CASES):
        jobs = [
            (case, args.seed * 7_919 + k * 100_003 + r, args.input_window, args.permutations)
            for r in range(args.input_runs)
        ]
        hits = sum(pool.map(input_trial, jobs, chunksize=max(1, args.input_runs // 8)))
        cases[case] = hits / args.input_runs
    out["detected_share"] = cases
    if not args.json:
        print(
            f"\nInput drift: {args.input_window} vs {args.input_window} requests, "
            f"{args.input_runs} trials per case, alpha 0.01, {args.permutations} permutations, Holm"
        )
        print("| recent window | share of trials called drifted |")
        print("| --- | --- |")
        for case, share in cases.items():
            label = f"{case} (false-alarm rate)" if case == "unshifted" else f"{case} (power)"
            print(f"| {label} | {share:.1%} |")
    return out


# -- calibration -------------------------------------------------------------------------------


def calibration_excess(job: tuple[float, str, int, int]) -> float:
    """The largest (GLR statistic - slope * log(n^2 / (n_ref n_recent))) over a null stream: the
    detector alarms on this stream exactly when threshold_a is below it."""
    p, kind, length, seed = job
    s = Scenario("null", kind, p, None, 0, length)
    offset = 1e6
    detector = QualityDriftDetector(threshold_a=offset)  # never alarms
    best = -math.inf
    for x in stream(s, seed):
        detector.update(x)
        last = detector._last  # the best split of the last evaluation
        if last is not None:
            best = max(best, last.statistic - last.threshold + offset)
    return best


def calibrate(args: argparse.Namespace, pool: ProcessPoolExecutor) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, (p, kind) in enumerate(((0.6, "bernoulli"), (0.85, "bernoulli"), (0.95, "bernoulli"))):
        jobs = [(p, kind, args.stationary, 10**9 + k * 100_003 + r) for r in range(args.runs)]
        excess = sorted(pool.map(calibration_excess, jobs, chunksize=16))
        q = {f"q{int(level * 100)}": float(np.quantile(excess, level)) for level in (0.95, 0.98)}
        out[f"{kind} {p:g}"] = q
        if not args.json:
            print(f"{kind} p={p:g}: {args.runs} streams of {args.stationary}: {q}")
    return out


# -- main --------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p0", type=float, default=0.85, help="base rate before the change")
    parser.add_argument("--p1", type=float, default=0.70, help="rate after the (large) drop")
    parser.add_argument("--small-drop", type=float, default=0.05, help="the small drop's size")
    parser.add_argument(
        "--other-bases", type=float, nargs="*", default=[0.6, 0.95], help="more base rates"
    )
    parser.add_argument("--change-at", type=int, default=1000)
    parser.add_argument("--post", type=int, default=2000, help="samples watched after the change")
    parser.add_argument("--stationary", type=int, default=10_000, help="stationary stream length")
    parser.add_argument("--gradual", type=int, default=500, help="length of the gradual drop")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--input-runs", type=int, default=100, help="input-drift trials per case")
    parser.add_argument("--input-window", type=int, default=300)
    parser.add_argument("--permutations", type=int, default=500)
    parser.add_argument("--no-input", action="store_true", help="skip the input-drift check")
    parser.add_argument("--calibrate", action="store_true", help="print the null quantiles")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        if args.calibrate:
            figures: dict[str, Any] = {"calibration": calibrate(args, pool)}
        else:
            figures = {"args": vars(args), "quality": run_quality(args, pool)}
            figures["oracle_bound"] = oracle_bound(args)
            if not args.no_input:
                figures["input_drift"] = run_input(args, pool)
    figures["seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"\n{figures['seconds']} s in all", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
