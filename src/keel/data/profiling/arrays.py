"""Arrow columns as the NumPy arrays and counts profiling reads, copying as little as it can.

- :func:`column_floats`: a numeric column as float64 values, nulls as NaN. Floats and
  integers are read straight off the Arrow buffers (a float64 column without nulls is
  not copied at all); other types go through Arrow's cast.
- :func:`category_counts`: a categorical column's distinct values and their counts.
  A dictionary-encoded column (what :mod:`keel.data.profiling.sources` reads Parquet
  text as) is counted on its integer codes, never spelling out a string per row.

Floats, integers and dictionary-encoded text never load ``pyarrow.compute``
(25 ms of a command's start-up); other types do, when first met.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from keel.data.profiling.buffers import valid_mask, values_of
from keel.data.profiling.sketches import hash_strings
from keel.errors import InvalidInput

__all__ = ["category_counts", "column_floats"]

# Arrow types whose values are a plain NumPy buffer that converts to float64 exactly as
# Arrow's own cast does (a C conversion, rounding to nearest).
_NUMPY_TYPES: dict[pa.DataType, type[np.generic]] = {
    pa.float64(): np.float64,
    pa.float32(): np.float32,
    pa.int8(): np.int8,
    pa.int16(): np.int16,
    pa.int32(): np.int32,
    pa.int64(): np.int64,
    pa.uint8(): np.uint8,
    pa.uint16(): np.uint16,
    pa.uint32(): np.uint32,
    pa.uint64(): np.uint64,
}
_INDEX_TYPES: dict[pa.DataType, type[np.generic]] = {
    t: d for t, d in _NUMPY_TYPES.items() if pa.types.is_integer(t)
}


def _one_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        # One chunk (a Parquet column chunk, a batch's column) is used as it is.
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def column_floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The column as float64 values, nulls as NaN (read-only when it is Arrow's own buffer).

    Read off the Arrow buffer rather than with ``to_numpy``, which makes pyarrow
    import pandas: 0.4 s and 40 MB that a standalone comparison does not need.
    """
    array = _one_array(column)
    dtype = _NUMPY_TYPES.get(array.type)
    if dtype is None:  # decimals, half floats …: Arrow's cast, then the float64 path
        import pyarrow.compute as pc

        try:
            array = pc.cast(array, pa.float64(), safe=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InvalidInput(
                f"cannot read a column of type {column.type} as numbers: {exc}"
            ) from None
        dtype = np.float64
    values = values_of(array, dtype)
    if dtype is not np.float64:
        values = values.astype(np.float64)
    if array.null_count:
        if not values.flags.writeable:
            values = values.copy()
        values[~valid_mask(array)] = math.nan
    return values


def _strings(column: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return column


def category_counts(
    column: pa.Array | pa.ChunkedArray,
) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """Distinct non-null values as text, their counts and hashes, and the number of nulls.

    The values come in the order of their first occurrence (what Arrow's
    ``value_counts`` gives), whatever the column's encoding: which values a
    bounded counter keeps on ties depends on that order. A column of several
    chunks may list a value once per chunk.

    Returns:
        ``(values, counts, hashes, nulls)``, the first three aligned; the hashes are
        :func:`~keel.data.profiling.sketches.hash_strings`'s, for the cardinality sketch.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    values: list[str] = []
    counts: list[np.ndarray] = []
    hashes: list[np.ndarray] = []
    nulls = 0
    for chunk in chunks:
        nulls += chunk.null_count
        if len(chunk) == chunk.null_count:
            continue
        if _is_text_dictionary(chunk):
            names, n, h = _dictionary_counts(chunk)
        else:
            import pyarrow.compute as pc

            counted = pc.value_counts(pc.drop_null(_strings(chunk)))
            distinct = counted.field("values")
            names = distinct.to_pylist()
            n, h = values_of(counted.field("counts"), np.int64), hash_strings(distinct)
        values += names
        counts.append(n)
        hashes.append(h)
    if not counts:
        empty = np.empty(0, dtype=np.int64)
        return [], empty, empty.astype(np.uint64), nulls
    return values, np.concatenate(counts), np.concatenate(hashes), nulls


def _is_text_dictionary(chunk: pa.Array) -> bool:
    """A dictionary array of text whose codes NumPy reads and whose dictionary has no nulls."""
    return (
        pa.types.is_dictionary(chunk.type)
        and chunk.type.index_type in _INDEX_TYPES
        and (
            pa.types.is_string(chunk.type.value_type)
            or pa.types.is_large_string(chunk.type.value_type)
        )
        and chunk.dictionary.null_count == 0
    )


def _dictionary_counts(chunk: pa.Array) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Counts of a text dictionary array, by code: values, counts and hashes of those present."""
    dictionary = chunk.dictionary
    codes = values_of(chunk.indices, _INDEX_TYPES[chunk.type.index_type])
    if chunk.null_count:
        codes = codes[valid_mask(chunk.indices)]
    counts = np.bincount(codes, minlength=len(dictionary))
    order = _first_seen(codes, np.flatnonzero(counts))
    names = dictionary.to_pylist()
    return [names[i] for i in order.tolist()], counts[order], hash_strings(dictionary)[order]


def _first_seen(codes: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The ``present`` codes ordered by where each first occurs in ``codes``.

    Scans growing prefixes: the codes of a low-cardinality column have all
    appeared after a few hundred rows, so this rarely reads far.
    """
    first = np.full(int(present.max()) + 1 if len(present) else 0, -1, dtype=np.int64)
    found, start, step = 0, 0, 1024
    while found < len(present) and start < len(codes):
        segment = codes[start : start + step]
        seen, where = np.unique(segment, return_index=True)
        new = first[seen] < 0
        first[seen[new]] = where[new] + start
        found += int(new.sum())
        start += step
        step *= 4
    return present[np.argsort(first[present], kind="stable")]
