"""The state of one pass over some rows: statistics, histograms, category counts, a row sample.

:class:`PartialProfile` is what every way of reading a table fills in: chunk
by chunk (:func:`keel.data.profiling.profile` over a CSV, a DataFrame, a large
Parquet file), column by column (:mod:`keel.data.profiling.columnwise`), or
partition by partition on Ray (:mod:`keel.data.profiling.parallel`), whose
partial results merge exactly. The exact statistics are merged with Chan's
formula; the uniform row sample that new bin edges come from is bottom-k
sampling on random priorities, which merges exactly across chunks and
partitions.

Columns are processed on a small thread pool (:func:`map_columns`): NumPy and
Arrow release the GIL in the kernels involved.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from keel.data.profiling.arrays import category_counts, column_floats
from keel.data.profiling.blocks import all_finite, sum_of_squares
from keel.data.profiling.profiles import (
    CATEGORICAL,
    MAX_CATEGORIES,
    NUMERIC,
    CategoricalColumn,
    ColumnProfile,
    NumericColumn,
    Profile,
)
from keel.data.profiling.sketches import Binner, ValueCounts, kmv_merge
from keel.data.profiling.sources import ColumnGroup

__all__ = [
    "SAMPLE_ROWS",
    "PartialProfile",
    "batch_group",
    "edges_from_sample",
    "map_columns",
]

#: Rows in the uniform sample the bin edges come from.
SAMPLE_ROWS = 20_000


class PartialProfile:
    """The state of one pass over some rows: mergeable across chunks and partitions."""

    def __init__(
        self,
        kinds: Mapping[str, str],
        dtypes: Mapping[str, str],
        edges: Mapping[str, np.ndarray],
        seed: int,
        sample_rows: int = SAMPLE_ROWS,
    ) -> None:
        self.kinds = dict(kinds)
        self.dtypes = dict(dtypes)
        self.edges = {k: v for k, v in edges.items() if self.kinds.get(k) == NUMERIC}
        self.sample_rows = sample_rows
        self.rows = 0
        self._rng = np.random.default_rng(seed)
        self.numeric = [c for c, k in self.kinds.items() if k == NUMERIC]
        self.unbinned = [c for c in self.numeric if c not in self.edges]
        # count, missing, infinite, min, max, mean, M2
        self.stats: dict[str, list[Any]] = {
            c: [0, 0, 0, math.inf, -math.inf, 0.0, 0.0] for c in self.numeric
        }
        self.hists = {c: np.zeros(len(e) + 1, dtype=np.int64) for c, e in self.edges.items()}
        self.binners = {c: Binner(e) for c, e in self.edges.items()}
        self.sample_priority = np.empty(0, dtype=np.float64)
        self.sample_values = np.empty((0, len(self.unbinned)), dtype=np.float64)
        self.categorical = [c for c, k in self.kinds.items() if k == CATEGORICAL]
        self.cat_counts = {c: ValueCounts(MAX_CATEGORIES) for c in self.categorical}
        self.cat_stats = {c: [0, 0] for c in self.categorical}  # count, missing
        self.sketches = {c: np.empty(0, dtype=np.uint64) for c in self.categorical}

    # -- one batch ----------------------------------------------------------------------

    def add(self, batch: pa.RecordBatch) -> None:
        """Count a batch's rows."""
        self.add_group(batch_group(batch))

    def add_group(self, group: ColumnGroup) -> None:
        """Count some rows, reading their columns one at a time (absent columns: missing)."""
        n = group.rows
        if n == 0:
            return
        self.rows += n
        # Bottom-k sampling: a row can enter the sample only if its random priority beats
        # the sample's worst, and only the group's own k smallest can.
        priority = self._rng.random(n) if self.unbinned else np.empty(0)
        if len(self.sample_priority) >= self.sample_rows:
            chosen = np.flatnonzero(priority < self.sample_priority.max())
        else:
            chosen = np.arange(len(priority))
        if len(chosen) > self.sample_rows:
            best = np.argpartition(priority[chosen], self.sample_rows - 1)[: self.sample_rows]
            chosen = chosen[best]

        def numeric(name: str) -> np.ndarray | None:
            column = group.read(name)
            values = np.full(n, np.nan) if column is None else column_floats(column)
            self.add_numeric(name, values)
            return values[chosen] if name in self.unbinned else None

        def categorical(name: str) -> None:
            self.add_categorical(name, group.read(name), n)

        # Each task touches only its own column's state.
        picked = dict(zip(self.numeric, map_columns(numeric, self.numeric, n), strict=True))
        map_columns(categorical, self.categorical, n)
        if self.unbinned:
            values = np.column_stack([picked[c] for c in self.unbinned])
            self._keep(
                np.concatenate([self.sample_priority, priority[chosen]]),
                np.concatenate([self.sample_values, values]),
            )

    def add_numeric(self, name: str, values: np.ndarray) -> np.ndarray:
        """Fold a numeric column's values into its statistics (and histogram, when its edges
        are known); the finite values, which are what a histogram counts."""
        stats = self.stats[name]
        if all_finite(values):
            good = values
        else:
            good = values[np.isfinite(values)]
            nan = int(np.isnan(values).sum())
            stats[1] += nan
            stats[2] += len(values) - len(good) - nan
        if len(good):
            mean = float(good.mean())
            stats[3] = min(stats[3], float(good.min()))
            stats[4] = max(stats[4], float(good.max()))
            _chan(stats, len(good), mean, sum_of_squares(good, mean))
            binner = self.binners.get(name)
            if binner is not None:
                self.hists[name] += binner.counts(good)
        return good

    def add_categorical(
        self, name: str, column: pa.Array | pa.ChunkedArray | None, rows: int
    ) -> None:
        """Fold ``rows`` values of a categorical column in (``None``: the column is absent,
        so all of them are missing)."""
        stats = self.cat_stats[name]
        if column is None:
            stats[1] += rows
            return
        values, counts, hashes, nulls = category_counts(column)
        stats[1] += nulls
        stats[0] += len(column) - nulls
        if not len(counts):
            return
        self.cat_counts[name].add(values, counts)
        self.sketches[name] = kmv_merge(self.sketches[name], hashes)

    def _keep(self, priority: np.ndarray, values: np.ndarray) -> None:
        if len(priority) > self.sample_rows:
            idx = np.argpartition(priority, self.sample_rows - 1)[: self.sample_rows]
            priority, values = priority[idx], values[idx]
        self.sample_priority, self.sample_values = priority, values

    def sample_plan(self, sizes: Sequence[int]) -> list[np.ndarray]:
        """The rows of each group (of ``sizes`` rows, in order) that the sample will hold.

        The same random priorities :meth:`add_group` draws, drawn up front: a
        reader that sees every group of a column before the next column (see
        :mod:`keel.data.profiling.columnwise`) samples exactly the rows a
        reader going group by group samples.
        """
        if not self.unbinned:
            return [np.empty(0, dtype=np.intp) for _ in sizes]
        k = self.sample_rows
        priority = np.empty(0, dtype=np.float64)
        group = np.empty(0, dtype=np.intp)
        row = np.empty(0, dtype=np.intp)
        for g, n in enumerate(sizes):
            if n == 0:
                continue
            drawn = self._rng.random(n)
            rows = np.flatnonzero(drawn < priority.max()) if len(priority) >= k else np.arange(n)
            priority = np.concatenate([priority, drawn[rows]])
            group = np.concatenate([group, np.full(len(rows), g, dtype=np.intp)])
            row = np.concatenate([row, rows])
            if len(priority) > k:
                best = np.argpartition(priority, k - 1)[:k]
                priority, group, row = priority[best], group[best], row[best]
        return [np.sort(row[group == g]) for g in range(len(sizes))]

    # -- combining and finishing --------------------------------------------------------------

    def merge(self, other: PartialProfile) -> None:
        """Fold in a builder of other rows (same columns and edges), e.g. another partition."""
        self.rows += other.rows
        for name, stats in self.stats.items():
            o = other.stats[name]
            stats[1] += o[1]
            stats[2] += o[2]
            stats[3], stats[4] = min(stats[3], o[3]), max(stats[4], o[4])
            if o[0]:
                _chan(stats, o[0], o[5], o[6])
        for name, hist in self.hists.items():
            hist += other.hists[name]
        for name in self.categorical:
            theirs = other.cat_counts[name]
            self.cat_counts[name].add(theirs.values, theirs.counts)
            self.cat_counts[name].dropped += theirs.dropped
            for i in range(2):
                self.cat_stats[name][i] += other.cat_stats[name][i]
            self.sketches[name] = kmv_merge(self.sketches[name], other.sketches[name])
        self._keep(
            np.concatenate([self.sample_priority, other.sample_priority]),
            np.concatenate([self.sample_values, other.sample_values]),
        )

    @property
    def sample_is_complete(self) -> bool:
        """Whether every row seen is in the sample (so its histogram is exact)."""
        return self.rows <= self.sample_rows

    def sample_edges(self, bins: int) -> dict[str, np.ndarray]:
        """Equal-mass edges from the sample, spanning the exact min and max."""
        return {
            name: edges_from_sample(
                self.sample_values[:, j], self.stats[name][3], self.stats[name][4], bins
            )
            for j, name in enumerate(self.unbinned)
        }

    def sample_histograms(self, edges: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Histograms of the sample on ``edges``: exact when the sample holds every row."""
        hists: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.unbinned):
            column = self.sample_values[:, j]
            column = column[np.isfinite(column)]
            idx = np.searchsorted(edges[name], column, side="right")
            counts = np.bincount(idx, minlength=len(edges[name]) + 1)
            total = self.stats[name][0]
            if len(column) and len(column) != total:  # scale up, keeping whole counts
                scaled = np.cumsum(counts) * (total / len(column))
                counts = np.diff(np.round(np.concatenate([[0.0], scaled])))
            hists[name] = counts.astype(np.int64)
        return hists

    def finish(self, edges: Mapping[str, np.ndarray], hists: Mapping[str, np.ndarray]) -> Profile:
        columns: dict[str, ColumnProfile] = {}
        for name, kind in self.kinds.items():
            if kind == NUMERIC:
                count, missing, infinite, lo, hi, mean, m2 = self.stats[name]
                columns[name] = NumericColumn(
                    name,
                    self.dtypes[name],
                    int(count),
                    int(missing),
                    int(infinite),
                    lo if count else math.nan,
                    hi if count else math.nan,
                    mean if count else math.nan,
                    m2,
                    np.asarray(edges[name], dtype=np.float64),
                    np.asarray(hists[name], dtype=np.int64),
                )
            else:
                count, missing = self.cat_stats[name]
                categories, other = self.cat_counts[name].top()
                columns[name] = CategoricalColumn(
                    name,
                    self.dtypes[name],
                    int(count),
                    int(missing),
                    categories,
                    other,
                    self.sketches[name],
                )
        return Profile(self.rows, columns)


def edges_from_sample(sample: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """A column's bin edges from its sampled values and its exact ``lo`` and ``hi``.

    Equal-mass quantiles of the sample, plus edges at 1/2, 1/4 … 1/128 of a bin's
    mass from either end (the outermost bins of a long tail are wide, and
    Wasserstein integrates over width); with at most ``bins`` distinct values
    (classes, counts), one bin per value. An edge at the maximum itself gives a
    point mass there its own bin.
    """
    if not math.isfinite(lo):  # no finite value at all
        return np.array([0.0, np.nextafter(0.0, 1.0)])
    # Sorted once: the distinct values and the quantiles both read the order statistics
    # (quantiles of sorted values equal those of the unsorted ones exactly).
    ordered = np.sort(sample[np.isfinite(sample)])
    distinct = (
        ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if len(ordered) else ordered
    )
    inner = distinct if len(distinct) <= bins else np.quantile(ordered, _edge_probs(bins))
    inner = inner[(inner > lo) & (inner <= hi)]
    return np.unique(np.concatenate([[lo], inner, [np.nextafter(hi, np.inf)]]))


def _edge_probs(bins: int) -> np.ndarray:
    tails = (1.0 / bins) * 0.5 ** np.arange(1, 8)
    return np.unique(np.concatenate([np.linspace(0.0, 1.0, bins + 1)[1:-1], tails, 1 - tails]))


def batch_group(batch: pa.RecordBatch) -> ColumnGroup:
    """A batch's rows as a :class:`ColumnGroup` (absent columns read as ``None``)."""
    names = set(batch.schema.names)

    def read(name: str) -> pa.ChunkedArray | None:
        return batch.column(name) if name in names else None

    return ColumnGroup(batch.num_rows, read)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_PARALLEL_ROWS = 16_384  # below this, handing columns to threads costs more than it saves


def map_columns(
    func: Callable[[str], Any],
    names: Sequence[str],
    rows: int,
    each: Callable[[int], None] | None = None,
) -> list[Any]:
    """``func`` over columns, on a small shared thread pool when there is enough work.

    NumPy and Arrow release the GIL in the kernels a column needs (casts,
    reductions, binning, value counts), so two threads do about twice the work.
    ``each(i)`` runs in the calling thread once the first ``i`` columns are done.
    """
    results: Iterable[Any]
    if len(names) < 2 or rows < _PARALLEL_ROWS:
        results = (func(name) for name in names)
    else:
        results = _pool().map(func, names)
    out = []
    for result in results:
        out.append(result)
        if each is not None:
            each(len(out))
    return out


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(
                    max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="keel-profile"
                )
    return _POOL


def _chan(stats: list[Any], n: int, mean: float, m2: float) -> None:
    """Fold a group's count, mean and M2 into ``stats`` (Chan et al.'s parallel update)."""
    total = stats[0] + n
    delta = mean - stats[5]
    stats[5] += delta * n / total
    stats[6] += m2 + delta * delta * stats[0] * n / total
    stats[0] = total
