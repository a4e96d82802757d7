"""``keel.tracking.compare_runs``: params and latest metrics side by side, as data."""

from __future__ import annotations

import pytest

import keel
from keel.errors import InvalidInput, NotFound
from keel.tracking import compare_runs
from keel.tracking.entities import Metric


def _run(params: dict, metrics: dict) -> str:
    client = keel.Client()
    run = client.create_run(client.get_or_create_experiment("compare").id, capture=False)
    client.log_batch(run.id, [Metric(k, v, 0, 1) for k, v in metrics.items()], params=params)
    return run.id


def test_compare_runs_marks_the_rows_that_differ(any_env):
    a = _run({"model": "rf", "depth": 3}, {"acc": 0.9, "loss": float("nan")})
    b = _run({"model": "rf", "depth": 5}, {"acc": 0.8, "loss": float("nan")})
    result = compare_runs(keel.Client().tracking, [a, b[:8]])
    assert [r["run_id"] for r in result["runs"]] == [a, b]
    rows = {(row["kind"], row["key"]): row for row in result["rows"]}
    assert list(rows) == [
        ("params", "depth"),
        ("params", "model"),
        ("metrics", "acc"),
        ("metrics", "loss"),
    ]
    assert rows["params", "depth"] == {
        "kind": "params",
        "key": "depth",
        "values": ["3", "5"],
        "differs": True,
    }
    assert rows["params", "model"]["differs"] is False
    assert rows["metrics", "acc"]["values"] == [0.9, 0.8]
    # Both runs logged NaN: they agree, though NaN != NaN.
    assert rows["metrics", "loss"]["differs"] is False


def test_compare_runs_only_diff_keeps_differences_and_missing_keys(any_env):
    a = _run({"model": "rf"}, {"acc": 0.9})
    b = _run({"model": "rf", "seed": 1}, {"acc": 0.9})
    result = compare_runs(keel.Client().tracking, [a, b], only_diff=True)
    assert result["rows"] == [
        {"kind": "params", "key": "seed", "values": [None, "1"], "differs": True}
    ]


def test_compare_runs_needs_two_runs(any_env):
    a = _run({"model": "rf"}, {})
    with pytest.raises(InvalidInput, match=r"compare needs at least two run ids, got 1"):
        compare_runs(keel.Client().tracking, [a])


def test_compare_runs_names_an_unknown_run(any_env):
    a = _run({"model": "rf"}, {})
    with pytest.raises(NotFound, match=r"no run with id"):
        compare_runs(keel.Client().tracking, [a, "ffffffffffff"])
