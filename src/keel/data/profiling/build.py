"""Building profiles in bounded memory: :func:`profile` and :class:`Profiler`.

Profiling data with no bin edges yet needs every value twice: once for the
exact statistics, the category counts and a uniform sample of rows (bottom-k
sampling on random priorities, which merges exactly across chunks and
partitions); the edges are the sample's quantiles (or its distinct values,
when there are few); then every value is counted into them. A Parquet input
of up to :data:`~keel.data.profiling.columnwise.HOLD_ROWS` rows is read once,
a whole column at a time (:mod:`keel.data.profiling.columnwise`); anything
else chunk by chunk, in two passes (Parquet one column of one row group at a
time, see :mod:`keel.data.profiling.sources`). Building with ``bins_from=``
an existing profile reuses its edges and takes one pass — that is how
current data is compared with a reference: both histograms share their bins
exactly. :class:`Profiler` does the one-pass case over a stream of batches (a
monitor's window). The state of a pass is a
:class:`~keel.data.profiling.partial.PartialProfile`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from keel.data.profiling.arrays import column_floats
from keel.data.profiling.columnwise import HOLD_ROWS, profile_columns
from keel.data.profiling.partial import SAMPLE_ROWS, PartialProfile, batch_group, map_columns
from keel.data.profiling.profiles import BINS, CATEGORICAL, NUMERIC, NumericColumn, Profile
from keel.data.profiling.sketches import Binner
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
        yield batch_group(batch)


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
    stage = f"profiling {source.name}"
    if (source.rows or 0) <= HOLD_ROWS:
        with source.open_groups() as held:
            if held is not None:  # Parquet: one read, a whole column at a time
                report = None if progress is None else _reporter(progress, stage, source.rows)
                new_edges, new_hists = profile_columns(first, held, bins, report)
                return first.finish({**edges, **new_edges}, {**first.hists, **new_hists})
    done = 0
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


def _reporter(progress: ProgressCallback, stage: str, total: int | None) -> Callable[[int], None]:
    def report(rows: int) -> None:
        progress(stage, rows, total)

    return report


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

        map_columns(count, list(binners), group.rows)
        done += group.rows
        if progress is not None:
            progress(stage, done, total)
    return hists
