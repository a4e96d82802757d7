"""Schema migrations: once, under a lock, even when many processes start together."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from keel.store import HEAD_REVISION, Store, normalize_url
from keel.store import schema as s
from keel.store.migrate import MIGRATIONS_DIR

OPEN_STORE = """
import sys
from keel.store import Store
store = Store(sys.argv[1])
store.engine
print("migrated" if store.migrated else "current")
"""


def test_head_revision_matches_the_newest_migration_file():
    files = sorted(p.stem.split("_", 1)[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    assert files[-1] == HEAD_REVISION


def _indexes(url: str) -> dict[str, dict[str, tuple[tuple[str, ...], bool]]]:
    """Per table, each index's columns and uniqueness (not those backing a constraint)."""
    engine = create_engine(normalize_url(url))
    with engine.connect() as conn:
        inspector = inspect(conn)
        found = {
            table.name: {
                index["name"]: (tuple(index["column_names"]), bool(index["unique"]))
                for index in inspector.get_indexes(table.name)
                if "duplicates_constraint" not in index
            }
            for table in s.metadata.sorted_tables
        }
    engine.dispose()
    return found


def test_migrated_schema_matches_the_table_definitions(empty_store_url, defined_schema_url):
    store = Store(empty_store_url)
    with store.read() as conn:
        inspector = inspect(conn)
        for table in s.metadata.sorted_tables:
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name
    store.dispose()
    # Exactly the indexes the definitions create on this database: none missing, none left
    # behind by a migration that replaced it, and dialect-only ones only on their dialect.
    assert _indexes(empty_store_url) == _indexes(defined_schema_url)


def test_params_covering_indexes_exist_only_where_a_long_value_fits(empty_store_url):
    store = Store(empty_store_url)
    with store.read() as conn:
        names = {i["name"] for i in inspect(conn).get_indexes("params")}
    store.dispose()
    covering = {"ix_params_key_value_run", "ix_params_run_key_value"}
    if empty_store_url.startswith("sqlite"):
        assert covering <= names
    else:
        # A PostgreSQL B-tree entry holds at most 2,704 bytes; a param value up to 6,000 characters.
        assert not covering & names


def test_a_6000_character_param_is_logged_on_every_store(empty_store_url, tmp_path: Path):
    from keel.tracking.client import TrackingClient

    client = TrackingClient(store=Store(empty_store_url), artifacts=None)
    value = secrets.token_hex(3000)  # random: PostgreSQL cannot compress it below its entry limit
    run = client.create_run(client.create_experiment("long"), capture=False)
    client.log_param(run.id, "notes", value)
    assert client.get_run(run.id).params["notes"] == value
    found = client.search_runs(filter_string=f"params.notes = '{value}'")
    assert [r.info.id for r in found.runs] == [run.id]
    client.store.dispose()


@pytest.mark.slow
def test_many_processes_starting_at_once_migrate_exactly_once(empty_store_url):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_STORE, empty_store_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes.append(out.strip())
    assert sorted(outcomes) == ["current"] * 5 + ["migrated"]
    store = Store(empty_store_url)
    with store.read() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == [HEAD_REVISION]
    assert store.migrated is False
    store.dispose()


def test_a_database_from_a_newer_keel_is_refused(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    Store(url).engine.dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    from keel.errors import StorageError

    with pytest.raises(StorageError, match="newer than this Keel"):
        Store(url).engine  # noqa: B018


def test_unreachable_postgres_is_backend_unavailable():
    from keel.errors import BackendUnavailable

    store = Store("postgresql://postgres@127.0.0.1:1/nothing")
    with pytest.raises(BackendUnavailable, match="cannot reach the metadata store"):
        store.engine  # noqa: B018


def test_0016_carries_each_ended_gpu_job_over_as_a_span_of_its_budget(empty_store_url):
    from keel.store.migrate import upgrade

    engine = create_engine(normalize_url(empty_store_url))
    with engine.connect() as conn:
        upgrade(conn, "0015")
        conn.execute(
            text(
                "INSERT INTO job_queues (name, quotas, revision, created_at, updated_at, "
                "updated_by) VALUES ('q', '{}', 1, 0, 0, 'test')"
            )
        )
        for n, (state, gpus, started, ended) in enumerate(
            [
                ("succeeded", 2, 1_000, 3_601_000),  # an hour on 2 GPUs: carried
                ("running", 1, 5_000, None),  # still running: counted from its row
                ("failed", 0, 1_000, 2_000),  # no GPUs: nothing to count
                ("cancelled", 4, None, 9_000),  # never started
            ],
            start=1,
        ):
            conn.execute(
                text(
                    "INSERT INTO jobs (id, name, queue, priority, kind, target, params, gpus, "
                    "cpus, memory, max_retries, attempt, state, epoch, submitted_at, "
                    "submitted_by, updated_at, started_at, ended_at, borrowed, seconds_run) "
                    "VALUES (:id, 'j', 'q', 1, 'command', '[\"x\"]', '{}', :gpus, 1, 0, 0, 1, "
                    ":state, 1, 0, 'test', 0, :started, :ended, false, 0)"
                ),
                {"id": n, "gpus": gpus, "state": state, "started": started, "ended": ended},
            )
        conn.commit()
        upgrade(conn, "0016")
        spans = conn.execute(
            text("SELECT job_id, queue, gpus, started_at, ended_at FROM job_gpu_spans")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in spans] == [(1, "q", 2, 1_000, 3_601_000)]
