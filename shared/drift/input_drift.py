"""Input drift: has recent traffic moved away from the current model version's reference window?

What the inference log keeps per request, even when no text may be kept, is a `PromptFeatures`:
the prompt's length in characters and words, its language, the tenant's `feature` label, and an
embedding when an embeddings deployment is configured. `input_drift(reference, recent)` compares
the two windows feature by feature with a two-sample statistic:

- length: the energy distance (Szekely & Rizzo, "Energy statistics", 2013) between the two
  samples of log(1 + chars): sensitive to any change of the length distribution, and as powerful
  as a t-test for a plain shift (Jensen-Shannon on binned lengths missed a 25% longer prompt mix
  that this catches, see bench/README.md);
- language mix and feature mix: Jensen-Shannon divergence between the category shares;
- embeddings (when at least `min_samples` requests in both windows carry one, of one dimension):
  the squared maximum mean discrepancy (MMD^2, Gretton et al., "A Kernel Two-Sample Test", JMLR
  2012) with a Gaussian (RBF) kernel whose bandwidth is the median pairwise distance of the pooled
  sample (at most 300 embeddings a window, a seeded subsample, keep it cheap).

Each statistic gets a permutation p-value: under "no drift" the window labels are exchangeable, so
the statistic is recomputed on `permutations` random relabellings of the pooled sample (for the
categorical features that is exactly a multivariate hypergeometric draw of the reference window's
counts), p = (1 + #{permuted >= observed}) / (1 + permutations). The features are combined with
Holm's step-down correction (Holm, "A simple sequentially rejective multiple test procedure", 1979),
so the chance that unshifted traffic is called drifted is at most `alpha` (0.01 by default; the
tests and `bench/drift.py` measure it). With fewer than `min_samples` requests in either window no
decision is made. Seeded: the same windows and `rng` give the same answer.

Language is detected offline by py3langid (a maintained fork of langid.py: Lui & Baldwin,
"langid.py: An Off-the-shelf Language Identification Tool", ACL 2012), a naive Bayes model shipped
inside the wheel, deterministic, nothing downloaded at run time. Text with no letters is "und".
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

UNDETERMINED = "und"
NO_FEATURE = "(none)"
MAX_EMBEDDINGS = 300
_SHARE_CHANGES_SHOWN = 3


@dataclass(frozen=True)
class PromptFeatures:
    """What the inference log keeps per request, even when no text may be kept."""

    chars: int
    words: int
    language: str
    feature: str | None
    embedding: tuple[float, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "chars": self.chars,
            "words": self.words,
            "language": self.language,
            "feature": self.feature,
        }
        if self.embedding is not None:
            data["embedding"] = list(self.embedding)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PromptFeatures:
        """ValueError on anything that is not what `to_json` writes."""
        if not isinstance(data, Mapping):
            raise ValueError("prompt features: expected an object")
        chars, words = data.get("chars"), data.get("words")
        language, feature = data.get("language"), data.get("feature")
        for name, value in (("chars", chars), ("words", words)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"prompt features: {name} must be a non-negative integer")
        if not isinstance(language, str) or not language:
            raise ValueError("prompt features: language must be a non-empty string")
        if feature is not None and not isinstance(feature, str):
            raise ValueError("prompt features: feature must be a string or null")
        raw = data.get("embedding")
        embedding: tuple[float, ...] | None = None
        if raw is not None:
            if not isinstance(raw, list) or not raw:
                raise ValueError("prompt features: embedding must be a non-empty list")
            embedding = tuple(_finite(v) for v in raw)
        return cls(chars, words, language, feature, embedding)  # type: ignore[arg-type]


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("prompt features: embedding values must be finite numbers")
    return float(value)


def detect_language(text: str) -> str:
    """ISO 639-1 code by py3langid, or "und" for text without letters."""
    if not any(ch.isalpha() for ch in text):
        return UNDETERMINED
    import py3langid  # noqa: PLC0415 - loads its model (~0.5 s) on first use, not at import

    language, _ = py3langid.classify(text)
    return str(language)


def prompt_features(
    text: str, feature: str | None, embedding: Sequence[float] | None = None
) -> PromptFeatures:
    return PromptFeatures(
        chars=len(text),
        words=len(text.split()),
        language=detect_language(text),
        feature=feature,
        embedding=None if embedding is None else tuple(_finite(v) for v in embedding),
    )


@dataclass(frozen=True)
class FeatureTest:
    """One feature's two-sample test."""

    name: str
    statistic: float
    p_value: float
    level: float  # Holm's level for this test: reject when p_value <= level
    moved: bool
    detail: str  # how it moved, e.g. "en 0.92→0.55, de 0.05→0.40"


@dataclass(frozen=True)
class InputDriftResult:
    statistics: dict[str, float]
    p_values: dict[str, float]
    alpha: float
    reference_n: int
    recent_n: int
    detected: bool
    reason: str
    correction: str = "holm"
    permutations: int = 0
    tests: tuple[FeatureTest, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "statistics": dict(self.statistics),
            "p_values": dict(self.p_values),
            "alpha": self.alpha,
            "correction": self.correction,
            "permutations": self.permutations,
            "reference_n": self.reference_n,
            "recent_n": self.recent_n,
            "detected": self.detected,
            "reason": self.reason,
            "tests": [
                {
                    "feature": t.name,
                    "statistic": t.statistic,
                    "p_value": t.p_value,
                    "level": t.level,
                    "moved": t.moved,
                    "detail": t.detail,
                }
                for t in self.tests
            ],
        }


# -- statistics --------------------------------------------------------------------------------

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _js_rows(a: FloatArray, b: FloatArray) -> FloatArray:
    """Jensen-Shannon divergence (natural log, in [0, ln 2]) between rows of count arrays."""
    p = a / a.sum(axis=-1, keepdims=True)
    q = b / b.sum(axis=-1, keepdims=True)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log(p / m), 0.0)
        kq = np.where(q > 0, q * np.log(q / m), 0.0)
    return np.asarray(0.5 * (kp.sum(axis=-1) + kq.sum(axis=-1)), dtype=np.float64)


def _categorical_test(
    reference: list[str], recent: list[str], permutations: int, gen: np.random.Generator
) -> tuple[float, float, str]:
    """JS divergence of the category shares and its permutation p-value."""
    categories = sorted(set(reference) | set(recent))
    index = {c: i for i, c in enumerate(categories)}
    ref = np.zeros(len(categories), dtype=np.int64)
    rec = np.zeros(len(categories), dtype=np.int64)
    for c in reference:
        ref[index[c]] += 1
    for c in recent:
        rec[index[c]] += 1
    observed = float(_js_rows(ref[None, :].astype(float), rec[None, :].astype(float))[0])
    pooled = ref + rec
    if len(categories) < 2:
        return observed, 1.0, "one category in both windows"
    drawn = gen.multivariate_hypergeometric(pooled, len(reference), size=permutations)
    null = _js_rows(drawn.astype(float), (pooled - drawn).astype(float))
    p_value = (1 + int(np.sum(null >= observed - 1e-12))) / (1 + permutations)
    shares_ref = ref / ref.sum()
    shares_rec = rec / rec.sum()
    order = np.argsort(-np.abs(shares_rec - shares_ref), kind="stable")[:_SHARE_CHANGES_SHOWN]
    detail = ", ".join(
        f"{categories[i]} {shares_ref[i]:.2f}→{shares_rec[i]:.2f}"
        for i in order
        if shares_ref[i] != shares_rec[i]
    )
    return observed, p_value, detail


def _energy_test(
    reference: FloatArray, recent: FloatArray, permutations: int, gen: np.random.Generator
) -> tuple[float, float]:
    """The energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| between two samples of a number and its
    permutation p-value. In one dimension it is -sum_ij w_i w_j |z_i - z_j| over the pooled
    sorted sample with weights 1/n1 (reference) and -1/n2 (recent), which running sums give in
    O(n) per relabelling."""
    pooled = np.concatenate((reference, recent))
    order = np.argsort(pooled, kind="stable")
    z = pooled[order]
    n1, n = len(reference), len(pooled)
    labels = np.concatenate((np.full(n1, 1.0 / n1), np.full(n - n1, -1.0 / (n - n1))))

    def energy(weights: FloatArray) -> FloatArray:
        before = np.cumsum(weights, axis=-1) - weights
        before_z = np.cumsum(weights * z, axis=-1) - weights * z
        return np.asarray(-2.0 * np.sum(weights * (z * before - before_z), axis=-1))

    observed = float(energy(labels[order][None, :])[0])
    shuffled = np.stack([gen.permutation(labels) for _ in range(permutations)])
    null = energy(shuffled)
    p_value = (1 + int(np.sum(null >= observed - 1e-12))) / (1 + permutations)
    return observed, p_value


def _rbf_mmd_test(
    reference: FloatArray, recent: FloatArray, permutations: int, gen: np.random.Generator
) -> tuple[float, float, str]:
    """MMD^2 (biased V-statistic) with a Gaussian kernel, median-heuristic bandwidth."""
    pooled = np.vstack((reference, recent))
    sq = np.sum(pooled * pooled, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    upper = d2[np.triu_indices(len(pooled), k=1)]
    positive = upper[upper > 0]
    bandwidth2 = float(np.median(positive)) if len(positive) else 1.0
    kernel = np.exp(-d2 / bandwidth2)
    n1, n = len(reference), len(pooled)

    def mmd2(weights: FloatArray) -> FloatArray:
        # weights: rows of +1/n1 (reference) and -1/n2 (recent); MMD^2 = w K w'.
        return np.asarray(np.einsum("pi,ij,pj->p", weights, kernel, weights), dtype=np.float64)

    labels = np.concatenate((np.full(n1, 1.0 / n1), np.full(n - n1, -1.0 / (n - n1))))
    observed = float(mmd2(labels[None, :])[0])
    shuffled = np.stack([gen.permutation(labels) for _ in range(permutations)])
    null = np.concatenate([mmd2(chunk) for chunk in np.array_split(shuffled, 10)])
    p_value = (1 + int(np.sum(null >= observed - 1e-12))) / (1 + permutations)
    return observed, p_value, f"RBF bandwidth^2 {bandwidth2:.3g}"


def _embeddings(window: Sequence[PromptFeatures], gen: np.random.Generator) -> FloatArray | None:
    vectors = [f.embedding for f in window if f.embedding is not None]
    if not vectors or len({len(v) for v in vectors}) != 1:
        return None
    array = np.asarray(vectors, dtype=np.float64)
    if len(array) > MAX_EMBEDDINGS:
        array = array[np.sort(gen.choice(len(array), MAX_EMBEDDINGS, replace=False))]
    return array


# -- the check ---------------------------------------------------------------------------------


def input_drift(
    reference: Sequence[PromptFeatures],
    recent: Sequence[PromptFeatures],
    *,
    alpha: float = 0.01,
    permutations: int = 500,
    min_samples: int = 50,
    rng: random.Random | None = None,
) -> InputDriftResult:
    """Has `recent` moved away from `reference`? Permutation tests per feature, Holm-combined."""
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if permutations < 1 or min_samples < 2:
        raise ValueError("permutations must be positive and min_samples at least 2")
    n_ref, n_rec = len(reference), len(recent)
    if n_ref < min_samples or n_rec < min_samples:
        return InputDriftResult(
            statistics={},
            p_values={},
            alpha=alpha,
            reference_n=n_ref,
            recent_n=n_rec,
            detected=False,
            reason=(
                f"not enough requests to compare: reference {n_ref}, recent {n_rec} "
                f"(at least {min_samples} in each are needed)"
            ),
            permutations=permutations,
        )
    gen = np.random.default_rng((rng or random.Random(0)).getrandbits(64))
    raw: list[tuple[str, float, float, str]] = []
    log_ref = np.log1p(np.asarray([f.chars for f in reference], dtype=np.float64))
    log_rec = np.log1p(np.asarray([f.chars for f in recent], dtype=np.float64))
    statistic, p_value = _energy_test(log_ref, log_rec, permutations, gen)
    effects = {"length": abs(float(np.mean(log_rec) - np.mean(log_ref)))}
    detail = (
        f"median chars {_median([f.chars for f in reference]):g}"
        f"→{_median([f.chars for f in recent]):g}"
    )
    raw.append(("length", statistic, p_value, detail))
    for name in ("language", "feature"):
        ref_values = [_category(name, f) for f in reference]
        rec_values = [_category(name, f) for f in recent]
        raw.append((name, *_categorical_test(ref_values, rec_values, permutations, gen)))
    ref_emb, rec_emb = _embeddings(reference, gen), _embeddings(recent, gen)
    if (
        ref_emb is not None
        and rec_emb is not None
        and min(len(ref_emb), len(rec_emb)) >= min_samples
        and ref_emb.shape[1] == rec_emb.shape[1]
    ):
        raw.append(("embedding", *_rbf_mmd_test(ref_emb, rec_emb, permutations, gen)))
    tests = [
        dataclasses.replace(
            t, moved=t.moved and effects.get(t.name, t.statistic) >= MIN_EFFECT.get(t.name, 0.0)
        )
        for t in _holm(raw, alpha)
    ]
    moved = [t for t in tests if t.moved]
    if moved:
        reason = "; ".join(_describe(t) for t in moved)
    elif small := [t for t in tests if t.p_value <= t.level]:
        reason = "no input drift: " + "; ".join(
            f"{t.name} moved measurably but too little to matter (effect "
            f"{effects.get(t.name, t.statistic):.3g} < {MIN_EFFECT.get(t.name, 0.0):.3g}; "
            f"{t.detail})"
            for t in small
        )
    else:
        best = min(tests, key=lambda t: t.p_value)
        reason = (
            f"no input drift: smallest p-value {best.p_value:.3g} ({best.name}) > {best.level:.3g}"
        )
    return InputDriftResult(
        statistics={t.name: t.statistic for t in tests},
        p_values={t.name: t.p_value for t in tests},
        alpha=alpha,
        reference_n=n_ref,
        recent_n=n_rec,
        detected=bool(moved),
        reason=reason,
        permutations=permutations,
        tests=tuple(tests),
    )


# A shift must also be large enough to matter, not only unlikely under the null: prompts whose
# numbering grows ("question 9" -> "question 460") shift the length distribution measurably and
# meaninglessly. Length: the mean of log(chars) must move by log(1.1) (prompts about 10% longer
# or shorter); a mix (Jensen-Shannon divergence) by 0.005, about a 5-point move of one share.
MIN_EFFECT: dict[str, float] = {"length": math.log(1.1), "language": 0.005, "feature": 0.005}


def _category(name: str, features: PromptFeatures) -> str:
    if name == "language":
        return features.language
    return features.feature if features.feature is not None else NO_FEATURE


def _median(values: list[int]) -> float:
    return float(np.median(values)) if values else 0.0


def _holm(raw: list[tuple[str, float, float, str]], alpha: float) -> list[FeatureTest]:
    """Holm's step-down: the k-th smallest p-value (k from 0) is tested at alpha / (m - k) and
    testing stops at the first that is not rejected."""
    m = len(raw)
    order = sorted(range(m), key=lambda i: (raw[i][2], i))
    levels: dict[int, float] = {}
    rejected: set[int] = set()
    still = True
    for k, i in enumerate(order):
        levels[i] = alpha / (m - k)
        if still and raw[i][2] <= levels[i]:
            rejected.add(i)
        else:
            still = False
    return [
        FeatureTest(name, statistic, p_value, levels[i], i in rejected, detail)
        for i, (name, statistic, p_value, detail) in enumerate(raw)
    ]


_LABELS = {
    "length": "prompt length",
    "language": "language mix",
    "feature": "feature mix",
    "embedding": "embeddings",
}


def _describe(test: FeatureTest) -> str:
    what = _LABELS.get(test.name, test.name)
    kind = {"embedding": "MMD^2", "length": "energy distance"}.get(test.name, "JS")
    return (
        f"{what} moved: {kind} {test.statistic:.3g}, p={test.p_value:.3g} <= {test.level:.3g}"
        f" ({test.detail})"
    )


__all__ = [
    "FeatureTest",
    "InputDriftResult",
    "PromptFeatures",
    "detect_language",
    "input_drift",
    "prompt_features",
]
