"""The serving app's Prometheus metrics, in a registry of each app's own.

Requests by route, version, protocol and status; a latency histogram; errors by
status; client disconnects (not errors); inputs a signature does not name;
shadow outcomes; and the prediction log's queue depth, rows written and spilled.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Metrics"]


class Metrics:
    """Prometheus metrics in a registry of this app's own.

    Args:
        deployment: the ``deployment`` label of every sample.
        logger: the prediction logger whose queue the gauges read, or None.
    """

    def __init__(self, deployment: str, logger: Any) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.deployment = deployment
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "keel_requests",
            "Requests answered, by route, model version, protocol and HTTP status.",
            ["deployment", "route", "version", "protocol", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "keel_request_latency_seconds",
            "Time from request received to response ready, by route and version.",
            ["deployment", "route", "version"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.errors = Counter(
            "keel_errors",
            "Error responses by HTTP status.",
            ["deployment", "status"],
            registry=self.registry,
        )
        self.disconnects = Counter(
            "keel_client_disconnects",
            "Requests whose client went away before the request was read (not errors).",
            ["deployment"],
            registry=self.registry,
        ).labels(deployment)
        self.ignored = Counter(
            "keel_ignored_inputs",
            "Inputs (columns, tensors) requests sent that the model's signature does not "
            "name: dropped before predicting, never logged.",
            ["deployment"],
            registry=self.registry,
        ).labels(deployment)
        self.shadow = Counter(
            "keel_shadow_predictions",
            "Shadow predictions by outcome (ok, failed, skipped when the shadow lags).",
            ["deployment", "outcome"],
            registry=self.registry,
        )
        queue = Gauge(
            "keel_prediction_log_queue_rows",
            "Rows waiting in the prediction-log queue.",
            registry=self.registry,
        )
        written = Gauge(
            "keel_prediction_log_rows_written",
            "Prediction rows written to Parquet.",
            registry=self.registry,
        )
        spilled = Gauge(
            "keel_prediction_log_rows_spilled",
            "Prediction rows spilled to local disk.",
            registry=self.registry,
        )
        if logger is not None:
            queue.set_function(lambda: logger.stats().get("queue_rows", 0))
            written.set_function(lambda: logger.stats().get("rows_written", 0))
            spilled.set_function(lambda: logger.stats().get("rows_spilled", 0))
        # Labelled children are looked up once per label set, not once per request.
        self._ok: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def answered(self, route: str, version: str, protocol: str, seconds: float) -> None:
        children = self._ok.get((route, version, protocol))
        if children is None:
            children = self._ok[(route, version, protocol)] = (
                self.requests.labels(self.deployment, route, version, protocol, "200"),
                self.latency.labels(self.deployment, route, version),
            )
        children[0].inc()
        children[1].observe(seconds)

    def rejected(self, route: str, version: str, protocol: str, status: int) -> None:
        self.requests.labels(self.deployment, route, version, protocol, str(status)).inc()

    def error(self, status: int) -> None:
        self.errors.labels(self.deployment, str(status)).inc()
