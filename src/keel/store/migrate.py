"""Schema migrations: applied once, under a lock, only when needed.

Every process that opens a store first reads ``alembic_version`` (one
cheap query). Only when it is behind ``HEAD_REVISION`` does the process take
a lock — a file lock beside a SQLite database, an advisory lock on
PostgreSQL — read the revision again, and run Alembic if it is still
behind. Several processes starting at once therefore migrate exactly once,
and a process that finds the schema current never imports Alembic.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from keel.errors import StorageError

__all__ = ["HEAD_REVISION", "current_revision", "ensure_schema", "upgrade"]

#: The newest revision in ``migrations/versions``; a test keeps the two in step.
HEAD_REVISION = "0016"

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x6B65656C  # "keel"


def current_revision(conn: Connection) -> str | None:
    """The revision recorded in the database, or ``None`` for an empty database.

    Ends the connection's implicit transaction either way.
    """
    try:
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    except DBAPIError:
        conn.rollback()
        return None
    conn.rollback()
    return row[0] if row else None


def _known_revisions() -> set[str]:
    return {p.stem.split("_", 1)[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py")}


def ensure_schema(engine: Engine) -> bool:
    """Bring the database to ``HEAD_REVISION``, migrating at most once across processes.

    Returns:
        True if this call ran the migrations, False if another process had.
    """
    with engine.connect() as conn:
        revision = current_revision(conn)
    if revision == HEAD_REVISION:
        return False
    if revision is not None and revision not in _known_revisions():
        raise StorageError(
            f"the metadata store is at schema revision {revision}, newer than this Keel "
            f"knows ({HEAD_REVISION}); upgrade keel to use it"
        )
    with _migration_lock(engine) as conn:
        if current_revision(conn) == HEAD_REVISION:
            return False
        upgrade(conn)
        return True


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            from filelock import FileLock

            with FileLock(f"{database}.migrate.lock"), engine.connect() as conn:
                yield conn
        else:
            with engine.connect() as conn:
                yield conn
    elif engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
    else:  # pragma: no cover - engine creation rejects other dialects
        raise StorageError(f"no migration lock for dialect {engine.dialect.name}")


def upgrade(conn: Connection, revision: str = "head") -> None:
    """Run Alembic's upgrade on ``conn`` (the caller holds the migration lock)."""
    from alembic import command
    from alembic.config import Config

    if conn.in_transaction():
        conn.commit()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    command.upgrade(config, revision)
    if conn.in_transaction():
        conn.commit()
