"""A loaded RAG index version: its queryable table, and queries traced with their latency.

The queryable table is derived from the index document (its chunks and vectors
blobs), so it is a cache: :func:`materialize` writes it once at a location the
transport can reach, and a table found complete there is used as it is:

- the artifact store is a local folder: ``<artifact root>/rag/<key>.lance``;
- the artifact store is on S3 and the backend can read S3 (LanceDB):
  ``s3://bucket/prefix/rag/<key>.lance``, shared by every client of the store; the
  table is built on local disk and published there (:mod:`keel.llm.rag.mirror`),
  and each client queries its own copy in ``<home>/cache/rag/<key>.lance``,
  downloaded on first use (the table is immutable, so the copy never goes stale);
- otherwise (through ``keel server``, or a local-only backend over S3):
  ``<home>/cache/rag/<key>.<suffix>``, filled from the two blobs fetched by digest.

Each query appends one row to the prediction log's ``traces`` dataset under the
partition ``rag-<name>``, with endpoint ``retrieval``, the latency (embedding the
question plus the search), the backend as provider and the embedder as upstream
model (:func:`keel.predictions.trace_row`), through a buffered background writer.
Through ``keel server`` the client cannot write the server's log root, so queries
are not traced there.
"""

from __future__ import annotations

import io
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from keel.errors import IntegrityError, InvalidInput, KeelError
from keel.llm.rag.backends import IndexBackend, SearchTable, storage_options, table_schema
from keel.llm.rag.embedders import Embedder, get_embedder

if TYPE_CHECKING:
    from keel.artifacts import ArtifactStore
    from keel.config import Settings
    from keel.llm.rag.documents import IndexVersion
    from keel.predictions import PredictionLogger
    from keel.transport import Transport

__all__ = [
    "MAX_K",
    "MAX_QUERY_CHARS",
    "Hit",
    "RagIndex",
    "Tracer",
    "check_k",
    "flush_traces",
    "materialize",
    "mirror_location",
    "table_location",
]

#: The most hits one query returns.
MAX_K = 1000
#: The longest question a query takes.
MAX_QUERY_CHARS = 100_000

#: Called after each query with (index version, route, latency in ms, status, error).
Tracer = Callable[["IndexVersion", str, float, int, "str | None"], None]


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: its text, where it came from and how close it is.

    Attributes:
        text: the chunk's text.
        path: the source document's path in the dataset version (``faq.jsonl#3`` for a
            line of a JSONL file).
        position: the chunk's ordinal in its document (0-based).
        score: cosine similarity with the question (higher is closer).
        digest: BLAKE3 of the chunk's text.
    """

    text: str
    path: str
    position: int
    score: float
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "position": self.position,
            "score": self.score,
            "digest": self.digest,
            "text": self.text,
        }


def check_k(k: Any) -> int:
    """``k`` if it is a whole number from 1 to :data:`MAX_K`, else InvalidInput."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInput(
            f"k must be a whole number from 1 to {MAX_K} (the most hits a query returns); got {k!r}"
        )
    return k


def _check_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"a query needs a non-empty question text; got {text!r:.80}")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidInput(
            f"a query's text may be at most {MAX_QUERY_CHARS:,} characters; got {len(text):,}"
        )
    return text


# -- the derived table ---------------------------------------------------------------------


def table_location(
    transport: Transport, backend: IndexBackend, key: str
) -> tuple[str, dict[str, str] | None]:
    """Where ``backend``'s table of the index with ``key`` lives for ``transport``, and its options.

    See the module's docstring for the three places.
    """
    from keel.artifacts import FsspecBackend, LocalBackend, check_digest
    from keel.validation import safe_join

    leaf = check_digest(key) + backend.suffix
    store = transport.artifacts.backend
    if isinstance(store, LocalBackend):
        return str(safe_join(store.root / "rag", leaf, "index table")), None
    if isinstance(store, FsspecBackend) and backend.remote and store.url.startswith("s3://"):
        location = f"{store.url}/rag/{leaf}"
        return location, storage_options(location, transport.settings.s3_endpoint_url)
    cache = transport.settings.home / "cache" / "rag"
    return str(safe_join(cache, leaf, "index table")), None


def mirror_location(transport: Transport, backend: IndexBackend, key: str) -> Path | None:
    """Where this client keeps its copy of a table on a remote store; None for a local one."""
    from keel.artifacts import check_digest
    from keel.validation import safe_join

    location, _ = table_location(transport, backend, key)
    if "://" not in location:
        return None
    cache = transport.settings.home / "cache" / "rag"
    return safe_join(cache, check_digest(key) + backend.suffix, "index table")


def _prefix(mirror: Path) -> str:
    """The key of a remote table's folder in the artifact store (its copy has the same name)."""
    return f"rag/{mirror.name}"


def _parquet(artifacts: ArtifactStore, digest: str) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(artifacts.get_bytes(digest)))


def derived_table(chunks: pa.Table, vectors: pa.Table, dim: int) -> pa.Table:
    """The backend table (:func:`~keel.llm.rag.backends.table_schema`) of an index's two blobs.

    Raises:
        IntegrityError: a chunk has no vector, or a vector has the wrong dimension.
    """
    import pyarrow.compute as pc

    where = pc.index_in(chunks["digest"], value_set=vectors["digest"])
    if where.null_count:
        raise IntegrityError(
            f"{where.null_count} chunk(s) of the index have no vector in its vectors blob; "
            "build the index again"
        )
    column = vectors["vector"].take(where)
    if column.type != pa.list_(pa.float32(), dim):
        raise IntegrityError(f"the index's vectors are {column.type}, not float32[{dim}]")
    return pa.Table.from_arrays(
        [
            column,
            pa.array(range(chunks.num_rows), pa.int64()),
            chunks["digest"],
            chunks["path"],
            chunks["position"].cast(pa.int32()),
            chunks["text"],
        ],
        schema=table_schema(dim),
    )


def materialize(
    artifacts: ArtifactStore,
    document: dict[str, Any],
    backend: IndexBackend,
    location: str,
    options: dict[str, str] | None,
    *,
    mirror: Path | None = None,
) -> bool:
    """Write the index's table at ``location`` unless a complete one is there; whether it wrote.

    With ``mirror`` (a remote ``location``), the table is built at ``mirror`` on local
    disk, then published to ``location`` (:func:`keel.llm.rag.mirror.upload`).
    """
    if backend.exists(location, options):
        return False
    dim = int(document["embedder"]["dimension"])
    chunks = _parquet(artifacts, document["chunks"]["digest"])
    vectors = _parquet(artifacts, document["vectors"]["digest"])
    table = derived_table(chunks, vectors, dim)
    if mirror is None:
        backend.write(location, table, dim=dim, storage_options=options)
        return True
    from keel.llm.rag.mirror import upload

    staging = mirror.parent / f".build-{uuid.uuid4().hex}"
    try:
        built = staging / mirror.name
        backend.write(str(built), table, dim=dim)
        upload(artifacts.backend, _prefix(mirror), built)
        if not mirror.is_dir():
            built.rename(mirror)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


# -- queries ---------------------------------------------------------------------------------


class RagIndex:
    """One index version, ready to query (``client.rag.load("rag:/kb@production")``).

    Args:
        version: the index version.
        backend: the backend its table is in.
        location: where the table is (see :func:`table_location`).
        options: the backend's storage options for ``location``.
        artifacts: the artifact store holding the index's blobs (to write the table
            if it is not there yet).
        route: how it was loaded, recorded in traces: ``@<alias>`` or ``version``.
        tracer: called after each query; ``None`` traces nothing.
        mirror: where this client keeps its copy of a table on a remote store
            (:func:`mirror_location`); queries read the copy.
    """

    def __init__(
        self,
        version: IndexVersion,
        *,
        backend: IndexBackend,
        location: str,
        options: dict[str, str] | None,
        artifacts: ArtifactStore,
        route: str = "version",
        tracer: Tracer | None = None,
        mirror: Path | None = None,
    ) -> None:
        self.version = version
        self.mirror = mirror
        self.backend = backend
        self.location = location
        self.options = options
        self.artifacts = artifacts
        self.route = route
        self.tracer = tracer
        self._lock = threading.Lock()
        self._table: SearchTable | None = None
        self._embedder: Embedder | None = None

    def __repr__(self) -> str:
        return f"RagIndex({self.version.uri}, backend={self.backend.name!r})"

    @property
    def name(self) -> str:
        return self.version.name

    @property
    def document(self) -> dict[str, Any]:
        """The index document (source, chunker, embedder, blobs, counts)."""
        return self.version.document

    def open(self) -> RagIndex:
        """Open the table now (writing it first if it is missing) rather than on the first query."""
        self._opened()
        return self

    def _opened(self) -> tuple[SearchTable, Embedder]:
        with self._lock:
            if self._table is None:
                if self.mirror is None:
                    materialize(
                        self.artifacts, self.document, self.backend, self.location, self.options
                    )
                    self._table = self.backend.open(self.location, self.options)
                else:
                    self._table = self.backend.open(str(self._copied(self.mirror)))
                self._embedder = get_embedder(self.version.embedder)
            assert self._embedder is not None
            return self._table, self._embedder

    def _copied(self, mirror: Path) -> Path:
        """The local copy of the remote table, published first if the store lacks it."""
        from keel.llm.rag.mirror import download

        if not mirror.is_dir():
            materialize(
                self.artifacts,
                self.document,
                self.backend,
                self.location,
                self.options,
                mirror=mirror,
            )
        return download(self.artifacts.backend, _prefix(mirror), mirror)

    def query(self, text: str, k: int = 10) -> list[Hit]:
        """The ``k`` chunks closest to ``text``, closest first.

        Raises:
            InvalidInput: ``text`` is empty or too long, or ``k`` is not from 1 to 1000.
        """
        text = _check_text(text)
        k = check_k(k)
        table, embedder = self._opened()
        started = time.perf_counter()
        try:
            vector = embedder.embed([text])[0]
            found = table.search(vector, k).to_pydict()
        except KeelError as exc:
            self._trace(started, exc.status_code, str(exc))
            raise
        hits = [
            Hit(chunk, path, position, float(score), digest)
            for chunk, path, position, score, digest in zip(
                found["text"],
                found["path"],
                found["position"],
                found["score"],
                found["digest"],
                strict=True,
            )
        ]
        self._trace(started, 200, None)
        return hits

    def _trace(self, started: float, status: int, error: str | None) -> None:
        if self.tracer is not None:
            latency_ms = (time.perf_counter() - started) * 1000.0
            self.tracer(self.version, self.route, latency_ms, status, error)

    def close(self) -> None:
        """Release the table's handles."""
        with self._lock:
            if self._table is not None:
                self._table.close()
                self._table = None


# -- traces ----------------------------------------------------------------------------------

_loggers: dict[tuple[str, str | None], PredictionLogger] = {}
_loggers_lock = threading.Lock()


def log_tracer(settings: Settings, user: str, backend: str) -> Tracer:
    """A tracer appending to the ``traces`` dataset of ``settings``' artifact root (one
    buffered writer per root and process)."""

    def trace(
        version: IndexVersion, route: str, latency_ms: float, status: int, error: str | None
    ) -> None:
        from keel.predictions import trace_row
        from keel.store.sql import now_ms
        from keel.validation import MAX_NAME_CHARS

        row = trace_row(
            request_id=uuid.uuid4().hex,
            time_ms=now_ms(),
            model=version.name,
            version=version.version,
            route=route,
            latency_ms=latency_ms,
            caller=user,
            team=None,
            endpoint="retrieval",
            provider=backend,
            upstream_model=version.embedder,
            status=status,
            error=error,
            input_tokens=0,
            output_tokens=0,
            tokens_estimated=False,
            ttft_ms=None,
            cache_hit=False,
            attempts=1,
            cost_usd=None,
        )
        _logger(settings).log(f"rag-{version.name}"[:MAX_NAME_CHARS], row, 1)

    return trace


def _logger(settings: Settings) -> PredictionLogger:
    from keel.predictions import TRACES, PredictionLogger

    key = (settings.artifacts_url, settings.s3_endpoint_url)
    with _loggers_lock:
        logger = _loggers.get(key)
        if logger is None:
            logger = _loggers[key] = PredictionLogger(
                settings.artifacts_url, s3_endpoint_url=settings.s3_endpoint_url, dataset=TRACES
            )
        return logger


def flush_traces() -> int:
    """Write every queued retrieval trace now; how many rows were written."""
    with _loggers_lock:
        loggers = list(_loggers.values())
    return sum(logger.flush() for logger in loggers)
