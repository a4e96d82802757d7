"""Small SQL helpers shared by every module that writes to the store."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["insert_on_conflict", "iso_ms", "now_ms"]


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of every stored time."""
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC text (``2026-01-02T00:00:00Z``)."""
    import datetime as dt

    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    text = moment.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")


def insert_on_conflict(conn: Connection, table: Table) -> Any:
    """``INSERT`` that supports ``on_conflict_do_nothing/do_update`` on SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
