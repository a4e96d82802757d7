"""A stream consumer's Prometheus metrics: the serving app's, plus the stream's own.

The serving metrics (:class:`keel.serving.metrics.Metrics`) count streamed events as
requests with ``protocol="stream"``, with the inputs a signature ignores, shadow
outcomes and the prediction log's queue. The stream adds:

- ``keel_stream_lag{deployment}``: events the consumer group has not acknowledged,
  pending plus not yet delivered (read from the broker about once a second);
- ``keel_stream_unacked{deployment}``: events this consumer holds until its next commit;
- ``keel_stream_events_total{deployment, outcome}``: ``answered`` or ``dead_lettered``;
- ``keel_stream_batch_seconds{deployment}``: from a batch read to its outputs written.
"""

from __future__ import annotations

from typing import Any

from keel.serving.features import MissingFeatures
from keel.serving.metrics import Metrics

__all__ = ["StreamMetrics"]


class StreamMetrics:
    """Prometheus metrics of one consumer, in a registry of its own.

    Args:
        deployment: the ``deployment`` label of every sample.
        logger: the prediction logger whose queue the serving gauges read, or None.
    """

    def __init__(self, deployment: str, logger: Any = None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.deployment = deployment
        self.serving = Metrics(deployment, logger)
        self.registry = self.serving.registry
        self.missing_features = MissingFeatures(self.registry, deployment)
        self.lag = Gauge(
            "keel_stream_lag",
            "Events the consumer group has not acknowledged: pending plus not yet delivered.",
            ["deployment"],
            registry=self.registry,
        ).labels(deployment)
        self.unacked = Gauge(
            "keel_stream_unacked",
            "Events this consumer has read and will acknowledge at its next commit.",
            ["deployment"],
            registry=self.registry,
        ).labels(deployment)
        events = Counter(
            "keel_stream_events",
            "Events handled, by outcome: answered (an output written) or dead_lettered.",
            ["deployment", "outcome"],
            registry=self.registry,
        )
        self._answered = events.labels(deployment, "answered")
        self._dead = events.labels(deployment, "dead_lettered")
        self._batch = Histogram(
            "keel_stream_batch_seconds",
            "Time from reading a batch of events to its outputs written to the sink.",
            ["deployment"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        ).labels(deployment)
        self._requests: dict[tuple[str, int], Any] = {}

    def answered(self, route: str, version: int, n: int, ignored: int) -> None:
        """``n`` events of one batch answered by ``version`` through ``route``."""
        child = self._requests.get((route, version))
        if child is None:
            child = self._requests[(route, version)] = self.serving.requests.labels(
                self.deployment, route, str(version), "stream", "200"
            )
        child.inc(n)
        if ignored:
            self.serving.ignored.inc(ignored)

    def rejected(self, route: str, version: str, protocol: str, status: int) -> None:
        """One event refused by a version (422: its signature; 500: the model failed)."""
        self.serving.rejected(route, version, protocol, status)

    def shadow(self, outcome: str, n: int) -> None:
        """``n`` shadow predictions with ``outcome`` (ok, failed)."""
        if n:
            self.serving.shadow.labels(self.deployment, outcome).inc(n)

    def batch(self, answered: int, dead: int, seconds: float) -> None:
        """A batch done: its answered and dead-lettered events and how long it took."""
        self._answered.inc(answered)
        if dead:
            self._dead.inc(dead)
        self._batch.observe(seconds)
