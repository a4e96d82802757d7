"""Tabular inputs as streams of Arrow record batches.

Profiling reads its input chunk by chunk, so a table of any length fits in
bounded memory. :func:`open_source` accepts what users hold:

- a pandas ``DataFrame``, a ``pyarrow.Table`` or ``RecordBatch``, or a dict of
  equal-length columns (already in memory: sliced, not copied);
- the path of a Parquet file (``.parquet``/``.pq``), a folder of Parquet files,
  or a CSV file (``.csv``), read with pyarrow's streaming readers.

It is the one place that knows these suffixes (:func:`file_format`), which
files of a folder make a dataset (:func:`parquet_files`) and how Parquet splits
into parts (:meth:`Source.parts`): profiling and batch scoring
(:mod:`keel.scoring`) both read their inputs through it.

A :class:`Source` can be read more than once (profiling a reference takes two
passes) and, for Parquet, split into parts that Ray tasks read on their own.
Parquet is also read one column of one row group at a time
(:meth:`Source.column_groups`, or every row group at once with
:meth:`Source.open_groups`): decoding a whole row group at once holds every
column's pages and values together, several times the memory of one column.
Text columns are read from Parquet dictionary-encoded, as they are stored:
counting categories then reads integer codes instead of a string per row.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from keel.errors import InvalidInput, NotFound, StorageError

if TYPE_CHECKING:
    import pyarrow.parquet as pq

__all__ = [
    "CSV_SUFFIXES",
    "PARQUET_SUFFIXES",
    "ColumnGroup",
    "FileFormat",
    "Part",
    "Source",
    "file_format",
    "open_source",
    "parquet_files",
    "read_part",
]

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
_CSV_BLOCK_BYTES = 4 << 20
_COLUMNWISE_MAX_ROWS = 1 << 20  # bigger row groups are read in batches, not a column at a time
_MAX_OPEN_FILES = 64  # open_groups keeps every file of a folder open at once

Kind = Literal["memory", "parquet", "csv"]
FileFormat = Literal["parquet", "csv"]


@dataclass(frozen=True)
class Part:
    """A slice of a Parquet source a worker reads by itself: one file, some row groups."""

    file: str
    row_groups: tuple[int, ...]
    rows: int


@dataclass(frozen=True)
class ColumnGroup:
    """Some rows whose columns are read one at a time: ``read(name)`` (None if absent)."""

    rows: int
    read: Callable[[str], pa.ChunkedArray | None]


@dataclass
class Source:
    """A re-readable table: its schema, its size when known, and its batches.

    Attributes:
        name: what error messages call it (a file name, or "the DataFrame").
        kind: ``memory``, ``parquet`` or ``csv``.
        schema: the columns that will be read (after ``columns`` selection).
        rows: the number of rows, when known without reading (memory, Parquet).
        size: bytes on disk (CSV progress), else 0.
    """

    name: str
    kind: Kind
    schema: pa.Schema
    rows: int | None
    size: int
    _batches: Callable[[int], Iterator[pa.RecordBatch]]
    files: tuple[Path, ...] = ()
    _groups: Callable[[], Iterator[ColumnGroup]] | None = None
    _open_groups: Callable[[], contextlib.AbstractContextManager[list[ColumnGroup]]] | None = None

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def batches(self, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The rows from the start, at most ``batch_rows`` per batch."""
        return self._batches(batch_rows)

    def column_groups(self) -> Iterator[ColumnGroup] | None:
        """The rows as groups read a column at a time, or ``None`` when not Parquet."""
        return None if self._groups is None else self._groups()

    def open_groups(self) -> contextlib.AbstractContextManager[list[ColumnGroup] | None]:
        """Every row group at once, readable in any order while the context is open.

        ``None`` inside the context when the source cannot offer that: not Parquet,
        row groups too big to read a column at a time, or too many files to keep open.
        """
        if self._open_groups is None:
            return contextlib.nullcontext(None)
        return self._open_groups()

    def parts(self, target_rows: int) -> list[Part]:
        """Row-group slices of about ``target_rows`` rows each (Parquet sources only).

        Consecutive row groups of a file are gathered until they hold ``target_rows``
        rows; empty row groups are skipped, so every part has rows to read.
        """
        import pyarrow.parquet as pq

        if self.kind != "parquet":
            raise InvalidInput(
                f"only Parquet inputs split into parts for Ray; {self.name} is {self.kind}. "
                "Convert it to Parquet, or use executor='local'"
            )
        parts: list[Part] = []
        for file in self.files:
            meta = pq.read_metadata(file)
            group: list[int] = []
            rows = 0
            for i in range(meta.num_row_groups):
                count = meta.row_group(i).num_rows
                if not count:
                    continue
                group.append(i)
                rows += count
                if rows >= target_rows:
                    parts.append(Part(str(file), tuple(group), rows))
                    group, rows = [], 0
            if group:
                parts.append(Part(str(file), tuple(group), rows))
        return parts


def read_part(part: Part, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The batches of one :class:`Part` (what a Ray task reads)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(part.file, pre_buffer=False) as reader:
        present = [c for c in columns if c in reader.schema_arrow.names]
        yield from reader.iter_batches(
            batch_size=batch_rows, row_groups=list(part.row_groups), columns=present
        )


def open_source(data: Any, *, columns: Sequence[str] | None = None) -> Source:
    """Wrap ``data`` as a :class:`Source`, keeping only ``columns`` (default: all).

    Raises:
        InvalidInput: an unsupported kind of input, an unknown column, an
            unreadable or empty file.
        NotFound: a path that does not exist.
    """
    if isinstance(data, Source):
        source = data
    elif isinstance(data, str | os.PathLike):
        source = _file_source(Path(data))
    else:
        source = _memory_source(data)
    if columns is None:
        return source
    wanted = _check_columns(columns, source)
    return _select(source, wanted)


def _check_columns(columns: Sequence[str], source: Source) -> list[str]:
    if isinstance(columns, str):
        columns = [columns]
    wanted = list(dict.fromkeys(columns))
    unknown = [c for c in wanted if c not in source.schema.names]
    if unknown:
        raise InvalidInput(
            f"column(s) {', '.join(map(repr, unknown))} not in {source.name}; its columns are "
            f"{', '.join(source.schema.names) or '(none)'}"
        )
    return wanted


def _select(source: Source, wanted: list[str]) -> Source:
    inner = source._batches
    schema = pa.schema([source.schema.field(c) for c in wanted])

    def batches(batch_rows: int) -> Iterator[pa.RecordBatch]:
        for batch in inner(batch_rows):
            yield batch.select([c for c in wanted if c in batch.schema.names])

    return Source(
        source.name,
        source.kind,
        schema,
        source.rows,
        source.size,
        batches,
        source.files,
        source._groups,
        source._open_groups,
    )


# -- in memory ------------------------------------------------------------------------


def _memory_source(data: Any) -> Source:
    table = _as_table(data)

    def batches(batch_rows: int) -> Iterator[pa.RecordBatch]:
        yield from table.to_batches(max_chunksize=batch_rows)

    name = "the DataFrame" if _is_dataframe(data) else "the table"
    return Source(name, "memory", table.schema, table.num_rows, 0, batches)


def _is_dataframe(data: Any) -> bool:
    return type(data).__module__.startswith("pandas") and hasattr(data, "columns")


def _as_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if _is_dataframe(data):
        return _from_pandas(data)
    if isinstance(data, Mapping):
        try:
            return pa.table({str(k): v for k, v in data.items()})
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InvalidInput(f"cannot read the dict of columns as a table: {exc}") from None
    raise InvalidInput(
        "expected a pandas DataFrame, a pyarrow Table, a dict of columns, or the path of a "
        f"Parquet or CSV file; got {type(data).__name__}"
    )


def _from_pandas(frame: Any) -> pa.Table:
    frame = frame.rename(columns=str)
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        pass
    # A column of mixed Python objects: keep it, as text, rather than refuse the frame.
    arrays = []
    for name in frame.columns:
        column = frame[name]
        try:
            arrays.append(pa.Array.from_pandas(column))
        except (pa.ArrowException, TypeError, ValueError):
            arrays.append(pa.Array.from_pandas(column.map(_text, na_action="ignore")))
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


def _text(value: Any) -> str:
    return str(value)


def _read_column(
    reader: Any, lock: threading.Lock, file: Path, group: int, name: str
) -> pa.ChunkedArray | None:
    """One column of one row group (None if the file lacks it)."""
    if name not in reader.schema_arrow.names:
        return None
    try:
        with lock:
            return reader.read_row_group(group, columns=[name], use_threads=False).column(0)
    except (pa.ArrowException, OSError) as exc:
        raise StorageError(f"cannot read {file}: {exc}") from exc


# -- files ------------------------------------------------------------------------------


def file_format(path: Path) -> FileFormat | None:
    """The format a file's suffix names, case-insensitively: ``parquet``, ``csv`` or None."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in CSV_SUFFIXES:
        return "csv"
    return None


def parquet_files(folder: Path) -> tuple[Path, ...]:
    """The Parquet files of a folder dataset, in name order (hidden and ``_`` files skipped)."""
    files = tuple(
        sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and file_format(p) == "parquet" and not p.name.startswith((".", "_"))
        )
    )
    if not files:
        raise InvalidInput(f"folder {folder} holds no .parquet files")
    return files


def _file_source(path: Path) -> Source:
    if not path.exists():
        raise NotFound(f"no such file or folder: {path}")
    if path.is_dir():
        return _parquet_source(path, parquet_files(path))
    kind = file_format(path)
    if kind == "parquet":
        return _parquet_source(path, (path,))
    if kind == "csv":
        return _csv_source(path)
    raise InvalidInput(
        f"{path.name}: expected a .parquet, .pq or .csv file (or a folder of .parquet files), "
        f"got {path.suffix or 'no suffix'!r}"
    )


def _open_parquet(file: Path, schema: pa.Schema) -> pq.ParquetFile:
    """A reader of ``file`` that returns its text columns dictionary-encoded.

    ``pre_buffer=False``: with pyarrow's default, the reader keeps every row group it
    has read buffered until it closes, so memory grows with the file.
    """
    import pyarrow.parquet as pq

    text = [
        f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
    ]
    try:
        return pq.ParquetFile(file, pre_buffer=False, read_dictionary=text or None)
    except (pa.ArrowException, OSError) as exc:
        raise StorageError(f"cannot read {file}: {exc}") from exc


def _parquet_source(path: Path, files: tuple[Path, ...]) -> Source:
    import pyarrow.parquet as pq

    schemas = []
    rows = 0
    columnwise = True
    for file in files:
        try:
            meta = pq.read_metadata(file)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput(f"{file} is not a readable Parquet file: {exc}") from None
        schemas.append(meta.schema.to_arrow_schema())
        rows += meta.num_rows
        columnwise = columnwise and all(
            meta.row_group(i).num_rows <= _COLUMNWISE_MAX_ROWS for i in range(meta.num_row_groups)
        )
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InvalidInput(f"the Parquet files in {path} have clashing columns: {exc}") from None

    def batches(batch_rows: int) -> Iterator[pa.RecordBatch]:
        # pre_buffer=False: with pyarrow's default, the reader keeps every row group it
        # has read buffered until it closes, so memory grows with the file.
        for file in files:
            try:
                with pq.ParquetFile(file, pre_buffer=False) as reader:
                    yield from reader.iter_batches(batch_size=batch_rows)
            except (pa.ArrowException, OSError) as exc:
                raise StorageError(f"cannot read {file}: {exc}") from exc

    def groups() -> Iterator[ColumnGroup]:
        for file, file_schema in zip(files, schemas, strict=True):
            reader = _open_parquet(file, file_schema)
            with reader:
                yield from _row_groups(reader, file)

    @contextlib.contextmanager
    def open_groups() -> Iterator[list[ColumnGroup]]:
        with contextlib.ExitStack() as stack:
            held: list[ColumnGroup] = []
            for file, file_schema in zip(files, schemas, strict=True):
                reader = stack.enter_context(_open_parquet(file, file_schema))
                held.extend(_row_groups(reader, file))
            yield held

    return Source(
        path.name,
        "parquet",
        schema,
        rows,
        0,
        batches,
        files,
        groups if columnwise else None,
        open_groups if columnwise and len(files) <= _MAX_OPEN_FILES else None,
    )


def _row_groups(reader: pq.ParquetFile, file: Path) -> list[ColumnGroup]:
    lock = threading.Lock()  # one reader, used from the profiling threads in turn
    return [
        ColumnGroup(
            reader.metadata.row_group(i).num_rows,
            functools.partial(_read_column, reader, lock, file, i),
        )
        for i in range(reader.num_row_groups)
    ]


def _csv_source(path: Path) -> Source:
    import pyarrow.csv as pacsv

    read_options = pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES)
    try:
        with pacsv.open_csv(path, read_options=read_options) as reader:
            first = reader.schema
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"{path.name} is not a readable CSV file: {exc}") from None
    # Types are inferred from the first block only: widen integers to float so a later
    # block with a decimal point or an empty cell still converts, and read an all-empty
    # first block's columns as text.
    types = {}
    for field in first:
        if pa.types.is_integer(field.type):
            types[field.name] = pa.float64()
        elif pa.types.is_null(field.type):
            types[field.name] = pa.string()
    convert = pacsv.ConvertOptions(column_types=types)
    schema = pa.schema([pa.field(f.name, types.get(f.name, f.type)) for f in first])

    def batches(batch_rows: int) -> Iterator[pa.RecordBatch]:
        try:
            with pacsv.open_csv(path, read_options=read_options, convert_options=convert) as reader:
                for batch in reader:
                    yield from pa.Table.from_batches([batch]).to_batches(max_chunksize=batch_rows)
        except pa.ArrowInvalid as exc:
            raise InvalidInput(
                f"{path.name}: {exc}. A column's type is guessed from the file's first "
                f"{_CSV_BLOCK_BYTES >> 20} MB; convert the file to Parquet to fix its types"
            ) from None

    return Source(path.name, "csv", schema, None, path.stat().st_size, batches, (path,))
