"""Profiles: per-column, mergeable summaries of a table.

A numeric column keeps exact counts (rows, missing, infinite), min, max,
mean and the sum of squared deviations (merged with Chan's formula), and a
histogram on fixed bin edges: about :data:`BINS` bins of equal mass in the
data the edges came from (the outermost ones split further, so long tails
are resolved), plus one bin below the first edge and one above the last.
The last edge sits just above the maximum, so a value lands *below* only if
it is smaller than the profiled minimum and *above* only if it is larger
than the maximum.

A categorical column (text, booleans, dictionaries) keeps exact counts of
its values up to :data:`MAX_CATEGORIES` distinct ones (beyond that the most
frequent are kept and the rest counted as *other*), and a k-minimum-values
sketch of hashed values that estimates its cardinality.

Profiles on the same edges merge exactly (chunks, partitions, windows);
profiles on different edges merge by re-binning, linearly within bins. How
profiles are built is in :mod:`keel.data.profiling.build`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keel.data.profiling.sketches import KMV_SIZE, kmv_merge
from keel.errors import InvalidInput

__all__ = [
    "BINS",
    "CATEGORICAL",
    "FORMAT",
    "MAX_CATEGORIES",
    "NUMERIC",
    "CategoricalColumn",
    "ColumnProfile",
    "NumericColumn",
    "Profile",
    "rebin",
]

FORMAT = "keel.profile/v1"
NUMERIC = "numeric"
CATEGORICAL = "categorical"
#: Equal-mass bins per numeric column (one value in 200: fine enough for KS and Wasserstein).
BINS = 200
#: Distinct values a categorical column keeps exact counts of.
MAX_CATEGORIES = 1_000


# -- columns ---------------------------------------------------------------------------------


@dataclass
class NumericColumn:
    """Summary of a numeric column.

    Attributes:
        count: finite values; ``missing`` nulls and NaN; ``infinite`` ±inf (not in the stats).
        edges: increasing bin edges; ``counts`` has one more bin below and one above them.
    """

    name: str
    dtype: str
    count: int
    missing: int
    infinite: int
    min: float
    max: float
    mean: float
    m2: float
    edges: np.ndarray
    counts: np.ndarray
    kind: str = field(default=NUMERIC, init=False)

    @property
    def rows(self) -> int:
        return self.count + self.missing + self.infinite

    @property
    def std(self) -> float:
        """Population standard deviation of the finite values (NaN when there are none)."""
        return math.sqrt(self.m2 / self.count) if self.count else math.nan

    def points(self) -> np.ndarray:
        """Bin boundaries with the outer bins closed at the observed extremes."""
        lo = min(self.min, float(self.edges[0])) if self.count else float(self.edges[0])
        hi = max(self.max, float(self.edges[-1])) if self.count else float(self.edges[-1])
        return np.concatenate([[lo], self.edges, [hi]])

    def quantile(self, q: float | Sequence[float]) -> np.ndarray:
        """Quantiles read off the histogram, linear within bins."""
        total = self.counts.sum()
        if total == 0:
            return np.full(np.shape(q), math.nan)
        cdf = np.concatenate([[0.0], np.cumsum(self.counts) / total])
        return np.interp(q, cdf, self.points())

    def summary(self) -> dict[str, Any]:
        median = float(self.quantile(0.5)) if self.count else None
        return {
            "kind": self.kind,
            "dtype": self.dtype,
            "rows": self.rows,
            "missing": self.missing,
            "min": _finite_or_none(self.min),
            "max": _finite_or_none(self.max),
            "mean": _finite_or_none(self.mean),
            "std": _finite_or_none(self.std),
            "median": median,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "count": self.count,
            "infinite": self.infinite,
            "m2": self.m2,
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_dict(cls, name: str, doc: Mapping[str, Any]) -> NumericColumn:
        count = int(doc["count"])
        return cls(
            name=name,
            dtype=str(doc.get("dtype", "double")),
            count=count,
            missing=int(doc["missing"]),
            infinite=int(doc.get("infinite", 0)),
            min=_float(doc.get("min")),
            max=_float(doc.get("max")),
            mean=_float(doc.get("mean")),
            m2=float(doc.get("m2") or 0.0),
            edges=np.asarray(doc["edges"], dtype=np.float64),
            counts=np.asarray(doc["counts"], dtype=np.int64),
        )


@dataclass
class CategoricalColumn:
    """Summary of a categorical column.

    Attributes:
        categories: value → count, most frequent first (at most :data:`MAX_CATEGORIES`).
        other: values counted but not kept in ``categories``.
        sketch: the smallest 64-bit hashes of distinct values (k-minimum values).
    """

    name: str
    dtype: str
    count: int
    missing: int
    categories: dict[str, int]
    other: int
    sketch: np.ndarray
    kind: str = field(default=CATEGORICAL, init=False)

    @property
    def rows(self) -> int:
        return self.count + self.missing

    @property
    def distinct(self) -> int:
        """Distinct values: exact while few, else the k-minimum-values estimate."""
        if self.other == 0 or len(self.sketch) < KMV_SIZE:
            return max(len(self.categories), len(self.sketch))
        kth = float(self.sketch[-1]) / 2.0**64
        return max(len(self.categories), round((KMV_SIZE - 1) / kth))

    def summary(self) -> dict[str, Any]:
        top = list(self.categories.items())[:10]
        return {
            "kind": self.kind,
            "dtype": self.dtype,
            "rows": self.rows,
            "missing": self.missing,
            "distinct": self.distinct,
            "top": [{"value": v, "count": c} for v, c in top],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "count": self.count,
            "categories": [[v, c] for v, c in self.categories.items()],
            "other": self.other,
            "sketch": [f"{int(h):016x}" for h in self.sketch],
        }

    @classmethod
    def from_dict(cls, name: str, doc: Mapping[str, Any]) -> CategoricalColumn:
        return cls(
            name=name,
            dtype=str(doc.get("dtype", "string")),
            count=int(doc["count"]),
            missing=int(doc["missing"]),
            categories={str(v): int(c) for v, c in doc["categories"]},
            other=int(doc.get("other", 0)),
            sketch=np.array([int(h, 16) for h in doc.get("sketch", [])], dtype=np.uint64),
        )


ColumnProfile = NumericColumn | CategoricalColumn


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# -- the profile ------------------------------------------------------------------------------


@dataclass
class Profile:
    """Per-column summaries of a table.

    Attributes:
        rows: rows profiled.
        columns: column name → :class:`NumericColumn` or :class:`CategoricalColumn`.
        skipped: columns left out, with the reason (a type no test reads).
    """

    rows: int
    columns: dict[str, ColumnProfile]
    skipped: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ColumnProfile:
        try:
            return self.columns[name]
        except KeyError:
            raise InvalidInput(
                f"the profile has no column {name!r}; it has {', '.join(self.columns) or '(none)'}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def select(self, names: Iterable[str]) -> Profile:
        """The profile of some columns only (unknown names raise ``InvalidInput``)."""
        return Profile(self.rows, {n: self[n] for n in names}, dict(self.skipped))

    def rename(self, mapping: Callable[[str], str]) -> Profile:
        """The same summaries under new column names."""
        columns: dict[str, ColumnProfile] = {}
        for name, col in self.columns.items():
            new = mapping(name)
            columns[new] = _renamed(col, new)
        return Profile(self.rows, columns, {mapping(k): v for k, v in self.skipped.items()})

    def merge(self, other: Profile) -> Profile:
        """The profile of both tables' rows together.

        Exact for statistics and category counts, and for histograms on the
        same edges; histograms on different edges are re-binned onto the
        edges of the larger profile, linearly within bins.

        Raises:
            InvalidInput: a column is numeric in one profile and categorical in the other.
        """
        if not isinstance(other, Profile):
            raise InvalidInput(
                f"can only merge a Profile with a Profile, got {type(other).__name__}"
            )
        columns: dict[str, ColumnProfile] = {}
        for name in dict.fromkeys([*self.columns, *other.columns]):
            mine, theirs = self.columns.get(name), other.columns.get(name)
            if mine is None or theirs is None:
                present = mine if mine is not None else theirs
                absent_rows = self.rows if mine is None else other.rows
                assert present is not None
                columns[name] = _with_missing(present, absent_rows)
            elif mine.kind != theirs.kind:
                raise InvalidInput(
                    f"column {name!r} is {mine.kind} in one profile and {theirs.kind} in the "
                    "other; profiles of different schemas do not merge"
                )
            elif isinstance(mine, NumericColumn):
                assert isinstance(theirs, NumericColumn)
                columns[name] = _merge_numeric(mine, theirs)
            else:
                assert isinstance(mine, CategoricalColumn) and isinstance(theirs, CategoricalColumn)
                columns[name] = _merge_categorical(mine, theirs)
        skipped = {**other.skipped, **self.skipped}
        return Profile(self.rows + other.rows, columns, skipped)

    def summary(self) -> dict[str, Any]:
        """Rows and a short summary per column, for people."""
        return {
            "rows": self.rows,
            "columns": {n: c.summary() for n, c in self.columns.items()},
            "skipped": dict(self.skipped),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, as JSON-able values; :meth:`from_dict` reads it back."""
        return {
            "format": FORMAT,
            "rows": self.rows,
            "columns": {n: c.to_dict() for n, c in self.columns.items()},
            "skipped": dict(self.skipped),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Profile:
        """Read what :meth:`to_dict` wrote.

        Raises:
            InvalidInput: not a Keel profile, or one of a newer format.
        """
        if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
            found = doc.get("format") if isinstance(doc, Mapping) else type(doc).__name__
            raise InvalidInput(f"expected a Keel profile ({FORMAT}), got {found!r}")
        columns: dict[str, ColumnProfile] = {}
        for name, col in doc["columns"].items():
            if col["kind"] == NUMERIC:
                columns[name] = NumericColumn.from_dict(name, col)
            elif col["kind"] == CATEGORICAL:
                columns[name] = CategoricalColumn.from_dict(name, col)
            else:
                raise InvalidInput(f"profile column {name!r} has unknown kind {col['kind']!r}")
        return cls(int(doc["rows"]), columns, dict(doc.get("skipped") or {}))

    def __repr__(self) -> str:
        kinds = [f"{n}:{c.kind[:3]}" for n, c in list(self.columns.items())[:6]]
        more = ", …" if len(self.columns) > 6 else ""
        return f"<Profile rows={self.rows} columns=[{', '.join(kinds)}{more}]>"


def _renamed(col: ColumnProfile, name: str) -> ColumnProfile:
    from dataclasses import replace

    return replace(col, name=name)


def _with_missing(col: ColumnProfile, rows: int) -> ColumnProfile:
    from dataclasses import replace

    return replace(col, missing=col.missing + rows)


def _merge_numeric(a: NumericColumn, b: NumericColumn) -> NumericColumn:
    count = a.count + b.count
    if a.count == 0 or b.count == 0:
        mean, m2 = (a.mean, a.m2) if b.count == 0 else (b.mean, b.m2)
    else:
        delta = b.mean - a.mean
        mean = a.mean + delta * b.count / count
        m2 = a.m2 + b.m2 + delta * delta * a.count * b.count / count
    lo = float(np.nanmin([a.min, b.min])) if count else math.nan
    hi = float(np.nanmax([a.max, b.max])) if count else math.nan
    if np.array_equal(a.edges, b.edges):
        edges, counts = a.edges, a.counts + b.counts
    else:
        base = a if a.count >= b.count else b
        edges = base.edges.copy()
        if count:
            edges[0] = min(edges[0], lo)
            edges[-1] = max(edges[-1], np.nextafter(hi, np.inf))
        counts = rebin(a, edges) + rebin(b, edges)
    return NumericColumn(
        a.name,
        a.dtype,
        count,
        a.missing + b.missing,
        a.infinite + b.infinite,
        lo,
        hi,
        mean,
        m2,
        edges,
        counts,
    )


def rebin(col: NumericColumn, edges: np.ndarray) -> np.ndarray:
    """``col``'s histogram moved onto ``edges`` (linear within its bins), as whole counts."""
    if np.array_equal(col.edges, edges):
        return col.counts.copy()
    total = int(col.counts.sum())
    if total == 0:
        return np.zeros(len(edges) + 1, dtype=np.int64)
    cdf = np.concatenate([[0.0], np.cumsum(col.counts, dtype=np.float64)])
    at = np.interp(edges, col.points(), cdf)
    cumulative = np.concatenate([[0.0], at, [float(total)]])
    # Round the cumulative counts, not each bin: whole counts that still add up to the total.
    return np.diff(np.round(cumulative)).astype(np.int64)


def _merge_categorical(a: CategoricalColumn, b: CategoricalColumn) -> CategoricalColumn:
    merged = dict(a.categories)
    for value, n in b.categories.items():
        merged[value] = merged.get(value, 0) + n
    categories, dropped = _top(merged, MAX_CATEGORIES)
    return CategoricalColumn(
        a.name,
        a.dtype,
        a.count + b.count,
        a.missing + b.missing,
        categories,
        a.other + b.other + dropped,
        kmv_merge(a.sketch, b.sketch),
    )


def _top(counts: Mapping[str, int], keep: int) -> tuple[dict[str, int], int]:
    """The ``keep`` most frequent values (ties by value, for determinism) and the rest's total."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(ordered[:keep]), sum(n for _, n in ordered[keep:])
