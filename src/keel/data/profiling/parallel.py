"""Profiling a large Parquet input with Ray: the same two passes, split by row groups.

Each task reads its own row groups. In the first round every task returns
its partial statistics, category counts and bottom-k row sample; the driver
merges them (exactly: bottom-k samples merge into the bottom-k sample of the
union), takes the bin edges from the merged sample, and a second round of
tasks counts their values into those edges. When the edges are already
known (``bins_from=``) one round does it all.

Ray starts locally with two CPUs unless ``KEEL_RAY_ADDRESS`` names a cluster
(the same rule as batch scoring, :mod:`keel.cluster`); on a cluster the input must be on storage
every node can read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keel.data.profiling.arrays import column_floats
from keel.data.profiling.partial import PartialProfile
from keel.data.profiling.profiles import Profile
from keel.data.profiling.sketches import Binner
from keel.data.profiling.sources import Part, Source, read_part

__all__ = ["profile_with_ray"]


def _first_round(
    part: Part,
    columns: Sequence[str],
    kinds: Mapping[str, str],
    dtypes: Mapping[str, str],
    edges: Mapping[str, np.ndarray],
    seed: int,
    batch_rows: int,
) -> PartialProfile:
    builder = PartialProfile(kinds, dtypes, edges, seed)
    for batch in read_part(part, columns, batch_rows):
        builder.add(batch)
    return builder


def _second_round(
    part: Part, edges: Mapping[str, np.ndarray], batch_rows: int
) -> dict[str, np.ndarray]:
    hists = {c: np.zeros(len(e) + 1, dtype=np.int64) for c, e in edges.items()}
    binners = {c: Binner(e) for c, e in edges.items()}
    for batch in read_part(part, list(edges), batch_rows):
        for name, binner in binners.items():
            if name in batch.schema.names:
                values = column_floats(batch.column(name))
                hists[name] += binner.counts(values[np.isfinite(values)])
    return hists


def profile_with_ray(
    source: Source,
    kinds: dict[str, str],
    dtypes: dict[str, str],
    edges: dict[str, np.ndarray],
    bins: int,
    batch_rows: int,
    seed: int,
) -> Profile:
    """Profile ``source`` (Parquet) with Ray tasks.

    Counts, statistics and categories equal the local result exactly; the bin
    edges come from a different (equally uniform) row sample.
    """
    from keel.cluster import join_ray

    ray = join_ray(num_cpus=2)
    rows = source.rows or 0
    parts = source.parts(max(batch_rows, rows // 8 or 1))
    columns = list(kinds)
    first = ray.remote(num_cpus=1, max_retries=1)(_first_round)
    builders: list[Any] = ray.get(
        [
            # Each part gets its own seed: the priorities stay independent and uniform.
            first.remote(part, columns, kinds, dtypes, edges, seed + 7919 * (i + 1), batch_rows)
            for i, part in enumerate(parts)
        ]
    )
    if not builders:
        builders = [PartialProfile(kinds, dtypes, edges, seed)]
    merged = builders[0]
    for other in builders[1:]:
        merged.merge(other)
    hists = dict(merged.hists)
    if merged.unbinned:
        new_edges = merged.sample_edges(bins)
        edges = {**edges, **new_edges}
        if merged.sample_is_complete:
            hists.update(merged.sample_histograms(new_edges))
        else:
            second = ray.remote(num_cpus=1, max_retries=1)(_second_round)
            for part_hists in ray.get([second.remote(p, new_edges, batch_rows) for p in parts]):
                for name, counts in part_hists.items():
                    hists[name] = hists.get(name, 0) + counts
    return merged.finish(edges, hists)
