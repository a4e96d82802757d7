"""Drift tests on two profiles of one column.

Numeric columns are compared bin for bin on the reference's equal-mass
edges (see :mod:`keel.data.profiling.profiles`); categorical columns on the
union of their categories. Two kinds of method:

- **tests** (``ks``, ``chisquare``) answer "is there evidence of any
  change?"; ``statistic`` is the p-value and a column drifts when it is
  *below* the threshold (the false-alarm rate).
- **distances** (``wasserstein``, ``psi``, ``jensenshannon``) answer "is the
  change large?"; a column drifts when the distance is *at or above* the
  threshold. They do not grow with the sample size.

Which one is the default depends on the effective sample size
``n·m/(n+m)`` (see :func:`default_method`): with many rows every p-value
goes to zero on changes far too small to matter, so large samples are
judged by distance instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keel.data.profiling.profiles import (
    CATEGORICAL,
    NUMERIC,
    CategoricalColumn,
    ColumnProfile,
    NumericColumn,
    rebin,
)
from keel.errors import InvalidInput

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LARGE_SAMPLE",
    "METHODS",
    "TESTS",
    "TestResult",
    "default_method",
    "effective_size",
    "jensen_shannon",
    "run_test",
]

#: Which column kinds each method reads.
METHODS: dict[str, tuple[str, ...]] = {
    "ks": (NUMERIC,),
    "wasserstein": (NUMERIC,),
    "psi": (NUMERIC, CATEGORICAL),
    "jensenshannon": (NUMERIC, CATEGORICAL),
    "chisquare": (CATEGORICAL,),
}
#: Methods whose statistic is a p-value (drift when below the threshold).
TESTS = frozenset({"ks", "chisquare"})
DEFAULT_THRESHOLDS: dict[str, float] = {
    "ks": 0.01,
    "chisquare": 0.01,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "psi": 0.1,
}
#: Effective sample size above which distances replace p-value tests by default.
LARGE_SAMPLE = 10_000
_PSI_GROUPS = 10  # reference deciles, the usual PSI binning
_JS_GROUPS = 20
_PSI_FLOOR = 1e-4  # share given to an empty bin so PSI stays finite
_MIN_EXPECTED = 5  # chi-square: pool categories expected fewer times than this


@dataclass(frozen=True)
class TestResult:
    """A method's verdict on one column.

    Attributes:
        statistic: the p-value for tests, the distance otherwise.
        p_value: the p-value for tests, else ``None``.
        details: the method's own numbers (KS's D, chi-square's χ² and dof …).
    """

    __test__ = False  # not a pytest class, despite the name

    method: str
    statistic: float
    threshold: float
    drifted: bool
    p_value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def effective_size(n_reference: int, n_current: int) -> float:
    """``n·m/(n+m)``: what sets a two-sample test's power (the smaller side dominates)."""
    if n_reference <= 0 or n_current <= 0:
        return 0.0
    return n_reference * n_current / (n_reference + n_current)


def default_method(kind: str, n_reference: int, n_current: int) -> str:
    """The default method for a column kind and the sizes of the two samples.

    Up to :data:`LARGE_SAMPLE` effective rows: Kolmogorov-Smirnov (numeric) or
    chi-square (categorical) at p < 0.05. Above: normalized Wasserstein
    (numeric) or Jensen-Shannon distance (categorical) at 0.1.
    """
    large = effective_size(n_reference, n_current) > LARGE_SAMPLE
    if kind == NUMERIC:
        return "wasserstein" if large else "ks"
    return "jensenshannon" if large else "chisquare"


def check_method(method: str, kind: str, column: str) -> None:
    """Raise ``InvalidInput`` unless ``method`` exists and reads ``kind`` columns."""
    kinds = METHODS.get(method)
    if kinds is None:
        raise InvalidInput(
            f"unknown drift method {method!r} for column {column!r}; use one of "
            f"{', '.join(sorted(METHODS))}"
        )
    if kind not in kinds:
        fitting = sorted(m for m, k in METHODS.items() if kind in k)
        raise InvalidInput(
            f"method {method!r} is for {' and '.join(kinds)} columns; column {column!r} is "
            f"{kind}: use one of {', '.join(fitting)}"
        )


def run_test(
    method: str, reference: ColumnProfile, current: ColumnProfile, threshold: float | None = None
) -> TestResult:
    """Compare two profiles of one column with ``method``.

    Both must have values (``count > 0``); the caller reports empty columns.
    """
    check_method(method, reference.kind, reference.name)
    limit = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
    if isinstance(reference, NumericColumn):
        assert isinstance(current, NumericColumn)
        r, c, points = _aligned_numeric(reference, current)
        if method == "ks":
            return _ks(r, c, limit)
        if method == "wasserstein":
            return _wasserstein(r, c, points, reference.std, limit)
        groups = _PSI_GROUPS if method == "psi" else _JS_GROUPS
        r, c = _grouped(r, c, groups)
    else:
        assert isinstance(current, CategoricalColumn)
        _, r, c = aligned_categories(reference, current)
        if method == "chisquare":
            return _chisquare(r, c, limit)
    if method == "psi":
        value = _psi(r, c)
        return TestResult(method, value, limit, value >= limit)
    value = jensen_shannon(r, c)
    return TestResult(method, value, limit, value >= limit)


# -- aligning two profiles ---------------------------------------------------------------------


def _aligned_numeric(
    reference: NumericColumn, current: NumericColumn
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both histograms on the reference's edges, and the bins' boundaries."""
    edges = reference.edges
    cur = current.counts if np.array_equal(current.edges, edges) else rebin(current, edges)
    lo = float(np.nanmin([reference.min, current.min, edges[0]]))
    hi = float(np.nanmax([reference.max, current.max, edges[-1]]))
    points = np.concatenate([[lo], edges, [hi]])
    return reference.counts.astype(np.float64), cur.astype(np.float64), points


def aligned_categories(
    reference: CategoricalColumn, current: CategoricalColumn
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Counts of both on the union of categories (plus one "other" bucket when either has one)."""
    names = list(reference.categories)
    names += [v for v in current.categories if v not in reference.categories]
    r = [reference.categories.get(v, 0) for v in names]
    c = [current.categories.get(v, 0) for v in names]
    if reference.other or current.other:
        names.append("(other)")
        r.append(reference.other)
        c.append(current.other)
    return names, np.asarray(r, dtype=np.float64), np.asarray(c, dtype=np.float64)


def _grouped(r: np.ndarray, c: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Fine bins pooled into ``groups`` of about equal reference mass; outer bins kept apart."""
    inner = r[1:-1]
    total = inner.sum()
    if total <= 0:
        return r, c
    middle = (np.cumsum(inner) - inner / 2) / total
    index = np.minimum((middle * groups).astype(np.int64), groups - 1) + 1
    index = np.concatenate([[0], index, [groups + 1]])
    rg = np.bincount(index, weights=r, minlength=groups + 2)
    cg = np.bincount(index, weights=c, minlength=groups + 2)
    keep = (rg + cg) > 0
    return rg[keep], cg[keep]


# -- the methods --------------------------------------------------------------------------------


def _ks(r: np.ndarray, c: np.ndarray, alpha: float) -> TestResult:
    from scipy.special import kolmogorov

    n, m = r.sum(), c.sum()
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    en = effective_size(int(n), int(m))
    # Stephens' small-sample correction of the asymptotic distribution.
    root = math.sqrt(en)
    p = float(kolmogorov((root + 0.12 + 0.11 / root) * d)) if d > 0 else 1.0
    return TestResult(
        "ks", p, alpha, p < alpha, p, {"ks_statistic": d, "effective_size": round(en, 1)}
    )


def _wasserstein(
    r: np.ndarray, c: np.ndarray, points: np.ndarray, scale: float, limit: float
) -> TestResult:
    """Wasserstein-1 distance over the reference's standard deviation.

    ``∫|F_ref - F_cur|`` with both CDFs linear inside each bin: on a segment
    where the difference keeps its sign the integral is the trapezoid; where it
    crosses zero, the two triangles.
    """
    f = np.concatenate([[0.0], np.cumsum(r) / r.sum()]) - np.concatenate(
        [[0.0], np.cumsum(c) / c.sum()]
    )
    a, b = f[:-1], f[1:]
    width = np.diff(points)
    same = a * b >= 0
    span = np.abs(a) + np.abs(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(span > 0, (a * a + b * b) / (2 * span), 0.0)
    distance = float(np.sum(width * np.where(same, span / 2, crossing)))
    if scale > 0 and math.isfinite(scale):
        normalized = distance / scale
    else:  # a constant reference: any movement at all is drift
        normalized = 0.0 if distance == 0 else math.inf
    return TestResult(
        "wasserstein",
        normalized,
        limit,
        normalized >= limit,
        None,
        {"wasserstein": distance, "reference_std": scale},
    )


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else counts


def _psi(r: np.ndarray, c: np.ndarray) -> float:
    p = np.maximum(_shares(r), _PSI_FLOOR)
    q = np.maximum(_shares(c), _PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(r: np.ndarray, c: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2 (0: identical, 1: disjoint), between two count vectors."""
    p, q = _shares(r), _shares(c)
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def _chisquare(r: np.ndarray, c: np.ndarray, alpha: float) -> TestResult:
    """Chi-square test of homogeneity on the 2xk table of category counts."""
    from scipy.special import chdtrc

    pooled = r + c
    rare = pooled < _MIN_EXPECTED
    if rare.any():  # expected counts below ~5 break the chi-square approximation
        r = np.append(r[~rare], r[rare].sum())
        c = np.append(c[~rare], c[rare].sum())
        pooled = r + c
    keep = pooled > 0
    r, c, pooled = r[keep], c[keep], pooled[keep]
    if len(pooled) < 2:
        return TestResult("chisquare", 1.0, alpha, False, 1.0, {"chi2": 0.0, "dof": 0})
    total = pooled.sum()
    expected_r = pooled * r.sum() / total
    expected_c = pooled * c.sum() / total
    stat = float(np.sum((r - expected_r) ** 2 / expected_r + (c - expected_c) ** 2 / expected_c))
    dof = len(pooled) - 1
    p = float(chdtrc(dof, stat))
    return TestResult("chisquare", p, alpha, p < alpha, p, {"chi2": stat, "dof": dof})


def describe_shift(reference: ColumnProfile, current: ColumnProfile) -> dict[str, Any]:
    """Numbers people read next to the verdict: mean shift in SDs, or new and vanished values."""
    if isinstance(reference, NumericColumn):
        assert isinstance(current, NumericColumn)
        std = reference.std
        shift = (current.mean - reference.mean) / std if std > 0 else math.nan
        return {
            "reference_mean": reference.mean,
            "current_mean": current.mean,
            "mean_shift_sd": shift if math.isfinite(shift) else None,
        }
    assert isinstance(current, CategoricalColumn)
    details: dict[str, Any] = {}
    if reference.other == 0:  # the reference's categories are complete: "new" is certain
        new = {v: n for v, n in current.categories.items() if v not in reference.categories}
        if new:
            details["new_categories"] = dict(list(new.items())[:20])
            details["new_share"] = sum(new.values()) / max(current.count, 1)
    if current.other == 0 and reference.count:
        # Absent now although at least 5 were expected: not a sampling accident.
        vanished = [
            v
            for v, n in reference.categories.items()
            if v not in current.categories and n / reference.count * current.count >= 5
        ]
        if vanished:
            details["vanished_categories"] = vanished[:20]
    return details


def plot_data(reference: ColumnProfile, current: ColumnProfile) -> dict[str, Any]:
    """What the HTML report draws: both distributions on common bins, as shares."""
    if isinstance(reference, NumericColumn):
        assert isinstance(current, NumericColumn)
        r, c, points = _aligned_numeric(reference, current)
        if len(reference.edges) <= 31 and np.all(reference.counts[1:-1] > 0):
            # Few distinct values (a class, a count): one bar per value reads best.
            labels = ["below"] + [f"{v:.6g}" for v in reference.edges[:-1]] + ["above"]
            keep = (r + c) > 0
            return {
                "kind": CATEGORICAL,
                "categories": [label for label, k in zip(labels, keep, strict=True) if k],
                "reference": _shares(r)[keep].tolist(),
                "current": _shares(c)[keep].tolist(),
            }
        rg, cg, bounds = _grouped_with_bounds(r, c, points, 30)
        width = np.diff(bounds)
        with np.errstate(divide="ignore", invalid="ignore"):
            rd = np.where(width > 0, _shares(rg) / width, 0.0)
            cd = np.where(width > 0, _shares(cg) / width, 0.0)
        return {
            "kind": NUMERIC,
            "edges": bounds.tolist(),
            "reference": rd.tolist(),
            "current": cd.tolist(),
        }
    assert isinstance(current, CategoricalColumn)
    names, r, c = aligned_categories(reference, current)
    order = np.argsort(-(_shares(r) + _shares(c)), kind="stable")[:30]
    return {
        "kind": CATEGORICAL,
        "categories": [names[i] for i in order],
        "reference": _shares(r)[order].tolist(),
        "current": _shares(c)[order].tolist(),
    }


def _grouped_with_bounds(
    r: np.ndarray, c: np.ndarray, points: np.ndarray, groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`_grouped` but equal-width over the data's range, with the group boundaries."""
    # The central 99.8% of both: a few outliers must not squeeze the picture into one bar.
    cum_r = np.concatenate([[0.0], np.cumsum(r)])
    cum_c = np.concatenate([[0.0], np.cumsum(c)])
    ends = [0.001, 0.999]
    lo_r, hi_r = np.interp(np.multiply(ends, cum_r[-1]), cum_r, points)
    lo_c, hi_c = np.interp(np.multiply(ends, cum_c[-1]), cum_c, points)
    lo, hi = float(min(lo_r, lo_c)), float(max(hi_r, hi_c))
    if not hi > lo:
        return np.array([r.sum()]), np.array([c.sum()]), np.array([lo, lo + 1.0])
    bounds = np.linspace(lo, hi, groups + 1)
    rg = np.diff(np.interp(bounds, points, cum_r))
    cg = np.diff(np.interp(bounds, points, cum_c))
    return rg, cg, bounds
