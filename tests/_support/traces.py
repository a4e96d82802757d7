"""Trace rows written as the gateway writes them: ``trace_row`` through the real PredictionLogger."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_IDS = itertools.count()

#: What a trace holds unless a test says otherwise: an answered, unpriced chat request.
DEFAULTS: dict[str, Any] = {
    "model": "support",
    "version": 1,
    "route": "primary",
    "latency_ms": 100.0,
    "caller": "alice",
    "team": None,
    "endpoint": "chat",
    "provider": "local",
    "upstream_model": "stand-in-small",
    "status": 200,
    "error": None,
    "input_tokens": 10,
    "output_tokens": 5,
    "tokens_estimated": False,
    "ttft_ms": None,
    "cache_hit": False,
    "attempts": 1,
    "cost_usd": None,
}


def write_traces(
    root: str,
    deployment: str,
    traces: Iterable[Mapping[str, Any]],
    *,
    spill: Path,
    endpoint: str | None = None,
) -> int:
    """Log one trace row per mapping (``time_ms`` required, the rest over :data:`DEFAULTS`)
    under ``root`` in the ``traces`` dataset, and flush; how many were written."""
    from keel.predictions import TRACES, PredictionLogger, trace_row

    written = 0
    with PredictionLogger(
        root, s3_endpoint_url=endpoint, spill_dir=spill, flush_interval=0.05, dataset=TRACES
    ) as logger:
        for fields in traces:
            values = {**DEFAULTS, "request_id": f"t{next(_IDS)}", **fields}
            logger.log(deployment, trace_row(**values), 1)
            written += 1
    return written
