"""Live metrics of a canary, from the logs every serving replica or gateway writes.

For a model deployment, the prediction logs (one row per predicted row, with
the request's route, version and latency) and the error logs (one row per
request a version failed) are read for the canary's window and compared per
version: request counts, error rate, p99 latency and the drift between the
canary's and the primary's predictions on the traffic they shared.

For a prompt deployment, the gateway's traces (one row per request, failed
or not, with the prompt version, latency and cost) give the same counts, error
rate and p99 latency (counted as :mod:`keel.llm.traces` counts them; a
budget's 429 and other rejected requests are neither answered nor failed),
plus each side's cost per request; feedback stored for the deployment
(labels joined by request id, as numbers: a thumbs-up is 1) gives each
side's mean score once both have :data:`MIN_FEEDBACK` of it.

Nothing here asks a running server: replicas come and go, their logs stay.

Through ``keel server`` the measurement runs on the server (one request to
:mod:`keel.server.routes.monitoring`), over the logs under the server's
artifact root: the serving processes must log there (the same folder or S3
prefix as the server's ``KEEL_ARTIFACTS_URL``), which is the supported layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from keel.errors import InvalidInput

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["MIN_FEEDBACK", "LiveMetrics", "measure_canary", "prediction_drift"]

#: Feedback scores each side needs before their means are compared (noise below that).
MIN_FEEDBACK = 20


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
    #: Prompts: mean cost in USD of each side's answered, priced requests.
    canary_cost_per_request: float | None = None
    primary_cost_per_request: float | None = None
    #: Prompts: mean feedback score of each side (None below :data:`MIN_FEEDBACK` labels).
    canary_feedback: float | None = None
    primary_feedback: float | None = None
    canary_feedback_count: int = 0
    primary_feedback_count: int = 0

    @property
    def error_rate(self) -> float | None:
        total = self.canary_requests + self.canary_errors
        return None if total == 0 else self.canary_errors / total

    @property
    def p99_ratio(self) -> float | None:
        if not self.canary_p99_ms or not self.primary_p99_ms:
            return None
        return self.canary_p99_ms / self.primary_p99_ms

    @property
    def cost_ratio(self) -> float | None:
        """The canary's cost per request over the primary's (None while either is unknown)."""
        if self.canary_cost_per_request is None or not self.primary_cost_per_request:
            return None
        return self.canary_cost_per_request / self.primary_cost_per_request

    @property
    def feedback_drop(self) -> float | None:
        """How much lower the canary's mean feedback is than the primary's."""
        if self.canary_feedback is None or self.primary_feedback is None:
            return None
        return self.primary_feedback - self.canary_feedback

    def measured(self) -> dict[str, float | None]:
        """The values a rollout's criteria bound, by criterion name."""
        return {
            "error_rate": self.error_rate,
            "p99_ratio": self.p99_ratio,
            "p99_ms": self.canary_p99_ms,
            "prediction_drift": self.prediction_drift,
            "cost_ratio": self.cost_ratio,
            "cost_per_request": self.canary_cost_per_request,
            "feedback_drop": self.feedback_drop,
        }

    def to_dict(self) -> dict[str, Any]:
        measured = self.measured()
        doc: dict[str, Any] = {
            "canary_requests": self.canary_requests,
            "canary_errors": self.canary_errors,
            "primary_requests": self.primary_requests,
            "primary_errors": self.primary_errors,
            "canary_p99_ms": self.canary_p99_ms,
            "primary_p99_ms": self.primary_p99_ms,
            **{k: measured[k] for k in ("error_rate", "p99_ratio", "prediction_drift")},
        }
        # what only a prompt's canary measures, where it was measured
        if self.canary_cost_per_request is not None or self.primary_cost_per_request is not None:
            doc.update(
                canary_cost_per_request=self.canary_cost_per_request,
                primary_cost_per_request=self.primary_cost_per_request,
                cost_ratio=self.cost_ratio,
            )
        if self.canary_feedback_count or self.primary_feedback_count:
            doc.update(
                canary_feedback=self.canary_feedback,
                primary_feedback=self.primary_feedback,
                canary_feedback_count=self.canary_feedback_count,
                primary_feedback_count=self.primary_feedback_count,
                feedback_drop=self.feedback_drop,
            )
        return doc


def measure_canary(
    deployment: str,
    candidate: int,
    since_ms: int,
    *,
    client: Client | None = None,
    root_url: str | None = None,
    s3_endpoint_url: str | None = None,
    kind: str | None = None,
) -> LiveMetrics:
    """The canary version's metrics against the other routed versions since ``since_ms``.

    Args:
        deployment: the deployment whose logs to read.
        candidate: the canary's model or prompt version.
        since_ms: when the canary started (epoch ms).
        client: whose logs: the client's artifact root, or through ``keel server``
            the server's (default: a client on the process settings).
        root_url: read a model deployment's logs under this root instead (with
            ``s3_endpoint_url``).
        kind: ``model`` (prediction logs) or ``prompt`` (the gateway's traces); default:
            the stored deployment's kind (``model`` for one that is only logged).

    Raises:
        InvalidInput: a malformed deployment name, or ``root_url`` with a prompt.
        StorageError, BackendUnavailable: the logs cannot be read.
    """
    if root_url is not None:
        if kind == "prompt":
            raise InvalidInput(
                "a prompt canary is measured from the traces of a client's store; pass client, "
                "not root_url"
            )
        return _measure(root_url, s3_endpoint_url, deployment, candidate, since_ms)
    from keel.monitoring.clients import resolve_client
    from keel.transport.http import HttpTransport

    client = resolve_client(client)
    transport = client.transport
    if isinstance(transport, HttpTransport):
        from keel.predictions import check_deployment

        check_deployment(deployment)  # the local message, before any request
        # The server reads the stored deployment's kind itself, as below.
        path = f"/deployments/{quote(deployment, safe='')}/canary"
        params = {"version": int(candidate), "since": int(since_ms)}
        metrics: LiveMetrics = transport.call("GET", path, LiveMetrics, params=params)
        return metrics
    if kind is None:
        kind = _deployment_kind(client, deployment)
    if kind == "prompt":
        return _measure_prompt(client, deployment, candidate, since_ms)
    conf = client.settings
    return _measure(conf.artifacts_url, conf.s3_endpoint_url, deployment, candidate, since_ms)


def _deployment_kind(client: Client, deployment: str) -> str:
    from keel.errors import NotFound
    from keel.serving.deployments import Deployments

    try:
        return Deployments(client).get(deployment).spec.kind
    except NotFound:  # ``keel serve models:/…`` logs under a name it never stored
        return "model"


def _measure_prompt(client: Client, deployment: str, candidate: int, since_ms: int) -> LiveMetrics:
    """A prompt canary's metrics from the gateway's traces and the deployment's feedback."""
    canary, primary = _trace_sides(client, deployment, int(candidate), since_ms)
    feedback = _feedback_by_side(client, deployment, candidate, since_ms)

    # Requests are the answered ones, errors the version's failures (5xx), as the traces
    # count them. A rejected request (another 4xx: a variable the version needs and the
    # caller did not send) is neither: so a version that rejects every request never
    # reaches its min_requests and is rolled back when its time is up, never promoted.
    def answered(stats: Any) -> int:
        return 0 if stats is None else int(stats.answered)

    return LiveMetrics(
        canary_requests=answered(canary),
        canary_errors=0 if canary is None else canary.errors,
        primary_requests=answered(primary),
        primary_errors=0 if primary is None else primary.errors,
        canary_p99_ms=None if canary is None else canary.p99_ms,
        primary_p99_ms=None if primary is None else primary.p99_ms,
        prediction_drift=None,
        canary_cost_per_request=None if canary is None else canary.cost_per_request,
        primary_cost_per_request=None if primary is None else primary.cost_per_request,
        canary_feedback=feedback.canary_mean,
        primary_feedback=feedback.primary_mean,
        canary_feedback_count=feedback.canary_count,
        primary_feedback_count=feedback.primary_count,
    )


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


# -- prompts: the gateway's traces ------------------------------------------------------------


def _trace_sides(client: Client, deployment: str, candidate: int, since_ms: int) -> tuple[Any, Any]:
    """(canary, primary) :class:`~keel.llm.traces.TraceStats` since ``since_ms`` (None: no traces).

    One read of the window, cut in two: the candidate's requests, and every other
    version's (the primary side may have served more than one version, if its alias
    moved meanwhile). Requests are counted by :mod:`keel.llm.traces`' rule, the one the
    monitor uses.
    """
    import pyarrow.compute as pc

    from keel.llm.traces import STATS_COLUMNS, read_traces, summarize

    table = read_traces(client, deployment, since_ms, columns=STATS_COLUMNS)
    if table.num_rows == 0:
        return None, None
    is_canary = pc.fill_null(pc.equal(table.column("version"), int(candidate)), False)
    canary = summarize(table.filter(is_canary), by="all").get("all")
    primary = summarize(table.filter(pc.invert(is_canary)), by="all").get("all")
    return canary, primary


@dataclass(frozen=True)
class _Feedback:
    canary_mean: float | None = None
    primary_mean: float | None = None
    canary_count: int = 0
    primary_count: int = 0


def _feedback_by_side(client: Client, deployment: str, candidate: int, since_ms: int) -> _Feedback:
    """Each side's mean feedback score on the requests it served since ``since_ms``.

    A label is joined to its trace by request id; the newest numeric label of a request
    counts once. A side's mean is None below :data:`MIN_FEEDBACK` labels.
    """
    from keel.llm.traces import read_traces
    from keel.predictions import PredictionReader

    conf = client.settings
    reader = PredictionReader(conf.artifacts_url, s3_endpoint_url=conf.s3_endpoint_url)
    labels = reader.feedback(deployment)
    if labels.num_rows == 0:
        return _Feedback()
    traces = read_traces(client, deployment, since_ms, columns=["request_id", "version"])
    if traces.num_rows == 0:
        return _Feedback()
    served = dict(
        zip(
            traces.column("request_id").to_pylist(),
            traces.column("version").to_pylist(),
            strict=True,
        )
    )
    scores: dict[str, float] = {}
    # oldest first: a later label of the same request replaces an earlier one
    for request_id, value in zip(
        labels.column("request_id").to_pylist(),
        labels.column("label_num").to_pylist(),
        strict=True,
    ):
        if request_id in served and value is not None and value == value:
            scores[request_id] = float(value)
    canary = [v for r, v in scores.items() if served[r] == candidate]
    primary = [v for r, v in scores.items() if served[r] != candidate]
    return _Feedback(
        canary_mean=_mean(canary),
        primary_mean=_mean(primary),
        canary_count=len(canary),
        primary_count=len(primary),
    )


def _mean(values: Iterable[float]) -> float | None:
    listed = list(values)
    return float(np.mean(listed)) if len(listed) >= MIN_FEEDBACK else None
