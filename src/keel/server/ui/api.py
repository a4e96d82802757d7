"""The JSON the UI's charts draw: one metric of one run, downsampled on the server.

A chart asks for as many points as it has pixels (``width``); the server reads
the metric's history through the tracking library and keeps each pixel
bucket's min and max (:func:`keel.tracking.series.downsample`). Zooming asks
again with ``start``/``end``, so a narrow enough range comes back exact.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query

from keel.server.context import SessionCallerDep
from keel.server.permissions import check_run
from keel.tracking.series import downsample

__all__ = ["MAX_WIDTH", "router"]

#: The widest chart, in pixel buckets, a request may ask for.
MAX_WIDTH = 10_000

router = APIRouter(prefix="/ui/api", include_in_schema=False)


@router.get("/runs/{run_id}/metrics/{key:path}")
def metric_series(
    run_id: str,
    key: str,
    caller: SessionCallerDep,
    width: Annotated[int, Query(ge=1, le=MAX_WIDTH)] = 1_000,
    start: Annotated[int | None, Query(ge=-(2**63), le=2**63 - 1)] = None,
    end: Annotated[int | None, Query(ge=-(2**63), le=2**63 - 1)] = None,
) -> dict[str, Any]:
    """The metric's points from ``start`` to ``end`` (steps, inclusive), at most 2 per bucket.

    The answer holds ``steps`` and ``values`` columns, ``points`` (how many the range
    holds), ``exact`` (whether every one of them came back), ``skipped`` (NaN and
    infinite values, which JSON cannot carry and a line cannot draw) and ``range``
    (the steps the chart's x axis spans).
    """
    check_run(caller, "read", run_id)
    history = caller.client.tracking.get_metric_history(run_id, key)
    steps = np.fromiter((m.step for m in history), dtype=np.int64, count=len(history))
    values = np.fromiter((m.value for m in history), dtype=np.float64, count=len(history))
    inside = np.ones(len(steps), dtype=bool)
    if start is not None:
        inside &= steps >= start
    if end is not None:
        inside &= steps <= end
    finite = inside & np.isfinite(values)
    steps_in, values_in = steps[finite], values[finite]
    kept_steps, kept_values = downsample(steps_in, values_in, width)
    low = start if start is not None else (int(steps_in[0]) if len(steps_in) else 0)
    high = end if end is not None else (int(steps_in[-1]) if len(steps_in) else 0)
    return {
        "key": key,
        "steps": kept_steps.tolist(),
        "values": kept_values.tolist(),
        "points": int(finite.sum()),
        "exact": len(kept_steps) == len(steps_in),
        "skipped": int(inside.sum() - finite.sum()),
        "range": [low, high],
    }
