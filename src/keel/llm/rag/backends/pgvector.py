"""The pgvector backend (optional): an index table in a team's PostgreSQL with the ``vector`` extension.

A location is ``postgresql://user@host:5432/db#<table>``: the database's URL (a
SQLAlchemy-style ``postgresql+psycopg://`` is accepted too) and, after ``#``, the
name of the table. The table holds the columns of
:func:`~keel.llm.rag.backends.base.table_schema`, the vector as ``vector(dim)``.
Tables of :data:`~keel.llm.rag.backends.base.EXACT_SEARCH_ROWS` rows or more get an
HNSW index (``vector_cosine_ops``), searched with ``hnsw.ef_search`` =
:data:`EF_SEARCH`; smaller ones are scanned exactly.

The server must offer the extension (``pg_available_extensions`` lists ``vector``);
it is created in the database on first write if the user may. Without it, writing
fails with a message that says so. A table is written under a temporary name and
renamed in the same transaction that finishes it, so a complete table is the only
kind a reader can find.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
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

__all__ = ["EF_SEARCH", "PgvectorBackend", "PgvectorTable", "has_pgvector"]

#: Candidates kept while the HNSW graph is searched.
EF_SEARCH = 64
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_COLUMNS = ", ".join(f'"{c}"' for c in RESULT_COLUMNS if c != "score")


def _split(location: str) -> tuple[str, str]:
    """``(connection URL, table)`` of ``postgresql://…#table``."""
    url, _, table = location.partition("#")
    url = _plain(url)
    if not url.startswith(("postgresql://", "postgres://")) or not _TABLE_NAME.fullmatch(table):
        raise InvalidInput(
            "a pgvector location must be postgresql://user@host/db#<table> with a table name "
            f"of lower-case letters, digits and underscores, got {location.split('@')[-1]!r}"
        )
    return url, table


def _plain(url: str) -> str:
    """A libpq URL of a SQLAlchemy-style one (``postgresql+psycopg://`` -> ``postgresql://``)."""
    return re.sub(r"^postgresql\+psycopg://", "postgresql://", url)


def _connect(url: str) -> Any:
    try:
        import psycopg
    except ImportError:
        raise InvalidInput(
            "the pgvector index backend needs psycopg: pip install psycopg"
        ) from None
    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise BackendUnavailable(f"cannot reach the PostgreSQL server for pgvector: {exc}") from exc


def _available(connection: Any) -> bool:
    found = connection.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
    ).fetchone()
    return found is not None


def has_pgvector(url: str) -> bool:
    """Whether the PostgreSQL server at ``url`` offers the ``vector`` extension."""
    with _connect(_plain(url)) as connection:
        return _available(connection)


def _vector_text(vector: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


class PgvectorTable(SearchTable):
    """An opened pgvector table (one connection; searches are serialized on it)."""

    def __init__(self, connection: Any, table: str, dim: int, rows: int) -> None:
        self.connection = connection
        self.table = table
        self.dim = dim
        self.rows = rows

    def search(self, vector: np.ndarray, k: int) -> pa.Table:
        query = np.asarray(vector, dtype=np.float32)
        if query.shape != (self.dim,):
            raise InvalidInput(
                f"the query vector has shape {query.shape}, the index holds {self.dim}-dimension "
                "vectors; embed the question with the index's own embedder"
            )
        text = _vector_text(query)
        found = self.connection.execute(
            f"SELECT {_COLUMNS}, (1 - (vector <=> %s::vector))::real AS score "
            f'FROM "{self.table}" ORDER BY vector <=> %s::vector LIMIT %s',
            [text, text, int(k)],
        ).fetchall()
        columns: list[tuple[Any, ...]] = (
            list(zip(*found, strict=True)) if found else [() for _ in RESULT_COLUMNS]
        )
        schema = table_schema(self.dim)
        fields = [schema.field(c) for c in RESULT_COLUMNS if c != "score"]
        arrays = [pa.array(col, f.type) for col, f in zip(columns, fields, strict=False)]
        arrays.append(pa.array(columns[-1], pa.float32()))
        return pa.Table.from_arrays(arrays, names=list(RESULT_COLUMNS))

    def count(self) -> int:
        return self.rows

    def close(self) -> None:
        self.connection.close()


class PgvectorBackend(IndexBackend):
    """Tables in a PostgreSQL database with the pgvector extension."""

    name: ClassVar[str] = "pgvector"
    suffix: ClassVar[str] = ""
    remote: ClassVar[bool] = True

    def exists(self, location: str, storage_options: Mapping[str, str] | None = None) -> bool:
        url, table = _split(location)
        with _connect(url) as connection:
            found = connection.execute("SELECT to_regclass(%s)", [f'"{table}"']).fetchone()
        return bool(found and found[0])

    def write(
        self,
        location: str,
        table: pa.Table,
        *,
        dim: int,
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        url, name = _split(location)
        kind = table.schema.field("vector").type if "vector" in table.column_names else None
        given = kind.list_size if kind is not None and pa.types.is_fixed_size_list(kind) else None
        if given != dim:
            raise InvalidInput(
                f"the table's vectors have {given} dimensions, the index expects {dim}; "
                "every chunk must be embedded by the index's embedder"
            )
        table = table.select(table_schema(dim).names).cast(table_schema(dim))
        partial = f"{name[:40]}_partial_{uuid.uuid4().hex[:12]}"
        with _connect(url) as connection:
            if not _available(connection):
                raise InvalidInput(
                    "this PostgreSQL server lacks the pgvector extension "
                    "(pg_available_extensions has no 'vector'); install it on the server, "
                    "or use the lance backend"
                )
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
            with connection.transaction():
                connection.execute(
                    f'CREATE TABLE "{partial}" (vector vector({dim}) NOT NULL, "row" bigint '
                    'PRIMARY KEY, digest text NOT NULL, path text NOT NULL, "position" integer '
                    "NOT NULL, text text NOT NULL)"
                )
                with connection.cursor().copy(
                    f'COPY "{partial}" (vector, {_COLUMNS}) FROM STDIN'
                ) as copy:
                    vectors = table["vector"].combine_chunks().flatten().to_numpy()
                    vectors = vectors.reshape(-1, dim)
                    rest = [table[c].to_pylist() for c in RESULT_COLUMNS if c != "score"]
                    for vector, *values in zip(vectors, *rest, strict=True):
                        copy.write_row([_vector_text(vector), *values])
                if table.num_rows >= EXACT_SEARCH_ROWS:
                    connection.execute(
                        f'CREATE INDEX ON "{partial}" USING hnsw (vector vector_cosine_ops)'
                    )
                if connection.execute("SELECT to_regclass(%s)", [f'"{name}"']).fetchone()[0]:
                    connection.execute(f'DROP TABLE "{partial}"')  # written meanwhile: keep it
                else:
                    connection.execute(f'ALTER TABLE "{partial}" RENAME TO "{name}"')

    def open(
        self, location: str, storage_options: Mapping[str, str] | None = None
    ) -> PgvectorTable:
        url, name = _split(location)
        connection = _connect(url)
        try:
            if not connection.execute("SELECT to_regclass(%s)", [f'"{name}"']).fetchone()[0]:
                raise NotFound(f"no pgvector table {name!r} in that database")
            connection.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
            (rows,) = connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()
            (dim,) = connection.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attname = 'vector'",
                [f'"{name}"'],
            ).fetchone()
        except BaseException:
            connection.close()
            raise
        return PgvectorTable(connection, name, int(dim), int(rows))
