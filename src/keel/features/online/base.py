"""The online store interface, and the one encoding of entity keys and values both backends share.

An online store keeps, per feature view and entity, the latest materialized row: its
event time, its created time and its feature values. Two rules hold on every backend:

- **A write never moves an entity back in time.** Of the stored row and the written
  one, the one with the greater ``(event_ms, created_ms)`` stays; on a tie the written
  row wins, so re-materializing the same rows is idempotent and a late correction
  (same event time, later created time) overwrites.
- **An expired value reads as missing.** With a TTL, a value is valid while
  ``now_ms - event_ms <= ttl_ms``, the online twin of the offline join's rule (a row
  at time ``t`` takes values with ``t - ttl <= event_ms <= t``).

Entity keys are text: an int64 key is its decimal digits, a string key itself, and a
view keyed by several join keys joins them with ``\\x1f`` (a string key of such a view
may not contain that character). ``7`` and ``"7"`` are therefore one entity, which lets
an HTTP client send keys as JSON strings.

A value is a MessagePack map ``{feature: value}``: self-describing, so a read picks the
requested features without knowing the view's schema, and decoded in C by ``msgpack``.
It is built column-wise with NumPy and Arrow (fixed-width MessagePack forms: ``0xd3``
int64, ``0xcb`` float64, ``0xdb`` str32, the timestamp extension) rather than one
``packb`` per row, so a write of a million rows costs well under a second to encode.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = [
    "KEY_SEPARATOR",
    "OnlineStore",
    "decode_value",
    "encode_entity_keys",
    "encode_values",
    "entity_key",
    "entity_key_sql",
]

#: Joins the values of a view keyed by several join keys (ASCII's unit separator).
KEY_SEPARATOR = "\x1f"

#: One row as a read returns it: ``(event_ms, {feature: value})``, or ``None``.
Row = tuple[int, dict[str, Any]] | None


class OnlineStore(ABC):
    """The latest feature values per view and entity, written by materialization.

    A backend is opened from a URL by :func:`keel.features.online.open_online_store`,
    holds its connections for its lifetime and is safe to share between threads.
    """

    #: The store's URL without credentials; materialization watermarks are kept per URL.
    url: str

    #: Whether writes in stored-key order (:func:`entity_key_sql`) are much faster, so
    #: materialization sorts its rows first (a B-tree does; Redis does not care).
    sorted_writes: bool = False

    @abstractmethod
    def write(
        self,
        view: str,
        keys: pa.Table,
        event_ms: np.ndarray,
        created_ms: np.ndarray,
        values: pa.Table,
        ttl_seconds: int | None,
    ) -> int:
        """Write one row per entity, keeping whichever of stored and written is newer.

        Args:
            view: the feature view.
            keys: the join key columns, one row per entity (each entity at most once).
            event_ms: each row's event time (int64 ms since the epoch, UTC).
            created_ms: each row's created time (0 when the view has none).
            values: the feature columns.
            ttl_seconds: the view's TTL, so a backend that can expire keys does.

        Returns:
            How many rows were written (rows older than the stored ones are not).
        """

    @abstractmethod
    def read(
        self,
        view: str,
        keys: Sequence[tuple[Any, ...]],
        features: Sequence[str],
        ttl_seconds: int | None,
        now_ms: int,
    ) -> list[Row]:
        """The stored rows of ``keys``, in order, with only ``features``.

        Returns:
            Per key, ``(event_ms, {feature: value})``; ``None`` when the entity has no
            row or its row expired (``now_ms - event_ms > ttl_seconds * 1000``). A
            feature the stored row lacks (added since it was written) reads as ``None``.
        """

    @abstractmethod
    def delete_view(self, view: str) -> int:
        """Drop every row of ``view``; returns how many went (where the backend counts)."""

    def purge_expired(self, view: str, ttl_seconds: int, now_ms: int) -> int:
        """Drop ``view``'s rows expired at ``now_ms``; a backend that expires keys itself skips it."""
        return 0

    @abstractmethod
    def close(self) -> None:
        """Release the store's connections."""

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


# -- entity keys -------------------------------------------------------------------------------


def entity_key(values: Sequence[Any]) -> str:
    """The stored key of one entity, from its join key values in the view's order.

    Raises:
        InvalidInput: a value is neither an integer nor a string.
    """
    if len(values) == 1:
        return _key_part(values[0])
    return KEY_SEPARATOR.join([_key_part(v) for v in values])


def _key_part(value: Any) -> str:
    kind = type(value)
    if kind is int or kind is str:
        return str(value)
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"a join key is an integer or a string, got {value!r}")
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        # pandas turns an int column with a gap into floats; 7.0 is still entity 7
        if value.is_integer():
            return str(int(value))
        raise InvalidInput(f"a join key is an integer or a string, got {value!r}")
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None  # type: ignore[assignment]
    if np is not None and isinstance(value, np.integer):
        return str(int(value))
    if np is not None and isinstance(value, np.floating) and float(value).is_integer():
        return str(int(value))
    raise InvalidInput(f"a join key is an integer or a string, got {value!r}")


def entity_key_sql(columns: Sequence[str]) -> str:
    """The stored key as DuckDB SQL over (quoted) join key columns, for sorting rows by it.

    Rows written in key order fill a B-tree page by page; in DuckDB's hash order they
    touch every page of a large SQLite table on every batch.
    """
    parts = [f"CAST({c} AS VARCHAR)" for c in columns]
    if len(parts) == 1:
        return parts[0]
    return f"concat_ws(chr({ord(KEY_SEPARATOR)}), {', '.join(parts)})"


def encode_entity_keys(keys: pa.Table) -> pa.Array:
    """The stored keys of a table of join key columns, computed column-wise (a string array).

    Raises:
        InvalidInput: a key column has nulls or a type other than integer or string, or a
            string key of a several-key view contains the separator.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if keys.num_columns == 0:
        raise InvalidInput("an online write needs at least one join key column")
    parts: list[pa.Array] = []
    for name, column in zip(keys.column_names, keys.columns, strict=True):
        array = column.combine_chunks()
        if array.null_count:
            raise InvalidInput(
                f"join key column {name!r} has {array.null_count} null value(s); every row "
                "written online needs its keys"
            )
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if pa.types.is_integer(array.type):
            parts.append(pc.cast(pc.cast(array, pa.int64()), pa.string()))
        elif pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            text = pc.cast(array, pa.string())
            if (
                keys.num_columns > 1
                and len(text)
                and pc.any(pc.match_substring(text, KEY_SEPARATOR)).as_py()
            ):
                raise InvalidInput(
                    f"join key column {name!r} holds a value with the character \\x1f, which "
                    "separates the keys of a view keyed by several join keys"
                )
            parts.append(text)
        else:
            raise InvalidInput(
                f"join key column {name!r} has type {array.type}; join keys are int64 or string"
            )
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, KEY_SEPARATOR)


# -- values ------------------------------------------------------------------------------------

_NIL = b"\xc0"


def _str_header(text: str) -> bytes:
    """MessagePack's header for a str of ``text``'s UTF-8 length (the map's keys)."""
    size = len(text.encode())
    if size < 32:
        return bytes([0xA0 | size])
    if size < 256:
        return bytes([0xD9, size])
    return bytes([0xDA]) + size.to_bytes(2, "big")


def _map_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x80 | count])
    return bytes([0xDE]) + count.to_bytes(2, "big")


#: A fixed-width piece of a record: a NumPy field type and its value (a column or a constant).
_Part = tuple[str, Any]

#: Rows encoded per slice, so a binary array's 32-bit offsets never overflow.
_SLICE_ROWS = 200_000


def _tag(data: bytes) -> _Part:
    return (f"V{len(data)}", data)


def _records(rows: int, parts: list[_Part]) -> pa.Array:
    """Rows made of fixed-width ``parts``, as a binary array sharing one NumPy buffer.

    One structured array holds the rows; each part is a field assigned column-wise, so
    a run of ten float features costs ten strided copies, not ten million ``packb``.
    """
    import numpy as np
    import pyarrow as pa

    dtype = np.dtype([(f"p{i}", kind) for i, (kind, _) in enumerate(parts)])
    record = np.empty(rows, dtype=dtype)
    for i, (kind, value) in enumerate(parts):
        if isinstance(value, bytes):
            value = np.frombuffer(value, dtype=kind)[0]
        record[f"p{i}"] = value
    offsets = np.arange(0, (rows + 1) * dtype.itemsize, dtype.itemsize, dtype=np.int32)
    data = record.view(np.uint8)
    return pa.Array.from_buffers(
        pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _column_parts(
    name: str, column: pa.ChunkedArray | pa.Array
) -> tuple[list[_Part], pa.Array | None]:
    """One feature column's MessagePack form: fixed-width parts, or a binary array.

    Exactly one of the two is non-empty: a column with nulls or strings varies in width
    per row, so it comes back as binary (``None`` for the array otherwise).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if pa.types.is_decimal(kind):
        array, kind = pc.cast(array, pa.float64()), pa.float64()
    if pa.types.is_date(kind):
        array = pc.cast(pc.cast(array, pa.date32()), pa.timestamp("s"))
        kind = array.type
    parts: list[_Part]
    if pa.types.is_integer(kind):
        numbers = pc.cast(array, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        parts = [_tag(b"\xd3"), (">i8", numbers)]
    elif pa.types.is_floating(kind):
        numbers = pc.cast(array, pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        parts = [_tag(b"\xcb"), (">f8", numbers)]
    elif pa.types.is_boolean(kind):
        flags = array.fill_null(False).to_numpy(zero_copy_only=False)
        parts = [("u1", np.where(flags, np.uint8(0xC3), np.uint8(0xC2)))]
    elif pa.types.is_timestamp(kind):
        # the timestamp extension (-1) in its 96-bit form: nanoseconds uint32, seconds int64
        nanos = pc.cast(pc.cast(array, pa.timestamp("ns")), pa.int64()).fill_null(0)
        seconds, rest = np.divmod(nanos.to_numpy(zero_copy_only=False), 1_000_000_000)
        parts = [_tag(b"\xc7\x0c\xff"), (">u4", rest), (">i8", seconds)]
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.cast(array, pa.string())
        sizes = pc.binary_length(text).fill_null(0).to_numpy(zero_copy_only=False)
        head = _records(len(text), [_tag(b"\xdb"), (">u4", sizes)])
        encoded = pc.binary_join_element_wise(head, pc.cast(text, pa.binary()), b"")
        return [], pc.if_else(text.is_valid(), encoded, pa.scalar(_NIL, pa.binary()))
    else:
        raise InvalidInput(
            f"feature {name!r} has type {kind}; online features are int64, float64, string, "
            "bool or timestamp"
        )
    if array.null_count:
        encoded = _records(len(array), parts)
        return [], pc.if_else(array.is_valid(), encoded, pa.scalar(_NIL, pa.binary()))
    return parts, None


def encode_values(values: pa.Table, prefix: list[tuple[str, Any]] | None = None) -> pa.Array:
    """Each row of ``values`` as a MessagePack map ``{column: value}``, as a binary array.

    Args:
        values: the feature columns.
        prefix: fixed-width parts put before each row's map, as ``(numpy type, column)``
            pairs (the Redis backend's record header: ``[(">i8", event_ms), …]``).

    Returns:
        A binary array, or a chunked one for more than 200,000 rows.

    Raises:
        InvalidInput: a column's type has no online form.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = values.num_rows
    if rows > _SLICE_ROWS:
        chunks = []
        for start in range(0, rows, _SLICE_ROWS):
            part = None
            if prefix is not None:
                part = [(kind, col[start : start + _SLICE_ROWS]) for kind, col in prefix]
            chunks.append(encode_values(values.slice(start, _SLICE_ROWS), part))
        return pa.chunked_array(chunks, pa.binary())
    if rows == 0:
        return pa.array([], pa.binary())
    # runs of fixed-width parts become one structured array; only a column with nulls
    # or strings, whose width varies per row, needs Arrow's per-row join
    pieces: list[pa.Array] = []
    run: list[_Part] = list(prefix or [])
    run.append(_tag(_map_header(values.num_columns)))
    for name, column in zip(values.column_names, values.columns, strict=True):
        run.append(_tag(_str_header(name) + name.encode()))
        parts, encoded = _column_parts(name, column)
        if encoded is None:
            run += parts
            continue
        pieces += [_records(rows, run), encoded]
        run = []
    if run:
        pieces.append(_records(rows, run))
    if len(pieces) == 1:
        return pieces[0]
    return pc.binary_join_element_wise(*pieces, b"")


def decode_value(data: bytes | memoryview) -> dict[str, Any]:
    """A stored MessagePack map back as ``{feature: value}`` (timestamps as UTC datetimes)."""
    import msgpack

    value: dict[str, Any] = msgpack.unpackb(data, timestamp=3)
    return value
