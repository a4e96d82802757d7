"""Loading the runs a search found: their columns, params, latest metrics and tags.

A search returns run ids in order, up to 100,000 of them; this module reads
what belongs to them. Two habits keep it fast:

- The ids travel as *one* bound parameter — a JSON array unpacked with
  ``json_each`` on SQLite, an array unpacked with ``unnest … WITH
  ORDINALITY`` on PostgreSQL — together with each id's position in the
  page. No statement is rendered with thousands of placeholders, and no
  page is split into chunks.
- Text and integers are read with one query per table that *groups by
  key* and returns, for every key, the positions of the runs that have it
  and their values as two arrays (``json_group_array``/``array_agg``).
  Python then handles one pair of arrays per key instead of one row per
  value: for 4,000 runs with 10 params that is 10 pairs, not 40,000 rows.
  Metric values are the exception on SQLite: its JSON functions print a
  REAL with 15 significant digits (0.30000000000000004 comes back as 0.3),
  so they come as rows of native floats, ``(position, key, value)``.

The positions also give the order back, so nothing is looked up by id in
Python, and an id whose run vanished between the search and the load (a
concurrent delete) is simply absent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, String, bindparam, func, select
from sqlalchemy.sql import ColumnElement, FromClause

from keel.store import schema as s
from keel.tracking.entities import Run, RunInfo

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RUN_COLUMNS", "load_frame", "load_runs"]

#: Run columns in the order of :class:`RunInfo`'s fields.
RUN_COLUMNS = (
    s.runs.c.id,
    s.runs.c.experiment_id,
    s.runs.c.name,
    s.runs.c.status,
    s.runs.c.start_time,
    s.runs.c.end_time,
    s.runs.c.parent_id,
    s.runs.c.user_name,
)
#: Frame column of each run column.
_FRAME_NAMES = (
    "run_id",
    "experiment_id",
    "name",
    "status",
    "start_time",
    "end_time",
    "parent_id",
    "user",
)
_CHILDREN = (("metrics", s.latest_metrics), ("params", s.params), ("tags", s.tags))


class _Page:
    """The ids of a page as a table ``(pos, id)``, 0-based ``pos``, for one dialect."""

    def __init__(self, conn: Connection, ids: Sequence[str]) -> None:
        self.postgres = conn.dialect.name == "postgresql"
        if self.postgres:
            from sqlalchemy.dialects.postgresql import ARRAY

            table = (
                func.unnest(bindparam("page_ids", type_=ARRAY(String)))
                .table_valued("value", with_ordinality="ordinality")
                .render_derived(name="page")
            )
            self.pos: ColumnElement[Any] = table.c.ordinality - 1
            self.params: dict[str, Any] = {"page_ids": list(ids)}
        else:
            table = func.json_each(bindparam("page_ids", type_=String)).table_valued(
                "key", "value", name="page"
            )
            self.pos = table.c.key
            self.params = {"page_ids": json.dumps(list(ids))}
        self.table: FromClause = table
        self.id: ColumnElement[Any] = table.c.value

    def array(self, column: Any) -> Any:
        """An aggregate collecting ``column`` into an array, in the same order for every column."""
        if self.postgres:
            from sqlalchemy.dialects.postgresql import aggregate_order_by

            return func.array_agg(aggregate_order_by(column, self.pos))
        # SQLite steps every aggregate of a group over the same rows in the same order.
        return func.json_group_array(column)

    @staticmethod
    def decode(value: Any) -> list[Any]:
        """An aggregated array as a list (SQLite returns JSON text, PostgreSQL a list)."""
        if value is None:
            return []
        return json.loads(value) if isinstance(value, str) else list(value)


def _infos(conn: Connection, page: _Page) -> tuple[list[int], list[list[Any]]]:
    """Positions of the runs found and, per run column, their values in that order."""
    row = conn.execute(
        select(page.array(page.pos), *(page.array(c) for c in RUN_COLUMNS)).select_from(
            page.table.join(s.runs, s.runs.c.id == page.id)
        ),
        page.params,
    ).one()
    positions = page.decode(row[0])
    columns = [page.decode(v) for v in row[1:]]
    order = sorted(range(len(positions)), key=positions.__getitem__)
    return [positions[i] for i in order], [[column[i] for i in order] for column in columns]


def _children(conn: Connection, page: _Page, table: Any) -> list[tuple[str, list[int], list[Any]]]:
    """``(key, positions, values)`` of every key of ``table`` among the page's runs, by key."""
    joined = page.table.join(table, table.c.run_id == page.id)
    if table is s.latest_metrics and not page.postgres:
        # Native floats (see the module docstring): one row per value, gathered here.
        by_key: dict[str, tuple[list[int], list[Any]]] = {}
        for pos, key, value in conn.execute(
            select(page.pos, table.c.key, table.c.value).select_from(joined), page.params
        ).all():
            found = by_key.get(key)
            if found is None:
                found = by_key[key] = ([], [])
            found[0].append(pos)
            found[1].append(value)
        grouped = [(key, pos, values) for key, (pos, values) in by_key.items()]
    else:
        rows = conn.execute(
            select(table.c.key, page.array(page.pos), page.array(table.c.value))
            .select_from(joined)
            .group_by(table.c.key),
            page.params,
        ).all()
        grouped = [(key, page.decode(pos), page.decode(values)) for key, pos, values in rows]
    # Sorted here, not in SQL: a PostgreSQL collation may order keys unlike Python.
    return sorted(grouped, key=lambda item: item[0])


def _metric(value: Any) -> float:
    """A stored latest value as a float: NULL stands for NaN (JSON has no NaN)."""
    return math.nan if value is None else float(value)


def load_runs(conn: Connection, ids: Sequence[str]) -> list[Run]:
    """The runs ``ids`` name, in that order, with their params, latest metrics and tags."""
    if not ids:
        return []
    page = _Page(conn, ids)
    positions, columns = _infos(conn, page)
    maps: dict[str, list[dict[str, Any]]] = {}
    for kind, table in _CHILDREN:
        per_run: list[dict[str, Any]] = [{} for _ in ids]
        for key, pos, values in _children(conn, page, table):
            if kind == "metrics":
                values = [_metric(v) for v in values]
            for p, v in zip(pos, values, strict=True):
                per_run[p][key] = v
        maps[kind] = per_run
    return [
        Run(
            RunInfo(*(column[n] for column in columns)),
            maps["params"][p],
            maps["metrics"][p],
            maps["tags"][p],
        )
        for n, p in enumerate(positions)
    ]


def load_frame(conn: Connection, ids: Sequence[str]) -> pd.DataFrame:
    """The runs ``ids`` name as a DataFrame, one row a run, in that order.

    Columns: ``run_id, experiment_id, name, status, start_time, end_time,
    parent_id, user``, then ``metrics.<key>`` (float, NaN where a run lacks
    it), ``params.<key>`` and ``tags.<key>`` (text, missing where a run lacks
    it), each group sorted by key.
    """
    import numpy as np
    import pandas as pd

    page = _Page(conn, ids) if ids else None
    positions, columns = _infos(conn, page) if page is not None else ([], [[] for _ in RUN_COLUMNS])
    base: dict[str, Any] = {}
    for name, values in zip(_FRAME_NAMES, columns, strict=True):
        if name in ("start_time", "end_time"):
            base[name] = pd.to_datetime(
                pd.array(values, dtype="Int64"), unit="ms", utc=True
            ).as_unit("ms")
        else:
            base[name] = values
    frame = pd.DataFrame(base)
    if page is None:
        return frame
    # Row of each page position; -1 for an id whose run is gone.
    row_of = np.full(len(ids), -1, dtype=np.int64)
    row_of[np.asarray(positions, dtype=np.int64)] = np.arange(len(positions))
    extra: dict[str, Any] = {}
    for kind, table in _CHILDREN:
        for key, pos, values in _children(conn, page, table):
            rows = row_of[np.asarray(pos, dtype=np.int64)]
            keep = rows >= 0
            if kind == "metrics":
                column = np.full(len(positions), np.nan)
                stored = np.array([np.nan if v is None else v for v in values], dtype=float)
            else:
                column = np.full(len(positions), None, dtype=object)
                stored = np.empty(len(values), dtype=object)
                stored[:] = values
            column[rows[keep]] = stored[keep]
            extra[f"{kind}.{key}"] = column
    if extra:
        frame = pd.concat([frame, pd.DataFrame(extra)], axis=1)
    return frame
