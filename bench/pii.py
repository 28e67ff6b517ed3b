"""Recall and precision of the PII scrubber per kind on the synthetic corpus, and its latency.

The corpus is `bench.pii_corpus` (deterministic by seed). Span level: a gold span is found when a
predicted span of the same kind overlaps it; "removed" counts a gold span overlapped by a predicted
span of any kind (it is gone from the stored text, under whatever placeholder), and "covered" one
whose every character lies inside predicted spans (nothing of it is left). A predicted span is
correct when it overlaps a gold span of its kind. Negative lines (look-alikes: order numbers,
dates, versions, prices, non-Luhn 16-digit numbers, bad IBANs ...) count towards precision only.

Latency: `scrub` on typical 500-character prompts (with and without personal data), after the
scrubber is built; median and p95 per call, and the one-off build time.

    .venv/bin/python -m bench.pii                # --seed 7 --per-template 3 --calls 300
    .venv/bin/python -m bench.pii --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.pii_corpus import Line, generate
from shared.feedback.pii import PiiKind, PiiScrubber, Span, default_scrubber

STRUCTURED = ("email", "phone", "card", "iban", "ip", "national_id")
TARGET_RECALL = 0.98

PROMPT_WITH_PII = (
    "Hello, I ordered a laptop last week (order 2024-118374) and it still has not arrived. "
    "My name is Friederike Oberholzer and you can reach me at f.oberholzer@example.com or on "
    "+49 151 23456789. I paid with my card 4539 1488 0343 6467 and would like a refund to "
    "DE89 3704 0044 0532 0130 00 if the parcel cannot be found by Friday. The tracking page "
    "shows version 2.14.3 of your app and an error at 14:30. Could you check this for me and "
    "tell me what happens next? Thanks, Friederike"
)
PROMPT_PLAIN = (
    "Summarise the following paragraph for a product newsletter. Our new release improves the "
    "start-up time of the desktop client by about forty percent, adds a dark theme that follows "
    "the operating system, and fixes a long list of small annoyances that customers reported "
    "over the last quarter. Keep the tone friendly and informal, use at most three sentences, "
    "and end with an invitation to send feedback through the help menu. Avoid technical "
    "jargon, do not mention competitors, and write it in British English please."
)


@dataclass
class Tally:
    gold: int = 0
    found: int = 0
    removed: int = 0
    covered: int = 0
    predicted: int = 0
    correct: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "gold": self.gold,
            "recall": _ratio(self.found, self.gold),
            "removed": _ratio(self.removed, self.gold),
            "covered": _ratio(self.covered, self.gold),
            "predicted": self.predicted,
            "precision": _ratio(self.correct, self.predicted),
        }


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def evaluate(
    scrubber: PiiScrubber, lines: list[Line]
) -> tuple[dict[str, Tally], list[dict[str, Any]]]:
    """Tallies per kind (and "all"), and the misses and false positives, one dict each."""
    tallies: dict[str, Tally] = {k.value: Tally() for k in PiiKind}
    tallies["all"] = Tally()
    errors: list[dict[str, Any]] = []
    for line in lines:
        spans = scrubber.detect(line.text)
        for start, end, kind in line.spans:
            same = any(_overlaps(start, end, s.start, s.end) and s.kind == kind for s in spans)
            anyk = any(_overlaps(start, end, s.start, s.end) for s in spans)
            covered = all(any(s.start <= i < s.end for s in spans) for i in range(start, end))
            for t in (tallies[kind], tallies["all"]):
                t.gold += 1
                t.found += same
                t.removed += anyk
                t.covered += covered
            if not same:
                errors.append(
                    {
                        "type": "miss" if not anyk else "wrong-kind",
                        "kind": kind,
                        "value": line.text[start:end],
                        "as": [
                            s.kind.value for s in spans if _overlaps(start, end, s.start, s.end)
                        ],
                        "text": line.text,
                    }
                )
        for s in spans:
            ok = any(
                _overlaps(s.start, s.end, gs, ge) and s.kind == gk for gs, ge, gk in line.spans
            )
            for t in (tallies[s.kind.value], tallies["all"]):
                t.predicted += 1
                t.correct += ok
            if not ok:
                errors.append(_false_positive(line, s))
    return tallies, errors


def _false_positive(line: Line, span: Span) -> dict[str, Any]:
    return {
        "type": "false-positive",
        "kind": span.kind.value,
        "value": line.text[span.start : span.end],
        "text": line.text,
    }


def latency(scrubber: PiiScrubber, calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, full in (("with_pii", PROMPT_WITH_PII), ("plain", PROMPT_PLAIN)):
        prompt = full[:500].ljust(500)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            scrubber.scrub(prompt)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        out[name] = {
            "chars": len(prompt),
            "median_ms": round(statistics.median(times), 3),
            "p95_ms": round(times[int(len(times) * 0.95) - 1], 3),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--per-template", type=int, default=3)
    parser.add_argument("--calls", type=int, default=300, help="scrub calls per latency prompt")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    parser.add_argument("--errors", action="store_true", help="list misses and false positives")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    scrubber = default_scrubber()
    build_s = time.perf_counter() - t0
    lines = generate(args.seed, args.per_template)
    tallies, errors = evaluate(scrubber, lines)
    lat = latency(scrubber, args.calls)
    kinds = {k: t.row() for k, t in tallies.items()}
    result: dict[str, Any] = {
        "command": f".venv/bin/python -m bench.pii --seed {args.seed} "
        f"--per-template {args.per_template} --calls {args.calls}",
        "lines": len(lines),
        "negative_lines": sum(line.negative for line in lines),
        "kinds": kinds,
        "structured_recall_target": TARGET_RECALL,
        "structured_recall_met": all(
            (tallies[k].row()["recall"] or 0) >= TARGET_RECALL for k in STRUCTURED
        ),
        "latency": lat,
        "build_s": round(build_s, 3),
        "errors": errors if args.errors else len(errors),
    }
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    print(result["command"])
    print(f"{result['lines']} lines ({result['negative_lines']} negative)\n")
    header = f"{'kind':<12} {'gold':>5} {'recall':>7} {'removed':>8} {'covered':>8}"
    print(header + f" {'predicted':>9} {'precision':>9}")
    for kind, row in kinds.items():
        print(
            f"{kind:<12} {row['gold']:>5} {_f(row['recall']):>7} {_f(row['removed']):>8} "
            f"{_f(row['covered']):>8} {row['predicted']:>9} {_f(row['precision']):>9}"
        )
    met = "met" if result["structured_recall_met"] else "NOT met"
    print(f"\nrecall >= {TARGET_RECALL} on {', '.join(STRUCTURED)}: {met}")
    for name, row in lat.items():
        print(
            f"latency {name:<9} {row['chars']} chars: median {row['median_ms']:.2f} ms, "
            f"p95 {row['p95_ms']:.2f} ms"
        )
    print(f"build (first use in a process): {build_s:.2f} s")
    if args.errors:
        print()
        by_kind = Counter((e["type"], e["kind"]) for e in errors)
        print(", ".join(f"{t} {k}: {n}" for (t, k), n in sorted(by_kind.items())))
        for e in errors:
            print(f"  {e['type']:<14} {e['kind']:<11} {e['value']!r:<32} in {e['text']!r}")
    else:
        print(f"{len(errors)} misses/false positives (--errors lists them)")


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
