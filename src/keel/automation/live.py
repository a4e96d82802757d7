"""Live metrics of a canary, from the logs every serving replica writes.

The prediction logs (one row per predicted row, with the request's route,
version and latency) and the error logs (one row per request a version
failed) are read for the canary's window and compared per version: request
counts, error rate, p99 latency and the drift between the canary's and the
primary's predictions on the traffic they shared. Nothing here asks a
running serving process: replicas come and go, their logs stay.

Through ``keel server`` the measurement runs on the server (one request to
:mod:`keel.server.routes.monitoring`), over the logs under the server's
artifact root: the serving processes must log there (the same folder or S3
prefix as the server's ``KEEL_ARTIFACTS_URL``), which is the supported layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["LiveMetrics", "measure_canary", "prediction_drift"]


@dataclass(frozen=True)
class LiveMetrics:
    """What the canary did since it started, next to the primary in the same window."""

    canary_requests: int
    canary_errors: int
    primary_requests: int
    primary_errors: int
    canary_p99_ms: float | None
    primary_p99_ms: float | None
    prediction_drift: float | None

    @property
    def error_rate(self) -> float | None:
        total = self.canary_requests + self.canary_errors
        return None if total == 0 else self.canary_errors / total

    @property
    def p99_ratio(self) -> float | None:
        if not self.canary_p99_ms or not self.primary_p99_ms:
            return None
        return self.canary_p99_ms / self.primary_p99_ms

    def measured(self) -> dict[str, float | None]:
        """The values a rollout's criteria bound, by criterion name."""
        return {
            "error_rate": self.error_rate,
            "p99_ratio": self.p99_ratio,
            "p99_ms": self.canary_p99_ms,
            "prediction_drift": self.prediction_drift,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "canary_requests": self.canary_requests,
            "canary_errors": self.canary_errors,
            "primary_requests": self.primary_requests,
            "primary_errors": self.primary_errors,
            "canary_p99_ms": self.canary_p99_ms,
            "primary_p99_ms": self.primary_p99_ms,
            **{k: v for k, v in self.measured().items() if k not in ("p99_ms",)},
        }


def measure_canary(
    deployment: str,
    candidate: int,
    since_ms: int,
    *,
    client: Client | None = None,
    root_url: str | None = None,
    s3_endpoint_url: str | None = None,
) -> LiveMetrics:
    """The canary version's metrics against the other routed versions since ``since_ms``.

    Args:
        deployment: the deployment whose logs to read.
        candidate: the canary's model version.
        since_ms: when the canary started (epoch ms).
        client: whose logs: the client's artifact root, or through ``keel server``
            the server's (default: a client on the process settings).
        root_url: read the logs under this root instead (with ``s3_endpoint_url``).

    Raises:
        InvalidInput: a malformed deployment name.
        StorageError, BackendUnavailable: the logs cannot be read.
    """
    if root_url is not None:
        return _measure(root_url, s3_endpoint_url, deployment, candidate, since_ms)
    from keel.monitoring.clients import resolve_client
    from keel.transport.http import HttpTransport

    client = resolve_client(client)
    transport = client.transport
    if isinstance(transport, HttpTransport):
        from keel.predictions import check_deployment

        check_deployment(deployment)  # the local message, before any request
        path = f"/deployments/{quote(deployment, safe='')}/canary"
        params = {"version": int(candidate), "since": int(since_ms)}
        metrics: LiveMetrics = transport.call("GET", path, LiveMetrics, params=params)
        return metrics
    conf = client.settings
    return _measure(conf.artifacts_url, conf.s3_endpoint_url, deployment, candidate, since_ms)


def _measure(
    root: str, endpoint: str | None, deployment: str, candidate: int, since_ms: int
) -> LiveMetrics:
    from keel.predictions import ERRORS, read_predictions

    predictions = read_predictions(
        root,
        deployment,
        start=since_ms,
        columns=["request_id", "version", "route", "latency_ms", "output.prediction"],
        s3_endpoint_url=endpoint,
    )
    errors = read_predictions(
        root,
        deployment,
        start=since_ms,
        columns=["request_id", "version", "route"],
        s3_endpoint_url=endpoint,
        dataset=ERRORS,
    )
    answered = _requests(predictions)
    failed = _requests(errors)
    shadow = answered["route"] == "shadow"
    answered = {k: v[~shadow] for k, v in answered.items()}
    is_canary = answered["version"] == candidate
    failed_canary = failed["version"] == candidate
    outputs = _outputs(predictions)
    drift = None
    if outputs is not None:
        values, versions, routes = outputs
        drift = prediction_drift(
            values[(versions == candidate) & (routes != "shadow")],
            values[(versions != candidate) & (routes != "shadow")],
        )
    return LiveMetrics(
        canary_requests=int(is_canary.sum()),
        canary_errors=int(failed_canary.sum()),
        primary_requests=int((~is_canary).sum()),
        primary_errors=int((~failed_canary).sum()),
        canary_p99_ms=_p99(answered["latency_ms"][is_canary]),
        primary_p99_ms=_p99(answered["latency_ms"][~is_canary]),
        prediction_drift=drift,
    )


def _requests(table: Any) -> dict[str, np.ndarray]:
    """One entry per request (rows of one request share its id, route, version and latency)."""
    if table.num_rows == 0:
        return {
            "version": np.array([], dtype=np.int64),
            "route": np.array([], dtype=object),
            "latency_ms": np.array([], dtype=np.float64),
        }
    ids = np.asarray(table.column("request_id").to_numpy(zero_copy_only=False), dtype=object)
    first = np.zeros(table.num_rows, dtype=bool)
    first[np.unique(ids, return_index=True)[1]] = True
    out = {
        "version": np.asarray(table.column("version").to_numpy(zero_copy_only=False))[first],
        "route": np.asarray(table.column("route").to_numpy(zero_copy_only=False))[first],
    }
    if "latency_ms" in table.column_names:
        out["latency_ms"] = np.asarray(
            table.column("latency_ms").to_numpy(zero_copy_only=False), dtype=np.float64
        )[first]
    return out


def _outputs(table: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if table.num_rows == 0 or "output.prediction" not in table.column_names:
        return None
    column = table.column("output.prediction")
    try:
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    except (TypeError, ValueError):
        return None  # not one number per row (labels as text, lists): no drift statistic
    versions = np.asarray(table.column("version").to_numpy(zero_copy_only=False))
    routes = np.asarray(table.column("route").to_numpy(zero_copy_only=False))
    return values, versions, routes


def _p99(latencies: np.ndarray) -> float | None:
    if len(latencies) == 0:
        return None
    return float(np.quantile(latencies, 0.99))


def prediction_drift(canary: np.ndarray, primary: np.ndarray, bins: int = 10) -> float | None:
    """Jensen-Shannon distance (base 2, 0 to 1) between two sets of predictions.

    Bins are the primary's deciles (or its distinct values when it has few, as a
    classifier's labels do), so the statistic reads the same for labels and scores.
    None when either side has fewer than 20 predictions.
    """
    canary = canary[np.isfinite(canary)]
    primary = primary[np.isfinite(primary)]
    if len(canary) < 20 or len(primary) < 20:
        return None
    distinct = np.unique(primary)
    if len(distinct) <= bins:
        support = np.union1d(distinct, np.unique(canary))
        p = np.array([(primary == v).sum() for v in support], dtype=np.float64)
        q = np.array([(canary == v).sum() for v in support], dtype=np.float64)
    else:
        edges = np.unique(np.quantile(primary, np.linspace(0, 1, bins + 1)))
        edges[0], edges[-1] = -np.inf, np.inf
        p = np.histogram(primary, edges)[0].astype(np.float64)
        q = np.histogram(canary, edges)[0].astype(np.float64)
    from keel.monitoring.stattests import jensen_shannon

    return jensen_shannon(p, q)
