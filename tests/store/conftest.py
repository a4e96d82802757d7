"""Fixtures of the store tests: empty databases of each kind, migrated or made from the tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from keel.store import normalize_url
from keel.store import schema as s


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


@pytest.fixture
def defined_schema_url(
    request: pytest.FixtureRequest, empty_store_url: str, tmp_path: Path
) -> Iterator[str]:
    """A database of ``empty_store_url``'s kind made by ``create_all`` from the table definitions."""
    if empty_store_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'defined.db'}"
        name = None
    else:
        base = request.getfixturevalue("postgres_url")
        name = f"{base.rsplit('/', 1)[1]}_def"
        url = _fresh_postgres_url(base, name)
    engine = create_engine(normalize_url(url))
    s.metadata.create_all(engine)
    engine.dispose()
    yield url
    if name is not None:
        admin = create_engine(normalize_url(empty_store_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
