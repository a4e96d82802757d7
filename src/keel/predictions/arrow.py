"""Arrow tables from queued requests, and one schema from many files.

Writing: a request's columns arrive as lists or numpy arrays (its inputs
often as one 2-D :class:`Block`); :func:`build_tables` turns a batch of
requests into as few tables as their column sets allow, column by column and
without a loop over rows. An output with several values per row becomes a
**list column**; a column Arrow cannot type (mixed kinds, arbitrary objects)
is stored as the JSON text of each value; requests that cannot be converted
at all are handed back, never dropped.

Reading: each file carries its own schema (inputs and outputs differ between
versions). :func:`unify_schemas` finds one for all of them: a column missing
from a file reads as null, ints and floats widen to float, and a column whose
types cannot be reconciled reads as strings (:func:`conform`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import InvalidInput, KeelError
from keel.predictions.layout import HOUR_MS, now_ms
from keel.predictions.schema import PREDICTION_COLUMNS, UTC_MS

__all__ = [
    "Block",
    "Entry",
    "Rejected",
    "build_tables",
    "castable",
    "conform",
    "flatten",
    "json_text",
    "split_hours",
    "unify_schemas",
    "unify_tables",
]


class Block(NamedTuple):
    """Several columns as one 2-D array, ``values[:, j]`` being column ``names[j]``.

    One request's inputs arrive as a matrix; queuing the matrix is one reference
    where k columns would be k, and the writer slices columns once per file.
    """

    names: tuple[str, ...]
    values: np.ndarray


class Entry(NamedTuple):
    """One request's rows, as queued: its deployment, columns and optional block."""

    deployment: str
    columns: dict[str, Any]
    n_rows: int
    block: Block | None = None

    def all_columns(self) -> dict[str, Any]:
        """The columns with the block's spread out, in file order."""
        if self.block is None:
            return self.columns
        spread = {name: self.block.values[:, j] for j, name in enumerate(self.block.names)}
        return {**self.columns, **spread}


#: Requests of one deployment that cannot become Arrow, and why.
Rejected = tuple[str, list[Entry], BaseException]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def json_text(value: Any) -> str:
    """``value`` as JSON text; numpy values, datetimes and bytes included, anything else as str."""
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def flatten(chunks: Sequence[Any]) -> list[Any]:
    """The values of per-request chunks (lists or numpy arrays) as one Python list."""
    return list(
        itertools.chain.from_iterable(
            c.tolist() if isinstance(c, np.ndarray) else c for c in chunks
        )
    )


# -- writing -------------------------------------------------------------------------------------


def _same_kind(arrays: Sequence[np.ndarray]) -> bool:
    kinds = {a.dtype.kind for a in arrays}
    return len(kinds) == 1 or kinds <= {"i", "u", "f"}


def _from_numpy(values: np.ndarray) -> pa.Array:
    return pa.array(values, from_pandas=values.dtype == object)


def _infer_array(chunks: Sequence[Any]) -> pa.Array:
    """One Arrow array from per-request chunks (lists or numpy arrays), without a row loop."""
    if all(isinstance(c, np.ndarray) for c in chunks) and _same_kind(chunks):
        if all(c.ndim == 1 for c in chunks):
            return _from_numpy(chunks[0] if len(chunks) == 1 else np.concatenate(chunks))
        widths = {c.shape[1] for c in chunks if c.ndim == 2}
        if all(c.ndim == 2 for c in chunks) and len(widths) == 1:
            merged = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            n, k = merged.shape
            offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int64), pa.int64())
            values = _from_numpy(np.ascontiguousarray(merged).reshape(-1))
            return pa.LargeListArray.from_arrays(offsets, values).cast(pa.list_(values.type))
    values = flatten(chunks)
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError):
        return pa.array(values, from_pandas=True)  # None and NaN mixed with text


def _time_array(array: pa.Array) -> pa.Array:
    kind = array.type
    if pa.types.is_integer(kind):
        out = array.cast(pa.int64()).cast(UTC_MS)
    elif pa.types.is_floating(kind):
        out = array.cast(pa.int64(), safe=False).cast(UTC_MS)
    elif pa.types.is_timestamp(kind):
        out = array.cast(UTC_MS, safe=False)
    else:
        raise InvalidInput(f"column 'time' must hold epoch milliseconds or datetimes, got {kind}")
    if out.null_count:
        out = pc.fill_null(out, pa.scalar(now_ms(), UTC_MS))
    return out


def _column(name: str, chunks: Sequence[Any]) -> pa.Array:
    required = PREDICTION_COLUMNS.get(name)
    if required is not None:
        array = _infer_array(chunks)
        if name == "time":
            return _time_array(array)
        return array if array.type == required else array.cast(required)
    try:
        return _infer_array(chunks)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return pa.array([json_text(v) for v in flatten(chunks)], pa.string())


def _build(entries: Sequence[Entry]) -> pa.Table:
    """One table from requests that share their column names (and block names)."""
    first = entries[0]
    names = [*PREDICTION_COLUMNS, *(n for n in first.columns if n not in PREDICTION_COLUMNS)]
    arrays = [_column(name, [e.columns[name] for e in entries]) for name in names]
    block = first.block
    if block is not None:
        values = [e.block.values for e in entries if e.block is not None]
        if len({v.dtype for v in values}) == 1:
            merged = np.concatenate(values) if len(values) > 1 else values[0]
            columns = np.ascontiguousarray(merged.T)  # one contiguous row per column
            arrays += [_from_numpy(columns[j]) for j in range(len(block.names))]
        else:
            arrays += [_column(n, [e.all_columns()[n] for e in entries]) for n in block.names]
        names += block.names
    return pa.Table.from_arrays(arrays, names=names)


_CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError, KeelError)


def build_tables(
    deployment: str, entries: Sequence[Entry]
) -> tuple[list[pa.Table], list[Rejected]]:
    """Tables for a deployment's requests, plus the requests that cannot be converted."""
    by_columns: dict[tuple[Any, ...], list[Entry]] = {}
    for e in entries:
        key = (tuple(e.columns), None if e.block is None else e.block.names)
        by_columns.setdefault(key, []).append(e)
    tables: list[pa.Table] = []
    rejected: list[Rejected] = []
    for group in by_columns.values():
        try:
            tables.append(_build(group))
            continue
        except _CONVERSION_ERRORS:
            pass
        for e in group:  # isolate the request(s) that cannot be converted
            try:
                tables.append(_build([e]))
            except _CONVERSION_ERRORS as exc:
                rejected.append((deployment, [e], exc))
    return unify_tables(tables), rejected


def unify_tables(tables: list[pa.Table]) -> list[pa.Table]:
    """One table if the schemas reconcile (nulls for missing columns, int → float), else as given."""
    if len(tables) < 2:
        return tables
    try:
        return [pa.concat_tables(tables, promote_options="permissive")]
    except (pa.ArrowException, TypeError, ValueError):
        return tables


def split_hours(table: pa.Table) -> list[tuple[int, pa.Table]]:
    """``(hour, rows of that hour)`` for each UTC hour the table's ``time`` column touches."""
    if table.num_rows == 0:
        return []
    hours = table.column("time").cast(pa.int64()).to_numpy() // HOUR_MS
    low, high = int(hours.min()), int(hours.max())
    if low == high:
        return [(low, table)]
    order = np.argsort(hours, kind="stable")
    ordered = hours[order]
    table = table.take(pa.array(order))
    bounds = [0, *(np.flatnonzero(np.diff(ordered)) + 1).tolist(), len(ordered)]
    return [(int(ordered[a]), table.slice(a, b - a)) for a, b in itertools.pairwise(bounds)]


# -- reading -------------------------------------------------------------------------------------


def unify_schemas(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for all files: permissive promotion; irreconcilable columns become strings."""
    try:
        return pa.unify_schemas(list(schemas), promote_options="permissive")
    except (pa.ArrowException, TypeError, ValueError):
        pass
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            seen = types.get(f.name)
            if seen is None:
                types[f.name] = f.type
            elif seen != f.type:
                try:
                    merged = pa.unify_schemas(
                        [pa.schema([(f.name, seen)]), pa.schema([f])], promote_options="permissive"
                    )
                    types[f.name] = merged.field(f.name).type
                except (pa.ArrowException, TypeError, ValueError):
                    types[f.name] = pa.string()
    return pa.schema(list(types.items()))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: missing columns null, others cast (JSON text if no cast exists)."""
    arrays = []
    for f in schema:
        if f.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, f.type))
            continue
        column = table.column(f.name)
        if column.type != f.type:
            try:
                column = column.cast(f.type)
            except (pa.ArrowException, TypeError, ValueError):
                column = pa.chunked_array(
                    [pa.array([json_text(v) for v in column.to_pylist()], pa.string())]
                ).cast(f.type)
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)


def castable(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether Arrow can cast ``source`` to ``target`` (while scanning, without Python)."""
    try:
        pa.array([], type=source).cast(target)
    except (pa.ArrowException, TypeError, ValueError):
        return False
    return True
