"""The counting structures profiles are built from.

- :class:`Binner`: the bin of each value on fixed edges, fast.
- :class:`ValueCounts`: running counts of a categorical column's values.
- :func:`hash_strings` and :func:`kmv_merge`: a k-minimum-values sketch of
  hashed values, which merges exactly and estimates a column's cardinality.

Nothing here loads ``pyarrow.compute`` (25 ms of a command's start-up): the
Arrow arrays are read through their buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from keel.data.profiling.blocks import BLOCK, scratch
from keel.data.profiling.buffers import valid_mask

__all__ = [
    "KMV_SIZE",
    "Binner",
    "ValueCounts",
    "hash_strings",
    "kmv_merge",
]

KMV_SIZE = 1_024  # ~3% relative error on the cardinality estimate


class Binner:
    """Bin indices of values on fixed edges, as ``searchsorted(edges, x, side="right")``.

    Binary search over ~200 edges mispredicts a branch at almost every level
    (about 50 ns a value). A uniform grid over the inner bins answers almost
    every value with two lookups and a comparison: a grid cell that holds no
    edge maps to one bin; a cell that holds exactly one edge maps to the bin
    below it, plus one if the value is at or above that edge (the common case
    for discrete values, where every value sits on an edge). Only values in
    cells holding several edges, and the outer tails, fall back to the binary
    search. Results are identical; typical data bins 3-5x faster.
    """

    def __init__(self, edges: np.ndarray, cells_per_bin: int = 64) -> None:
        self.edges = edges
        k = len(edges)
        self.cells = 0
        if k <= 32:  # a short binary search is already cheap
            return
        # The grid spans the inner edges: outliers in the extreme bins must not coarsen it.
        lo, hi = float(edges[1]), float(edges[-2])
        if not hi > lo:
            return
        cells = min(cells_per_bin * k, 1 << 16)
        width = (hi - lo) / cells
        starts = lo + np.arange(cells) * width
        pad = width * 1e-6  # a value within rounding of a cell's border may land in either cell
        first = np.searchsorted(edges, starts - pad, side="right")
        last = np.searchsorted(edges, starts + width + pad, side="right")
        self.cells, self.scale = cells, cells / (hi - lo)
        # Shifted by one cell so that one clip sends everything outside the grid to a
        # sentinel cell at either end, and the sentinels are "unsure" (binary search).
        self.offset = lo - 1.0 / self.scale
        self.lookup = np.concatenate([[0], first, [0]]).astype(np.intp)
        one = (last - first) == 1
        threshold = np.full(cells, np.inf)
        threshold[one] = edges[first[one]]
        self.threshold = np.concatenate([[np.inf], threshold, [np.inf]])
        self.unsure = np.concatenate([[True], (last - first) > 1, [True]])

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """The bin index of each value (finite values only)."""
        if not self.cells:
            return np.searchsorted(self.edges, values, side="right")
        out = np.empty(len(values), dtype=np.intp)
        for start in range(0, len(values), BLOCK):
            block = values[start : start + BLOCK]
            out[start : start + len(block)] = self._block(block)
        return out

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Histogram of finite ``values``: below the first edge, each bin, above the last."""
        size = len(self.edges) + 1
        if not self.cells:
            return np.bincount(np.searchsorted(self.edges, values, side="right"), minlength=size)
        total = np.zeros(size, dtype=np.int64)
        for start in range(0, len(values), BLOCK):
            total += np.bincount(self._block(values[start : start + BLOCK]), minlength=size)
        return total

    def _block(self, values: np.ndarray) -> np.ndarray:
        """Bin indices of at most :data:`BLOCK` values, in the thread's scratch arrays."""
        work = scratch()
        n = len(values)
        cell, edge = work.floats[:n], work.more_floats[:n]
        index, result = work.index[:n], work.result[:n]
        above, unsure = work.flags[:n], work.more_flags[:n]
        np.subtract(values, self.offset, out=cell)
        cell *= self.scale
        np.floor(cell, out=cell)
        np.clip(cell, 0, self.cells + 1, out=cell)
        np.copyto(index, cell, casting="unsafe")
        # mode="clip": the indices are in range, and the default mode buffers the output.
        np.take(self.lookup, index, out=result, mode="clip")
        np.take(self.threshold, index, out=edge, mode="clip")
        np.greater_equal(values, edge, out=above)
        result += above
        np.take(self.unsure, index, out=unsure, mode="clip")
        if unsure.any():
            result[unsure] = np.searchsorted(self.edges, values[unsure], side="right")
        return result


class ValueCounts:
    """Running counts of a categorical column's values (the most frequent ``keep``).

    Values are numbered in the order they are first seen; counts are merged with
    ``numpy.bincount``. When more than four times ``keep`` values are held, only
    the ``keep`` most frequent stay (which of several tied ones stay follows that
    numbering), and the rest are counted in ``dropped``.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._position: dict[str, int] = {}
        self.counts = np.empty(0, dtype=np.int64)
        self.dropped = 0

    @property
    def values(self) -> list[str]:
        """The values held, aligned with ``counts``."""
        return list(self._position)

    def add(self, values: Sequence[str], counts: np.ndarray) -> None:
        """Add ``counts[i]`` occurrences of ``values[i]`` (non-null; repeats add up)."""
        position = self._position
        codes = np.fromiter(
            (position.setdefault(v, len(position)) for v in values), np.int64, len(values)
        )
        index = np.concatenate([np.arange(len(self.counts)), codes])
        weights = np.concatenate([self.counts, counts]).astype(np.float64)
        self.counts = np.bincount(index, weights, minlength=len(position)).astype(np.int64)
        if len(self.counts) > 4 * self.keep:  # bound the working set: keep the leaders
            kept = np.argpartition(-self.counts, self.keep - 1)[: self.keep]
            self.dropped += int(self.counts.sum() - self.counts[kept].sum())
            names = list(position)
            self._position = {names[i]: j for j, i in enumerate(kept.tolist())}
            self.counts = self.counts[kept]

    def top(self) -> tuple[dict[str, int], int]:
        """The most frequent values (ties by value) and the count of all the others."""
        pairs = sorted(
            zip(self._position, self.counts.tolist(), strict=True),
            key=lambda vc: (-vc[1], vc[0]),
        )[: self.keep]
        categories = dict(pairs)
        return categories, self.dropped + int(self.counts.sum()) - sum(categories.values())


_P = np.uint64(0x100000001B3)  # FNV prime: odd, so invertible modulo 2**64
_P_INV = np.uint64(pow(0x100000001B3, -1, 2**64))


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads a weak hash over all 64 bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def hash_strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each non-null string, vectorized over the array's byte buffer.

    A polynomial hash of the bytes, computed for all strings at once from
    prefix sums (modulo 2**64, where the base is invertible), then mixed.
    """
    if isinstance(values, pa.ChunkedArray):
        if values.num_chunks == 0:
            return np.empty(0, dtype=np.uint64)
        values = values.chunk(0) if values.num_chunks == 1 else pa.concat_arrays(values.chunks)
    if pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type):
        width: type[np.integer] = np.int64
    elif pa.types.is_string(values.type) or pa.types.is_binary(values.type):
        width = np.int32
    else:
        import pyarrow.compute as pc  # other types (string views …): Arrow's cast

        return hash_strings(pc.cast(values, pa.large_string()))
    n = len(values)
    if n == values.null_count:
        return np.empty(0, dtype=np.uint64)
    _, offsets_buf, data_buf = values.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=width, count=values.offset + n + 1)
    offsets = offsets[values.offset :].astype(np.int64)
    start, end = offsets[:-1], offsets[1:]
    base = int(start[0])
    size = int(end[-1]) - base
    data = (
        np.frombuffer(data_buf, dtype=np.uint8, count=base + size, offset=0)[base:]
        if data_buf is not None and size
        else np.empty(0, dtype=np.uint8)
    )
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.concatenate([[np.uint64(1)], np.full(size, _P)]))
        inverse = np.cumprod(np.concatenate([[np.uint64(1)], np.full(size, _P_INV)]))
        terms = (data.astype(np.uint64) + np.uint64(1)) * powers[:size]
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(terms, dtype=np.uint64)])
        s, e = start - base, end - base
        h = (prefix[e] - prefix[s]) * inverse[s]
        h = h ^ ((e - s).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        mixed = _mix(h)
    # A null's slot may hold any bytes: hashed with the others, then dropped.
    return mixed[valid_mask(values)] if values.null_count else mixed


def kmv_merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both = np.unique(np.concatenate([a, b]))
    return both[:KMV_SIZE]
