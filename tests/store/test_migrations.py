"""Schema migrations: once, under a lock, even when many processes start together."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
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


def _fresh_postgres_url(base: str, name: str) -> str:
    admin = create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return str(create_engine(normalize_url(base)).url.set(database=name).render_as_string(False))


@pytest.fixture(params=["sqlite", "postgres"])
def empty_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    name = f"{base.rsplit('/', 1)[1]}_mig"
    yield _fresh_postgres_url(base, name)
    from keel.store import reset_stores

    reset_stores()
    admin = create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_head_revision_matches_the_newest_migration_file():
    files = sorted(p.stem.split("_", 1)[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    assert files[-1] == HEAD_REVISION


def test_migrated_schema_matches_the_table_definitions(empty_store_url):
    store = Store(empty_store_url)
    with store.read() as conn:
        inspector = inspect(conn)
        for table in s.metadata.sorted_tables:
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name
            indexes = {i["name"] for i in inspector.get_indexes(table.name)}
            assert {i.name for i in table.indexes} <= indexes, table.name
    store.dispose()


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
