"""Profiling a Parquet input one whole column at a time: new bin edges in one read.

Profiling data with no bin edges yet needs every value twice: once for the
statistics and the row sample the edges come from, once to count values
into those edges. Going chunk by chunk, that is two reads of the file (see
:mod:`keel.data.profiling.build`). But the rows the sample will hold are
decided by random priorities alone (:meth:`PartialProfile.sample_plan`), so
a reader that takes one column through every row group before the next
column can sample it, compute its edges and count its values while it still
holds them: one read, and only a column or two in memory at a time (one per
profiling thread) rather than every column of a chunk.

The result equals the chunk-by-chunk one exactly: the same rows are sampled,
the statistics merge group by group in the same order, and the histograms
count every value. This path is taken for Parquet inputs small enough to
hold a column of (:data:`HOLD_ROWS`); larger ones are read chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from keel.data.profiling.arrays import column_floats
from keel.data.profiling.partial import PartialProfile, edges_from_sample, map_columns
from keel.data.profiling.sketches import Binner
from keel.data.profiling.sources import ColumnGroup

__all__ = ["HOLD_ROWS", "profile_columns"]

#: Rows up to which a column is held whole (16 MB of float64 per profiling thread).
HOLD_ROWS = 2_000_000


def profile_columns(
    builder: PartialProfile,
    groups: Sequence[ColumnGroup],
    bins: int,
    done: Callable[[int], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fill ``builder`` from ``groups``, column by column.

    Args:
        builder: a fresh builder; its numeric columns without edges get new ones.
        groups: every row group of the input, in order.
        bins: equal-mass bins per new set of edges.
        done: ``done(rows)`` in the calling thread as columns finish (rows as a share
            of the total, column by column).

    Returns:
        The edges and histograms of the columns that had no edges.
    """
    sizes = [g.rows for g in groups]
    total = sum(sizes)
    builder.rows += total
    plan = builder.sample_plan(sizes)
    unbinned = set(builder.unbinned)
    made: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def numeric(name: str) -> None:
        held: list[np.ndarray] = []
        sample: list[np.ndarray] = []
        for group, chosen in zip(groups, plan, strict=True):
            if group.rows == 0:
                continue
            column = group.read(name)
            values = np.full(group.rows, np.nan) if column is None else column_floats(column)
            good = builder.add_numeric(name, values)
            if name in unbinned:
                sample.append(values[chosen])
                held.append(good)
        if name in unbinned:
            stats = builder.stats[name]
            drawn = np.concatenate(sample) if sample else np.empty(0)  # no rows: no sample
            edges = edges_from_sample(drawn, stats[3], stats[4], bins)
            binner = Binner(edges)
            counts = np.zeros(len(edges) + 1, dtype=np.int64)
            for good in held:
                counts += binner.counts(good)
            made[name] = (edges, counts)  # one key per task: no two threads share one

    def categorical(name: str) -> None:
        for group in groups:
            if group.rows:
                builder.add_categorical(name, group.read(name), group.rows)

    tasks: dict[str, Callable[[str], None]] = {
        **{name: numeric for name in builder.numeric},
        **{name: categorical for name in builder.categorical},
    }
    names = list(tasks)

    def run(name: str) -> None:
        tasks[name](name)

    def each(finished: int) -> None:
        if done is not None:
            done(total * finished // len(names))

    map_columns(run, names, total, each)
    return _split(made)


def _split(
    made: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return {n: e for n, (e, _) in made.items()}, {n: h for n, (_, h) in made.items()}
