"""Feature view sources: CSV, Parquet folders, dataset versions, SQLite and PostgreSQL tables."""

from __future__ import annotations

import os
import sqlite3
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import keel
from keel.errors import InvalidInput, NotFound
from keel.features import sources
from keel.features.sources import connect, register_source

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = 3_600_000  # an hour in ms
T0_MS = int(T0.timestamp() * 1000)


def apply(folder: Path, source: str, *, created: str | None = None, ttl: str = "None") -> None:
    """Apply one view ``stats`` (driver_id -> rate float, trips int) over ``source``."""
    created_arg = f"created_timestamp_field={created!r}," if created else ""
    path = folder / f"defs_{uuid.uuid4().hex[:6]}.py"
    path.write_text(
        textwrap.dedent(
            f"""\
            from keel.features import (
                DatasetSource, Entity, FeatureView, Field, FileSource, SqlSource,
            )

            driver = Entity("driver", join_keys=["driver_id"])
            stats = FeatureView(
                "stats",
                entities=[driver],
                source={source},
                timestamp_field="ts",
                {created_arg}
                features=[Field("rate", "float64"), Field("trips", "int64")],
                ttl={ttl},
            )
            """
        )
    )
    keel.Client().features.apply(path)


def entities(*rows: tuple[int, int]) -> pd.DataFrame:
    """Entity rows (driver, hours after T0)."""
    return pd.DataFrame(
        {
            "driver_id": [d for d, _ in rows],
            "event_timestamp": [pd.Timestamp(T0) + pd.Timedelta(hours=h) for _, h in rows],
        }
    )


def joined(*rows: tuple[int, int]) -> list[tuple[object, object]]:
    result = keel.features.get_historical_features(entities(*rows), ["stats:rate", "stats:trips"])
    return [
        (None if pd.isna(r) else r, None if pd.isna(t) else t)
        for r, t in zip(result["rate"], result["trips"], strict=True)
    ]


def normalized(view: str = "stats", **options: object) -> pa.Table:
    """The registered source's rows, sorted, as DuckDB hands them over."""
    client = keel.Client()
    spec = client.features.get(view).spec
    with connect(client.transport.settings, "256MB") as con:
        register_source(con, client, spec, "src", **options)  # type: ignore[arg-type]
        return con.sql(
            "SELECT * FROM src ORDER BY driver_id, __event_ms, __created_ms"
        ).to_arrow_table()


def test_csv_source_reads_string_times_with_and_without_offsets(sqlite_env, tmp_path):
    (tmp_path / "stats.csv").write_text(
        "driver_id,ts,rate,trips\n"
        "1,2024-01-01 00:00:00,0.5,3\n"  # no offset: UTC
        "1,2024-01-01T03:00:00+02:00,0.6,4\n"  # 01:00 UTC
        "2,2024-01-01T02:00:00Z,0.7,\n"  # a missing int stays missing
    )
    apply(tmp_path, 'FileSource("stats.csv")')

    table = normalized()
    assert table.column_names == ["driver_id", "__event_ms", "__created_ms", "rate", "trips"]
    assert table.schema.field("__event_ms").type == pa.int64()
    assert table.column("__event_ms").to_pylist() == [T0_MS, T0_MS + H, T0_MS + 2 * H]
    assert table.column("__created_ms").to_pylist() == [None, None, None]
    assert joined((1, 0), (1, 1), (2, 1), (2, 2)) == [(0.5, 3), (0.6, 4), (None, None), (0.7, None)]


def test_parquet_folder_reads_every_file_and_no_hive_columns(sqlite_env, tmp_path):
    folder = tmp_path / "stats"
    (folder / "date=2024-01-01").mkdir(parents=True)
    ts = pa.timestamp("ms", tz="UTC")
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([1], pa.int32()),  # cast to the entity's int64
                "ts": pa.array([T0], ts),
                "rate": pa.array([1], pa.int64()),  # cast to the declared float64
                "trips": pa.array([7], pa.int64()),
                "unused": ["x"],
            }
        ),
        folder / "part-0.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([2], pa.int32()),
                "ts": pa.array([T0], ts),
                "rate": [2.5],
                "trips": pa.array([8], pa.int64()),
            }
        ),
        folder / "date=2024-01-01" / "part-1.parquet",
    )
    apply(tmp_path, 'FileSource("stats")')

    table = normalized()
    assert table.column_names == ["driver_id", "__event_ms", "__created_ms", "rate", "trips"]
    assert table.schema.field("driver_id").type == pa.int64()
    assert table.schema.field("rate").type == pa.float64()
    assert table.column("rate").to_pylist() == [1.0, 2.5]
    assert joined((1, 1), (2, 1)) == [(1.0, 7), (2.5, 8)]

    # a created column named like the folder's key=value is not made up from the path
    apply(tmp_path, 'FileSource("stats")', created="date")
    with pytest.raises(
        InvalidInput,
        match=r"has no column 'date'; columns: \['driver_id', 'ts', 'rate', 'trips', 'unused'\]",
    ):
        joined((1, 1))


def test_register_source_filters_by_event_time_and_reads_only_some_features(sqlite_env, tmp_path):
    pq.write_table(
        pa.table(
            {
                "driver_id": [1, 1, 1, 1],
                "ts": [T0_MS, T0_MS + H, T0_MS + 2 * H, T0_MS + 3 * H],
                "created": [T0_MS, T0_MS + H, T0_MS + 2 * H, T0_MS + 3 * H],
                "rate": [0.1, 0.2, 0.3, 0.4],
                "trips": [1, 2, 3, 4],
            }
        ),
        tmp_path / "stats.parquet",
    )
    apply(tmp_path, 'FileSource("stats.parquet")', created="created")

    # start inclusive, end exclusive: consecutive windows never read a row twice
    table = normalized(columns=["rate"], start_ms=T0_MS + H, end_ms=T0_MS + 3 * H)
    assert table.column_names == ["driver_id", "__event_ms", "__created_ms", "rate"]
    assert table.column("__event_ms").to_pylist() == [T0_MS + H, T0_MS + 2 * H]
    assert table.column("__created_ms").to_pylist() == [T0_MS + H, T0_MS + 2 * H]

    with pytest.raises(InvalidInput, match=r"feature view 'stats' has no feature\(s\) \['speed'\]"):
        normalized(columns=["speed"])


def test_dataset_version_sources_table_and_folder(sqlite_env, tmp_path):
    frame = pd.DataFrame(
        {
            "driver_id": [1, 2],
            "ts": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00"]),
            "rate": [0.25, 0.75],
            "trips": [2, 3],
        }
    )
    version = keel.log_dataset(frame, "driver_stats")
    apply(tmp_path, f'DatasetSource("{version.uri}")')
    assert joined((1, 0), (2, 0), (2, 1)) == [(0.25, 2), (None, None), (0.75, 3)]

    folder = tmp_path / "drop"
    folder.mkdir()
    frame.assign(rate=[0.5, 1.5]).to_parquet(folder / "part.parquet", index=False)
    files = keel.data.add(folder, "driver_files")
    apply(tmp_path, f'DatasetSource("{files.uri}")')
    assert joined((1, 0), (2, 1)) == [(0.5, 2), (1.5, 3)]


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE stats (driver_id INTEGER, ts TEXT, rate REAL, trips INTEGER)")
        db.executemany(
            "INSERT INTO stats VALUES (?, ?, ?, ?)",
            [
                (1, "2024-01-01 00:00:00", 0.1, 1),
                (1, "2024-01-01 01:00:00", 0.2, 2),
                (1, "2024-01-01 02:00:00", 0.3, None),
                (2, "2024-01-01 00:30:00", 0.9, 9),
                (2, "2024-01-01 03:00:00", 1.9, 19),
            ],
        )
    return f"sqlite:///{path}"


def test_sqlite_table_source_streams_in_chunks(sqlite_env, tmp_path, sqlite_db, monkeypatch):
    monkeypatch.setattr(sources, "SQL_CHUNK_ROWS", 2)  # five rows: three chunks
    apply(tmp_path, f'SqlSource("{sqlite_db}", table="stats")')
    assert joined((1, 0), (1, 1), (1, 2), (2, 1), (2, 2), (3, 2)) == [
        (0.1, 1),
        (0.2, 2),
        (0.3, None),
        (0.9, 9),
        (0.9, 9),
        (None, None),
    ]


def test_sqlite_query_source(sqlite_env, tmp_path, sqlite_db):
    apply(
        tmp_path,
        f'SqlSource("{sqlite_db}", query="SELECT driver_id, ts, rate * 10 AS rate, trips '
        'FROM stats WHERE driver_id = 2;")',
    )
    assert joined((1, 2), (2, 1), (2, 3)) == [(None, None), (9.0, 9), (19.0, 19)]


def test_sql_source_without_a_column_says_which_before_reading_rows(
    sqlite_env, tmp_path, sqlite_db
):
    apply(tmp_path, f'SqlSource("{sqlite_db}", query="SELECT driver_id, ts, rate FROM stats")')
    with pytest.raises(
        InvalidInput,
        match=r"feature view 'stats': its source query at sqlite:///.*warehouse\.db has no column "
        r"'trips'; columns: \['driver_id', 'ts', 'rate'\]",
    ):
        joined((1, 1))
    apply(tmp_path, f'SqlSource("{sqlite_db}", table="nope")')
    with pytest.raises(
        InvalidInput, match=r"feature view 'stats': reading its SQL source at .* failed"
    ):
        joined((1, 1))


@pytest.fixture
def postgres_table() -> Iterator[tuple[str, str]]:
    url = os.environ.get("KEEL_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set KEEL_TEST_POSTGRES_URL to test a PostgreSQL feature source")
    from sqlalchemy import create_engine, text

    table = f"feature_stats_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE {table} (driver_id BIGINT, ts TIMESTAMPTZ, "
                "created TIMESTAMP, rate DOUBLE PRECISION, trips INTEGER)"
            )
        )
        conn.execute(
            text(
                f"INSERT INTO {table} VALUES "
                "(1, '2024-01-01 02:00:00+02', '2024-01-01 00:00:00', 0.1, 1),"  # 00:00 UTC
                "(1, '2024-01-01 00:00:00+00', '2024-01-01 05:00:00', 0.15, 2),"  # correction
                "(1, '2024-01-01 01:00:00+00', '2024-01-01 01:00:00', 0.2, NULL)"
            )
        )
    try:
        yield url, table
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


def test_postgresql_table_source(sqlite_env, tmp_path, postgres_table, monkeypatch):
    url, table = postgres_table
    monkeypatch.setattr(sources, "SQL_CHUNK_ROWS", 2)
    apply(tmp_path, f'SqlSource("{url}", table="{table}")', created="created", ttl="3600")
    assert joined((1, 0), (1, 1), (1, 2), (1, 3)) == [
        (0.15, 2),
        (0.2, None),
        (0.2, None),  # exactly the ttl old
        (None, None),
    ]
    assert normalized().column("__created_ms").to_pylist() == [T0_MS, T0_MS + 5 * H, T0_MS + H]


def test_file_source_errors(sqlite_env, tmp_path):
    apply(tmp_path, 'FileSource("missing")')
    with pytest.raises(
        NotFound, match=r"feature view 'stats': its source .*missing does not exist"
    ):
        joined((1, 1))

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    apply(tmp_path, 'FileSource("empty")')
    with pytest.raises(
        InvalidInput, match=r"its source folder .*empty holds no \.parquet or \.csv"
    ):
        joined((1, 1))

    (tmp_path / "stats.csv").write_text("driver_id,ts,rate,trips\n1,yesterday-ish,0.5,3\n")
    apply(tmp_path, 'FileSource("stats.csv")')
    with pytest.raises(InvalidInput, match=r"a value does not convert to the type its definition"):
        joined((1, 1))

    (tmp_path / "stats.csv").write_text("driver_id,time,rate\n1,2024-01-01,0.5\n")
    with pytest.raises(
        InvalidInput,
        match=r"feature view 'stats': its source .*stats\.csv has no columns \['ts', 'trips'\]; "
        r"columns: \['driver_id', 'time', 'rate'\]",
    ):
        joined((1, 1))


def test_pandas_column_types_values_as_a_training_set_does():
    from keel.features.sources import pandas_column

    assert str(pd.Series(pandas_column([1, None], "int64")).dtype) == "Int64"
    assert pd.Series(pandas_column([1, None], "float64")).dtype == "float64"
    assert str(pd.Series(pandas_column([True, None], "bool")).dtype) == "boolean"
    as_ms = pandas_column([T0_MS + H, None], "timestamp")  # integers are milliseconds
    zoneless = pandas_column([datetime(2024, 1, 1, 1), None], "timestamp")  # UTC
    for stamps in (as_ms, zoneless):
        assert stamps.tolist()[0] == pd.Timestamp(T0) + pd.Timedelta(hours=1)
        assert str(stamps.dtype) == "datetime64[us, UTC]"
    with pytest.raises(InvalidInput, match=r"expected int64 values, got \[1\.5\]"):
        pandas_column([1.5], "int64")


def test_without_duckdb_a_training_set_names_the_extra(sqlite_env, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "duckdb", None)  # as if it were not installed
    with (
        pytest.raises(InvalidInput, match=r"needs duckdb, which is not installed: pip install"),
        connect(keel.Client().transport.settings),
    ):
        pass
