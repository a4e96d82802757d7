"""The vector backends of RAG indexes, each on real storage: LanceDB in a local folder and
on the loopback S3 server, DuckDB with its vss extension in a local file.

pgvector runs where the test PostgreSQL server offers the ``vector`` extension
and skips, saying so, where it does not (this machine's server lacks it).

Every backend must return the exact top-k of a few thousand vectors (compared with a
numpy search over the same vectors), sorted by score, with the row's own metadata; all
rows when k exceeds them; refuse vectors of the wrong dimension; and keep a written
table as written."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from keel.errors import InvalidInput, NotFound
from keel.llm.rag.backends import (
    EXACT_SEARCH_ROWS,
    RESULT_COLUMNS,
    IndexBackend,
    get_backend,
    storage_options,
    table_schema,
)

DIM = 384
ROWS = 3_000
NO_PGVECTOR = (
    "this PostgreSQL server lacks the pgvector extension (pg_available_extensions has no 'vector')"
)

Place = tuple[IndexBackend, Callable[[str], str], dict[str, str] | None]


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """``n`` unit rows in clusters (as embeddings are), float32."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, n // 50), dim))
    rows = centers[rng.integers(0, len(centers), n)] + 0.7 * rng.standard_normal((n, dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32)


def chunk_table(vectors: np.ndarray, tag: str = "") -> pa.Table:
    """The backend table of ``vectors``: row i has digest ``d<i>``, text ``chunk <i>``."""
    n, dim = vectors.shape
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.Table.from_arrays(
        [
            pa.FixedSizeListArray.from_arrays(flat, dim),
            pa.array(np.arange(n), pa.int64()),
            pa.array([f"d{i}{tag}" for i in range(n)]),
            pa.array([f"docs/{i % 17}.md" for i in range(n)]),
            pa.array([i // 17 for i in range(n)], pa.int32()),
            pa.array([f"chunk {i}{tag}" for i in range(n)]),
        ],
        schema=table_schema(dim),
    )


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


def pgvector_place(postgres_url: str) -> Place:
    """The pgvector backend on the test PostgreSQL server; skips where it lacks the extension."""
    pytest.importorskip("psycopg")
    from keel.llm.rag.backends.pgvector import PgvectorBackend, has_pgvector

    if not has_pgvector(postgres_url):
        pytest.skip(NO_PGVECTOR)
    prefix = f"rag_{uuid.uuid4().hex[:8]}"
    return PgvectorBackend(), lambda name: f"{postgres_url}#{prefix}_{name}", None


@pytest.fixture(params=["lance-local", "lance-s3", "duckdb", "pgvector"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """A backend and where its tables go: ``(backend, location of a name, storage options)``."""
    if request.param == "pgvector":
        return pgvector_place(request.getfixturevalue("postgres_url"))
    if request.param == "lance-s3":
        pytest.importorskip("lancedb")
        bucket = request.getfixturevalue("s3_bucket")
        endpoint = request.getfixturevalue("s3_server")
        options = storage_options(f"{bucket}/rag/x.lance", endpoint)
        return get_backend("lance"), lambda name: f"{bucket}/rag/{name}.lance", options
    name = request.param.split("-")[0]
    pytest.importorskip("lancedb" if name == "lance" else "duckdb")
    backend = get_backend(name)
    return backend, lambda key: str(tmp_path / "rag" / f"{key}{backend.suffix}"), None


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return unit_vectors(ROWS)


def written(place: Place, vectors: np.ndarray, name: str = "kb") -> str:
    backend, location_of, options = place
    location = location_of(name)
    backend.write(location, chunk_table(vectors), dim=DIM, storage_options=options)
    return location


def test_search_returns_the_exact_top_k_with_each_rows_metadata(
    place: Place, vectors: np.ndarray
) -> None:
    backend, _, options = place
    table = backend.open(written(place, vectors), options)
    assert table.count() == ROWS
    queries = unit_vectors(20, seed=1)
    for query in queries:
        rows, scores = exact_top(vectors, query, 10)
        found = table.search(query, 10)
        assert tuple(found.column_names) == RESULT_COLUMNS
        assert found["row"].to_pylist() == rows.tolist()
        np.testing.assert_allclose(found["score"].to_numpy(), scores, atol=1e-5)
        assert found["digest"].to_pylist() == [f"d{i}" for i in rows]
        assert found["text"].to_pylist() == [f"chunk {i}" for i in rows]
        assert found["path"].to_pylist() == [f"docs/{i % 17}.md" for i in rows]
        assert found["position"].to_pylist() == [i // 17 for i in rows]


def test_scores_are_ordered_and_a_stored_vector_finds_itself_first(
    place: Place, vectors: np.ndarray
) -> None:
    backend, _, options = place
    table = backend.open(written(place, vectors), options)
    found = table.search(vectors[123], 50)
    scores = found["score"].to_numpy()
    assert found.schema.field("score").type == pa.float32()
    assert np.all(np.diff(scores) <= 0), scores
    assert found["row"][0].as_py() == 123
    assert scores[0] == pytest.approx(1.0, abs=1e-5)


def test_k_larger_than_the_table_returns_every_row_once(place: Place) -> None:
    backend, _, options = place
    small = unit_vectors(40, seed=2)
    table = backend.open(written(place, small), options)
    found = table.search(small[0], 1000)
    assert sorted(found["row"].to_pylist()) == list(range(40))
    rows, _ = exact_top(small, small[0], 40)
    assert found["row"].to_pylist() == rows.tolist()


def test_a_query_of_another_dimension_is_refused(place: Place, vectors: np.ndarray) -> None:
    backend, _, options = place
    table = backend.open(written(place, vectors), options)
    with pytest.raises(InvalidInput, match="dimension"):
        table.search(unit_vectors(1, dim=DIM - 1)[0], 10)


def test_a_table_of_another_dimension_is_refused_and_nothing_is_left(place: Place) -> None:
    backend, location_of, options = place
    location = location_of("wrong")
    with pytest.raises(InvalidInput, match="dimension"):
        backend.write(
            location, chunk_table(unit_vectors(30, dim=256)), dim=DIM, storage_options=options
        )
    assert not backend.exists(location, options)
    with pytest.raises(NotFound):
        backend.open(location, options)


def test_a_written_table_is_complete_immutable_and_reopens(
    place: Place, vectors: np.ndarray
) -> None:
    backend, _, options = place
    location = written(place, vectors)
    assert backend.exists(location, options)
    # The location is the content's address: a second write there must not change it.
    again = chunk_table(unit_vectors(ROWS, seed=9), tag="x")
    backend.write(location, again, dim=DIM, storage_options=options)
    reopened = type(backend)().open(location, options)
    rows, _ = exact_top(vectors, vectors[7], 5)
    found = reopened.search(vectors[7], 5)
    assert found["row"].to_pylist() == rows.tolist()
    assert found["text"].to_pylist() == [f"chunk {i}" for i in rows]
    assert reopened.count() == ROWS
    reopened.close()


def test_opening_a_location_with_no_table_is_not_found(place: Place) -> None:
    backend, location_of, options = place
    location = location_of("absent")
    assert not backend.exists(location, options)
    with pytest.raises(NotFound, match="absent"):
        backend.open(location, options)


# -- DuckDB -----------------------------------------------------------------------------------


def test_duckdb_refuses_an_s3_location() -> None:
    pytest.importorskip("duckdb")
    with pytest.raises(InvalidInput, match=r"local files only.*lance backend"):
        get_backend("duckdb").write(
            "s3://bucket/rag/k.duckdb", chunk_table(unit_vectors(3)), dim=DIM
        )


def test_duckdb_location_must_name_a_duckdb_file(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    with pytest.raises(InvalidInput, match=r"<folder>/<name>\.duckdb"):
        get_backend("duckdb").open(str(tmp_path / "k.lance"))


def test_duckdb_loads_vss_from_its_package_for_the_installed_duckdb() -> None:
    duckdb = pytest.importorskip("duckdb")
    from keel.llm.rag.backends.duckdb import vss_extension_path

    path = vss_extension_path()
    if path is None:
        pytest.skip(f"no duckdb-extension-vss package for DuckDB {duckdb.__version__}")
    assert path.is_file() and f"v{duckdb.__version__}" in path.parts


# -- pgvector ---------------------------------------------------------------------------------


def test_pgvector_on_a_server_without_the_extension_says_so(postgres_url: str) -> None:
    pytest.importorskip("psycopg")
    from keel.llm.rag.backends.pgvector import PgvectorBackend, has_pgvector

    if has_pgvector(postgres_url):
        pytest.skip("this PostgreSQL server has the pgvector extension")
    backend = PgvectorBackend()
    location = f"{postgres_url}#rag_{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidInput, match="lacks the pgvector extension"):
        backend.write(location, chunk_table(unit_vectors(5)), dim=DIM)
    assert not backend.exists(location)


def test_pgvector_location_must_name_a_table() -> None:
    from keel.llm.rag.backends.pgvector import PgvectorBackend

    with pytest.raises(InvalidInput, match="#<table>"):
        PgvectorBackend().open("postgresql://user@localhost/db#Bad-Name")


# -- approximate indexes (tables of EXACT_SEARCH_ROWS rows or more) ---------------------------


@pytest.mark.parametrize(
    "name",
    ["lance", pytest.param("duckdb", marks=pytest.mark.slow)],  # HNSW build: ~15 s
)
def test_an_indexed_table_keeps_recall_at_10_high(name: str, tmp_path: Path) -> None:
    pytest.importorskip("lancedb" if name == "lance" else "duckdb")
    backend = get_backend(name)
    many = unit_vectors(EXACT_SEARCH_ROWS + 500, seed=3)
    location = str(tmp_path / f"big{backend.suffix}")
    backend.write(location, chunk_table(many), dim=DIM)
    table = backend.open(location)
    queries = many[:: len(many) // 100][:100] + 0.3 * unit_vectors(100, seed=4)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    hits = 0
    for query in queries:
        rows, _ = exact_top(many, query, 10)
        hits += len(set(rows.tolist()) & set(table.search(query, 10)["row"].to_pylist()))
    assert hits / (10 * len(queries)) >= 0.95
