"""A deployment's traffic over time: requests, errors and latency per time bucket, from the logs.

:func:`traffic_series` reads the prediction and error logs of ``[start, end)``
(only the columns it needs, only the hour partitions the range touches) and
counts, per bucket of equal length, the requests answered (distinct request
ids; a request of many rows is one request, dated by its first row), the
requests a model version failed, the error rate ``errors / (requests +
errors)`` (as :class:`keel.automation.live.LiveMetrics` counts it) and the
latency quantiles p50, p95 and p99. Shadow copies answer no one: they are left
out of every count.

Like a monitor run it reads the logs under the client's own artifact root, so
through ``keel server`` it runs on the server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import InvalidInput

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["MAX_BUCKETS", "TrafficSeries", "traffic_series"]

#: The most buckets one series may have.
MAX_BUCKETS = 1_000
_QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


@dataclass(frozen=True)
class TrafficSeries:
    """Per-bucket counts and latency quantiles of one deployment over ``[start, end)``.

    Attributes:
        times: each bucket's start (epoch ms).
        requests: requests answered in each bucket (shadow copies left out).
        errors: requests a model version failed in each bucket.
        latency: ``p50``/``p95``/``p99`` in ms per bucket (``None`` where none was answered).
    """

    deployment: str
    start: int
    end: int
    bucket_ms: int
    times: list[int]
    requests: list[int]
    errors: list[int]
    latency: dict[str, list[float | None]]

    @property
    def error_rate(self) -> list[float | None]:
        """``errors / (requests + errors)`` per bucket (``None`` for an empty bucket)."""
        return [
            e / (r + e) if r + e else None for r, e in zip(self.requests, self.errors, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        seconds = self.bucket_ms / 1000
        return {
            "deployment": self.deployment,
            "start": self.start,
            "end": self.end,
            "bucket_ms": self.bucket_ms,
            "times": self.times,
            "requests": self.requests,
            "errors": self.errors,
            "rate": [r / seconds for r in self.requests],
            "error_rate": self.error_rate,
            **self.latency,
            "total_requests": sum(self.requests),
            "total_errors": sum(self.errors),
        }


def traffic_series(
    deployment: str, client: Client, *, start: Any, end: Any = None, buckets: int = 60
) -> TrafficSeries:
    """The deployment's traffic over ``[start, end)`` in ``buckets`` buckets of whole seconds.

    Args:
        deployment: whose logs to read.
        client: a client with its own store and artifact root (``caller.client`` on a server).
        start: inclusive: a datetime (naive = UTC), epoch ms or ISO-8601 text.
        end: exclusive, the same kinds (default: now).
        buckets: how many buckets at most; each lasts a whole number of seconds.

    Raises:
        InvalidInput: a malformed name or bound, ``end`` not after ``start``, a bad ``buckets``.
        NotFound: no such deployment (see :mod:`keel.monitoring.names`).
        StorageError, BackendUnavailable: the logs cannot be read.
    """
    from keel.monitoring.names import require_deployment
    from keel.predictions import ERRORS, PredictionReader, check_deployment, to_ms
    from keel.store.sql import now_ms

    check_deployment(deployment)
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= MAX_BUCKETS:
        raise InvalidInput(
            f"buckets must be a whole number from 1 to {MAX_BUCKETS}, got {buckets!r}"
        )
    start_ms = to_ms(start, "start")
    end_ms = to_ms(end, "end") if end is not None else now_ms()
    if start_ms is None or end_ms is None or end_ms <= start_ms:
        raise InvalidInput(f"end ({end!r}) must come after start ({start!r})")
    require_deployment(deployment, client)
    # whole seconds, so the buckets read as a rate per second without fractions
    bucket_ms = max(1_000, math.ceil((end_ms - start_ms) / buckets / 1_000) * 1_000)
    count = math.ceil((end_ms - start_ms) / bucket_ms)
    conf = client.settings
    reader = PredictionReader(conf.artifacts_url, s3_endpoint_url=conf.s3_endpoint_url)
    answered = reader.read(
        deployment,
        start=start_ms,
        end=end_ms,
        columns=["request_id", "time", "route", "latency_ms"],
    )
    failed = reader.read(
        deployment, start=start_ms, end=end_ms, columns=["request_id", "time", "route"],
        dataset=ERRORS,
    )  # fmt: skip
    times, latencies = _first_rows(answered)
    error_times, _ = _first_rows(failed)
    slot = (times - start_ms) // bucket_ms
    requests = np.bincount(slot, minlength=count)[:count]
    errors = np.bincount((error_times - start_ms) // bucket_ms, minlength=count)[:count]
    latency: dict[str, list[float | None]] = {name: [None] * count for name, _ in _QUANTILES}
    if len(slot):
        order = np.argsort(slot, kind="stable")
        bounds = np.searchsorted(slot[order], np.arange(count + 1))
        for k in np.flatnonzero(requests):
            values = latencies[order[bounds[k] : bounds[k + 1]]]
            values = values[np.isfinite(values)]
            if len(values):
                for (name, _), value in zip(
                    _QUANTILES, np.quantile(values, [q for _, q in _QUANTILES]), strict=True
                ):
                    latency[name][k] = float(value)
    return TrafficSeries(
        deployment=deployment,
        start=start_ms,
        end=end_ms,
        bucket_ms=bucket_ms,
        times=[start_ms + k * bucket_ms for k in range(count)],
        requests=[int(n) for n in requests],
        errors=[int(n) for n in errors],
        latency=latency,
    )


def _first_rows(table: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per request (shadow copies left out): the time of its first row, and its latency."""
    if table.num_rows == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    routes = np.asarray(table.column("route").to_numpy(zero_copy_only=False), dtype=object)
    kept = routes != "shadow"
    ids = np.asarray(table.column("request_id").to_numpy(zero_copy_only=False), dtype=object)[kept]
    times = table.column("time").cast("int64").to_numpy()[kept]
    if "latency_ms" in table.column_names:
        latency = np.asarray(
            table.column("latency_ms").to_numpy(zero_copy_only=False), dtype=np.float64
        )[kept]
    else:
        latency = np.full(len(times), np.nan)
    # the reader sorts by time, so a request's first index is its first row
    first = np.unique(ids.astype(str), return_index=True)[1]
    return times[first].astype(np.int64), latency[first]
