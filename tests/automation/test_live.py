"""A canary's live metrics, read from prediction and error logs written as servers write them."""

from __future__ import annotations

import numpy as np
import pytest

from keel.automation.live import measure_canary, prediction_drift
from keel.predictions import ERRORS, PredictionLogger


def _log(logger, request_id, version, route, latency, outputs, at):
    n = len(outputs)
    logger.log(
        "api",
        {
            "request_id": [request_id] * n,
            "time": [at] * n,
            "model": ["m"] * n,
            "version": [version] * n,
            "route": [route] * n,
            "latency_ms": [latency] * n,
            "row": list(range(n)),
            "output.prediction": np.asarray(outputs, dtype=float),
        },
        n,
    )


def test_requests_errors_and_latency_are_counted_per_version_since_the_canary_began(sqlite_env):
    root = str(sqlite_env.artifacts_url)
    start = 1_800_000_000_000
    with PredictionLogger(root) as predictions, PredictionLogger(root, dataset=ERRORS) as errors:
        _log(predictions, "old", 1, "primary", 500.0, [0], start - 1)  # before the canary
        for n in range(50):  # multi-row requests count once each
            _log(predictions, f"p{n}", 1, "primary", 10.0 + n % 5, [0, 1], start + n)
        for n in range(30):
            _log(predictions, f"c{n}", 2, "canary", 40.0, [1], start + n)
        _log(predictions, "s0", 2, "shadow", 999.0, [1], start)  # a shadow answers nobody
        for n in range(3):
            errors.log(
                "api",
                {
                    "request_id": [f"e{n}"],
                    "time": [start + n],
                    "model": ["m"],
                    "version": [2],
                    "route": ["canary"],
                    "latency_ms": [1.0],
                    "row": [0],
                    "status": [500],
                    "error": ["boom"],
                },
                1,
            )
    metrics = measure_canary("api", 2, start, root_url=root)
    assert (metrics.canary_requests, metrics.canary_errors) == (30, 3)
    assert (metrics.primary_requests, metrics.primary_errors) == (50, 0)
    assert metrics.error_rate == pytest.approx(3 / 33)
    assert metrics.canary_p99_ms == pytest.approx(40.0)
    assert metrics.primary_p99_ms == pytest.approx(14.0, abs=0.1)
    assert metrics.p99_ratio == pytest.approx(40.0 / metrics.primary_p99_ms)
    # The canary answers 1 always; the primary half 0 and half 1 (per row).
    assert metrics.prediction_drift == pytest.approx(
        prediction_drift(np.ones(30), np.tile([0.0, 1.0], 50))
    )


def test_prediction_drift_is_zero_for_the_same_predictions_and_one_for_disjoint_labels():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=500)
    assert prediction_drift(scores, scores) == pytest.approx(0.0, abs=1e-9)
    assert prediction_drift(np.zeros(100), np.ones(100)) == pytest.approx(1.0)
    assert prediction_drift(scores + 3, scores) > 0.8
    assert prediction_drift(scores[:10], scores) is None  # too few to say
