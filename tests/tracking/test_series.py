"""Min/max downsampling of a metric series for charts."""

from __future__ import annotations

import numpy as np
import pytest

from keel.errors import InvalidInput
from keel.tracking.series import downsample


def test_small_series_comes_back_exact() -> None:
    steps, values = [0, 1, 2, 5], [0.5, 0.1, 0.9, 0.3]
    kept_steps, kept_values = downsample(steps, values, width=2)
    assert kept_steps.tolist() == steps
    assert kept_values.tolist() == values


def test_keeps_at_most_two_points_per_bucket() -> None:
    rng = np.random.default_rng(7)
    steps = np.arange(10_000)
    values = rng.normal(size=10_000)
    kept_steps, kept_values = downsample(steps, values, width=100)
    assert len(kept_steps) <= 200
    assert len(kept_steps) > 100  # random values: most buckets keep a distinct min and max
    per_bucket = np.bincount(kept_steps // 100)
    assert per_bucket.max() == 2
    # each bucket keeps exactly its own min and max
    for bucket in (0, 37, 99):
        chunk = values[bucket * 100 : (bucket + 1) * 100]
        mine = kept_values[kept_steps // 100 == bucket]
        assert sorted(mine) == sorted([chunk.min(), chunk.max()])


def test_keeps_the_global_min_and_max() -> None:
    values = np.sin(np.linspace(0, 20, 50_000))
    values[12_345] = -7.0
    values[40_001] = 9.0
    kept_steps, kept_values = downsample(np.arange(50_000), values, width=64)
    assert kept_values.min() == -7.0 and 12_345 in kept_steps.tolist()
    assert kept_values.max() == 9.0 and 40_001 in kept_steps.tolist()


def test_points_stay_in_step_order_and_keep_their_pairs() -> None:
    steps = np.arange(0, 30_000, 3)
    values = np.cos(steps / 500.0)
    kept_steps, kept_values = downsample(steps, values, width=50)
    assert np.all(np.diff(kept_steps) > 0)
    # every kept point is a real (step, value) pair of the input
    np.testing.assert_array_equal(kept_values, np.cos(kept_steps / 500.0))


def test_buckets_split_the_step_range_not_the_point_count() -> None:
    # 9,000 points crowd steps 0..8999, then 10 points spread over 9000..99,000: the sparse
    # stretch covers most of the chart, so it keeps most of the buckets and all its points
    steps = np.r_[np.arange(9_000), np.linspace(9_000, 99_000, 10).astype(np.int64)]
    values = np.arange(len(steps), dtype=np.float64)
    kept_steps, _ = downsample(steps, values, width=100)
    assert set(steps[9_000:].tolist()) <= set(kept_steps.tolist())
    assert (kept_steps < 9_000).sum() <= 2 * 10  # the crowded stretch spans ~10 buckets


def test_empty_series_gives_empty_columns() -> None:
    kept_steps, kept_values = downsample([], [], width=10)
    assert kept_steps.size == 0 and kept_values.size == 0


@pytest.mark.parametrize("width", [0, -3, 2.5, True])
def test_width_must_be_a_positive_integer(width: object) -> None:
    with pytest.raises(InvalidInput, match="width must be a positive integer"):
        downsample([1, 2], [1.0, 2.0], width=width)  # type: ignore[arg-type]


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(InvalidInput, match="two flat columns of one length"):
        downsample([1, 2, 3], [1.0, 2.0], width=10)
