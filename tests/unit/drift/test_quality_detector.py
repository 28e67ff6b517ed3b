"""The quality drift detector: alarms on drops, stays quiet on stationary feedback at the stated
false-alarm rate, and its state is small and round-trips exactly. Seeded throughout."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from shared.drift.quality import QualityDriftDetector, QualityEvidence


def bernoulli(seed: int, p: list[tuple[int, float]]) -> list[float]:
    """Concatenated Bernoulli segments [(length, rate), ...]."""
    gen = np.random.default_rng(seed)
    rates = np.concatenate([np.full(n, rate) for n, rate in p])
    return (gen.random(len(rates)) < rates).astype(float).tolist()  # type: ignore[no-any-return]


def first_alarm(xs: list[float], detector: QualityDriftDetector | None = None) -> int | None:
    d = detector or QualityDriftDetector()
    for t, x in enumerate(xs):
        d.update(x)
        if d.drift_detected:
            return t
    return None


def test_no_argument_constructor_and_river_convention() -> None:
    d = QualityDriftDetector()
    assert d.n == 0
    assert not d.drift_detected
    d.update(1.0)
    d.update(0)
    d.update(True)
    assert d.n == 3


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan, math.inf, "1", None])
def test_update_rejects_values_outside_the_unit_interval(bad: object) -> None:
    d = QualityDriftDetector()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        d.update(bad)  # type: ignore[arg-type]
    assert d.n == 0


def test_detects_a_drop_from_085_to_070_quickly_and_says_why() -> None:
    delays = []
    for seed in range(10):
        xs = bernoulli(seed, [(1000, 0.85), (2000, 0.70)])
        d = QualityDriftDetector()
        t = first_alarm(xs, d)
        assert t is not None
        assert t >= 1000, "no alarm before the change"
        delays.append(t - 1000)
        evidence = d.evidence()
        assert evidence.detected
        assert evidence.statistic > evidence.threshold
        assert evidence.reason.startswith("quality fell from 0.8")
        assert "GLR statistic" in evidence.reason
        assert 700 <= evidence.change_point <= 1100
        assert evidence.reference_mean > evidence.recent_mean
        assert evidence.reference_n + evidence.recent_n == d.n // d.block_size * d.block_size
    assert sorted(delays)[len(delays) // 2] <= 200


def test_starts_afresh_on_the_update_after_an_alarm() -> None:
    d = QualityDriftDetector()
    xs = bernoulli(3, [(1000, 0.9), (1000, 0.5)])
    t = first_alarm(xs, d)
    assert t is not None
    assert d.drift_detected
    d.update(1.0)
    assert not d.drift_detected
    assert d.n == 1
    assert d.evidence().reason.startswith("collecting: 1 of the 240 samples")


def test_needs_a_minimum_sample_before_it_can_alarm() -> None:
    d = QualityDriftDetector()
    # A total collapse after 200 good answers: the reference needs 200 samples, the recent 40.
    for t, x in enumerate([1.0] * 200 + [0.0] * 39):
        d.update(x)
        assert not d.drift_detected, t
    evidence = d.evidence()
    assert evidence.reason == (
        "collecting: 239 of the 240 samples needed (reference >= 200, recent >= 40) to call a drop"
    )
    assert not evidence.detected
    d.update(0.0)
    assert d.drift_detected
    assert d.evidence().reason.startswith("quality fell from 1.00 (n=200) to 0.00 (n=40)")


def test_a_longer_minimum_delays_the_first_possible_alarm() -> None:
    d = QualityDriftDetector(min_reference=500, min_recent=100)
    assert first_alarm([1.0] * 500 + [0.0] * 99, d) is None
    assert first_alarm([0.0], d) == 0


def stationary_false_alarms(p: float, runs: int, length: int, seed: int, graded: bool) -> int:
    gen = np.random.default_rng(seed)
    alarms = 0
    for _ in range(runs):
        if graded:
            xs = (gen.binomial(4, p, length) / 4.0).tolist()
        else:
            xs = (gen.random(length) < p).astype(float).tolist()
        alarms += first_alarm(xs) is not None
    return alarms


@pytest.mark.parametrize(("p", "seed"), [(0.6, 11), (0.85, 12), (0.95, 13)])
def test_false_alarm_rate_on_stationary_feedback(p: float, seed: int) -> None:
    """Stated: <= 2% of 10,000-sample stationary streams alarm. 50 streams per base rate here
    (the bench runs 200): at 2%, more than 4 alarms in 50 happens with probability < 0.2%."""
    assert stationary_false_alarms(p, runs=50, length=10_000, seed=seed, graded=False) <= 4


def test_graded_ratings_stationary_and_drop() -> None:
    assert stationary_false_alarms(0.85, runs=30, length=10_000, seed=21, graded=True) <= 3
    gen = np.random.default_rng(22)
    rates = np.concatenate([np.full(1000, 0.85), np.full(1000, 0.78)])
    t = first_alarm((gen.binomial(4, rates) / 4.0).tolist())
    assert t is not None
    assert t >= 1000


def test_small_drop_is_caught_within_2000_samples_more_often_than_not() -> None:
    hits = 0
    for seed in range(100, 120):
        t = first_alarm(bernoulli(seed, [(1000, 0.85), (2000, 0.80)]))
        hits += t is not None and t >= 1000
    assert hits >= 6  # the bench measures 48%; an oracle that knows the change point, 79%


def test_does_not_alarm_on_a_rise() -> None:
    assert first_alarm(bernoulli(5, [(1000, 0.6), (2000, 0.9)])) is None


def test_state_round_trips_exactly_and_stays_small() -> None:
    d = QualityDriftDetector()
    gen = np.random.default_rng(7)
    xs = (gen.binomial(4, 0.8, 100_000) / 4.0).tolist()
    for i, x in enumerate(xs):
        d.update(x)
        if i in (0, 57, 300, 4_321):
            copy = QualityDriftDetector.from_state(json.loads(json.dumps(d.state())))
            assert copy.state() == d.state()
            assert copy.evidence() == d.evidence()
    state = d.state()
    assert len(json.dumps(state)) < 16_000
    copy = QualityDriftDetector.from_state(json.loads(json.dumps(state)))
    tail = bernoulli(8, [(3000, 0.3)])
    for x in tail:
        d.update(x)
        copy.update(x)
        assert copy.drift_detected == d.drift_detected
    assert copy.state() == d.state()
    assert copy.evidence() == d.evidence()


def test_state_round_trips_right_after_an_alarm() -> None:
    d = QualityDriftDetector()
    assert first_alarm(bernoulli(9, [(1000, 0.9), (500, 0.5)]), d) is not None
    copy = QualityDriftDetector.from_state(json.loads(json.dumps(d.state())))
    assert copy.drift_detected
    assert copy.evidence() == d.evidence()
    copy.update(1.0)
    assert copy.n == 1


def test_parameters_survive_the_round_trip() -> None:
    d = QualityDriftDetector(block_size=10, min_reference=100, min_recent=30, threshold_a=5.5)
    for x in bernoulli(1, [(500, 0.7)]):
        d.update(x)
    copy = QualityDriftDetector.from_state(d.state())
    assert copy.block_size == 10
    assert copy.threshold_a == 5.5
    assert copy.state() == d.state()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(version=99),
        lambda s: s.pop("buckets"),
        lambda s: s.update(n=-1),
        lambda s: s.update(n=s["n"] + 1),
        lambda s: s.update(partial=[25, 3.0]),
        lambda s: s.update(buckets=[[1, 2, 4, 0, 2]]),
        lambda s: s.update(buckets=[[0, 0, 0, 0, 0, 0]]),
        lambda s: s.update(buckets=[[1, 99, 9801, 0, 99, 99]]),
        lambda s: s.update(binary="yes"),
        lambda s: s["params"].update(block_size=1.5),
        lambda s: s["params"].pop("threshold_a"),
        lambda s: s["params"].update(min_dispersion=0),
        lambda s: s.update(last=[1, 2]),
        lambda s: s.update(last=[1, "x", 2, 3, 4, 5]),
    ],
)
def test_from_state_rejects_a_malformed_state(mutate: object) -> None:
    d = QualityDriftDetector()
    for x in bernoulli(2, [(300, 0.8)]):
        d.update(x)
    state = json.loads(json.dumps(d.state()))
    mutate(state)  # type: ignore[operator]
    with pytest.raises(ValueError, match="state"):
        QualityDriftDetector.from_state(state)


def test_from_state_rejects_what_is_not_a_mapping() -> None:
    with pytest.raises(ValueError, match="state"):
        QualityDriftDetector.from_state([])  # type: ignore[arg-type]


def test_evidence_series_for_a_chart() -> None:
    d = QualityDriftDetector()
    for x in bernoulli(4, [(2000, 0.85)]):
        d.update(x)
    evidence = d.evidence()
    assert isinstance(evidence, QualityEvidence)
    assert not evidence.detected
    assert evidence.reason.startswith("no drift")
    indices = [i for i, _ in evidence.series]
    assert indices == sorted(indices)
    assert indices[-1] == 2000
    assert all(0.0 <= m <= 1.0 for _, m in evidence.series)
    assert abs(evidence.series[-1][1] - 0.85) < 0.15
    assert json.loads(json.dumps(evidence.to_json()))["n"] == 2000


def test_update_is_cheap() -> None:
    import time

    d = QualityDriftDetector()
    xs = bernoulli(6, [(20_000, 0.85)])
    started = time.perf_counter()
    for x in xs:
        d.update(x)
    per_update = (time.perf_counter() - started) / len(xs)
    assert per_update < 100e-6  # about 10 us here; the brief's target is 50 us


def test_a_rise_then_a_drop_is_still_detected() -> None:
    """A model that got better and then worse again: the rise restarts the reference, so the
    drop is measured against the better level, not a mixture of the two."""
    detector = QualityDriftDetector()
    rng = random.Random(9)
    stream_ = [float(rng.random() < 0.3) for _ in range(500)] + [1.0] * 600 + [0.0] * 300
    alarms = []
    for i, x in enumerate(stream_):
        detector.update(x)
        if detector.drift_detected:
            alarms.append(i)
    assert len(alarms) == 1
    assert 1100 < alarms[0] < 1100 + 100
