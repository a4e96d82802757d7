"""One metric of one run read as numpy columns, whole or downsampled in the database.

:func:`metric_columns` is what a chart reads. It selects only the axis (step, or
time of logging) and the value of the points inside a range, and never builds a
Python object per point:

- **Every point** (no ``width``): the rows come from the DB-API cursor in chunks,
  straight into a structured numpy array.
- **A chart's worth** (``width`` pixel buckets): the database does the work of
  :func:`keel.tracking.series.downsample` — one ``GROUP BY`` keeps each bucket's
  minimum and maximum value, and a second pass over the same index finds the x of
  each (the first point holding the minimum, the last holding the maximum, as
  the numpy version keeps). A million points then cost two index scans on the
  server and a few thousand rows over the wire, instead of a million Python
  objects. A range of at most ``2 * width`` finite points comes back exact.

NaN is stored as NULL and ±inf as itself; neither has a place between a minimum
and a maximum, so a downsampled answer leaves them out and counts them in
``skipped``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Float,
    Integer,
    Select,
    and_,
    case,
    cast,
    func,
    or_,
    select,
)

from keel.errors import InvalidInput
from keel.store import schema as s
from keel.tracking.series import downsample

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["Axis", "MetricColumns", "MetricSummary", "read_metric_columns", "read_metric_summaries"]

#: What a series' x axis counts: the logged step, or the time of logging (ms since epoch).
Axis = Literal["step", "time"]

#: Rows per fetch from the cursor: large enough to amortize the call, small enough to stay flat.
_CHUNK = 65_536

# The finite range of a float64: NULL (a stored NaN) and ±inf fail the comparison, on
# both databases, without binding an infinity (SQLite's driver binds NaN as NULL).
_FLOAT_MAX = sys.float_info.max


@dataclass(frozen=True)
class MetricColumns:
    """The points of one metric in a range, as columns.

    Attributes:
        x: what ``axis`` counts: ``"step"`` or ``"time"`` (ms since the epoch).
        axis: the points' x values, ascending (ties: by the other of step and time).
        values: one value per x. Every point when ``exact``; else each bucket's
            minimum and maximum, finite only.
        points: how many finite points the range holds.
        skipped: how many points of the range are NaN or ±inf.
        exact: whether ``axis`` and ``values`` hold every point of the range (a
            downsampled answer holds only finite points, so ``exact`` then also
            means ``skipped == 0`` or that no ``width`` was asked for).
        low: the lowest x of a finite point in the range; None when there is none.
        high: the highest x of a finite point in the range; None when there is none.
    """

    x: Axis
    axis: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    points: int
    skipped: int
    exact: bool
    low: int | None
    high: int | None


def read_metric_columns(
    conn: Connection,
    run_id: str,
    key: str,
    *,
    start: int | None = None,
    end: int | None = None,
    x: Axis = "step",
    width: int | None = None,
) -> MetricColumns:
    """One metric of one run from ``start`` to ``end`` (inclusive) on the ``x`` axis.

    Args:
        conn: a connection in a read transaction (one snapshot for every query here).
        run_id: the run.
        key: the metric key.
        start: the lowest x to include; None for the first point.
        end: the highest x to include; None for the last point.
        x: ``"step"`` or ``"time"``.
        width: pixel buckets to downsample to (min and max point of each, finite
            points only, see :func:`keel.tracking.series.downsample`); None for
            every point of the range, NaN and ±inf included.

    Raises:
        InvalidInput: ``x`` is not an axis, ``width`` is not a positive integer, or
            ``start`` is after ``end``.
    """
    import numpy as np

    column, other = _axis_columns(x)
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise InvalidInput(f"width must be a positive integer (pixels) or None, got {width!r}")
    if start is not None and end is not None and start > end:
        raise InvalidInput(f"start must not be after end; got start={start} and end={end}")
    m = s.metrics.c
    where = [m.run_id == run_id, m.key == key]
    if start is not None:
        where.append(column >= start)
    if end is not None:
        where.append(column <= end)
    finite = m.value.between(-_FLOAT_MAX, _FLOAT_MAX)
    if width is None:
        return _every_point(conn, x, column, other, where)

    # Exact when the range holds at most 2 * width finite points: ask for one more than that.
    limit = 2 * width
    head = conn.execute(
        select(column, m.value).where(*where, finite).order_by(column, other).limit(limit + 1)
    ).all()
    if len(head) <= limit:
        skipped = conn.execute(
            select(func.count()).select_from(s.metrics).where(*where, ~_finite_or_false(finite))
        ).scalar_one()
        axis = np.fromiter((r[0] for r in head), dtype=np.int64, count=len(head))
        values = np.fromiter((r[1] for r in head), dtype=np.float64, count=len(head))
        low, high = (int(axis[0]), int(axis[-1])) if len(head) else (None, None)
        return MetricColumns(x, axis, values, len(head), int(skipped), True, low, high)

    if x == "time":
        # No index leads by time: a pass in SQL would match each point to its bucket by
        # scanning them all per bucket, so the points come over once and numpy keeps them.
        every = _every_point(conn, x, column, other, where)
        finite_points = np.isfinite(every.values)
        kept_axis, kept_values = downsample(
            every.axis[finite_points], every.values[finite_points], width
        )
        return MetricColumns(
            x, kept_axis, kept_values, every.points, every.skipped, False, every.low, every.high
        )
    low = int(head[0][0])
    high = int(conn.execute(select(func.max(column)).where(*where, finite)).scalar_one())
    return _envelope(conn, run_id, key, where, finite, width, low, high)


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one run in a few numbers: what a comparison of runs shows.

    Attributes:
        min: the lowest finite value; None when no value is finite.
        max: the highest finite value; None when no value is finite.
        last: the value at the highest step (NaN when that one was NaN).
        points: how many points were logged, NaN and ±inf included.
    """

    min: float | None
    max: float | None
    last: float
    points: int


def read_metric_summaries(
    conn: Connection, run_ids: list[str], keys: list[str] | None = None
) -> dict[tuple[str, str], MetricSummary]:
    """Min, max, last and count of each metric of ``run_ids``, by ``(run_id, key)``.

    Two grouped queries for all the runs together, whatever their length: the counts
    and finite extremes follow the ``(run, key, step)`` index, and the last value
    comes from the latest-value table that search reads. Keys a run never logged are
    absent from the answer.

    Args:
        conn: a connection in a read transaction.
        run_ids: the runs.
        keys: only these metric keys; None for every key the runs logged.
    """
    import math

    m, latest = s.metrics.c, s.latest_metrics.c
    finite = m.value.between(-_FLOAT_MAX, _FLOAT_MAX)
    where = [m.run_id.in_(run_ids)] + ([m.key.in_(keys)] if keys is not None else [])
    extremes = conn.execute(
        select(
            m.run_id,
            m.key,
            func.count(),
            func.min(case((finite, m.value))),
            func.max(case((finite, m.value))),
        )
        .where(*where)
        .group_by(m.run_id, m.key)
    ).all()
    last_where = [latest.run_id.in_(run_ids)]
    if keys is not None:
        last_where.append(latest.key.in_(keys))
    last = {
        (run, key): value
        for run, key, value in conn.execute(
            select(latest.run_id, latest.key, latest.value).where(*last_where)
        )
    }
    return {
        (run, key): MetricSummary(
            low, high, math.nan if last.get((run, key)) is None else last[run, key], count
        )
        for run, key, count, low, high in extremes
    }


def _axis_columns(x: str) -> tuple[Any, Any]:
    """The column an axis reads and the one that breaks its ties."""
    m = s.metrics.c
    if x == "step":
        return m.step, m.timestamp
    if x == "time":
        return m.timestamp, m.step
    raise InvalidInput(f"x must be one of 'step', 'time', got {x!r}")


def _finite_or_false(finite: ColumnElement[bool]) -> ColumnElement[bool]:
    """``finite`` as a plain true/false (a NULL value makes the comparison NULL, not false)."""
    return and_(s.metrics.c.value.is_not(None), finite)


def _every_point(
    conn: Connection,
    x: Axis,
    column: Any,
    other: Any,
    where: list[ColumnElement[bool]],
) -> MetricColumns:
    """Every point of the range, fetched in chunks from the DB-API cursor into two arrays."""
    import numpy as np  # here, not at the top: `import keel` stays fast

    m = s.metrics.c
    cursor = conn.execute(select(column, m.value).where(*where).order_by(column, other)).cursor
    axes, values = [], []
    while rows := cursor.fetchmany(_CHUNK):
        axes.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
        # a stored NaN is NULL, and numpy reads None as NaN in a float column
        values.append(np.array([r[1] for r in rows], dtype=np.float64))
    axis = np.concatenate(axes) if axes else np.empty(0, dtype=np.int64)
    value = np.concatenate(values) if values else np.empty(0, dtype=np.float64)
    finite = np.isfinite(value)
    points = int(finite.sum())
    kept = axis[finite]
    low, high = (int(kept[0]), int(kept[-1])) if points else (None, None)
    return MetricColumns(x, axis, value, points, len(axis) - points, True, low, high)


def _bucket(conn: Connection, column: Any, low: int, high: int, width: int) -> Any:
    """The pixel bucket of ``column``, computed as :func:`~keel.tracking.series.downsample` does.

    The same float64 operations in the same order, ``(x - low) * width / span``, then
    truncated: both databases compute in IEEE doubles, so each point lands in the very
    bucket the numpy version gives it (``x - low`` is never negative for a kept point,
    so truncation is the floor).
    """
    span = high - low + 1
    scaled = cast(column - low, Float) * float(width) / float(span)
    if conn.dialect.name == "postgresql":
        # PostgreSQL rounds a float cast to an integer; SQLite truncates
        return cast(func.floor(scaled), BigInteger)
    return cast(scaled, Integer)


def _envelope(
    conn: Connection,
    run_id: str,
    key: str,
    where: list[ColumnElement[bool]],
    finite: ColumnElement[bool],
    width: int,
    low: int,
    high: int,
) -> MetricColumns:
    """Each bucket's min and max point, found in the database: one aggregate, one lookup pass."""
    import numpy as np

    m = s.metrics.c
    column = m.step
    # The bucket is computed once, in a subquery, and grouped by name: PostgreSQL would not
    # take the same expression twice with its bound numbers as one GROUP BY key.
    points_in = (
        select(
            _bucket(conn, column, low, high, width).label("bucket"),
            m.value.label("value"),
            column.label("x"),
        )
        .where(*where, finite)
        .subquery("points_in")
    )
    p = points_in.c
    per_bucket = (
        select(
            p.bucket,
            func.min(p.value).label("lo_value"),
            func.max(p.value).label("hi_value"),
            func.min(p.x).label("first_x"),
            func.max(p.x).label("last_x"),
            func.count().label("finite"),
        )
        .group_by(p.bucket)
        .cte("per_bucket")
        .prefix_with("MATERIALIZED")
    )
    b = per_bucket.c
    hit = s.metrics.alias("hit")
    h = hit.c
    hit_column = h.step
    # A bucket is the run of steps from its first to its last finite point (the bucket
    # grows with the step), so its extremes are found by a range read of the metrics'
    # (run, key, step) index, a few points per bucket.
    inside = hit_column.between(b.first_x, b.last_x)
    query: Select[Any] = (
        select(
            b.bucket,
            b.lo_value,
            func.min(case((h.value == b.lo_value, hit_column))),
            b.hi_value,
            func.max(case((h.value == b.hi_value, hit_column))),
            b.finite,
        )
        .select_from(
            per_bucket.outerjoin(
                hit,
                and_(
                    h.run_id == run_id,
                    h.key == key,
                    inside,
                    or_(h.value == b.lo_value, h.value == b.hi_value),
                ),
            )
        )
        .group_by(b.bucket, b.lo_value, b.hi_value, b.finite)
        .order_by(b.bucket)
    )
    rows = conn.execute(query).all()
    points = sum(int(r[5]) for r in rows)
    # the range's points counted on the index alone (no table reads): the rest are not finite
    every = conn.execute(select(func.count()).select_from(s.metrics).where(*where)).scalar_one()
    pairs: list[tuple[int, float]] = []
    for _, lo_value, lo_x, hi_value, hi_x, _count in rows:
        if lo_x == hi_x and lo_value == hi_value:
            pairs.append((lo_x, lo_value))  # one point is the bucket's min and its max
        elif lo_x <= hi_x:
            pairs.extend(((lo_x, lo_value), (hi_x, hi_value)))
        else:
            pairs.extend(((hi_x, hi_value), (lo_x, lo_value)))
    axis = np.fromiter((pair[0] for pair in pairs), dtype=np.int64, count=len(pairs))
    values = np.fromiter((pair[1] for pair in pairs), dtype=np.float64, count=len(pairs))
    return MetricColumns("step", axis, values, points, int(every) - points, False, low, high)
