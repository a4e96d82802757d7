"""The gateway's Prometheus metrics, in a registry of each app's own.

Requests by gateway model, endpoint and status; latency and time to first
token; upstream attempts (retries and fallbacks show as more than one per
request); tokens by kind; cost; cache hits and misses; guardrail verdicts by
scanner, stage, action and whether they tripped; and the trace log's queue depth
and rows written. Labels are the gateway's own model names and
statuses, never anything a caller can make up, so the series stay bounded.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    """Prometheus metrics of one gateway.

    Args:
        gateway: the ``gateway`` label of every sample (the config's ``name``).
        logger: the trace logger whose queue the gauges read, or None.
    """

    def __init__(self, gateway: str, logger: Any) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.gateway = gateway
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "keel_gateway_requests",
            "Requests answered, by gateway model, endpoint and HTTP status.",
            ["gateway", "model", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "keel_gateway_request_latency_seconds",
            "Time from request received to the last byte of the answer, by gateway model.",
            ["gateway", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "keel_gateway_time_to_first_token_seconds",
            "Time from request received to the first streamed byte, by gateway model.",
            ["gateway", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.attempts = Counter(
            "keel_gateway_upstream_attempts",
            "Requests sent upstream (retries and fallbacks included), by provider.",
            ["gateway", "provider"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "keel_gateway_tokens",
            "Tokens by gateway model and kind (input, output).",
            ["gateway", "model", "kind"],
            registry=self.registry,
        )
        self.cost = Counter(
            "keel_gateway_cost_usd",
            "Cost of answered requests in US dollars, by gateway model.",
            ["gateway", "model"],
            registry=self.registry,
        )
        self.cache = Counter(
            "keel_gateway_cache",
            "Response cache lookups by outcome (hit, miss).",
            ["gateway", "outcome"],
            registry=self.registry,
        )
        self.guardrails = Counter(
            "keel_gateway_guardrail_verdicts",
            "Guardrail verdicts by scanner, stage (input, output), action (block, redact, "
            "flag) and whether the text tripped the scanner.",
            ["gateway", "scanner", "stage", "action", "tripped"],
            registry=self.registry,
        )
        queue = Gauge(
            "keel_gateway_trace_queue_rows",
            "Trace rows waiting in the trace log's queue.",
            registry=self.registry,
        )
        written = Gauge(
            "keel_gateway_trace_rows_written",
            "Trace rows written to Parquet.",
            registry=self.registry,
        )
        if logger is not None:
            queue.set_function(lambda: logger.stats().get("queue_rows", 0))
            written.set_function(lambda: logger.stats().get("rows_written", 0))
        # Labelled children are looked up once per label set, not once per request.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.gateway, *labels)
        return child

    def answered(
        self,
        model: str,
        endpoint: str,
        status: int,
        seconds: float,
        *,
        ttft: float | None = None,
        provider: str | None = None,
        attempts: int = 0,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost: float | None = None,
        cache_hit: bool | None = None,
    ) -> None:
        """Count one finished request."""
        self._child(self.requests, model, endpoint, str(status)).inc()
        self._child(self.latency, model).observe(seconds)
        if ttft is not None:
            self._child(self.ttft, model).observe(ttft)
        if provider is not None and attempts:
            self._child(self.attempts, provider).inc(attempts)
        if input_tokens:
            self._child(self.tokens, model, "input").inc(input_tokens)
        if output_tokens:
            self._child(self.tokens, model, "output").inc(output_tokens)
        if cost:
            self._child(self.cost, model).inc(cost)
        if cache_hit is not None:
            self._child(self.cache, "hit" if cache_hit else "miss").inc()

    def verdicts(self, verdicts: list[dict[str, Any]]) -> None:
        """Count a request's guardrail verdicts (``Verdict.to_dict()`` each)."""
        for v in verdicts:
            tripped = "true" if v["tripped"] else "false"
            self._child(self.guardrails, v["scanner"], v["stage"], v["action"], tripped).inc()
