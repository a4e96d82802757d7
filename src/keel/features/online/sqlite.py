"""The embedded online store: one SQLite file, one table keyed by (view, entity).

``sqlite:///features/online.db`` (relative) or ``sqlite:////abs/online.db``, as SQLAlchemy
spells SQLite URLs. The file is in WAL mode, so reads never wait for a materialization
that is writing, and every connection has a busy timeout, so two writers queue rather
than fail.

A write is one ``executemany`` of an UPSERT whose ``WHERE`` keeps the newer
``(event_ms, created_ms)``: the database settles which row wins, in one statement per
row, with no read-modify-write in Python. A read is one ``SELECT … IN (…)`` per view.
Each thread gets its own connection (SQLite connections are not shared between
threads), made on its first call.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from keel.errors import StorageError
from keel.features.online.base import (
    OnlineStore,
    Row,
    encode_entity_keys,
    encode_values,
    entity_key,
)

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["SqliteOnlineStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS online_features (
    view TEXT NOT NULL,
    entity TEXT NOT NULL,
    event_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (view, entity)
) WITHOUT ROWID
"""

# ties go to the written row: re-materializing is idempotent and a correction with the
# same created time as the stored row (a rewritten source file) still lands
_UPSERT = """
INSERT INTO online_features (view, entity, event_ms, created_ms, value) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (view, entity) DO UPDATE SET
    event_ms = excluded.event_ms, created_ms = excluded.created_ms, value = excluded.value
WHERE excluded.event_ms > online_features.event_ms
   OR (excluded.event_ms = online_features.event_ms
       AND excluded.created_ms >= online_features.created_ms)
"""

#: Keys per SELECT (SQLite's bound-parameter limit is 32766 on recent builds, 999 on old).
_READ_CHUNK = 900

#: Seconds a connection waits for another writer's lock before failing.
BUSY_TIMEOUT_S = 30.0

#: Page cache per connection (KiB): a write batch's pages stay in memory until commit.
CACHE_KIB = 65_536


class SqliteOnlineStore(OnlineStore):
    """Online features in a SQLite file.

    Args:
        path: the database file; its folder is created when missing.
        url: the URL it was opened from (kept for watermarks and messages).
    """

    sorted_writes = True

    def __init__(self, path: str | Path, url: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.url = url or f"sqlite:///{self.path}"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._ready = False
        self._selects: dict[int, str] = {}

    # -- connections ---------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL sync survives a process crash; a power cut may lose the
            # last commits, which the next materialization rewrites (its watermark did
            # not move past them)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            with self._lock:
                if not self._ready:
                    conn.execute(_SCHEMA)
                    self._ready = True
                self._connections.append(conn)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the online store {self.url}: {exc}") from exc
        self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close every thread's connection (a later call opens a new one)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    # -- writes --------------------------------------------------------------------------

    def write(
        self,
        view: str,
        keys: pa.Table,
        event_ms: np.ndarray,
        created_ms: np.ndarray,
        values: pa.Table,
        ttl_seconds: int | None,
    ) -> int:
        """Upsert the rows in one transaction; returns how many replaced or added a row."""
        import pyarrow.compute as pc

        if keys.num_rows == 0:
            return 0
        encoded = encode_entity_keys(keys)
        # in key order, each B-tree page is visited once per batch: five times faster
        # than the same upserts in random order on a table larger than the page cache
        order = pc.sort_indices(encoded)
        entities = encoded.take(order).to_pylist()
        blobs = encode_values(values.take(order)).to_pylist()
        index = order.to_numpy()
        events, createds = event_ms[index].tolist(), created_ms[index].tolist()
        rows = zip(repeat(view), entities, events, createds, blobs)
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = conn.executemany(_UPSERT, rows)
                written = cursor.rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(
                f"writing view {view!r} to the online store {self.url}: {exc}"
            ) from exc
        return int(written)

    def delete_view(self, view: str) -> int:
        """Delete every row of ``view``."""
        return self._delete("DELETE FROM online_features WHERE view = ?", (view,), view)

    def purge_expired(self, view: str, ttl_seconds: int, now_ms: int) -> int:
        """Delete ``view``'s rows older than the TTL (reads skip them already; this frees space)."""
        cutoff = now_ms - ttl_seconds * 1000
        sql = "DELETE FROM online_features WHERE view = ? AND event_ms < ?"
        return self._delete(sql, (view, cutoff), view)

    def _delete(self, sql: str, params: tuple[Any, ...], view: str) -> int:
        try:
            cursor = self._connection().execute(sql, params)
        except sqlite3.Error as exc:
            raise StorageError(
                f"deleting view {view!r} in the online store {self.url}: {exc}"
            ) from exc
        return int(cursor.rowcount)

    # -- reads ---------------------------------------------------------------------------

    def _select(self, count: int) -> str:
        sql = self._selects.get(count)
        if sql is None:
            marks = ",".join("?" * count)
            sql = (
                "SELECT entity, event_ms, value FROM online_features "
                f"WHERE view = ? AND entity IN ({marks})"
            )
            self._selects[count] = sql
        return sql

    def read(
        self,
        view: str,
        keys: Sequence[tuple[Any, ...]],
        features: Sequence[str],
        ttl_seconds: int | None,
        now_ms: int,
    ) -> list[Row]:
        """One ``SELECT`` per 900 keys; expired rows read as ``None``."""
        entities = [entity_key(key) for key in keys]
        conn = self._connection()
        found: dict[str, tuple[int, bytes]] = {}
        try:
            for start in range(0, len(entities), _READ_CHUNK):
                chunk = entities[start : start + _READ_CHUNK]
                for entity, event, blob in conn.execute(self._select(len(chunk)), (view, *chunk)):
                    found[entity] = (event, blob)
        except sqlite3.Error as exc:
            raise StorageError(
                f"reading view {view!r} from the online store {self.url}: {exc}"
            ) from exc
        oldest = None if ttl_seconds is None else now_ms - ttl_seconds * 1000
        unpack = msgpack.unpackb
        out: list[Row] = []
        for entity in entities:
            hit = found.get(entity)
            if hit is None or (oldest is not None and hit[0] < oldest):
                out.append(None)
                continue
            stored = unpack(hit[1], timestamp=3)
            out.append((hit[0], {f: stored.get(f) for f in features}))
        return out
