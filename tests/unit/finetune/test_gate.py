"""The evaluation gate's pieces: token F1, the paired bootstrap, held-out rows, the judge choice."""

from __future__ import annotations

import json
from pathlib import Path

from shared.finetune.gate import (
    EvaluationGate,
    GatePolicy,
    held_out_examples,
    paired_bootstrap,
    token_f1,
)
from shared.tenancy.registry import parse_registry

ROOT = Path(__file__).resolve().parents[3]
ENV = {"AZURE_OPENAI_ENDPOINT": "http://sim", "AZURE_AI_SERVICES_ENDPOINT": "http://sim/models"}


def test_token_f1_is_squad_f1() -> None:
    assert token_f1("The refund was sent.", "refund was sent") == 1.0
    assert token_f1("a cat", "the dog") == 0.0
    assert round(token_f1("refund sent today", "refund sent"), 3) == 0.8


def test_the_bootstrap_bound_separates_a_real_gain_from_noise() -> None:
    policy = GatePolicy()
    better = [1.0] * 40 + [0.75] * 10
    worse = [0.25] * 40 + [0.5] * 10
    mean, lower, upper = paired_bootstrap(better, worse, policy)
    assert mean == 0.65
    assert lower > policy.margin
    assert lower <= mean <= upper
    same = [0.5, 0.75, 0.25, 1.0, 0.0] * 10
    _, lower_same, _ = paired_bootstrap(same, same, policy)
    assert lower_same <= policy.margin  # no gain: never promoted


def test_a_small_gain_inside_the_noise_is_not_enough() -> None:
    cand = [1.0, 0.0] * 10
    cur = [0.0, 1.0] * 9 + [0.0, 0.0]
    _, lower, _ = paired_bootstrap(cand, cur, GatePolicy())
    assert lower < GatePolicy().margin


def test_held_out_rows_split_into_prompt_and_reference() -> None:
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "no answer"}]},
        {"nothing": True},
    ]
    (example,) = held_out_examples(rows)
    assert example.reference == "a"
    assert [m.role for m in example.prompt] == ["user"]


def test_a_dedicated_tenant_is_never_judged_by_a_pooled_judge() -> None:
    registry = parse_registry((ROOT / "devhost" / "registry.json").read_text(), env=ENV)
    gate = EvaluationGate(models=None, judge="judge")  # type: ignore[arg-type]
    contoso, fabrikam = registry.tenant("contoso"), registry.tenant("fabrikam")
    assert contoso is not None
    assert fabrikam is not None
    assert gate._judge_for(registry, fabrikam) == "judge"
    assert gate._judge_for(registry, contoso) is None  # its data may not reach pooled models
    document = json.loads((ROOT / "devhost" / "registry.json").read_text())
    assert any(d.get("purpose") == "evaluation" for d in document["deployments"])
