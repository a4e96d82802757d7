"""A metric read as columns: ranges, both axes, NaN and ±inf, and downsampling in SQL.

Every test runs on SQLite and PostgreSQL. The downsampled answer must hold the
very points :func:`keel.tracking.series.downsample` keeps from the full history.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import keel
from keel.config import Settings
from keel.errors import InvalidInput, NotFound
from keel.tracking import TrackingClient
from keel.tracking.series import downsample

T0 = 1_700_000_000_000


@pytest.fixture
def tracking(keel_env: Settings) -> TrackingClient:
    return keel.Client().tracking


def _run(tracking: TrackingClient) -> str:
    experiment = tracking.get_or_create_experiment("columns")
    return tracking.create_run(experiment.id, capture=False).run_id


def _log(
    tracking: TrackingClient, run_id: str, steps: np.ndarray, values: np.ndarray, times: np.ndarray
) -> None:
    rows = [
        (run_id, "loss", int(st), int(ts), float(v))
        for st, v, ts in zip(steps, values, times, strict=True)
    ]
    for i in range(0, len(rows), 50_000):
        tracking.write_metric_rows(rows[i : i + 50_000])


def _reference(
    tracking: TrackingClient, run_id: str, x: str, start: int | None, end: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """The finite points of the range from the full history, ordered as the axis orders them."""
    history = tracking.get_metric_history(run_id, "loss")
    if x == "time":
        history = sorted(history, key=lambda m: (m.timestamp, m.step))
    axis = np.array([m.timestamp if x == "time" else m.step for m in history], dtype=np.int64)
    values = np.array([m.value for m in history], dtype=np.float64)
    inside = np.ones(len(axis), dtype=bool)
    if start is not None:
        inside &= axis >= start
    if end is not None:
        inside &= axis <= end
    finite = inside & np.isfinite(values)
    return axis[finite], values[finite], int(inside.sum() - finite.sum())


def _pairs(axis: np.ndarray, values: np.ndarray) -> set[tuple[int, float]]:
    return set(zip(axis.tolist(), values.tolist(), strict=True))


@pytest.fixture
def noisy(tracking: TrackingClient) -> str:
    """20,000 points: noise with spikes, repeated values (ties), a gap, NaN and ±inf."""
    rng = np.random.default_rng(11)
    steps = np.r_[np.arange(0, 12_000), np.arange(30_000, 38_000)]
    values = np.round(rng.normal(size=len(steps)), 1)  # rounding makes many ties per bucket
    values[[5, 9_999, 15_000]] = [40.0, -40.0, 55.0]
    values[[7, 700, 19_000]] = math.nan
    values[[8, 16_000]] = [math.inf, -math.inf]
    times = T0 + (len(steps) - np.arange(len(steps))) * 3  # time runs against the steps
    run_id = _run(tracking)
    _log(tracking, run_id, steps, values, times)
    return run_id


@pytest.mark.parametrize("width", [1, 7, 500, 4_000])
@pytest.mark.parametrize("x", ["step", "time"])
def test_downsampled_in_sql_keeps_the_points_numpy_keeps(
    tracking: TrackingClient, noisy: str, width: int, x: str
) -> None:
    found = tracking.metric_columns(noisy, "loss", x=x, width=width)  # type: ignore[arg-type]
    axis, values, skipped = _reference(tracking, noisy, x, None, None)
    kept_axis, kept_values = downsample(axis, values, width)
    assert _pairs(found.axis, found.values) == _pairs(kept_axis, kept_values)
    assert np.all(np.diff(found.axis) >= 0)
    assert found.points == len(axis) == 20_000 - 5
    assert found.skipped == skipped == 5
    assert found.exact is (len(axis) <= 2 * width)
    assert (found.low, found.high) == (int(axis.min()), int(axis.max()))


@pytest.mark.parametrize(
    ("x", "start", "end"),
    [
        ("step", 3_000, 35_000),
        ("step", None, 11_000),
        ("step", 11_990, 30_005),  # across the gap: few points, exact
        ("time", T0 + 9_000, T0 + 40_000),
        ("time", T0 + 59_000, None),
    ],
)
def test_a_range_reads_only_its_points(
    tracking: TrackingClient, noisy: str, x: str, start: int | None, end: int | None
) -> None:
    found = tracking.metric_columns(noisy, "loss", x=x, start=start, end=end, width=300)  # type: ignore[arg-type]
    axis, values, skipped = _reference(tracking, noisy, x, start, end)
    kept_axis, kept_values = downsample(axis, values, 300)
    assert _pairs(found.axis, found.values) == _pairs(kept_axis, kept_values)
    assert found.points == len(axis)
    assert found.skipped == skipped
    assert found.exact is (len(axis) <= 600)
    if start is not None:
        assert found.axis.min() >= start
    if end is not None:
        assert found.axis.max() <= end


def test_a_narrow_range_comes_back_exact_and_in_order(tracking: TrackingClient, noisy: str) -> None:
    found = tracking.metric_columns(noisy, "loss", start=100, end=899, width=400)
    axis, values, skipped = _reference(tracking, noisy, "step", 100, 899)
    assert found.exact
    assert found.axis.tolist() == axis.tolist()
    assert found.values.tolist() == values.tolist()
    assert skipped == 1 and found.skipped == 1  # the NaN at step 700


def test_every_point_keeps_nan_and_inf_in_place(tracking: TrackingClient, noisy: str) -> None:
    found = tracking.metric_columns(noisy, "loss", end=20)
    assert found.exact
    assert found.axis.tolist() == list(range(21))
    assert math.isnan(found.values[7]) and found.values[8] == math.inf
    assert found.points == 19 and found.skipped == 2


def test_the_time_axis_orders_by_time(tracking: TrackingClient, noisy: str) -> None:
    found = tracking.metric_columns(noisy, "loss", x="time")
    assert found.x == "time"
    assert np.all(np.diff(found.axis) > 0)
    history = {m.timestamp: m.value for m in tracking.get_metric_history(noisy, "loss")}
    assert [history[t] for t in found.axis[:50].tolist()] == pytest.approx(
        found.values[:50].tolist(), nan_ok=True
    )


def test_a_series_of_200k_points_round_trips(tracking: TrackingClient) -> None:
    rng = np.random.default_rng(3)
    steps = np.arange(200_000) * 2
    values = rng.normal(size=200_000)
    run_id = _run(tracking)
    _log(tracking, run_id, steps, values, T0 + steps)
    found = tracking.metric_columns(run_id, "loss")
    np.testing.assert_array_equal(found.axis, steps)
    np.testing.assert_array_equal(found.values, values)
    assert found.axis.dtype == np.int64 and found.values.dtype == np.float64
    small = tracking.metric_columns(run_id, "loss", width=1_000)
    assert not small.exact and len(small.axis) <= 2_000
    assert _pairs(small.axis, small.values) == _pairs(*downsample(steps, values, 1_000))


def test_steps_beyond_float_precision_stay_exact(tracking: TrackingClient) -> None:
    run_id = _run(tracking)
    big = 2**53 + 1
    tracking.write_metric_rows([(run_id, "loss", big + i, T0, float(i)) for i in range(3)])
    assert tracking.metric_columns(run_id, "loss").axis.tolist() == [big, big + 1, big + 2]


def test_an_unknown_key_is_empty_and_an_unknown_run_not_found(
    tracking: TrackingClient, noisy: str
) -> None:
    empty = tracking.metric_columns(noisy, "accuracy", width=10)
    assert empty.axis.size == 0 and empty.points == 0 and empty.low is None
    with pytest.raises(NotFound, match="no run with id"):
        tracking.metric_columns("0" * 32, "loss", width=10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": "epoch"}, "x must be one of 'step', 'time'"),
        ({"width": 0}, "width must be a positive integer"),
        ({"width": True}, "width must be a positive integer"),
        ({"start": 10, "end": 5}, "start must not be after end"),
    ],
)
def test_bad_arguments_are_refused(
    tracking: TrackingClient, noisy: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        tracking.metric_columns(noisy, "loss", **kwargs)  # type: ignore[arg-type]


def test_summaries_of_many_runs_match_their_histories(tracking: TrackingClient, noisy: str) -> None:
    other = _run(tracking)
    steps = np.arange(0, 300)
    values = np.linspace(-2.0, 5.0, 300)
    values[-1] = math.nan  # the last point is NaN: last says so, min and max skip it
    _log(tracking, other, steps, values, T0 + steps)
    tracking.log_metric(other, "acc", 0.5, step=0)
    found = tracking.metric_summaries([noisy, other, "0" * 32], ["loss", "acc"])
    assert set(found) == {(noisy, "loss"), (other, "loss"), (other, "acc")}
    for run_id in (noisy, other):
        history = tracking.get_metric_history(run_id, "loss")
        logged = np.array([m.value for m in history])
        finite = logged[np.isfinite(logged)]
        summary = found[run_id, "loss"]
        assert summary.points == len(history)
        assert (summary.min, summary.max) == (finite.min(), finite.max())
        assert summary.last == history[-1].value or (
            math.isnan(summary.last) and math.isnan(history[-1].value)
        )
    assert math.isnan(found[other, "loss"].last)
    assert found[noisy, "loss"].max == 55.0  # the spike, not +inf
    every = tracking.metric_summaries([other])  # no keys: every key the run logged
    assert set(every) == {(other, "loss"), (other, "acc")}
