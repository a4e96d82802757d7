"""Paired differences: the candidate and the compared version scored on the same cases.

Both versions answer every case, so each case gives a pair of scores and the
comparison is on the per-case differences ``d = candidate - compared``, not on
two independent means: the cases' own difficulty cancels out. For each scorer:

- ``mean``: the mean difference (positive: the candidate scores higher);
- ``ci_low``, ``ci_high``: a 95% paired bootstrap interval of that mean
  (cases resampled with replacement, 2,000 resamples, a fixed seed so the same
  scores give the same interval);
- ``p_value``: a two-sided sign test (binomial, ties dropped) of whether the
  candidate wins as often as it loses;
- ``wins``, ``losses``, ``ties``, and ``n`` pairs used. A pair with a NaN
  score (a judge that gave no score) is left out, and ``dropped`` counts it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["PairedDiff", "paired_difference", "percentiles"]

RESAMPLES = 2000
CONFIDENCE = 0.95
_SEED = 20240611
#: Bootstrap draws held in memory at once (resamples x pairs).
_CHUNK = 2_000_000


@dataclass(frozen=True)
class PairedDiff:
    """The paired comparison of one scorer; see the module docstring."""

    mean: float
    ci_low: float
    ci_high: float
    p_value: float
    wins: int
    losses: int
    ties: int
    n: int
    dropped: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_difference(
    candidate: np.ndarray, compared: np.ndarray, *, resamples: int = RESAMPLES
) -> PairedDiff:
    """Compare two score arrays of the same cases (same order)."""
    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(compared, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    n = int(d.size)
    dropped = int(keep.size - n)
    if n == 0:
        nan = math.nan
        return PairedDiff(nan, nan, nan, nan, 0, 0, 0, 0, dropped)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    low, high = _bootstrap(d, resamples)
    return PairedDiff(
        mean=float(d.mean()),
        ci_low=low,
        ci_high=high,
        p_value=_sign_test(wins, losses),
        wins=wins,
        losses=losses,
        ties=n - wins - losses,
        n=n,
        dropped=dropped,
    )


def _bootstrap(d: np.ndarray, resamples: int) -> tuple[float, float]:
    if d.size == 1 or np.all(d == d[0]):
        return float(d[0]), float(d[0])
    rng = np.random.default_rng(_SEED)
    means = np.empty(resamples)
    step = max(1, _CHUNK // d.size)
    for start in range(0, resamples, step):
        count = min(step, resamples - start)
        picks = rng.integers(0, d.size, size=(count, d.size))
        means[start : start + count] = d[picks].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _sign_test(wins: int, losses: int) -> float:
    if wins + losses == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(wins, wins + losses, 0.5).pvalue)


def percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Percentiles of the finite ``values`` (NaN for each when there are none)."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return [math.nan] * len(qs)
    return [float(v) for v in np.percentile(finite, qs)]
