"""Building profiles chunk by chunk, in bounded memory.

Profiling data with no bin edges yet takes two passes: the first computes
the exact statistics, the category counts and a uniform sample of rows
(bottom-k sampling on random priorities, which merges exactly across chunks
and partitions); the edges are the sample's quantiles (or its distinct
values, when there are few); the second pass counts every value into them.
Parquet is read one column of one row group at a time (see
:mod:`keel.data.profiling.sources`). Building with ``bins_from=`` an existing
profile reuses its edges and takes one pass — that is how current data is
compared with a reference: both histograms share their bins exactly.
:class:`Profiler` does the one-pass case over a stream of batches (a
monitor's window).

Columns are processed on a small thread pool: NumPy and Arrow release the
GIL in the kernels involved.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.data.profiling.profiles import (
    BINS,
    CATEGORICAL,
    MAX_CATEGORIES,
    NUMERIC,
    CategoricalColumn,
    ColumnProfile,
    NumericColumn,
    Profile,
)
from keel.data.profiling.sketches import Binner, ValueCounts, hash_strings, int64_values, kmv_merge
from keel.data.profiling.sources import ColumnGroup, Source
from keel.errors import InvalidInput

__all__ = [
    "SAMPLE_ROWS",
    "PartialProfile",
    "Profiler",
    "ProgressCallback",
    "column_floats",
    "column_kind",
    "profile",
]

#: Rows in the uniform sample the bin edges come from.
SAMPLE_ROWS = 20_000

#: ``progress(stage, rows_done, rows_total_or_None)``, called after each batch.
ProgressCallback = Callable[[str, int, int | None], None]


def column_kind(dtype: pa.DataType) -> str | None:
    """``numeric`` for integers, floats and decimals; ``categorical`` for text, booleans and
    dictionaries; ``None`` for types no drift test reads (times, lists, binary …)."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if (
        pa.types.is_boolean(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
    ):
        return CATEGORICAL
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return NUMERIC
    return None


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
        self.add_group(_batch_group(batch))

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
            self._add_numeric(name, values)
            return values[chosen] if name in self.unbinned else None

        def categorical(name: str) -> None:
            column = group.read(name)
            if column is None:
                self.cat_stats[name][1] += n
            else:
                self._add_categorical(name, column)

        # Each task touches only its own column's state.
        picked = dict(zip(self.numeric, _map(numeric, self.numeric, n), strict=True))
        _map(categorical, self.categorical, n)
        if self.unbinned:
            values = np.column_stack([picked[c] for c in self.unbinned])
            self._keep(
                np.concatenate([self.sample_priority, priority[chosen]]),
                np.concatenate([self.sample_values, values]),
            )

    def _add_numeric(self, name: str, values: np.ndarray) -> None:
        stats = self.stats[name]
        finite = np.isfinite(values)
        if finite.all():
            good = values
        else:
            good = values[finite]
            nan = int(np.isnan(values).sum())
            stats[1] += nan
            stats[2] += len(values) - len(good) - nan
        if len(good):
            mean = float(good.mean())
            centered = good - mean
            stats[3] = min(stats[3], float(good.min()))
            stats[4] = max(stats[4], float(good.max()))
            _chan(stats, len(good), mean, float(np.dot(centered, centered)))
            binner = self.binners.get(name)
            if binner is not None:
                self.hists[name] += binner.counts(good)

    def _add_categorical(self, name: str, column: pa.Array) -> None:
        text = _strings(column)
        stats = self.cat_stats[name]
        stats[1] += text.null_count
        stats[0] += len(text) - text.null_count
        if len(text) == text.null_count:
            return
        counted = pc.value_counts(pc.drop_null(text))
        values = counted.field("values")
        self.cat_counts[name].add(values, int64_values(counted.field("counts")))
        self.sketches[name] = kmv_merge(self.sketches[name], hash_strings(values))

    def _keep(self, priority: np.ndarray, values: np.ndarray) -> None:
        if len(priority) > self.sample_rows:
            idx = np.argpartition(priority, self.sample_rows - 1)[: self.sample_rows]
            priority, values = priority[idx], values[idx]
        self.sample_priority, self.sample_values = priority, values

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
        edges: dict[str, np.ndarray] = {}
        # Equal mass, plus edges at 1/2, 1/4 … 1/128 of a bin's mass from either end: the
        # outermost bins of a long tail are wide, and Wasserstein integrates over width.
        tails = (1.0 / bins) * 0.5 ** np.arange(1, 8)
        probs = np.unique(np.concatenate([np.linspace(0.0, 1.0, bins + 1)[1:-1], tails, 1 - tails]))
        for j, name in enumerate(self.unbinned):
            lo, hi = self.stats[name][3], self.stats[name][4]
            if not math.isfinite(lo):  # no finite value at all
                edges[name] = np.array([0.0, np.nextafter(0.0, 1.0)])
                continue
            column = self.sample_values[:, j]
            column = column[np.isfinite(column)]
            distinct = np.unique(column)
            # Few values (classes, counts): one bin per value; else equal-mass quantiles.
            inner = distinct if len(distinct) <= bins else np.quantile(column, probs)
            # An edge at the maximum itself gives a point mass there its own bin.
            inner = inner[(inner > lo) & (inner <= hi)]
            edges[name] = np.unique(np.concatenate([[lo], inner, [np.nextafter(hi, np.inf)]]))
        return edges

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


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_PARALLEL_ROWS = 16_384  # below this, handing columns to threads costs more than it saves


def _map(func: Callable[[str], Any], names: Sequence[str], rows: int) -> list[Any]:
    """``func`` over columns, on a small shared thread pool when the chunk is big enough.

    NumPy and Arrow release the GIL in the kernels a column needs (casts,
    reductions, binning, value counts), so two threads do about twice the work.
    """
    global _POOL
    if len(names) < 2 or rows < _PARALLEL_ROWS:
        return [func(name) for name in names]
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(
                    max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="keel-profile"
                )
    return list(_POOL.map(func, names))


def _chan(stats: list[Any], n: int, mean: float, m2: float) -> None:
    """Fold a group's count, mean and M2 into ``stats`` (Chan et al.'s parallel update)."""
    total = stats[0] + n
    delta = mean - stats[5]
    stats[5] += delta * n / total
    stats[6] += m2 + delta * delta * stats[0] * n / total
    stats[0] = total


def column_floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The column as float64 values, nulls as NaN (read-only, zero-copy when it can be).

    Read off the Arrow buffer rather than with ``to_numpy``, which makes pyarrow
    import pandas: 0.4 s and 40 MB that a standalone comparison does not need.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.type != pa.float64():
        try:
            column = pc.cast(column, pa.float64(), safe=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InvalidInput(
                f"cannot read a column of type {column.type} as numbers: {exc}"
            ) from None
    if column.null_count:
        column = pc.fill_null(column, math.nan)
    return np.frombuffer(
        column.buffers()[1], dtype=np.float64, count=len(column), offset=column.offset * 8
    )


def _strings(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column


class Profiler:
    """Profile a stream of record batches in one pass (what a monitor window is).

    Numeric columns the ``bins_from`` profile has are counted into its edges
    exactly; others get edges and counts from the row sample (exact while the
    stream has at most :data:`SAMPLE_ROWS` rows, estimated beyond).

    Args:
        schema: the batches' schema; columns of types no test reads are skipped.
        columns: the columns to profile (default: all in ``schema``).
        bins_from: a profile whose edges and column kinds to reuse.
    """

    def __init__(
        self,
        schema: pa.Schema,
        *,
        columns: Sequence[str] | None = None,
        bins_from: Profile | None = None,
        bins: int = BINS,
        seed: int = 0,
    ) -> None:
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns if c in schema.names])
        kinds, dtypes, self.skipped = _kinds(schema, None, bins_from)
        edges = {}
        if bins_from is not None:
            edges = {
                n: c.edges
                for n, c in bins_from.columns.items()
                if isinstance(c, NumericColumn) and kinds.get(n) == NUMERIC
            }
        self._builder = PartialProfile(kinds, dtypes, edges, seed)
        self._columns = list(kinds)
        self._bins = bins

    def add(self, batch: pa.RecordBatch) -> None:
        """Count one batch's rows."""
        present = [c for c in self._columns if c in batch.schema.names]
        self._builder.add(batch.select(present))

    @property
    def rows(self) -> int:
        return self._builder.rows

    def result(self) -> Profile:
        builder = self._builder
        edges = dict(builder.edges)
        hists = dict(builder.hists)
        if builder.unbinned:
            new_edges = builder.sample_edges(self._bins)
            edges.update(new_edges)
            hists.update(builder.sample_histograms(new_edges))
        result = builder.finish(edges, hists)
        result.skipped = dict(self.skipped)
        return result


# -- the entry point ---------------------------------------------------------------------------


def profile(
    data: Any,
    *,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    bins_from: Profile | None = None,
    bins: int = BINS,
    executor: str = "local",
    batch_rows: int = 65_536,
    progress: ProgressCallback | None = None,
    seed: int = 0,
) -> Profile:
    """Profile a table chunk by chunk, in bounded memory.

    Args:
        data: a pandas DataFrame, a pyarrow Table, a dict of columns, or the path
            of a Parquet file, a folder of Parquet files or a CSV file. A
            :class:`Profile` is returned as it is (its ``columns`` selected).
        columns: the columns to profile (default: all).
        categorical: columns to treat as categories even though they hold numbers.
        bins_from: a profile whose numeric bin edges and column kinds to reuse
            (one pass, and histograms that compare bin for bin).
        bins: equal-mass bins per numeric column when the edges are new.
        executor: ``local``, or ``ray`` to split a Parquet input by row groups
            across Ray tasks (``pip install 'keel[ray]'``).
        batch_rows: rows read per chunk; memory grows with it, not with the table.
        progress: called after each chunk as ``progress(stage, rows_done, total)``.
        seed: seeds the row sample the edges come from (profiles are reproducible).

    Raises:
        InvalidInput: an unsupported input, an unknown column, bad arguments.
        NotFound: a path that does not exist.
    """
    from keel.data.profiling.sources import open_source

    if isinstance(data, Profile):
        return data if columns is None else data.select(columns)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise InvalidInput(f"bins must be a whole number >= 2, got {bins!r}")
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidInput(f"batch_rows must be a whole number >= 1, got {batch_rows!r}")
    if executor not in ("local", "ray"):
        raise InvalidInput(f"executor must be 'local' or 'ray', got {executor!r}")
    source = open_source(data, columns=columns)
    kinds, dtypes, skipped = _kinds(source.schema, categorical, bins_from)
    edges = {}
    if bins_from is not None:
        edges = {
            n: c.edges
            for n, c in bins_from.columns.items()
            if isinstance(c, NumericColumn) and kinds.get(n) == NUMERIC
        }
    if executor == "ray":
        from keel.data.profiling.parallel import profile_with_ray

        result = profile_with_ray(source, kinds, dtypes, edges, bins, batch_rows, seed)
    else:
        result = _profile_local(source, kinds, dtypes, edges, bins, batch_rows, progress, seed)
    result.skipped = skipped
    return result


def _kinds(
    schema: pa.Schema, categorical: Sequence[str] | None, bins_from: Profile | None
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    forced = set([categorical] if isinstance(categorical, str) else categorical or ())
    unknown = forced - set(schema.names)
    if unknown:
        raise InvalidInput(
            f"categorical= names column(s) {', '.join(sorted(map(repr, unknown)))} that the "
            f"data does not have; its columns are {', '.join(schema.names)}"
        )
    kinds: dict[str, str] = {}
    dtypes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for f in schema:
        kind = column_kind(f.type)
        if f.name in forced and kind is not None:
            kind = CATEGORICAL
        elif bins_from is not None and f.name in bins_from.columns and kind is not None:
            # Compare like with like: the reference decides (ints read as categories stay so),
            # but text cannot be read as the numbers the reference had.
            wanted = bins_from.columns[f.name].kind
            if wanted == NUMERIC and kind == CATEGORICAL:
                skipped[f.name] = f"numeric in the reference, {f.type} here"
                continue
            kind = wanted
        if kind is None:
            skipped[f.name] = f"type {f.type} is neither numeric nor categorical"
            continue
        kinds[f.name] = kind
        dtypes[f.name] = str(f.type)
    return kinds, dtypes, skipped


def _groups(source: Source, batch_rows: int) -> Iterator[ColumnGroup]:
    """Parquet a column at a time; anything else batch by batch."""
    columnwise = source.column_groups()
    if columnwise is not None:
        yield from columnwise
        return
    for batch in source.batches(batch_rows):
        yield _batch_group(batch)


def _batch_group(batch: pa.RecordBatch) -> ColumnGroup:
    names = set(batch.schema.names)

    def read(name: str) -> pa.ChunkedArray | None:
        return batch.column(name) if name in names else None

    return ColumnGroup(batch.num_rows, read)


def _profile_local(
    source: Source,
    kinds: dict[str, str],
    dtypes: dict[str, str],
    edges: dict[str, np.ndarray],
    bins: int,
    batch_rows: int,
    progress: ProgressCallback | None,
    seed: int,
) -> Profile:
    first = PartialProfile(kinds, dtypes, edges, seed)
    done = 0
    stage = f"profiling {source.name}"
    for group in _groups(source, batch_rows):
        first.add_group(group)
        done += group.rows
        if progress is not None:
            progress(stage, done, source.rows)
    hists = dict(first.hists)
    if first.unbinned:
        new_edges = first.sample_edges(bins)
        edges = {**edges, **new_edges}
        if first.sample_is_complete:
            hists.update(first.sample_histograms(new_edges))
        else:
            again = _groups(source, batch_rows)
            hists.update(_second_pass(source.name, again, new_edges, progress, first.rows))
    return first.finish(edges, hists)


def _second_pass(
    name: str,
    groups: Iterable[ColumnGroup],
    edges: Mapping[str, np.ndarray],
    progress: ProgressCallback | None,
    total: int,
) -> dict[str, np.ndarray]:
    """Count every value of the newly binned columns into their edges."""
    hists = {c: np.zeros(len(e) + 1, dtype=np.int64) for c, e in edges.items()}
    binners = {c: Binner(e) for c, e in edges.items()}
    done = 0
    stage = f"binning {name}"
    for group in groups:

        def count(column: str, group: ColumnGroup = group) -> None:
            values = group.read(column)
            if values is not None:
                floats = column_floats(values)
                hists[column] += binners[column].counts(floats[np.isfinite(floats)])

        _map(count, list(binners), group.rows)
        done += group.rows
        if progress is not None:
            progress(stage, done, total)
    return hists
