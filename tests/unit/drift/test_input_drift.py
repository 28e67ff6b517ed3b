"""The input-drift check: quiet on unshifted traffic (false-alarm rate about alpha), fires on a
moved language mix, feature mix, length or embedding, says which moved and how. Seeded."""

from __future__ import annotations

import json
import math
import random

import pytest

from shared.drift.input_drift import (
    InputDriftResult,
    PromptFeatures,
    input_drift,
    prompt_features,
)

LANGUAGES = (("en", 0.85), ("de", 0.08), ("fr", 0.07))
FEATURES = (("support", 0.6), ("search", 0.3), ("summarise", 0.1))


def window(
    seed: int,
    n: int,
    *,
    languages: tuple[tuple[str, float], ...] = LANGUAGES,
    features: tuple[tuple[str, float], ...] = FEATURES,
    length_scale: float = 1.0,
    embedding_shift: float | None = None,
) -> list[PromptFeatures]:
    gen = random.Random(seed)
    out = []
    for _ in range(n):
        language = gen.choices([c for c, _ in languages], [w for _, w in languages])[0]
        feature = gen.choices([c for c, _ in features], [w for _, w in features])[0]
        chars = max(1, int(gen.lognormvariate(math.log(200), 0.7) * length_scale))
        embedding = (
            None
            if embedding_shift is None
            else tuple(gen.gauss(embedding_shift if i == 0 else 0.0, 1.0) for i in range(8))
        )
        out.append(PromptFeatures(chars, max(1, chars // 6), language, feature, embedding))
    return out


def test_false_alarm_rate_on_unshifted_windows_is_about_alpha() -> None:
    alarms = 0
    for trial in range(100):
        result = input_drift(
            window(2 * trial, 150),
            window(2 * trial + 1, 150),
            permutations=200,
            rng=random.Random(trial),
        )
        alarms += result.detected
    assert alarms <= 3  # alpha = 0.01: P(more than 3 of 100) < 2% even at exactly alpha


def test_a_moved_language_mix_is_detected_and_explained() -> None:
    shifted = (("en", 0.55), ("de", 0.4), ("fr", 0.05))
    result = input_drift(window(1, 300), window(2, 300, languages=shifted), rng=random.Random(1))
    assert result.detected
    assert result.p_values["language"] <= 0.01 / 3
    assert result.reason.startswith("language mix moved: JS ")
    assert "en 0.8" in result.reason
    assert "→0.5" in result.reason
    assert "de 0.10→0.38" in result.reason
    assert result.tests[1].moved
    assert not result.tests[2].moved  # the feature mix did not move


def test_a_moved_feature_mix_is_detected() -> None:
    shifted = (("support", 0.35), ("search", 0.45), ("summarise", 0.2))
    result = input_drift(window(3, 300), window(4, 300, features=shifted), rng=random.Random(2))
    assert result.detected
    assert "feature mix moved" in result.reason


def test_longer_prompts_are_detected() -> None:
    result = input_drift(window(5, 300), window(6, 300, length_scale=1.5), rng=random.Random(3))
    assert result.detected
    assert "prompt length moved" in result.reason
    assert "median chars" in result.reason


def test_embeddings_are_compared_by_mmd_when_both_windows_have_them() -> None:
    same = input_drift(
        window(7, 200, embedding_shift=0.0),
        window(8, 200, embedding_shift=0.0),
        rng=random.Random(4),
    )
    assert "embedding" in same.statistics
    assert not same.detected
    moved = input_drift(
        window(7, 200, embedding_shift=0.0),
        window(8, 200, embedding_shift=0.6),
        rng=random.Random(4),
    )
    assert moved.detected
    assert "embeddings moved: MMD^2" in moved.reason
    no_embeddings = input_drift(window(7, 200), window(8, 200), rng=random.Random(4))
    assert "embedding" not in no_embeddings.statistics


def test_too_few_samples_is_no_decision() -> None:
    result = input_drift(window(9, 49), window(10, 500))
    assert not result.detected
    assert result.reason.startswith("not enough requests to compare: reference 49, recent 500")
    assert result.p_values == {}


def test_seeded_and_serialisable() -> None:
    a = input_drift(window(11, 120), window(12, 120), rng=random.Random(5))
    b = input_drift(window(11, 120), window(12, 120), rng=random.Random(5))
    assert a == b
    assert isinstance(a, InputDriftResult)
    data = json.loads(json.dumps(a.to_json()))
    assert data["reference_n"] == 120
    assert set(data["p_values"]) == {"length", "language", "feature"}
    assert data["correction"] == "holm"


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="alpha"):
        input_drift([], [], alpha=0)
    with pytest.raises(ValueError, match="permutations"):
        input_drift([], [], permutations=0)


def test_prompt_features_and_their_json() -> None:
    f = prompt_features("Wie kann ich mein Passwort zurücksetzen?", "support", [0.5, -1.0])
    assert f == PromptFeatures(40, 6, "de", "support", (0.5, -1.0))
    assert prompt_features("How do I reset my password?", None).language == "en"
    assert prompt_features("12345 !!", None).language == "und"
    assert PromptFeatures.from_json(json.loads(json.dumps(f.to_json()))) == f
    plain = PromptFeatures(3, 1, "en", None)
    assert "embedding" not in plain.to_json()
    assert PromptFeatures.from_json(plain.to_json()) == plain


@pytest.mark.parametrize(
    "data",
    [
        {"chars": -1, "words": 1, "language": "en", "feature": None},
        {"chars": 1, "words": True, "language": "en", "feature": None},
        {"chars": 1, "words": 1, "language": "", "feature": None},
        {"chars": 1, "words": 1, "language": "en", "feature": 3},
        {"chars": 1, "words": 1, "language": "en", "feature": None, "embedding": []},
        {"chars": 1, "words": 1, "language": "en", "feature": None, "embedding": ["x"]},
        [],
    ],
)
def test_prompt_features_from_json_rejects_malformed_data(data: object) -> None:
    with pytest.raises(ValueError, match="prompt features"):
        PromptFeatures.from_json(data)  # type: ignore[arg-type]


def test_a_measurable_but_trivial_length_shift_is_not_drift() -> None:
    # the prompts' numbering grows: lengths shift by a character or two, reliably but meaninglessly
    reference = [prompt_features(f"Plan question {i} #billing", "billing") for i in range(200)]
    recent = [prompt_features(f"Plan question {i} #billing", "billing") for i in range(260, 460)]
    result = input_drift(reference, recent, rng=random.Random(1))
    assert not result.detected
    assert "too little to matter" in result.reason
