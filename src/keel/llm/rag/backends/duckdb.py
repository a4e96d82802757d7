"""The DuckDB backend: one DuckDB database file per index table, searched with the vss extension.

A location is a local file ``<dir>/<key>.duckdb`` holding the table ``chunks``
(:func:`~keel.llm.rag.backends.base.table_schema`, the vector as ``FLOAT[dim]``).
DuckDB cannot keep an HNSW index on S3, so this backend is local only; over an S3
artifact store the index reads it from the client's cache folder.

Search is ``ORDER BY array_cosine_distance(vector, ?) LIMIT k``: on a table of fewer
than :data:`~keel.llm.rag.backends.base.EXACT_SEARCH_ROWS` rows that is an exact scan;
larger tables get an HNSW index (cosine, :data:`HNSW_M`, :data:`EF_CONSTRUCTION`),
which DuckDB's planner uses for that very query shape, searched with
:data:`EF_SEARCH` candidates (``bench/rag.py`` measures the recall).

The vss extension is loaded from the ``duckdb-extension-vss`` package, whose version
must equal DuckDB's: the extension binary is inside the package, so nothing is
downloaded at run time (automatic install and load of extensions are turned off on
every connection). Keeping an HNSW index in the database file is an *experimental*
DuckDB feature (``hnsw_enable_experimental_persistence``); its known risk is losing
the index when a crash interrupts a write, which cannot happen here: the file is
written under a temporary name, checkpointed, closed and only then renamed into
place, and it is opened read-only afterwards.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from keel.errors import BackendUnavailable, InvalidInput, NotFound
from keel.llm.rag.backends.base import (
    EXACT_SEARCH_ROWS,
    RESULT_COLUMNS,
    IndexBackend,
    SearchTable,
    table_schema,
)

__all__ = [
    "EF_CONSTRUCTION",
    "EF_SEARCH",
    "HNSW_M",
    "DuckDBBackend",
    "DuckDBTable",
    "vss_extension_path",
]

#: Neighbours per HNSW node.
HNSW_M = 16
#: Candidates kept while the HNSW graph is built.
EF_CONSTRUCTION = 128
#: Candidates kept while the HNSW graph is searched (recall@10 0.99 at 100,000 rows).
EF_SEARCH = 64

_TABLE = "chunks"
_INDEX = "chunks_vector_hnsw"
_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
# Quoted: ``row`` and ``position`` are also SQL keywords.
_SELECT = ", ".join(f'"{c}"' for c in RESULT_COLUMNS if c != "score")


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise InvalidInput(
            "the duckdb index backend needs DuckDB and its vss extension: "
            "pip install 'keel[rag-duckdb]' (duckdb with its vss extension)"
        ) from None
    return duckdb


def vss_extension_path() -> Path | None:
    """The vss extension binary shipped for the installed DuckDB, or None if there is none.

    The ``duckdb-extension-vss`` package keeps it at
    ``duckdb_extension_vss/extensions/v<duckdb version>/vss.duckdb_extension``.
    """
    duckdb = _duckdb()
    try:
        import duckdb_extension_vss
    except ImportError:
        return None
    path = (
        Path(duckdb_extension_vss.__file__).parent
        / "extensions"
        / f"v{duckdb.__version__}"
        / "vss.duckdb_extension"
    )
    return path if path.is_file() else None


def _load_vss(connection: Any) -> None:
    path = vss_extension_path()
    if path is None:
        version = _duckdb().__version__
        raise InvalidInput(
            f"an index of {EXACT_SEARCH_ROWS:,} chunks or more needs DuckDB's vss extension "
            f"for DuckDB {version}, and none is installed: "
            f"pip install duckdb-extension-vss=={version} (or use the lance backend)"
        )
    connection.execute(f"LOAD '{_quoted(path)}'")


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def _local_path(location: str) -> Path:
    if "://" in location:
        raise InvalidInput(
            f"the duckdb index backend keeps tables in local files only, got {location!r}; "
            "use the lance backend for an index on S3"
        )
    path = Path(location)
    if path.suffix != DuckDBBackend.suffix or path.name == DuckDBBackend.suffix:
        raise InvalidInput(f"a DuckDB location must be <folder>/<name>.duckdb, got {location!r}")
    return path


def _dimension(table: pa.Table) -> int | None:
    """The vector length of ``table``'s ``vector`` column, or None if it is not a vector."""
    if "vector" not in table.column_names:
        return None
    kind = table.schema.field("vector").type
    if pa.types.is_fixed_size_list(kind):
        return int(kind.list_size)
    return None


class DuckDBTable(SearchTable):
    """An opened DuckDB index table (read-only). Each thread searches on its own cursor."""

    def __init__(self, connection: Any, dim: int, rows: int) -> None:
        self.connection = connection
        self.dim = dim
        self.rows = rows
        self._local = threading.local()
        query = f"$1::FLOAT[{dim}]"
        # This shape (ORDER BY the distance to a parameter, LIMIT) is what the vss planner
        # rule swaps for an HNSW index scan where the table has one.
        self._sql = (
            f"SELECT {_SELECT}, array_cosine_similarity(vector, {query})::FLOAT AS score "
            f"FROM {_TABLE} ORDER BY array_cosine_distance(vector, {query}) LIMIT $2"
        )

    def _cursor(self) -> Any:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self.connection.cursor()
        return cursor

    def search(self, vector: np.ndarray, k: int) -> pa.Table:
        query = np.asarray(vector, dtype=np.float32)
        if query.shape != (self.dim,):
            raise InvalidInput(
                f"the query vector has shape {query.shape}, the index holds {self.dim}-dimension "
                "vectors; embed the question with the index's own embedder"
            )
        found = self._cursor().execute(self._sql, [query.tolist(), int(k)])
        result: pa.Table = found.to_arrow_table()
        return result.select(list(RESULT_COLUMNS))

    def count(self) -> int:
        return self.rows

    def close(self) -> None:
        self.connection.close()


class DuckDBBackend(IndexBackend):
    """DuckDB database files with an HNSW index (vss extension), local folders only."""

    name: ClassVar[str] = "duckdb"
    suffix: ClassVar[str] = ".duckdb"
    remote: ClassVar[bool] = False

    def exists(self, location: str, storage_options: Mapping[str, str] | None = None) -> bool:
        # Only a finished file is renamed to the location (see write), so being there is enough.
        return _local_path(location).is_file()

    def write(
        self,
        location: str,
        table: pa.Table,
        *,
        dim: int,
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        path = _local_path(location)
        if path.is_file():
            return  # the location is the content's address: what is there is this table
        given = _dimension(table)
        if given != dim:
            raise InvalidInput(
                f"the table's vectors have {given} dimensions, the index expects {dim}; "
                "every chunk must be embedded by the index's embedder"
            )
        schema = table_schema(dim)
        table = table.select(schema.names).cast(schema)
        duckdb = _duckdb()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        try:
            connection = duckdb.connect(str(partial), config=_CONFIG)
            try:
                indexed = table.num_rows >= EXACT_SEARCH_ROWS
                if indexed:
                    _load_vss(connection)
                    connection.execute("SET hnsw_enable_experimental_persistence = true")
                connection.register("incoming", table)
                connection.execute(
                    f"CREATE TABLE {_TABLE} AS SELECT vector::FLOAT[{dim}] AS vector, "
                    f'{_SELECT} FROM incoming ORDER BY "row"'
                )
                connection.unregister("incoming")
                if indexed:
                    connection.execute(
                        f"CREATE INDEX {_INDEX} ON {_TABLE} USING HNSW (vector) WITH "
                        f"(metric = 'cosine', M = {HNSW_M}, ef_construction = {EF_CONSTRUCTION})"
                    )
                connection.execute("CHECKPOINT")
            finally:
                connection.close()
            os.replace(partial, path)
        except duckdb.Error as exc:
            raise BackendUnavailable(f"cannot write the DuckDB table {location}: {exc}") from exc
        finally:
            for leftover in (partial, partial.with_name(partial.name + ".wal")):
                leftover.unlink(missing_ok=True)

    def open(self, location: str, storage_options: Mapping[str, str] | None = None) -> DuckDBTable:
        path = _local_path(location)
        if not path.is_file():
            raise NotFound(f"no DuckDB index table at {location}")
        duckdb = _duckdb()
        try:
            connection = duckdb.connect(str(path), read_only=True, config=_CONFIG)
        except duckdb.Error as exc:
            raise BackendUnavailable(f"cannot open the DuckDB table {location}: {exc}") from exc
        try:
            indexed = connection.execute(
                "SELECT count(*) FROM duckdb_indexes() WHERE table_name = ?", [_TABLE]
            ).fetchone()[0]
            if indexed:
                _load_vss(connection)
                connection.execute(f"SET GLOBAL hnsw_ef_search = {EF_SEARCH}")
            (rows,) = connection.execute(f"SELECT count(*) FROM {_TABLE}").fetchone()
            (kind,) = connection.execute(
                "SELECT data_type FROM duckdb_columns() "
                "WHERE table_name = ? AND column_name = 'vector'",
                [_TABLE],
            ).fetchone()
        except BaseException:
            connection.close()
            raise
        # The column is FLOAT[<dim>] (see write).
        return DuckDBTable(connection, int(kind.rpartition("[")[2].rstrip("]")), int(rows))
