"""Small SQL helpers shared by every module that writes to the store."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["insert_on_conflict", "now_ms"]


def now_ms() -> int:
    """Milliseconds since the epoch, the unit of every stored time."""
    return time.time_ns() // 1_000_000


def insert_on_conflict(conn: Connection, table: Table) -> Any:
    """``INSERT`` that supports ``on_conflict_do_nothing/do_update`` on SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
