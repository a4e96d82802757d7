"""Building a RAG index version: read, chunk, embed what is new, store, register, index.

``build_index`` turns a dataset version into an index version in these steps:

1. The key: BLAKE3 of the source's manifest digest, the canonical chunker config and
   the embedder's name. If a version of the index has that key, it is the answer:
   nothing is read, embedded or registered again.
2. Read the source's text files (:func:`keel.llm.rag.documents.read_source`) and
   chunk every document; a chunk is named by the BLAKE3 of its text.
3. The embedding cache: vectors are looked up by (embedder, chunk digest) in the
   vectors blobs of the index's most recent versions built with the same embedder
   (up to :data:`CACHE_VERSIONS`); only chunks found in none are embedded. The hit
   rate is ``reused / (reused + embedded)``, counting distinct chunk texts.
4. Store the chunks and vectors as two Parquet blobs and the index document that
   names them, and register the document as the index's next version (a concurrent
   build of the same key gets the first one's version).
5. Write the queryable table where the transport can reach it
   (:func:`keel.llm.rag.index.table_location`).

Progress is reported as ``progress(stage, done, total)`` for the stages ``reading``,
``embedding`` and ``indexing``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from keel.artifacts import hash_bytes
from keel.errors import InvalidInput, NotFound
from keel.llm.rag.backends import get_backend
from keel.llm.rag.chunking import parse_chunker
from keel.llm.rag.documents import DOCUMENT_FORMAT, index_key, read_source
from keel.llm.rag.embedders import Embedder, get_embedder
from keel.llm.rag.index import materialize, mirror_location, table_location
from keel.validation import check_name

if TYPE_CHECKING:
    from keel.artifacts import ArtifactStore
    from keel.client import Client
    from keel.llm.rag.documents import IndexVersion

__all__ = ["CACHE_VERSIONS", "EMBED_BATCH", "BuildResult", "Progress", "build_index"]

#: Called with (stage, done, total) as a build goes.
Progress = Callable[[str, int, "int | None"], None]
#: How many of an index's latest versions (same embedder) the embedding cache reads.
CACHE_VERSIONS = 5
#: Texts handed to the embedder at a time (the progress bar moves per batch).
EMBED_BATCH = 256


@dataclass(frozen=True)
class BuildResult:
    """What a build made or found.

    Attributes:
        version: the registry version of the index (an existing one if the key was built).
        key: the index's address: BLAKE3 of (source manifest digest, chunker, embedder).
        chunks: chunks in the index (one per chunk of each document).
        embedded: distinct chunk texts this build embedded (not in the embedding cache).
        reused: distinct chunk texts whose vectors came from the cache.
        hit_rate: ``reused / (reused + embedded)``; 1.0 when the key was built already.
        documents: source documents chunked.
        skipped: source files skipped (not a text type, or not UTF-8 text).
    """

    version: IndexVersion
    key: str
    chunks: int
    embedded: int
    reused: int
    hit_rate: float
    documents: int
    skipped: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.version.uri,
            "version": self.version.version,
            "key": self.key,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "reused": self.reused,
            "hit_rate": self.hit_rate,
            "documents": self.documents,
            "skipped": self.skipped,
        }


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    from keel.artifacts.backends import PARQUET_COMPRESSION

    sink = io.BytesIO()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION)
    return sink.getvalue()


def build_index(
    client: Client,
    name: str,
    *,
    source: str,
    chunker: str,
    embedder: str,
    backend: str | None = None,
    progress: Progress | None = None,
    description: str | None = None,
) -> BuildResult:
    """Build (or find) the version of index ``name`` of ``source`` chunked and embedded so.

    Args:
        client: the client whose stores hold the source and the index.
        name: the index's name (created on first build).
        source: a dataset version: ``datasets:/docs@3``, ``docs@3``, or ``docs`` (latest).
        chunker: a chunker spec (:func:`keel.llm.rag.chunking.parse_chunker`).
        embedder: an embedder's name (:func:`keel.llm.rag.embedders.get_embedder`).
        backend: the backend whose table is written now (default ``lance``); any
            backend can write its table later, on load.
        progress: called with (stage, done, total).
        description: what the version is for, kept with it.

    Raises:
        InvalidInput: a bad name, chunker, embedder or backend; a source with no text
            files, or whose text files hold no text.
        NotFound: no such dataset version.
        Conflict: ``name`` is a registered model or prompt.
    """
    check_name(name, "index name")
    cutter = parse_chunker(chunker)
    model = get_embedder(embedder)
    store = get_backend(backend)
    artifacts = client.transport.artifacts
    dataset = client.data.get_version(source)
    key = index_key(dataset.digest, cutter.config(), model.name)
    existing = client.rag.find_key(name, key)
    if existing is not None:
        location, options = table_location(client.transport, store, key)
        mirror = mirror_location(client.transport, store, key)
        materialize(artifacts, existing.document, store, location, options, mirror=mirror)
        unique = int(existing.document["vectors"]["rows"])
        return BuildResult(
            existing,
            key,
            existing.chunks,
            0,
            unique,
            1.0,
            int(existing.document["documents"]),
            int(existing.document["skipped"]),
        )

    if progress is not None:
        progress("reading", 0, dataset.files)
    text = read_source(client.data, artifacts, dataset.uri)
    if progress is not None:
        progress("reading", dataset.files, dataset.files)
    if not text.documents:
        raise InvalidInput(
            f"{dataset.uri} holds no text files to index ({text.skipped} file(s) skipped, "
            f"e.g. {', '.join(text.skipped_paths[:3]) or 'none'}); an index reads .txt, .md, "
            ".rst, .html and .jsonl files: add some and `keel data add` the folder again"
        )
    rows: dict[str, list[Any]] = {k: [] for k in ("digest", "path", "position", "text", "document")}
    for doc in text.documents:
        for position, chunk in enumerate(cutter.split(doc.text)):
            rows["digest"].append(hash_bytes(chunk.encode()))
            rows["path"].append(doc.path)
            rows["position"].append(position)
            rows["text"].append(chunk)
            rows["document"].append(doc.digest)
    if not rows["digest"]:
        raise InvalidInput(
            f"the {len(text.documents)} text document(s) of {dataset.uri} hold no text to "
            f"chunk (they are empty or blank); add text, or choose another source"
        )

    texts = dict(zip(rows["digest"], rows["text"], strict=True))  # distinct, first seen
    cached = _cached_vectors(client, name, model, set(texts))
    missing = [d for d in texts if d not in cached]
    fresh = _embed(model, [texts[d] for d in missing], progress)
    digests = sorted(texts)
    vectors = _vectors_table(digests, cached, dict(zip(missing, fresh, strict=True)), model)

    chunks_blob = artifacts.put_bytes(
        _parquet_bytes(
            pa.table(
                {
                    "digest": pa.array(rows["digest"], pa.string()),
                    "path": pa.array(rows["path"], pa.string()),
                    "position": pa.array(rows["position"], pa.int32()),
                    "text": pa.array(rows["text"], pa.string()),
                    "document": pa.array(rows["document"], pa.string()),
                }
            )
        )
    )
    vectors_blob = artifacts.put_bytes(_parquet_bytes(vectors))
    document = {
        "format": DOCUMENT_FORMAT,
        "key": key,
        "source": {"dataset": dataset.name, "version": dataset.version, "digest": dataset.digest},
        "chunker": cutter.config(),
        "embedder": {"name": model.name, "dimension": model.dimension},
        "chunks": {"digest": chunks_blob.digest, "rows": len(rows["digest"])},
        "vectors": {"digest": vectors_blob.digest, "rows": len(digests)},
        "documents": len(text.documents),
        "skipped": text.skipped,
    }
    version = client.rag.register(name, document, description=description)
    if progress is not None:
        progress("indexing", 0, 1)
    location, options = table_location(client.transport, store, key)
    mirror = mirror_location(client.transport, store, key)
    materialize(artifacts, version.document, store, location, options, mirror=mirror)
    if progress is not None:
        progress("indexing", 1, 1)
    reused = len(texts) - len(missing)
    return BuildResult(
        version,
        key,
        len(rows["digest"]),
        len(missing),
        reused,
        reused / len(texts),
        len(text.documents),
        text.skipped,
    )


def _cached_vectors(
    client: Client, name: str, model: Embedder, needed: set[str]
) -> dict[str, np.ndarray]:
    """Vectors of ``needed`` chunk digests that recent versions of ``name`` hold already."""
    import pyarrow.compute as pc

    try:
        versions = client.rag.versions(name)
    except NotFound:
        return {}
    same = [
        v
        for v in reversed(versions)
        if v.document["embedder"] == {"name": model.name, "dimension": model.dimension}
    ][:CACHE_VERSIONS]
    found: dict[str, np.ndarray] = {}
    wanted = set(needed)
    for version in same:
        if not wanted:
            break
        table = _read_parquet(client.transport.artifacts, version.document["vectors"]["digest"])
        hit = table.filter(pc.is_in(table["digest"], value_set=pa.array(sorted(wanted))))
        if not hit.num_rows:
            continue
        matrix = _matrix(hit["vector"], model.dimension)
        for digest, row in zip(hit["digest"].to_pylist(), matrix, strict=True):
            found[digest] = row
        wanted.difference_update(found)
    return found


def _read_parquet(artifacts: ArtifactStore, digest: str) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(artifacts.get_bytes(digest)))


def _matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A fixed-size-list column of float32 as an ``(n, dim)`` array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = array.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float32).reshape(-1, dim)


def _embed(model: Embedder, texts: list[str], progress: Progress | None) -> np.ndarray:
    """``texts`` embedded in batches; checked for shape, finiteness and unit length."""
    parts = []
    for start in range(0, len(texts), EMBED_BATCH):
        if progress is not None:
            progress("embedding", start, len(texts))
        parts.append(model.embed(texts[start : start + EMBED_BATCH]))
    if progress is not None:
        progress("embedding", len(texts), len(texts))
    if not parts:
        return np.zeros((0, model.dimension), dtype=np.float32)
    vectors = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    if vectors.shape != (len(texts), model.dimension) or not np.isfinite(vectors).all():
        raise InvalidInput(
            f"embedder {model.name!r} returned vectors of shape {vectors.shape} (or non-finite "
            f"values) for {len(texts)} texts; expected ({len(texts)}, {model.dimension})"
        )
    return vectors


def _vectors_table(
    digests: list[str],
    cached: dict[str, np.ndarray],
    fresh: dict[str, np.ndarray],
    model: Embedder,
) -> pa.Table:
    matrix = np.stack([cached[d] if d in cached else fresh[d] for d in digests]).astype(
        np.float32, copy=False
    )
    flat = pa.array(matrix.reshape(-1), pa.float32())
    return pa.table(
        {
            "digest": pa.array(digests, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, model.dimension),
        }
    )
