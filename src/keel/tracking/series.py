"""Metric series made small enough to draw: min/max downsampling per bucket of steps.

A chart is a few hundred to a few thousand pixels wide, and a metric may hold a
million points. :func:`downsample` splits the step range into ``width`` equal
buckets (one per pixel column) and keeps, in each, the point with the lowest
value and the one with the highest. A line through those points has the same
envelope as the line through every point: no spike or dip disappears, which an
average or a stride would lose. A series of at most ``2 * width`` points is
returned as it is, so zooming in far enough shows the exact points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from keel.errors import InvalidInput

__all__ = ["downsample"]


def downsample(
    steps: Sequence[int] | npt.NDArray[np.int64],
    values: Sequence[float] | npt.NDArray[np.float64],
    width: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The min and max point of each of ``width`` step buckets, in step order.

    Args:
        steps: the points' steps, in ascending order (as the metric history answers them).
        values: the points' values, one per step; give finite numbers (NaN has no
            place between a minimum and a maximum).
        width: how many buckets (pixel columns) to keep points for; at least 1.

    Returns:
        The kept steps and values: every point when there are at most ``2 * width``,
        else at most two per bucket (one when the bucket's min and max are one point).

    Raises:
        InvalidInput: ``width`` is not a positive integer, or the columns differ in length.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise InvalidInput(f"width must be a positive integer (pixels), got {width!r}")
    x = np.asarray(steps, dtype=np.int64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise InvalidInput(
            f"steps and values must be two flat columns of one length; got {x.shape} and {y.shape}"
        )
    if len(x) <= 2 * width:
        return x, y
    first, last = int(x[0]), int(x[-1])
    span = last - first + 1
    # a bucket per pixel column of the step range, not per equal count of points: a
    # metric logged densely in one stretch must not squeeze the rest of the chart
    buckets = ((x - first).astype(np.float64) * width / span).astype(np.int64)
    # sorted by bucket, then value: each bucket's first item is its min, its last its max
    order = np.lexsort((y, buckets))
    sorted_buckets = buckets[order]
    starts = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1]])
    ends = np.r_[starts[1:], len(order)] - 1
    kept = np.unique(np.concatenate((order[starts], order[ends])))  # unique sorts: step order
    return x[kept], y[kept]
