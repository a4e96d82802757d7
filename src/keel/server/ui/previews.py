"""What an artifact's preview shows: its kind by name, one page of a table, the head of a text.

A preview never trusts an artifact: the kind comes from the file's extension (an
image is only ever an ``<img>``, an HTML file only ever a sandboxed frame), and the
readers stop early. A CSV is streamed in blocks, so only the page asked for is kept;
a Parquet file is read one row group at a time, only those that hold the page;
a text shows its first :data:`TEXT_LIMIT` bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any, Literal

__all__ = [
    "IMAGE_TYPES",
    "JSON_LIMIT",
    "PAGE_ROWS",
    "TEXT_LIMIT",
    "PreviewKind",
    "TablePage",
    "head_text",
    "pretty_json",
    "preview_kind",
    "served_as",
    "table_page",
]

#: Rows on one page of a table preview.
PAGE_ROWS = 100
#: Bytes of a text shown before it is cut (with a note saying so).
TEXT_LIMIT = 256 * 1024
#: The largest JSON document shown pretty; a larger one is shown as cut text.
JSON_LIMIT = 1024 * 1024

#: The images a page shows with ``<img>``, by extension, with the type they are served as.
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
_TABLES = {".csv": ",", ".tsv": "\t"}
_PARQUET = {".parquet", ".pq"}
_HTML = {".html", ".htm"}
_TEXT = {".txt", ".log", ".md", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".py", ".sql",
         ".sh", ".r", ".xml", ".jsonl", ".ndjson", ".out", ".err", ".rst"}  # fmt: skip

#: How a page previews an artifact.
PreviewKind = Literal["image", "table", "json", "html", "text"]

#: A raw response that may never run script, load anything, or be framed by another site.
_LOCKED = "sandbox; default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"
#: Keel's HTML reports carry their script inline (plotly); in an opaque-origin sandbox
#: with nothing to connect to, that script can draw the page and reach nothing else.
_REPORT = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; frame-ancestors 'self'"
)


def _suffix(path: str) -> str:
    return PurePosixPath(path).suffix.lower()


def preview_kind(path: str) -> PreviewKind:
    """How the artifact at ``path`` is shown, from its extension (its bytes are not trusted)."""
    suffix = _suffix(path)
    if suffix in IMAGE_TYPES:
        return "image"
    if suffix in _TABLES or suffix in _PARQUET:
        return "table"
    if suffix == ".json":
        return "json"
    if suffix in _HTML:
        return "html"
    return "text"


def served_as(path: str) -> tuple[str, str, bool]:
    """The content type, Content-Security-Policy and whether to serve as a download.

    Only an image keeps its own type; HTML is ``text/html`` under a CSP ``sandbox``
    (so it runs only as an opaque origin, in the page's sandboxed frame); text is
    ``text/plain``; anything else is ``application/octet-stream`` and downloaded.
    """
    suffix = _suffix(path)
    if suffix in IMAGE_TYPES:
        return IMAGE_TYPES[suffix], _LOCKED, False
    if suffix in _HTML:
        return "text/html; charset=utf-8", _REPORT, False
    if suffix == ".json":
        return "application/json", _LOCKED, False
    if suffix in _TABLES or suffix in _TEXT:
        return "text/plain; charset=utf-8", _LOCKED, False
    return "application/octet-stream", _LOCKED, True


@dataclass(frozen=True)
class TablePage:
    """One page of a table: its columns, the rows from ``offset``, and how many it has."""

    columns: list[str]
    rows: list[list[str]]
    total: int
    offset: int


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _rows(table: Any) -> list[list[str]]:
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [[_cell(column[r]) for column in columns] for r in range(table.num_rows)]


def table_page(handle: IO[bytes], path: str, offset: int, limit: int = PAGE_ROWS) -> TablePage:
    """Rows ``offset`` to ``offset + limit`` of the CSV, TSV or Parquet file open in ``handle``.

    Raises:
        pyarrow.ArrowException: the bytes are not a table of that format (the page
            says so, with pyarrow's reason).
    """
    suffix = _suffix(path)
    if suffix in _PARQUET:
        return _parquet_page(handle, offset, limit)
    return _csv_page(handle, _TABLES.get(suffix, ","), offset, limit)


def _parquet_page(handle: IO[bytes], offset: int, limit: int) -> TablePage:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(handle)
    meta = parquet.metadata
    pieces = []
    first = 0
    # only the row groups that hold the page are read: the footer says where they start
    for group in range(meta.num_row_groups):
        size = meta.row_group(group).num_rows
        if first + size > offset and first < offset + limit:
            table = parquet.read_row_group(group)
            low = max(offset - first, 0)
            pieces.append(table.slice(low, offset + limit - first - low))
        first += size
    columns = parquet.schema_arrow.names
    rows = _rows(pa.concat_tables(pieces)) if pieces else []
    return TablePage(columns, rows, meta.num_rows, offset)


def _csv_page(handle: IO[bytes], delimiter: str, offset: int, limit: int) -> TablePage:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    reader = pacsv.open_csv(handle, parse_options=pacsv.ParseOptions(delimiter=delimiter))
    pieces = []
    total = 0
    # streamed block by block: the count needs the whole file, the page only its rows
    for batch in reader:
        size = batch.num_rows
        if total + size > offset and total < offset + limit:
            low = max(offset - total, 0)
            pieces.append(batch.slice(low, offset + limit - total - low))
        total += size
    columns = reader.schema.names
    rows = _rows(pa.Table.from_batches(pieces, schema=reader.schema)) if pieces else []
    return TablePage(columns, rows, total, offset)


def head_text(handle: IO[bytes], limit: int = TEXT_LIMIT) -> tuple[str, bool]:
    """The first ``limit`` bytes of a text as a string, and whether there was more."""
    data = handle.read(limit + 1)
    cut = len(data) > limit
    # a cut may split a multi-byte character: "replace" shows it as one mark, not an error
    return data[:limit].decode("utf-8", "replace"), cut


def pretty_json(data: bytes) -> str:
    """``data`` as indented JSON.

    Raises:
        ValueError: ``data`` is not JSON (the page shows it as text instead).
    """
    return json.dumps(json.loads(data), indent=2, ensure_ascii=False)
