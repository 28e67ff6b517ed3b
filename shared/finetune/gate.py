"""The evaluation gate: a candidate is promoted only if it beats the current model, with confidence.

Inputs: the tenant's held-out examples (chat JSONL rows split off before training, never trained
on: `shared.finetune.datasets`). For each example the prompt is every message before the last
assistant turn and the reference is that turn. Both the candidate and the current model (the
tenant's promoted tuned deployment, or its base) answer every prompt through the normal resilient
client (retries, breakers, rate budgets, the tenant's quota), each pinned to its one deployment.

Score per answer, in 0..1:
- with a judge deployment (`purpose: evaluation` in the registry): the judge rates the answer's
  similarity to the reference from 1 to 5, as Azure AI Evaluation's `SimilarityEvaluator` asks a
  GPT judge to; the score is (rating - 1) / 4;
- without one: the token F1 of answer and reference (SQuAD's F1, as Azure AI Evaluation's
  `F1ScoreEvaluator`): lower-cased words, punctuation and articles removed.

Decision (paired bootstrap, Efron & Tibshirani 1993, ch. 16; Koehn 2004 for system comparison):
d_i = candidate_i - current_i; the mean of d over `resamples` resamples of the examples (with
replacement, a seeded generator) gives a one-sided lower bound at `confidence`; the candidate is
promoted when that bound exceeds `margin`. So at the default margin 0.05 and confidence 0.95, a
candidate must be better by more than 0.05 (a fifth of a judge point) with 95 % confidence. An
example where either model failed to answer is dropped from both (counted in `failures`); fewer
than `min_examples` scored examples rejects the candidate (not enough evidence). When more than
`max_unavailable_share` of the examples cannot be answered *now* (a deployment throttled past the
client's patience, a circuit breaker open), the gate decides nothing and raises `GateDeferred`:
the watcher scores the candidate again on a later tick.

Libraries weighed: `scipy.stats.bootstrap(paired=True)` computes the same interval (and BCa) but
scipy is not otherwise a dependency of the app in Azure; the percentile bootstrap is a few lines
of numpy. `azure-ai-evaluation` runs its evaluators through its own prompty runtime and OpenAI
client, outside our router (retries, quotas, per-tenant isolation); its prompts are the model for
the judge prompt here, not imported.
"""

from __future__ import annotations

import asyncio
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from shared.contracts import ChatMessage, InferenceParameters
from shared.inference.model_errors import ModelCallError, TransientModelError
from shared.resilience.client import ResilientModelClient, TryLater
from shared.tenancy.registry import IsolationMode, Registry, Tenant
from shared.tenancy.routing import RoutingError

JUDGE_SYSTEM: Final = (
    "You are an evaluator. You compare an ANSWER with a REFERENCE answer to the same question "
    "and rate how similar they are in meaning, on a scale from 1 (not similar at all) to 5 "
    "(the same meaning). Reply with the single digit only."
)
_ARTICLES: Final = re.compile(r"\b(a|an|the)\b")
_DIGIT: Final = re.compile(r"[1-5]")
JUDGE_MAX_TOKENS: Final = 5
"""The judge answers one digit: a small max_tokens keeps its calls cheap on the tenant's quota."""


class GateDeferred(Exception):
    """Too many answers could not be had now (a deployment busy, its breaker open, the tenant's
    quota spent): no decision yet; the watcher asks again on a later tick. `partial` holds the
    pairs scored so far (by example index), which the next try starts from, so a gate whose
    examples take more than one tick's quota still gets there."""

    def __init__(self, message: str, partial: dict[int, list[float | None]]) -> None:
        super().__init__(message)
        self.partial = partial


class _Unavailable(Exception):
    """This answer cannot be had now (TryLater or a transient model error)."""


@dataclass(frozen=True)
class GatePolicy:
    margin: float = 0.05
    confidence: float = 0.95
    resamples: int = 2000
    min_examples: int = 5
    max_examples: int = 200
    concurrency: int = 8
    max_tokens: int = 256
    seed: int = 20261130
    max_unavailable_share: float = 0.2
    """More examples than this share unanswerable for now: `GateDeferred`, not a decision."""


@dataclass(frozen=True)
class HeldOutExample:
    prompt: tuple[ChatMessage, ...]
    reference: str


def held_out_examples(rows: Sequence[Mapping[str, Any]]) -> list[HeldOutExample]:
    """Chat rows as (prompt, reference); rows without a final assistant turn are skipped."""
    examples = []
    for row in rows:
        messages = row.get("messages")
        if not isinstance(messages, list) or len(messages) < 2:
            continue
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant":
            continue
        prompt = tuple(
            ChatMessage(role=m["role"], content=str(m.get("content", "")))
            for m in messages[:-1]
            if isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
        )
        if prompt:
            examples.append(HeldOutExample(prompt, str(last.get("content", ""))))
    return examples


def token_f1(answer: str, reference: str) -> float:
    """SQuAD-style F1 of the two texts' words (0..1)."""
    a, r = _words(answer), _words(reference)
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def _words(text: str) -> list[str]:
    lowered = text.lower().translate(str.maketrans("", "", string.punctuation))
    return _ARTICLES.sub(" ", lowered).split()


def paired_bootstrap(
    candidate: Sequence[float], current: Sequence[float], policy: GatePolicy
) -> tuple[float, float, float]:
    """(mean difference, one-sided lower bound at policy.confidence, matching upper bound)."""
    diffs = np.asarray(candidate, dtype=float) - np.asarray(current, dtype=float)
    rng = np.random.default_rng(policy.seed)
    picks = rng.integers(0, len(diffs), size=(policy.resamples, len(diffs)))
    means = diffs[picks].mean(axis=1)
    alpha = 1.0 - policy.confidence
    return (
        float(diffs.mean()),
        float(np.quantile(means, alpha)),
        float(np.quantile(means, 1.0 - alpha)),
    )


def pinned(tenant: Tenant, deployment: str) -> Tenant:
    """The tenant as routing sees it with only `deployment` reachable (no failover elsewhere)."""
    return tenant.model_copy(
        update={
            "mode": IsolationMode.TUNED,
            "tuned_deployment": deployment,
            "deployments": (deployment,),
            "fallback_to_pooled": False,
        }
    )


class EvaluationGate:
    def __init__(
        self,
        models: ResilientModelClient,
        *,
        judge: str | None = None,
        policy: GatePolicy | None = None,
    ) -> None:
        self._models = models
        self._judge = judge
        self.policy = policy or GatePolicy()

    async def evaluate(
        self,
        registry: Registry,
        tenant: Tenant,
        *,
        candidate: str,
        current: str,
        examples: Sequence[HeldOutExample],
        partial: dict[int, list[float | None]] | None = None,
    ) -> dict[str, Any]:
        """Score both deployments on the examples (those not in `partial` already) and decide.
        The result (JSON-ready) has: decision (promote | reject), reason, examples, failures,
        scorer, margin, confidence, current {deployment, mean}, candidate {deployment, mean},
        mean_difference, lower, upper. Raises GateDeferred (with the pairs so far)."""
        chosen = list(examples)[: self.policy.max_examples]
        judge = self._judge_for(registry, tenant)
        gate = asyncio.Semaphore(self.policy.concurrency)
        done: dict[int, list[float | None]] = {
            int(k): v for k, v in (partial or {}).items() if 0 <= int(k) < len(chosen)
        }

        async def score_pair(index: int, example: HeldOutExample) -> None:
            async with gate:
                try:
                    done[index] = [
                        await self._score(registry, tenant, candidate, example, judge),
                        await self._score(registry, tenant, current, example, judge),
                    ]
                except _Unavailable:
                    return

        await asyncio.gather(*(score_pair(i, e) for i, e in enumerate(chosen) if i not in done))
        unavailable = len(chosen) - len(done)
        if unavailable > self.policy.max_unavailable_share * max(len(chosen), 1):
            raise GateDeferred(
                f"{unavailable} of {len(chosen)} held-out examples could not be answered yet "
                "(a deployment is busy or its circuit breaker is open, or the tenant's quota is "
                "spent); the next try goes on from the ones scored",
                done,
            )
        pairs = [(v[0], v[1]) for _, v in sorted(done.items())]
        kept = [(c, k) for c, k in pairs if c is not None and k is not None]
        result: dict[str, Any] = {
            "examples": len(kept),
            "failures": len(pairs) - len(kept),
            "unavailable": unavailable,
            "scorer": f"judge:{judge}" if judge else "token_f1",
            "margin": self.policy.margin,
            "confidence": self.policy.confidence,
            "current": {"deployment": current},
            "candidate": {"deployment": candidate},
        }
        if len(kept) < self.policy.min_examples:
            result |= {
                "decision": "reject",
                "reason": f"only {len(kept)} held-out examples could be scored "
                f"(at least {self.policy.min_examples} are needed)",
            }
            return result
        cand = [c for c, _ in kept]
        cur = [k for _, k in kept]
        mean_diff, lower, upper = paired_bootstrap(cand, cur, self.policy)
        promote = lower > self.policy.margin
        result["current"]["mean"] = round(float(np.mean(cur)), 4)
        result["candidate"]["mean"] = round(float(np.mean(cand)), 4)
        result |= {
            "mean_difference": round(mean_diff, 4),
            "lower": round(lower, 4),
            "upper": round(upper, 4),
            "decision": "promote" if promote else "reject",
            "reason": (
                f"candidate better by {mean_diff:+.3f} (lower bound {lower:+.3f} at "
                f"{self.policy.confidence:.0%} "
                + ("exceeds" if promote else "does not exceed")
                + f" the margin {self.policy.margin:+.3f}) over {len(kept)} held-out examples"
            ),
        }
        return result

    def _judge_for(self, registry: Registry, tenant: Tenant) -> str | None:
        """The judge, unless there is none or it is pooled and the tenant's data must not reach
        pooled deployments (a dedicated tenant without fallback_to_pooled: token F1 instead)."""
        judge = registry.deployment_by_name.get(self._judge or "")
        if judge is None or (judge.shared and not tenant.reaches_pooled):
            return None
        return judge.name

    async def _score(
        self,
        registry: Registry,
        tenant: Tenant,
        deployment: str,
        example: HeldOutExample,
        judge: str | None,
    ) -> float | None:
        answer = await self._answer(registry, tenant, deployment, example.prompt)
        if answer is None:
            return None
        if judge is None:
            return token_f1(answer, example.reference)
        question = next((m.content for m in reversed(example.prompt) if m.role == "user"), "")
        verdict = await self._answer(
            registry,
            tenant,
            judge,
            (
                ChatMessage(role="system", content=JUDGE_SYSTEM),
                ChatMessage(
                    role="user",
                    content=f"QUESTION: {question}\n<reference>{example.reference}</reference>\n"
                    f"<answer>{answer}</answer>",
                ),
            ),
            judge_call=True,
            max_tokens=JUDGE_MAX_TOKENS,
        )
        found = _DIGIT.search(verdict or "")
        return None if found is None else (int(found.group(0)) - 1) / 4

    async def _answer(
        self,
        registry: Registry,
        tenant: Tenant,
        deployment: str,
        prompt: Sequence[ChatMessage],
        *,
        judge_call: bool = False,
        max_tokens: int | None = None,
    ) -> str | None:
        target = registry.deployment_by_name.get(deployment)
        if target is None:
            return None
        if judge_call:  # the judge serves nobody's requests: reachable only here, pinned
            registry = _with_serving(registry, deployment)
        try:
            done = await self._models.complete_for(
                registry,
                pinned(tenant, deployment),
                prompt,
                InferenceParameters(
                    max_tokens=max_tokens or self.policy.max_tokens, temperature=0.0
                ),
            )
        except (TryLater, TransientModelError) as exc:
            raise _Unavailable(str(exc)) from None
        except (RoutingError, ModelCallError):
            return None  # this example cannot be answered by this deployment at all
        return done.completion.content


def _with_serving(registry: Registry, deployment: str) -> Registry:
    """The registry with the judge deployment usable by routing for this one call."""
    deployments = tuple(
        d.model_copy(update={"purpose": "serving"}) if d.name == deployment else d
        for d in registry.deployments
    )
    return Registry.model_construct(
        version=registry.version, deployments=deployments, tenants=registry.tenants
    )
