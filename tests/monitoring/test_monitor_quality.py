"""Quality with labels: the label join, the metrics, and a change detector equal to river's."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest

from keel.monitoring import PageHinkley
from keel.monitoring.quality import join_labels, window_quality


def river_detections(stream: list[float], **params: float) -> list[int]:
    from river.drift import PageHinkley as RiverPageHinkley

    detector = RiverPageHinkley(mode="up", **params)
    found = []
    for i, value in enumerate(stream):
        detector.update(value)
        if detector.drift_detected:
            found.append(i)
    return found


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_page_hinkley_detects_exactly_where_rivers_does_whatever_the_chunking(seed: int):
    pytest.importorskip("river", reason="the reference implementation is river's")
    rng = random.Random(seed)
    stream = (
        rng.choices([0.0, 1.0], weights=[9, 1], k=2_000)
        + rng.choices([0.0, 1.0], weights=[5, 5], k=1_500)
        + rng.choices([0.0, 1.0], weights=[9, 1], k=2_000)
        + [rng.uniform(0, 6) for _ in range(1_000)]
    )
    expected = river_detections(stream)
    assert expected  # the stream does change
    for chunks in (1, 7, 100):
        detector = PageHinkley()
        found, offset = [], 0
        for part in np.array_split(np.asarray(stream), chunks):
            found += [offset + i for i in detector.update(part)]
            offset += len(part)
            detector = PageHinkley.from_dict(json.loads(json.dumps(detector.to_dict())))
        assert found == expected
    tuned = river_detections(stream, threshold=20.0, delta=0.01, min_instances=50)
    assert (
        PageHinkley(threshold=20.0, delta=0.01, min_instances=50).update(np.asarray(stream))
        == tuned
    )


def test_a_stable_error_rate_raises_nothing():
    rng = np.random.default_rng(0)
    assert PageHinkley().update((rng.random(50_000) < 0.1).astype(float)) == []


def predictions(
    ids: list[str], rows: list[int], values: list[object], times: list[int]
) -> pa.Table:
    return pa.table(
        {
            "request_id": ids,
            "row": pa.array(rows, pa.int64()),
            "time": pa.array(times, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "prediction": values,
        }
    )


def feedback(
    ids: list[str],
    rows: list[int | None],
    labels: list[str],
    nums: list[float | None],
    times: list[int],
) -> pa.Table:
    from keel.predictions import FEEDBACK_SCHEMA

    return pa.table(
        {
            "request_id": ids,
            "row": pa.array(rows, pa.int64()),
            "label": labels,
            "label_num": pa.array(nums, pa.float64()),
            "time": pa.array(times, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        },
        schema=FEEDBACK_SCHEMA,
    )


def test_labels_join_by_request_and_row_and_the_newest_wins():
    preds = predictions(
        ["a", "a", "b", "c"], [0, 1, 0, 0], ["yes", "no", "yes", "no"], [1, 1, 2, 3]
    )
    fb = feedback(
        ["a", "a", "b", "b"],
        [None, 1, 0, 0],
        ['"no"', '"yes"', '"no"', '"yes"'],
        [None, None, None, None],
        [10, 11, 10, 12],
    )
    joined = join_labels(preds, fb)
    got = list(
        zip(
            joined.column("request_id").to_pylist(),
            joined.column("row").to_pylist(),
            joined.column("label").to_pylist(),
            strict=True,
        )
    )
    # a/0 from the request-wide label, a/1 from its own row label, b/0 the newer label, c none.
    assert got == [("a", 0, "no"), ("a", 1, "yes"), ("b", 0, "yes")]
    quality = window_quality(joined, task="classification")
    assert quality is not None and quality.task == "classification"
    assert quality.metrics["accuracy"] == pytest.approx(1 / 3)
    np.testing.assert_array_equal(quality.errors, [1.0, 1.0, 0.0])


def test_numeric_labels_match_integer_predictions_and_a_regressor_gets_error_metrics():
    preds = predictions(["a", "b", "c"], [0, 0, 0], [1, 0, 1], [1, 2, 3])
    fb = feedback(["a", "b", "c"], [0, 0, 0], ["1.0", "0", "true"], [1.0, 0.0, 1.0], [5, 5, 5])
    quality = window_quality(join_labels(preds, fb), task="classification")
    assert quality is not None and quality.metrics["accuracy"] == 1.0
    n = 100
    rng = np.random.default_rng(0)
    values = rng.normal(50, 10, size=n)
    preds = predictions([f"r{i}" for i in range(n)], [0] * n, values.tolist(), list(range(n)))
    truth = values + 3.0
    fb = feedback(
        [f"r{i}" for i in range(n)], [0] * n, [str(v) for v in truth], truth.tolist(), [n] * n
    )
    detector = PageHinkley()
    quality = window_quality(join_labels(preds, fb), detector, task="regression")
    assert quality is not None and quality.task == "regression"
    assert quality.metrics["mae"] == pytest.approx(3.0) and detector.scale == pytest.approx(3.0)


def test_no_labels_means_no_quality():
    preds = predictions(["a"], [0], ["x"], [1])
    assert (
        window_quality(join_labels(preds, feedback([], [], [], [], [])), task="regression") is None
    )
