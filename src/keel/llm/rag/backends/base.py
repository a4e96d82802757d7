"""The vector backend interface: write a table of chunks with vectors, open it, search it.

A RAG index version's content is its index document (chunks and vectors as two
content-addressed Parquet blobs). The queryable table is *derived* from those
blobs: a backend materializes it once at a location and answers nearest-neighbour
searches over it. Because the table is a cache of immutable content, a location is
written once and never updated; a backend may assume that what it finds complete at a
location is the table it would write there.

The table a backend receives from :meth:`IndexBackend.write` has one row per chunk
occurrence and these columns (all non-null)::

    vector    fixed_size_list<float32>[dim]   unit-length rows (cosine == dot product)
    row       int64     0..n-1, the chunk's row number in the index's chunks blob
    digest    string    BLAKE3 hex digest of the chunk's text
    path      string    source path of the document inside the dataset version
    position  int32     the chunk's ordinal inside its document (0-based)
    text      string    the chunk's text

:meth:`SearchTable.search` returns every column except ``vector``, plus ``score``
(float32 cosine similarity, higher is closer), sorted by descending ``score``, at most
``k`` rows. Backends choose their own index: small tables (fewer than
:data:`EXACT_SEARCH_ROWS` rows) are searched exactly; larger ones may use an
approximate index tuned for recall@10 >= 0.95 against exact search.

Locations are a local folder path or an ``s3://bucket/key`` URL (only for backends
whose :attr:`IndexBackend.remote` is true). ``storage_options`` are passed through to
the backend's object store client (``aws_endpoint``, ``aws_access_key_id``, ``allow_http``
and so on, as :func:`keel.llm.rag.backends.storage_options` builds them from the
settings); ``None`` for local locations.

Backends are plain classes passed in by the caller: a name maps to a class in
:mod:`keel.llm.rag.backends` (``get_backend``), never a global registry that modules
write into.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import pyarrow as pa

__all__ = ["EXACT_SEARCH_ROWS", "RESULT_COLUMNS", "IndexBackend", "SearchTable", "table_schema"]

#: Below this many rows a backend searches exactly (no approximate index is built).
EXACT_SEARCH_ROWS = 10_000

#: The columns every search result has, in this order.
RESULT_COLUMNS: tuple[str, ...] = ("row", "digest", "path", "position", "text", "score")


def table_schema(dim: int) -> pa.Schema:
    """The Arrow schema of the table a backend writes, for vectors of ``dim`` floats."""
    return pa.schema(
        [
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("row", pa.int64(), nullable=False),
            pa.field("digest", pa.string(), nullable=False),
            pa.field("path", pa.string(), nullable=False),
            pa.field("position", pa.int32(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
        ]
    )


class SearchTable(ABC):
    """An opened table: answers nearest-neighbour searches. Safe to reuse across queries."""

    @abstractmethod
    def search(self, vector: np.ndarray, k: int) -> pa.Table:
        """Return the ``k`` rows closest to ``vector`` (float32, shape ``(dim,)``, unit length).

        The result has :data:`RESULT_COLUMNS`, sorted by descending ``score``; fewer
        than ``k`` rows only when the table has fewer rows.
        """

    @abstractmethod
    def count(self) -> int:
        """The number of rows in the table."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or file handles (a no-op where there are none)."""


class IndexBackend(ABC):
    """Writes and opens the derived, queryable table of a RAG index version."""

    #: The name ``--backend`` takes and the index document records.
    name: ClassVar[str]
    #: The suffix of a location this backend writes (``<root>/rag/<key><suffix>``).
    suffix: ClassVar[str]
    #: Whether ``s3://`` locations are supported (else local folders only).
    remote: ClassVar[bool] = False

    @abstractmethod
    def exists(self, location: str, storage_options: Mapping[str, str] | None = None) -> bool:
        """Whether a complete table is already at ``location`` (a half-written one is not)."""

    @abstractmethod
    def write(
        self,
        location: str,
        table: pa.Table,
        *,
        dim: int,
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        """Materialize ``table`` (schema :func:`table_schema` of ``dim``) at ``location``.

        Must not leave a table that :meth:`exists` reports complete if it fails half
        way; writing over a complete table is not required (callers check first).
        """

    @abstractmethod
    def open(self, location: str, storage_options: Mapping[str, str] | None = None) -> SearchTable:
        """Open the table at ``location`` for searching; NotFound if none is there."""
