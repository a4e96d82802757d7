"""Engines for the metadata store: SQLite by default, PostgreSQL by URL.

SQLite is opened in WAL mode with a busy timeout, and every write
transaction starts with ``BEGIN IMMEDIATE``: a deferred transaction that
later tries to write can fail with "database is locked" at once, without
waiting, when another writer got there first. Taking the write lock up
front makes every writer queue on the busy timeout instead.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from keel.config import Settings, make_home
from keel.errors import BackendUnavailable, InvalidInput, StorageError

__all__ = ["Store", "after_commit", "get_store", "normalize_url", "redact_url", "reset_stores"]


def normalize_url(url: str) -> str:
    """Pick the driver Keel ships for a bare scheme (``postgresql://`` → psycopg 3)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to print (``redis://:pw@h`` too)."""
    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


_AFTER_COMMIT = "keel.after_commit"


def after_commit(conn: Connection, callback: Callable[[], None]) -> None:
    """Run ``callback`` after the write transaction of ``conn`` commits; never on rollback.

    For work that must only ever describe committed rows, such as the audit
    chain's checkpoints. The callback runs outside the transaction and its lock.
    """
    conn.info.setdefault(_AFTER_COMMIT, []).append(callback)


class Store:
    """A metadata store: an engine plus the transaction discipline Keel relies on.

    Use :meth:`write` for anything that changes rows and :meth:`read` for
    queries; both yield a ``Connection`` inside a transaction that commits on
    success and rolls back on error.
    """

    def __init__(self, url: str, busy_timeout: float = 60.0) -> None:
        self.url = normalize_url(url)
        self.busy_timeout = busy_timeout
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        #: True when opening this store applied migrations (False if already current).
        self.migrated = False

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                engine = self._create_engine()
                from keel.store.migrate import ensure_schema

                with self._translate_errors():
                    self.migrated = ensure_schema(engine)
                self._engine = engine
            return self._engine

    def _create_engine(self) -> Engine:
        try:
            parsed = make_url(self.url)
        except Exception:
            raise InvalidInput(
                f"store URL {redact_url(self.url)!r} is not a database URL; expected e.g. "
                "'sqlite:///path/keel.db' or 'postgresql://user@host:5432/db'"
            ) from None
        if parsed.get_backend_name() == "sqlite":
            return self._create_sqlite_engine(parsed.database)
        if parsed.get_backend_name() == "postgresql":
            try:
                return create_engine(self.url, pool_pre_ping=True, pool_size=5, max_overflow=10)
            except ImportError:
                raise InvalidInput(
                    "PostgreSQL needs its driver: pip install 'keel[postgres]'"
                ) from None
        raise InvalidInput(
            f"unsupported store backend {parsed.get_backend_name()!r}; use sqlite or postgresql"
        )

    def _create_sqlite_engine(self, database: str | None) -> Engine:
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            self.url,
            connect_args={"timeout": self.busy_timeout, "check_same_thread": False},
        )
        busy_ms = int(self.busy_timeout * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's events, not the driver, decide when transactions begin.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            # LIKE is case-sensitive on PostgreSQL; make SQLite agree (ILIKE is the other one).
            cur.execute("PRAGMA case_sensitive_like = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get("keel_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @contextmanager
    def write(self, joined: Connection | None = None) -> Iterator[Connection]:
        """A connection in a write transaction (``BEGIN IMMEDIATE`` on SQLite).

        Callbacks registered with :func:`after_commit` run once it has committed.

        Args:
            joined: a caller's open write transaction to use instead of a new one, so a
                function taking an optional ``conn=`` commits or rolls back with its caller.
        """
        if joined is not None:
            yield joined
            return
        with self._translate_errors(), self.engine.connect() as conn:
            conn = conn.execution_options(keel_write=True)
            # ``info`` outlives this checkout: callbacks never leak from one transaction to another.
            conn.info.pop(_AFTER_COMMIT, None)
            try:
                with conn.begin():
                    yield conn
                callbacks = conn.info.pop(_AFTER_COMMIT, [])
            finally:
                conn.info.pop(_AFTER_COMMIT, None)
        for callback in callbacks:
            callback()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a read transaction: one consistent snapshot."""
        with self._translate_errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except SQLIntegrityError:
            raise  # a constraint said no: the caller turns it into Conflict or NotFound
        except OperationalError as exc:
            message = str(exc.orig) if exc.orig is not None else str(exc)
            if "locked" in message or "busy" in message:
                raise StorageError(
                    f"the metadata store stayed locked for more than {self.busy_timeout:g}s; "
                    "another process holds a long write. Retry, or raise KEEL_BUSY_TIMEOUT"
                ) from exc
            if exc.connection_invalidated or "connect" in message.lower():
                raise BackendUnavailable(
                    f"cannot reach the metadata store at {redact_url(self.url)}: "
                    f"{message.strip().splitlines()[0]}; check KEEL_STORE_URL and that the "
                    "database is running"
                ) from exc
            raise StorageError(f"metadata store error: {message.strip().splitlines()[0]}") from exc
        except DBAPIError as exc:
            message = str(exc.orig) if exc.orig is not None else str(exc)
            raise StorageError(f"metadata store error: {message.strip().splitlines()[0]}") from exc

    def dispose(self, close: bool = True) -> None:
        """Drop the engine's connections; ``close=False`` after a fork (the parent owns them)."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose(close=close)
                self._engine = None


_stores: dict[tuple[str, float], Store] = {}
_stores_lock = threading.Lock()


def get_store(settings: Settings) -> Store:
    """The process-wide :class:`Store` for ``settings.store_url`` (one engine per URL)."""
    key = (normalize_url(settings.store_url), settings.busy_timeout)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            if _database_in_home(settings):
                make_home(settings.home)  # a first write makes the home as `keel init` does
            store = _stores[key] = Store(settings.store_url, settings.busy_timeout)
        return store


def _database_in_home(settings: Settings) -> bool:
    """Whether the store is a SQLite file in the settings' home (the default store)."""
    if not settings.is_sqlite:
        return False
    try:
        database = make_url(settings.store_url).database
    except Exception:  # malformed: opening the store reports it
        return False
    if not database or database == ":memory:":
        return False
    return Path(database).expanduser().resolve().parent == settings.home


def reset_stores(close: bool = True) -> None:
    """Dispose every engine this process opened (``keel.init``, tests, after a fork)."""
    global _stores_lock
    if not close:
        _stores_lock = threading.Lock()  # a forked child may inherit it held
    with _stores_lock:
        for store in _stores.values():
            store._lock = threading.Lock()
            store.dispose(close=close)
        _stores.clear()
