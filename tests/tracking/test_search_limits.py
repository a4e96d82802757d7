"""How far a search filter may nest and grow, and the clear refusal past that.

A filter is user input that reaches a recursive parser and the database's
expression parser: hostile or generated filters must end in
``InvalidInput`` naming the position, never in ``RecursionError`` or a
store error. Runs on SQLite, PostgreSQL and through a server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import keel
from keel.errors import InvalidInput
from keel.tracking.search import MAX_COMPARISONS, MAX_DEPTH


@pytest.fixture
def runs(any_env) -> tuple[keel.Client, int, str, str]:
    """Two runs in one experiment: ``high`` has metric x = 2, ``low`` has x = 0."""
    client = keel.Client()
    experiment_id = client.get_or_create_experiment("limits").id
    high = client.create_run(experiment_id, "high", capture=False).id
    low = client.create_run(experiment_id, "low", capture=False).id
    client.log_metric(high, "x", 2.0)
    client.log_metric(low, "x", 0.0)
    return client, experiment_id, high, low


def _search(runs: tuple[keel.Client, int, str, str], filter_string: str) -> set[str]:
    client, experiment_id, _, _ = runs
    return {r.id for r in client.search_runs([experiment_id], filter_string).runs}


def test_parentheses_nested_3000_deep_are_refused_at_the_first_level_too_deep(runs):
    deep = "(" * 3000 + "metrics.x > 1" + ")" * 3000
    with pytest.raises(
        InvalidInput, match=r"at position 65: parentheses and NOT may nest at most 64"
    ):
        _search(runs, deep)


def test_not_repeated_5000_times_is_refused_at_the_first_not_too_deep(runs):
    deep = "NOT " * 5000 + "metrics.x > 1"
    # The 65th NOT starts at offset 64 * 4: position 257, 1-based.
    with pytest.raises(InvalidInput, match=r"at position 257: parentheses and NOT may nest"):
        _search(runs, deep)


def test_nesting_mixed_parentheses_and_not_counts_both(runs):
    mixed = "(NOT " * 40 + "metrics.x > 1" + ")" * 40  # 80 levels, each pair two
    with pytest.raises(InvalidInput, match=r"may nest at most 64 deep, this is level 65"):
        _search(runs, mixed)


def test_nesting_up_to_the_limit_still_searches(runs):
    _, _, high, low = runs
    parentheses = "(" * MAX_DEPTH + "metrics.x > 1" + ")" * MAX_DEPTH
    assert _search(runs, parentheses) == {high}
    double_negation = "NOT " * MAX_DEPTH + "metrics.x > 1"  # an even count: no negation
    assert _search(runs, double_negation) == {high}
    odd = "NOT " * (MAX_DEPTH - 1) + "metrics.x > 1"
    assert _search(runs, odd) == {low}


def test_flat_chain_of_5000_ands_is_refused_with_the_comparison_limit(runs):
    chain = " AND ".join(["metrics.x > 1"] * 5000)
    # Comparison 501 starts after 500 terms of 13 characters and 500 " AND ": position 9001.
    with pytest.raises(
        InvalidInput, match=r"at position 9001: a filter may hold at most 500 comparisons"
    ):
        _search(runs, chain)


def test_flat_chain_of_5000_ors_is_refused_with_the_comparison_limit(runs):
    chain = " OR ".join(["metrics.x > 1"] * 5000)
    with pytest.raises(InvalidInput, match=r"this is number 501; combine equalities .* IN"):
        _search(runs, chain)


def test_chains_up_to_the_comparison_limit_search_on_the_database(runs):
    """The largest accepted filters stay inside the database's own expression depth."""
    _, _, high, low = runs
    ands = " AND ".join([f"metrics.x > {-n}" for n in range(MAX_COMPARISONS)])
    assert _search(runs, ands) == {high}
    ors = " OR ".join([f"tags.t{n} ILIKE 'a%'" for n in range(MAX_COMPARISONS - 1)])
    assert _search(runs, ors + " OR metrics.x < 1") == {low}
    # The deepest accepted shape: the chain inside every level of nesting.
    nested = "NOT (" * (MAX_DEPTH // 2) + ors + " OR metrics.x < 1" + ")" * (MAX_DEPTH // 2)
    assert _search(runs, nested) == {low}  # an even number of NOTs


def test_cli_search_with_a_deep_filter_prints_one_line_and_exits_non_zero(tmp_path: Path, run_keel):
    keel.init(home=tmp_path / ".keel")
    keel.Client().get_or_create_experiment("Default")
    done = run_keel(
        "runs",
        "search",
        "NOT " * 5000 + "metrics.x > 1",
        env={"KEEL_HOME": str(tmp_path / ".keel")},
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    assert "may nest at most 64 deep" in done.stderr + done.stdout
