"""Quality drift: a one-sided change detector on a tenant's feedback stream.

One detector per tenant and model version watches the stream of feedback scores x in [0, 1]
(thumbs up 1.0, down 0.0, a 1-5 rating r as (r - 1) / 4) for a DROP in their mean. It is not told
the baseline: the history since its last reset is the reference. It follows river's detector
convention (a no-argument constructor, `update(x)`, `drift_detected`, a fresh start after an
alarm), so it drops into the harnesses people use with river's ADWIN or PageHinkley.

Algorithm: a one-sided generalized likelihood ratio (GLR) change-point scan with unknown pre- and
post-change means, the sequential test of Siegmund & Venkatraman ("Using the generalized
likelihood ratio statistic for sequential detection of a change-point", Annals of Statistics
1995), in the Bernoulli/bounded form of Besson & Kaufmann ("The Generalized Likelihood Ratio Test
meets klUCB: an Improved Algorithm for Piece-Wise Non-Stationary Bandits", 2019; arXiv:1902.01575):

- Observations are summed in blocks of `block_size` (10). Blocks are kept in an exponential
  histogram (the last `fine_blocks` (128) singly, then at most `per_level` (8) buckets of each
  power-of-two size, oldest merged first, as ADWIN keeps its window): memory and work grow with
  the log of the stream (about 200 buckets, 5 KB of state, after 100,000 observations).
- At every block boundary every bucket boundary k is a candidate change point: reference = the
  n_r observations before k, recent = the n_c after. With m_r, m_c their means and m the pooled
  mean, GLR = n_r kl(m_r, m) + n_c kl(m_c, m) (kl: the Bernoulli Kullback-Leibler divergence;
  bounded observations are sub-Bernoulli), counted only when m_c < m_r.
- Dispersion (quasi-likelihood: GLR / phi): phi is the long-run variance of the block sums (lag-0
  plus twice the lag-1 autocovariance, pooled within the two segments) over the binomial variance.
  Binary feedback cannot be underdispersed, so phi >= 1; graded ratings have less variance than a
  Bernoulli of the same mean, so phi is estimated (shrunk toward 1 by 10 blocks' worth, floor
  0.25), which makes graded feedback detect sooner; bursty feedback (one user rating many answers
  in a row) is overdispersed, and when phi is clearly above 1 an upper bound on it is used.
  Because phi comes from df blocks, the GLR is mapped as a t-test's: (df / 2) log(1 + 2 GLR / df).
  Overdispersed feedback also needs a longer recent window (min_recent x phi observations).
- A clear rise (the same statistic the other way, above the threshold plus `rise_margin` (5),
  so that noise rarely restarts the reference: each restart is a fresh start for the scan, with
  its own chances of a false alarm) restarts the reference at the rise, silently: the old level
  is no longer the baseline, and a reference that mixes two levels would inflate the dispersion
  estimate and hide a later drop (a model that got better, then worse again, is still watched).
- Alarm when, for some k with n_r >= `min_reference` (200) and n_c >= `min_recent` (40), the
  statistic exceeds a + 2 log(n^2 / (n_r n_c)), n = n_r + n_c. The log term is the number of
  nearly independent tests a split stands for: short recent windows against a long history are
  many, a split in the middle few; it depends on the split's proportions only.

Threshold calibration (by simulation, reproducible: `python -m bench.drift --calibrate --runs
1000`): a detector with the threshold disabled runs over 1000 stationary Bernoulli streams of
10,000 observations at each of p = 0.6, 0.85, 0.95 and records per stream the largest
statistic - 2 log(n^2 / (n_r n_c)); `THRESHOLD_A` is the largest of the three 98th percentiles,
rounded up. The slope 2 was chosen over 1, 1.5 and 3 by the same simulation (a larger slope gives
power to long windows, small drops, at the cost of short-window delays late in long streams).

Stated false-alarm rate: at most 2% of stationary streams alarm within 10,000 observations, for
binary feedback at base rates 0.6-0.95 and for graded ratings (measured in `bench/drift.py`, 200
runs each; tested in tests/unit/drift). The threshold does not grow with n, so over longer
horizons the rate grows slowly (measured: 2.0% of 200 streams of 50,000 at p = 0.85, three of
the four alarms before 10,000); bursty feedback breaks the independence the calibration assumes
and its rate is higher (6.5% in the bench; see bench/README.md, "Drift detection").

Libraries weighed: river's ADWIN, PageHinkley, HDDM_A / HDDM_W and KSWIN (the detectors people
reach for on feedback streams; `bench/drift.py` runs three of them beside this one on the same
seeded streams), scikit-multiflow (the same detectors, unmaintained), alibi-detect (its online
detectors calibrate by simulation but want numpy windows of features and a TensorFlow or PyTorch
backend), Evidently and NannyML (batch tests on data frames, not a sequential detector), Azure ML
model monitoring (tabular, fixed thresholds). The project has its own because of the benchmark:
ADWIN's Hoeffding-style bounds are slow on small drops, PageHinkley and HDDM_A at their defaults
raise false alarms on stationary streams, none calibrates its false-alarm rate or accounts for
graded or bursty feedback; this detector is one module on numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

STATE_VERSION = 1
# The threshold on the GLR statistic is THRESHOLD_A + THRESHOLD_SLOPE * log(n^2 / (n_ref n_recent)).
THRESHOLD_A = 4.8
THRESHOLD_SLOPE = 2.0
_EPS = 1e-12
_INT_PARAMS = (
    "block_size",
    "min_reference",
    "min_recent",
    "fine_blocks",
    "per_level",
    "series_window",
)
_FLOAT_PARAMS = (
    "rise_margin",
    "threshold_a",
    "threshold_slope",
    "dispersion_prior",
    "min_dispersion",
)

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class QualityEvidence:
    """Why the detector decided what it decided, at its last evaluation."""

    n: int
    reference_n: int
    reference_mean: float
    recent_n: int
    recent_mean: float
    change_point: int
    statistic: float
    threshold: float
    detected: bool
    reason: str
    series: tuple[tuple[int, float], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "reference_n": self.reference_n,
            "reference_mean": self.reference_mean,
            "recent_n": self.recent_n,
            "recent_mean": self.recent_mean,
            "change_point": self.change_point,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "detected": self.detected,
            "reason": self.reason,
            "series": [[i, m] for i, m in self.series],
        }


# A bucket summarises consecutive complete blocks of `block_size` observations by the block sums
# z_1..z_k: [k, sum z, sum z^2, sum z_i z_(i+1) inside the bucket, first z, last z]. Two adjacent
# buckets merge exactly, so the scan's lag-1 autocovariance stays exact after merging.
_K, _S, _SS, _SL, _FIRST, _LAST = range(6)


class _Buckets:
    """The block summaries, oldest first, as rows of a numpy array (the scan reads them without a
    copy) with their sizes in blocks mirrored in a list (cheap to walk in Python).

    At most `fine` single blocks and `per_level` buckets of each larger size are kept: when a size
    has one too many, its two oldest merge into one of twice the size (an exponential histogram,
    as ADWIN keeps its window). Sizes never grow from old to new, so old history is summarised in
    ever larger buckets, candidate change points are dense near now, and the number of buckets
    grows with the log of the stream's length."""

    def __init__(self, fine: int, per_level: int) -> None:
        self.fine, self.per_level = fine, per_level
        self.sizes: list[float] = []
        self.rows: Array = np.zeros((64, 6), dtype=np.float64)

    def __len__(self) -> int:
        return len(self.sizes)

    def view(self) -> Array:
        return self.rows[: len(self.sizes)]

    def append(self, row: list[float]) -> None:
        count = len(self.sizes)
        if count == len(self.rows):
            self.rows = np.concatenate((self.rows, np.zeros_like(self.rows)))
        self.rows[count] = row
        self.sizes.append(row[_K])

    def drop_oldest(self, count: int) -> None:
        """Forget the `count` oldest buckets (the newest keep their sizes and order)."""
        kept = len(self.sizes) - count
        self.rows[:kept] = self.rows[count : len(self.sizes)]
        del self.sizes[:count]

    def add_block(self, z: float) -> None:
        self.append([1.0, z, z * z, 0.0, z, z])
        sizes, rows = self.sizes, self.rows
        size, limit, end = 1.0, self.fine, len(sizes)
        while True:
            start = end
            while start > 0 and sizes[start - 1] == size:
                start -= 1
            if end - start <= limit:
                return
            a, b = rows[start], rows[start + 1]
            merged = [
                a[_K] + b[_K],
                a[_S] + b[_S],
                a[_SS] + b[_SS],
                a[_SL] + b[_SL] + a[_LAST] * b[_FIRST],
                a[_FIRST],
                b[_LAST],
            ]
            count = len(sizes)
            rows[start] = merged
            rows[start + 1 : count - 1] = rows[start + 2 : count]
            sizes[start : start + 2] = [merged[_K]]
            size, limit, end = size * 2.0, self.per_level, start + 1


@dataclass(frozen=True)
class _Scan:
    statistic: Array  # GLR per eligible split (0 where the recent mean is not below the reference)
    reference_n: Array
    recent_n: Array
    reference_mean: Array
    recent_mean: Array
    rise: Array  # the same GLR where the recent mean is above the reference (0 elsewhere)
    last_bucket: Array  # the split is after this bucket


def _scan(
    m: Array,
    *,
    block_size: int,
    binary: bool,
    min_reference: int,
    min_recent: int,
    dispersion_prior: float,
    min_dispersion: float,
) -> _Scan | None:
    """The GLR statistic at every eligible bucket boundary (split j: rows[:j] against rows[j:])."""
    c = np.cumsum(m[:, :4], axis=0)
    first, last = m[:, _FIRST], m[:, _LAST]
    ccross = np.empty(len(m))  # ccross[j]: lag products across the first j bucket boundaries
    ccross[0] = 0.0
    np.cumsum(last[:-1] * first[1:], out=ccross[1:])
    tk, ts, tss, tsl = c[-1]
    # Eligible splits (after bucket i = j - 1): enough blocks on both sides.
    lo = int(np.searchsorted(c[:, _K], min_reference / block_size - 1e-9))
    hi = int(np.searchsorted(c[:, _K], tk - min_recent / block_size + 1e-9, side="right"))
    i = np.arange(lo, min(hi, len(m) - 1))
    if len(i) == 0:
        return None
    kr, sr, ssr, slr = c[i].T
    slr = slr + ccross[i]
    kc, sc, ssc = tk - kr, ts - sr, tss - ssr
    slc = (tsl - c[i, _SL]) + (ccross[-1] - ccross[i + 1])
    # Within-segment autocovariances of the block sums (lag 0 and lag 1), pooled.
    zr, zc = sr / kr, sc / kc
    ss0 = (ssr - kr * zr * zr) + (ssc - kc * zc * zc)
    ss1 = (slr - zr * (2.0 * sr - first[0] - last[i]) + (kr - 1.0) * zr * zr) + (
        slc - zc * (2.0 * sc - first[i + 1] - last[-1]) + (kc - 1.0) * zc * zc
    )
    df = max(tk - 2.0, 1.0)
    long_run = (ss0 + 2.0 * ss1) / df  # the variance of a block sum, lag-1 corrected
    nr, nc = kr * block_size, kc * block_size
    mr, mc = sr / nr, sc / nc
    bern = (sr * (1.0 - mr) + sc * (1.0 - mc)) / (nr + nc)  # pooled binomial variance
    raw = long_run / np.maximum(block_size * bern, _EPS)
    # Below the binomial dispersion (graded ratings) the estimate is shrunk toward 1 with
    # `dispersion_prior` blocks' worth of weight; binary feedback cannot be underdispersed.
    floor = 1.0 if binary else min_dispersion
    shrunk = np.maximum((df * raw + dispersion_prior) / (df + dispersion_prior), floor)
    dispersion = np.where(raw >= 1.0, raw, shrunk)
    # Clearly overdispersed (bursty) feedback: use an upper bound on the dispersion, not its
    # estimate, whose error on few blocks makes the statistic's tail heavier than a t's.
    margin = 2.0 * math.sqrt(2.0 / df)
    dispersion = np.where(raw > 1.0 + margin, raw * (1.0 + margin), dispersion)
    mu = np.clip((sr + sc) / (nr + nc), _EPS, 1.0 - _EPS)
    pr, pc = np.clip(mr, _EPS, 1.0 - _EPS), np.clip(mc, _EPS, 1.0 - _EPS)
    kl_r = pr * np.log(pr / mu) + (1.0 - pr) * np.log((1.0 - pr) / (1.0 - mu))
    kl_c = pc * np.log(pc / mu) + (1.0 - pc) * np.log((1.0 - pc) / (1.0 - mu))
    glr = np.maximum(nr * kl_r + nc * kl_c, 0.0) / dispersion
    # The scale is estimated from df blocks, so the GLR is a t-test's: (df/2) log(1 + 2 glr/df).
    glr = 0.5 * df * np.log1p(2.0 * glr / df)
    # Overdispersed feedback (one user rating many answers in a row) carries fewer independent
    # observations: the minimum recent window counts effective observations, n / dispersion.
    long_enough = nc >= min_recent * np.maximum(dispersion, 1.0)
    drop = np.where((mc < mr) & long_enough, glr, 0.0)
    rise = np.where((mc > mr) & long_enough, glr, 0.0)
    return _Scan(drop, nr, nc, mr, mc, rise, i.astype(np.float64))


def _threshold(a: float, slope: float, reference_n: Array, recent_n: Array) -> Array:
    """a + slope * log(n^2 / (n_ref * n_recent)): higher for splits far from the middle (short
    recent windows against a long history), where there are more nearly independent tests."""
    n = reference_n + recent_n
    return np.asarray(a + slope * np.log(n * n / (reference_n * recent_n)), dtype=np.float64)


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"quality detector state: {what} is not a number")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"quality detector state: {what} is not finite")
    return result


def _compact(value: float) -> float | int:
    """Whole floats as ints in the JSON (smaller); float() restores them exactly."""
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


@dataclass(frozen=True)
class _Evaluation:
    reference_n: int
    reference_mean: float
    recent_n: int
    recent_mean: float
    statistic: float
    threshold: float


class QualityDriftDetector:
    """One-sided GLR change detector for a drop in the mean of a [0, 1] feedback stream.

    river's detector convention: `update(x)` per observation, `drift_detected` is True right after
    the update that detected, and the next update starts afresh (a new reference).
    """

    def __init__(
        self,
        *,
        block_size: int = 10,
        min_reference: int = 200,
        min_recent: int = 40,
        threshold_a: float = THRESHOLD_A,
        threshold_slope: float = THRESHOLD_SLOPE,
        fine_blocks: int = 128,
        per_level: int = 8,
        dispersion_prior: float = 10.0,
        min_dispersion: float = 0.25,
        series_window: int = 100,
        rise_margin: float = 5.0,
    ) -> None:
        if block_size < 2 or fine_blocks < 2 or per_level < 2:
            raise ValueError("block_size, fine_blocks and per_level must be at least 2")
        if min_reference < block_size or min_recent < block_size:
            raise ValueError("min_reference and min_recent must be at least one block")
        if not (math.isfinite(threshold_a) and math.isfinite(threshold_slope)):
            raise ValueError("threshold_a and threshold_slope must be finite")
        if threshold_slope < 0 or dispersion_prior < 0 or not 0 < min_dispersion <= 1:
            raise ValueError("threshold_slope, dispersion_prior >= 0; 0 < min_dispersion <= 1")
        if series_window < 1:
            raise ValueError("series_window must be positive")
        self.block_size = block_size
        self.min_reference = min_reference
        self.min_recent = min_recent
        self.threshold_a = float(threshold_a)
        self.threshold_slope = float(threshold_slope)
        self.fine_blocks = fine_blocks
        self.per_level = per_level
        self.dispersion_prior = float(dispersion_prior)
        self.min_dispersion = float(min_dispersion)
        self.series_window = series_window
        self.rise_margin = float(rise_margin)
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._binary = True
        self._partial_n = 0
        self._partial_sum = 0.0
        self._buckets = _Buckets(self.fine_blocks, self.per_level)
        self._detected = False
        self._last: _Evaluation | None = None
        self.rebases = 0  # times a significant rise restarted the reference (since the reset)

    # -- river's convention -------------------------------------------------------------------

    def update(self, x: float) -> None:
        """Add one observation in [0, 1] (thumbs up 1.0, down 0.0, a rating r of 1-5 as
        (r - 1) / 4). Raises ValueError for anything else, NaN included."""
        if not isinstance(x, int | float) or not 0.0 <= x <= 1.0:
            raise ValueError(f"a quality observation must be a number in [0, 1], got {x!r}")
        if self._detected:
            self._reset()
        x = float(x)
        self._n += 1
        if x not in (0.0, 1.0):
            self._binary = False
        self._partial_n += 1
        self._partial_sum += x
        if self._partial_n < self.block_size:
            return
        self._buckets.add_block(self._partial_sum)
        self._partial_n, self._partial_sum = 0, 0.0
        self._evaluate()

    @property
    def drift_detected(self) -> bool:
        return self._detected

    @property
    def n(self) -> int:
        """Observations since the last reset."""
        return self._n

    # -- the scan -----------------------------------------------------------------------------

    def _evaluate(self) -> None:
        complete = self._n - self._partial_n
        if complete < self.min_reference + self.min_recent:
            return
        scan = _scan(
            self._buckets.view(),
            block_size=self.block_size,
            binary=self._binary,
            min_reference=self.min_reference,
            min_recent=self.min_recent,
            dispersion_prior=self.dispersion_prior,
            min_dispersion=self.min_dispersion,
        )
        if scan is None:
            return
        nr, nc = scan.reference_n, scan.recent_n
        thresholds = _threshold(self.threshold_a, self.threshold_slope, nr, nc)
        margin = scan.statistic - thresholds
        i = int(np.argmax(margin))
        if margin[i] <= 0.0 and self._rebase_after_rise(scan, thresholds):
            return
        self._last = _Evaluation(
            reference_n=int(nr[i]),
            reference_mean=float(scan.reference_mean[i]),
            recent_n=int(nc[i]),
            recent_mean=float(scan.recent_mean[i]),
            statistic=float(scan.statistic[i]),
            threshold=float(thresholds[i]),
        )
        self._detected = bool(margin[i] > 0.0)

    def _rebase_after_rise(self, scan: _Scan, thresholds: Array) -> bool:
        """A significant RISE (the same test, the other way) means the old level is no longer
        the baseline: drop the history before it, so a later drop is measured against the new
        level, not a mixture whose spread would hide it. Never an alarm."""
        rise = scan.rise - thresholds - self.rise_margin
        j = int(np.argmax(rise))
        if rise[j] <= 0.0:
            return False
        self._buckets.drop_oldest(int(scan.last_bucket[j]) + 1)
        blocks = float(self._buckets.view()[:, _K].sum())
        self._n = int(blocks) * self.block_size + self._partial_n
        self._last = None
        self.rebases += 1
        return True

    # -- evidence -----------------------------------------------------------------------------

    def series(self) -> tuple[tuple[int, float], ...]:
        """(sample index, mean of the trailing `series_window` or more samples) at every bucket
        end since the reset: the feedback rate over time, for a chart."""
        points: list[tuple[int, float]] = []
        ends: list[tuple[float, float]] = []  # cumulative (count, sum) at each bucket end
        count = total = 0.0
        for b in self._buckets.view().tolist():
            count += b[_K] * self.block_size
            total += b[_S]
            ends.append((count, total))
        start = 0
        for i, (c, t) in enumerate(ends):
            while start < i and c - ends[start][0] >= self.series_window:
                start += 1
            c0, t0 = ends[start - 1] if start > 0 else (0.0, 0.0)
            points.append((int(c), (t - t0) / (c - c0)))
        return tuple(points)

    def evidence(self) -> QualityEvidence:
        last, series = self._last, self.series()
        needed = self.min_reference + self.min_recent
        if last is None:
            return QualityEvidence(
                n=self._n,
                reference_n=0,
                reference_mean=0.0,
                recent_n=0,
                recent_mean=0.0,
                change_point=0,
                statistic=0.0,
                threshold=0.0,
                detected=False,
                reason=(
                    f"collecting: {self._n} of the {needed} samples needed (reference >= "
                    f"{self.min_reference}, recent >= {self.min_recent}) to call a drop"
                ),
                series=series,
            )
        before = f"{last.reference_mean:.2f} (n={last.reference_n})"
        after = f"{last.recent_mean:.2f} (n={last.recent_n})"
        if self._detected:
            reason = (
                f"quality fell from {before} to {after} after sample {last.reference_n}; "
                f"GLR statistic {last.statistic:.1f} > threshold {last.threshold:.1f}"
            )
        elif last.statistic == 0.0:
            reason = (
                "no drift: no split yet has a lower recent mean over enough ratings to test it "
                f"(at least {self.min_recent} after the split, more when feedback is bursty)"
            )
        elif last.recent_mean < last.reference_mean:
            reason = (
                f"no drift: the largest drop, from {before} to {after} after sample "
                f"{last.reference_n}, has GLR statistic {last.statistic:.1f} <= threshold "
                f"{last.threshold:.1f}"
            )
        else:
            reason = (
                f"no drift: no window after sample {self.min_reference} is below the one before"
            )
        return QualityEvidence(
            n=self._n,
            reference_n=last.reference_n,
            reference_mean=last.reference_mean,
            recent_n=last.recent_n,
            recent_mean=last.recent_mean,
            change_point=last.reference_n,
            statistic=last.statistic,
            threshold=last.threshold,
            detected=self._detected,
            reason=reason,
            series=series,
        )

    # -- persistence --------------------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        return {
            "block_size": self.block_size,
            "min_reference": self.min_reference,
            "min_recent": self.min_recent,
            "threshold_a": self.threshold_a,
            "threshold_slope": self.threshold_slope,
            "fine_blocks": self.fine_blocks,
            "per_level": self.per_level,
            "dispersion_prior": self.dispersion_prior,
            "min_dispersion": self.min_dispersion,
            "series_window": self.series_window,
            "rise_margin": self.rise_margin,
        }

    def state(self) -> dict[str, Any]:
        """JSON-serialisable and small: the parameters, the buckets (their number grows with the
        log of the stream's length) and the last evaluation."""
        last = self._last
        return {
            "version": STATE_VERSION,
            "params": self._params(),
            "n": self._n,
            "binary": self._binary,
            "partial": [self._partial_n, _compact(self._partial_sum)],
            "buckets": [[_compact(v) for v in b] for b in self._buckets.view().tolist()],
            "detected": self._detected,
            "last": None
            if last is None
            else [
                last.reference_n,
                last.reference_mean,
                last.recent_n,
                last.recent_mean,
                last.statistic,
                last.threshold,
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> QualityDriftDetector:
        """The detector `state()` describes, exactly. ValueError on a malformed state."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"quality detector state: expected a mapping of version {STATE_VERSION}"
            )
        params = state.get("params")
        if not isinstance(params, Mapping):
            raise ValueError("quality detector state: params missing")
        kwargs: dict[str, Any] = {}
        for key in (*_INT_PARAMS, *_FLOAT_PARAMS):
            if key not in params:
                raise ValueError(f"quality detector state: params.{key} missing")
            value = params[key]
            if key in _INT_PARAMS and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"quality detector state: params.{key} is not an integer")
            kwargs[key] = value if key in _INT_PARAMS else _num(value, f"params.{key}")
        try:
            detector = cls(**kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"quality detector state: {error}") from error
        try:
            n, binary, detected = state["n"], state["binary"], state["detected"]
            partial_n, partial_sum = state["partial"]
            raw_buckets, last = state["buckets"], state["last"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"quality detector state: {error!r}") from error
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError("quality detector state: n is not a count")
        if not isinstance(binary, bool) or not isinstance(detected, bool):
            raise ValueError("quality detector state: binary and detected must be booleans")
        if isinstance(partial_n, bool) or not isinstance(partial_n, int):
            raise ValueError("quality detector state: partial count is not an integer")
        if not 0 <= partial_n < detector.block_size:
            raise ValueError("quality detector state: partial count out of range")
        if not isinstance(raw_buckets, list):
            raise ValueError("quality detector state: buckets is not a list")
        buckets = _Buckets(detector.fine_blocks, detector.per_level)
        blocks = 0.0
        for i, raw in enumerate(raw_buckets):
            if not isinstance(raw, list) or len(raw) != 6:
                raise ValueError(f"quality detector state: bucket {i} is not six numbers")
            bucket = [_num(v, f"bucket {i}") for v in raw]
            if bucket[_K] < 1 or not bucket[_K].is_integer():
                raise ValueError(f"quality detector state: bucket {i} has no blocks")
            if not 0.0 <= bucket[_S] <= bucket[_K] * detector.block_size:
                raise ValueError(f"quality detector state: bucket {i} sum out of range")
            blocks += bucket[_K]
            buckets.append(bucket)
        if blocks * detector.block_size + partial_n != n:
            raise ValueError("quality detector state: n does not match the buckets")
        evaluation: _Evaluation | None = None
        if last is not None:
            if not isinstance(last, list) or len(last) != 6:
                raise ValueError("quality detector state: last is not six numbers")
            values = [_num(v, "last") for v in last]
            evaluation = _Evaluation(
                reference_n=int(values[0]),
                reference_mean=values[1],
                recent_n=int(values[2]),
                recent_mean=values[3],
                statistic=values[4],
                threshold=values[5],
            )
        detector._n = n
        detector._binary = binary
        detector._partial_n = partial_n
        detector._partial_sum = _num(partial_sum, "partial sum")
        detector._buckets = buckets
        detector._detected = detected
        detector._last = evaluation
        return detector
