"""A feature view's source as one DuckDB view with normalized columns.

Every path that reads feature rows (training sets, materialization, skew checks)
goes through :func:`register_source`, so each sees the same rows the same way. The
view it creates has, in order:

- the view's join keys, cast to their entities' declared types;
- ``__event_ms`` (BIGINT): the event time, in milliseconds since the epoch, UTC;
- ``__created_ms`` (BIGINT): the created time the same way, or NULL when the view
  has no created-timestamp column;
- the features asked for, cast to their declared types.

How a time column becomes milliseconds, by its type in the source:

- ``TIMESTAMP WITH TIME ZONE``: the instant it names;
- ``TIMESTAMP`` without a zone (and ``DATE``): read as UTC;
- integers (and whole floats): already milliseconds since the epoch (Keel's unit
  for times everywhere); a column of epoch *seconds* must be converted first;
- strings: parsed as ISO 8601; an offset (``+02:00``, ``Z``) is honoured, none
  means UTC.

Sources:

- a file source: a Parquet or CSV file, or a folder of them (every ``*.parquet``
  or ``*.csv`` under it, read with ``union_by_name``; folder names are not parsed
  as hive partitions, so a ``date=…`` folder adds no column);
- a dataset version: a table version is registered through Arrow, a file or folder
  version is read as a file source from its local copy;
- a SQL source: the needed columns of the table (or query) are streamed through
  SQLAlchemy in chunks of :data:`SQL_CHUNK_ROWS` rows into a DuckDB temporary
  table, which spills to disk past the connection's memory limit, so a large table
  never sits in Python memory whole.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, NotFound
from keel.features.extra import require

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from keel.client import Client
    from keel.config import Settings

__all__ = [
    "CREATED_MS",
    "DEFAULT_MEMORY_LIMIT",
    "EVENT_MS",
    "SQL_CHUNK_ROWS",
    "arrow_to_pandas",
    "arrow_type",
    "connect",
    "duckdb_type",
    "epoch_ms_sql",
    "key_dtypes",
    "pandas_column",
    "quote",
    "register_source",
]

#: The normalized event-time column of a registered source.
EVENT_MS = "__event_ms"
#: The normalized created-time column (NULL when the view has none).
CREATED_MS = "__created_ms"
#: DuckDB's memory limit when the caller names none; past it, DuckDB spills to disk.
DEFAULT_MEMORY_LIMIT = "4GB"
#: Rows per chunk when streaming a SQL source.
SQL_CHUNK_ROWS = 100_000

_DUCKDB_TYPES = {
    "int64": "BIGINT",
    "float64": "DOUBLE",
    "string": "VARCHAR",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
}
_INTEGER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}
_SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv",)}


@contextmanager
def connect(
    settings: Settings, memory_limit: str | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection for reading sources, closed (and its spill files removed) on exit.

    It runs in UTC (so zoneless times are UTC) under ``memory_limit`` and spills to a
    folder of its own under ``<home>/cache/duckdb``: two processes never share spill files.

    Raises:
        InvalidInput: ``memory_limit`` is not a size DuckDB accepts (``"4GB"``, ``"512MB"``),
            or DuckDB is not installed (``pip install 'keel[features]'``).
    """
    require("duckdb", what="reading feature sources (training sets, materialization)")
    import duckdb

    spill = settings.home / "cache" / "duckdb" / uuid.uuid4().hex
    spill.mkdir(parents=True, exist_ok=True)
    limit = memory_limit or DEFAULT_MEMORY_LIMIT
    try:
        try:
            con = duckdb.connect(config={"memory_limit": limit, "temp_directory": str(spill)})
        except duckdb.Error as exc:
            raise InvalidInput(
                f"memory_limit must be a size such as '4GB' or '512MB', got {limit!r} ({exc})"
            ) from None
        try:
            con.execute("SET TimeZone = 'UTC'")
            # DuckDB turns an ASOF join whose left side it guesses small into a nested loop;
            # an Arrow scan has no row count, so it guesses one row and a 100k-row join
            # takes minutes instead of a fraction of a second
            con.execute("SET asof_loop_join_threshold = 0")
            yield con
        finally:
            con.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def quote(name: str) -> str:
    """``name`` as a DuckDB identifier (double-quoted, inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_type(dtype: str) -> str:
    """The DuckDB type a declared feature or key type (:data:`DTYPES`) is cast to."""
    try:
        return _DUCKDB_TYPES[dtype]
    except KeyError:
        raise InvalidInput(
            f"unknown feature type {dtype!r}; expected one of {', '.join(_DUCKDB_TYPES)}"
        ) from None


def arrow_type(dtype: str) -> pa.DataType:
    """The Arrow type of a declared feature type (timestamps are UTC microseconds)."""
    import pyarrow as pa

    types = {
        "int64": pa.int64(),
        "float64": pa.float64(),
        "string": pa.string(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    try:
        return types[dtype]
    except KeyError:
        raise InvalidInput(
            f"unknown feature type {dtype!r}; expected one of {', '.join(types)}"
        ) from None


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """A feature table as pandas: int64 and bool columns stay nullable (``Int64``, ``boolean``).

    A missing integer feature is ``<NA>`` instead of turning its column into floats;
    floats keep NaN, timestamps are UTC.
    """
    import pandas as pd
    import pyarrow as pa

    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=mapping.get)


def pandas_column(values: Sequence[Any], dtype: str) -> Any:
    """Python values of a declared type as the column :func:`arrow_to_pandas` would give.

    The online path builds an on-demand view's input one request at a time; through
    here its columns have the dtypes a training set's have, so the function sees the
    same input either way. Numbers and booleans take pandas' own constructors (an
    online request holds a few rows, and Arrow's round trip would cost more than the
    read); strings and timestamps go through Arrow.

    Args:
        values: the values (None for missing); for ``timestamp``, datetimes (zoneless
            ones are UTC) or integer milliseconds since the epoch.
        dtype: one of :data:`keel.features.definitions.DTYPES`.

    Raises:
        InvalidInput: a value that is not of the type.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    try:
        if dtype == "float64":
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        if dtype == "int64":
            return pd.array(list(values), dtype="Int64")
        if dtype == "bool":
            return pd.array(list(values), dtype="boolean")
        target = arrow_type(dtype)
        if dtype == "timestamp" and any(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            array = pa.array(values, pa.int64()).cast(pa.timestamp("ms", tz="UTC")).cast(target)
        else:
            array = pa.array(values, target)
    except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidInput(
            f"expected {dtype} values, got {list(values)[:5]!r} ({type(exc).__name__}: {exc})"
        ) from None
    return arrow_to_pandas(pa.table({"v": array}))["v"]


def epoch_ms_sql(column: str, source_type: str, what: str) -> str:
    """SQL for the milliseconds since the epoch (UTC) of ``column``, by its DuckDB type.

    Args:
        column: the column, already quoted.
        source_type: its DuckDB type as DuckDB spells it (``TIMESTAMP WITH TIME ZONE`` …).
        what: how to name the column in an error (``feature view 'v''s column 'ts'``).

    Raises:
        InvalidInput: a type that holds no time (a list, a blob …).
    """
    kind = source_type.upper()
    if kind.startswith("TIMESTAMP") or kind == "DATE":
        # a zoneless timestamp is UTC: the connection's TimeZone is UTC (see connect())
        return f"epoch_ms(CAST({column} AS TIMESTAMPTZ))"
    if kind in _INTEGER_TYPES:
        return f"CAST({column} AS BIGINT)"
    if kind in ("DOUBLE", "FLOAT") or kind.startswith("DECIMAL"):
        return f"CAST(floor({column}) AS BIGINT)"
    if kind == "VARCHAR":
        return f"epoch_ms(CAST({column} AS TIMESTAMPTZ))"
    raise InvalidInput(
        f"{what} has type {source_type}; expected a timestamp, a date, an ISO 8601 string "
        "or an integer of milliseconds since the epoch"
    )


def key_dtypes(client: Client, view_spec: Mapping[str, Any]) -> dict[str, str]:
    """The declared type of each join key of a view, from its entities' stored specs."""
    out: dict[str, str] = {}
    for name in view_spec["entities"]:
        entity = client.features.get(name, kind="entity").spec
        for key in entity["join_keys"]:
            out[key] = entity["dtype"]
    missing = [k for k in view_spec["join_keys"] if k not in out]
    if missing:
        raise InvalidInput(
            f"feature view {view_spec['name']!r} has join key(s) {missing} that none of its "
            f"entities {view_spec['entities']} declares; apply the definitions again"
        )
    return out


def register_source(
    con: duckdb.DuckDBPyConnection,
    client: Client,
    view_spec: Mapping[str, Any],
    name: str,
    *,
    columns: Sequence[str] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> None:
    """Create the DuckDB view ``name`` over a feature view's source, columns normalized.

    Args:
        con: the connection to create it in (its TimeZone must be UTC; see the
            module docstring for how times are read).
        client: the client whose settings find dataset versions and entities.
        view_spec: the feature view's stored spec.
        name: the DuckDB view to create (replaced if it exists).
        columns: the features to include (default: all of the view's).
        start_ms: keep only rows with ``__event_ms >= start_ms``.
        end_ms: keep only rows with ``__event_ms < end_ms``.

    Raises:
        InvalidInput: the source lacks a join key, the timestamp column(s) or a
            feature (the message names the view, the source and the columns it has),
            or a feature is not one of the view's.
        NotFound: a file source's path does not exist.
    """
    view = view_spec["name"]
    features = {f["name"]: f["dtype"] for f in view_spec["features"]}
    wanted = list(features) if columns is None else list(dict.fromkeys(columns))
    unknown = [c for c in wanted if c not in features]
    if unknown:
        raise InvalidInput(
            f"feature view {view!r} has no feature(s) {unknown}; it has {list(features)}"
        )
    keys = key_dtypes(client, view_spec)
    ts, created = view_spec["timestamp_field"], view_spec.get("created_timestamp_field")
    needed = [*view_spec["join_keys"], ts, *([created] if created else []), *wanted]
    needed = list(dict.fromkeys(needed))
    raw, label = _raw_relation(con, client, view_spec, name, needed)
    import duckdb

    try:
        described = con.sql(f"SELECT * FROM {raw}")
    except duckdb.Error as exc:  # an unreadable file: a bad Parquet footer, a CSV that won't parse
        raise InvalidInput(
            f"feature view {view!r}: its source {label} cannot be read: {str(exc).splitlines()[0]}"
        ) from None
    types = {c: str(t) for c, t in zip(described.columns, described.types, strict=True)}
    _check_columns(view, label, needed, list(types))
    select = [f"CAST({quote(k)} AS {duckdb_type(keys[k])}) AS {quote(k)}" for k in keys]
    select.append(
        f"{epoch_ms_sql(quote(ts), types[ts], f'feature view {view!r} column {ts!r}')} "
        f"AS {EVENT_MS}"
    )
    if created:
        created_sql = epoch_ms_sql(
            quote(created), types[created], f"feature view {view!r} column {created!r}"
        )
        select.append(f"{created_sql} AS {CREATED_MS}")
    else:
        select.append(f"CAST(NULL AS BIGINT) AS {CREATED_MS}")
    select += [f"CAST({quote(f)} AS {duckdb_type(features[f])}) AS {quote(f)}" for f in wanted]
    body = f"SELECT {', '.join(select)} FROM {raw}"
    bounds = []
    if start_ms is not None:
        bounds.append(f"{EVENT_MS} >= {int(start_ms)}")
    if end_ms is not None:
        bounds.append(f"{EVENT_MS} < {int(end_ms)}")
    if bounds:
        body = f"SELECT * FROM ({body}) WHERE {' AND '.join(bounds)}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(name)} AS {body}")


def _check_columns(view: str, label: str, needed: Sequence[str], have: Sequence[str]) -> None:
    missing = [c for c in needed if c not in have]
    if missing:
        what = f"column {missing[0]!r}" if len(missing) == 1 else f"columns {missing}"
        raise InvalidInput(
            f"feature view {view!r}: its source {label} has no {what}; columns: {list(have)}; "
            "fix the source or the view's definition and apply it again"
        )


def _sql_label(source: Mapping[str, Any]) -> str:
    what = f"table {source['table']!r}" if source.get("table") else "query"
    return f"{what} at {_safe_url(source['url'])}"


# -- the raw relation of each kind of source ---------------------------------------------------


def _raw_relation(
    con: duckdb.DuckDBPyConnection,
    client: Client,
    spec: Mapping[str, Any],
    name: str,
    needed: list[str],
) -> tuple[str, str]:
    """SQL for the source's rows as they are, and how to name the source in messages."""
    source = spec["source"]
    kind = source.get("type")
    if kind == "file":
        path = Path(source["path"])
        return _file_relation(spec["name"], path, source.get("format")), f"{path}"
    if kind == "dataset":
        return _dataset_relation(con, client, spec, name, source["uri"])
    if kind == "sql":
        return _sql_relation(con, spec, name, source, needed), _sql_label(source)
    raise InvalidInput(
        f"feature view {spec['name']!r} has a source of type {kind!r}; expected file, dataset or sql"
    )


def _file_format(view: str, path: Path, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    if path.is_file():
        for name, suffixes in _SUFFIXES.items():
            if path.suffix.lower() in suffixes:
                return name
        raise InvalidInput(
            f"feature view {view!r}: cannot tell the format of {path} from its suffix; "
            "pass format='parquet' or format='csv' to its FileSource"
        )
    for name, suffixes in _SUFFIXES.items():
        if any(next(path.rglob(f"*{s}"), None) is not None for s in suffixes):
            return name
    raise InvalidInput(
        f"feature view {view!r}: its source folder {path} holds no .parquet or .csv files"
    )


def _file_relation(view: str, path: Path, fmt: str | None) -> str:
    """``read_parquet``/``read_csv`` over a file or every matching file under a folder."""
    if not path.exists():
        raise NotFound(
            f"feature view {view!r}: its source {path} does not exist; write the files there "
            "or point the FileSource elsewhere and apply again"
        )
    fmt = _file_format(view, path, fmt)
    if path.is_dir():
        globs = [
            str(path / "**" / f"*{s}")
            for s in _SUFFIXES[fmt]
            if next(path.rglob(f"*{s}"), None) is not None
        ]
        if not globs:
            raise InvalidInput(
                f"feature view {view!r}: its source folder {path} holds no {fmt} files"
            )
        target = "[" + ", ".join(_literal(g) for g in globs) + "]"
    else:
        target = _literal(str(path))
    if fmt == "parquet":
        return f"read_parquet({target}, hive_partitioning = false, union_by_name = true)"
    return (
        f"read_csv({target}, auto_detect = true, hive_partitioning = false, union_by_name = true)"
    )


def _dataset_relation(
    con: duckdb.DuckDBPyConnection, client: Client, spec: Mapping[str, Any], name: str, uri: str
) -> tuple[str, str]:
    import pandas as pd
    import pyarrow as pa

    from keel.data import load_dataset

    loaded = load_dataset(uri, settings=client.transport.settings)
    if isinstance(loaded, pd.DataFrame):
        raw = f"{name}__raw"
        con.register(raw, pa.Table.from_pandas(loaded, preserve_index=False))
        return quote(raw), uri
    return _file_relation(spec["name"], Path(loaded), None), uri


def _safe_url(url: str) -> str:
    """A SQLAlchemy URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL fails later with SQLAlchemy's own error
        return "<the SQL source's URL>"


def _sql_relation(
    con: duckdb.DuckDBPyConnection,
    spec: Mapping[str, Any],
    name: str,
    source: Mapping[str, Any],
    needed: list[str],
) -> str:
    """Stream the needed columns of a SQL table or query into a DuckDB temporary table."""
    import sqlalchemy as sa

    view = spec["name"]
    url = source["url"]
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise InvalidInput(
            f"feature view {view!r}: its SQL source's URL {_safe_url(url)} is not usable: {exc}"
        ) from None
    raw = f"{name}__raw"
    try:
        with engine.connect() as conn:
            probe: sa.Executable
            if source.get("table"):
                schema, _, table = str(source["table"]).rpartition(".")
                base: Any = sa.table(table, schema=schema or None)
                probe = sa.select(sa.literal_column("*")).select_from(base).where(sa.false())
            else:
                query = str(source["query"]).strip().rstrip(";")
                probe = sa.text(f"SELECT * FROM ({query}) AS keel_source WHERE 1 = 0")
            have = list(conn.execute(probe).keys())
            _check_columns(view, _sql_label(source), needed, have)
            if not source.get("table"):
                base = sa.text(query).columns(*(sa.column(c) for c in have)).subquery("keel_source")
            stmt: sa.Executable = sa.select(*(sa.column(c) for c in needed)).select_from(base)
            _stream_into(con, conn, stmt, raw, needed)
    except sa.exc.SQLAlchemyError as exc:
        raise InvalidInput(
            f"feature view {view!r}: reading its SQL source at {_safe_url(url)} failed: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()
    return quote(raw)


def _stream_into(
    con: duckdb.DuckDBPyConnection,
    conn: Any,
    stmt: Any,
    raw: str,
    columns: list[str],
) -> None:
    """Copy ``stmt``'s rows into the temporary table ``raw``, one chunk at a time.

    Chunks come from a server-side cursor where the driver has one (PostgreSQL), so
    at most one chunk of rows is in Python at a time; DuckDB holds the table and
    spills it under the connection's memory limit.
    """
    import pandas as pd
    import pyarrow as pa

    streaming = conn.execution_options(stream_results=True, max_row_buffer=SQL_CHUNK_ROWS)
    created = False
    chunk_name = f"{raw}__chunk"
    for frame in pd.read_sql(stmt, streaming, chunksize=SQL_CHUNK_ROWS):
        table = pa.Table.from_pandas(frame, preserve_index=False)
        # a column of only NULLs in the first chunk has no type to create the table with
        table = _null_columns_as_strings(table)
        con.register(chunk_name, table)
        try:
            if not created:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {quote(raw)} AS SELECT * FROM {quote(chunk_name)}"
                )
                created = True
            else:
                con.execute(f"INSERT INTO {quote(raw)} BY NAME SELECT * FROM {quote(chunk_name)}")
        finally:
            con.unregister(chunk_name)
    if not created:  # no rows: an empty table with the columns, typed loosely
        cols = ", ".join(f"CAST(NULL AS VARCHAR) AS {quote(c)}" for c in columns)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {quote(raw)} AS SELECT {cols} LIMIT 0")


def _null_columns_as_strings(table: pa.Table) -> pa.Table:
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    return table
