"""The JSON the UI's charts draw: one metric of one run, downsampled on the server.

A chart asks for as many points as it has pixels (``width``); the tracking
library reads only the range asked for and keeps each pixel bucket's min and
max in the database (:meth:`keel.tracking.TrackingClient.metric_columns`, the
envelope of :func:`keel.tracking.series.downsample`). Zooming asks again with
``start``/``end``, so a narrow enough range comes back exact.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from keel.server.context import Caller, SessionCallerDep
from keel.server.permissions import check_run

__all__ = ["MAX_WIDTH", "Axis", "router", "run_series"]

#: The widest chart, in pixel buckets, a request may ask for.
MAX_WIDTH = 10_000

router = APIRouter(prefix="/ui/api", include_in_schema=False)


#: What a chart's x axis may count: the logged step, or the time of logging (ms since epoch).
Axis = Literal["step", "time"]


@router.get("/runs/{run_id}/metrics/{key:path}")
def metric_series(
    run_id: str,
    key: str,
    caller: SessionCallerDep,
    width: Annotated[int, Query(ge=1, le=MAX_WIDTH)] = 1_000,
    start: Annotated[int | None, Query(ge=-(2**63), le=2**63 - 1)] = None,
    end: Annotated[int | None, Query(ge=-(2**63), le=2**63 - 1)] = None,
    x: Axis = "step",
) -> dict[str, Any]:
    """The metric's points from ``start`` to ``end`` (inclusive), at most 2 per bucket.

    See :func:`run_series` for the answer's fields.
    """
    check_run(caller, "read", run_id)
    return run_series(caller, run_id, key, width=width, start=start, end=end, x=x)


def run_series(
    caller: Caller,
    run_id: str,
    key: str,
    *,
    width: int,
    start: int | None = None,
    end: int | None = None,
    x: Axis = "step",
) -> dict[str, Any]:
    """One run's metric, downsampled to ``width`` buckets of its x axis (the caller may read it).

    The answer holds ``x`` (the axis), ``steps`` (the x values: steps, or times in ms)
    and ``values`` columns, ``points`` (how many the range holds), ``exact`` (whether
    every one of them came back), ``skipped`` (NaN and infinite values, which JSON
    cannot carry and a line cannot draw) and ``range`` (what the chart's x axis spans).
    """
    # the database keeps each bucket's min and max (exact when few enough points are in range)
    found = caller.client.tracking.metric_columns(
        run_id, key, start=start, end=end, x=x, width=width
    )
    low = start if start is not None else (found.low if found.low is not None else 0)
    high = end if end is not None else (found.high if found.high is not None else 0)
    return {
        "key": key,
        "x": x,
        "steps": found.axis.tolist(),
        "values": found.values.tolist(),
        "points": found.points,
        "exact": found.exact,
        "skipped": found.skipped,
        "range": [low, high],
    }
