"""Scorers, gates, the judge's score and paired differences, on their own (no calls)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keel.checks import Gate
from keel.errors import InvalidInput
from keel.llm.evals import Case, paired_difference, parse_gates, parse_judge_score
from keel.llm.evals.gates import Bound, decide, parse_gate
from keel.llm.evals.scorers import (
    ContainsScorer,
    ExactScorer,
    NumericScorer,
    RegexScorer,
    parse_scorer_spec,
)


def _case(expected=None, index: int = 0, **fields) -> Case:
    return Case(index=index, vars={"question": "q"}, expected=expected, **fields)


# -- spelling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("exact", ("exact", {})),
        ("numeric:tolerance=0.01", ("numeric", {"tolerance": 0.01})),
        (
            "contains:ignore_case=true,name=mentions",
            ("contains", {"ignore_case": True, "name": "mentions"}),
        ),
        ("regex:pattern=^a,b$", ("regex", {"pattern": "^a,b$"})),
        ("judge:prompts:/judge@production", ("judge", {"prompt": "prompts:/judge@production"})),
        (
            "judge:prompt=prompts:/judge/2,max=10",
            ("judge", {"prompt": "prompts:/judge/2", "max": 10}),
        ),
        ({"contains": {"field": "expected"}}, ("contains", {"field": "expected"})),
        ({"similarity": None}, ("similarity", {})),
        ("my_pkg.scorers:tone", ("my_pkg.scorers:tone", {})),
    ],
)
def test_a_scorer_is_spelled_as_text_or_as_a_mapping(spec, parsed):
    assert parse_scorer_spec(spec) == parsed


def test_an_unknown_scorer_or_option_is_refused_listing_what_is_valid():
    with pytest.raises(
        InvalidInput, match=r"unknown scorer 'bleu'; expected one of exact, contains, regex"
    ):
        parse_scorer_spec("bleu")
    with pytest.raises(
        InvalidInput,
        match=r"scorer 'numeric' has no option\(s\) tol; it takes name, threshold, tolerance, field",
    ):
        parse_scorer_spec("numeric:tol=1")
    with pytest.raises(InvalidInput, match=r"options are key=value separated by commas"):
        parse_scorer_spec("numeric:0.1")
    with pytest.raises(InvalidInput, match=r"a scorer given as a mapping has one key"):
        parse_scorer_spec({"exact": {}, "contains": {}})


def test_a_scorer_may_not_take_the_name_of_an_eval_metric():
    with pytest.raises(InvalidInput, match=r"may not be named 'failures'"):
        ExactScorer(name="failures")
    with pytest.raises(InvalidInput, match=r"a scorer name must be 1-64 letters"):
        ExactScorer(name="has.dot")


# -- built-in scorers -------------------------------------------------------------------


def test_exact_trims_spaces_and_compares_json_values():
    exact = ExactScorer()
    assert exact.score(" Paris\n", _case("Paris")) == 1.0
    assert exact.score("paris", _case("Paris")) == 0.0
    assert ExactScorer(ignore_case=True).score("paris", _case("Paris")) == 1.0
    assert exact.score("[1, 2]", _case([1, 2])) == 1.0
    assert exact.score("42", _case(42)) == 1.0
    assert exact.score("forty-two", _case(42)) == 0.0


def test_contains_needs_every_text_of_a_list():
    contains = ContainsScorer(ignore_case=True)
    assert contains.score("Paris is in FRANCE", _case(["paris", "france"])) == 1.0
    assert contains.score("Paris", _case(["paris", "france"])) == 0.0


def test_regex_uses_the_pattern_option_else_each_cases_expected_value():
    assert RegexScorer(pattern=r"^\d{4}$").score("2024", _case()) == 1.0
    per_case = RegexScorer()
    cases = [_case(r"^ab+$"), _case(r"c", index=1)]
    per_case.check(cases)
    assert per_case.score_all(["abbb", "xyz"], cases).values.tolist() == [1.0, 0.0]
    with pytest.raises(InvalidInput, match=r"case 0's expected '\(' is not a regular expression"):
        RegexScorer().check([_case("(")])


def test_numeric_takes_the_first_number_in_the_answer_within_the_tolerance():
    cases = [_case(3.14), _case(1000, index=1), _case(2, index=2)]
    answers = ["It is about 3.14159.", "1,000 exactly", "no idea"]
    loose = NumericScorer(tolerance=0.01).score_all(answers, cases)
    assert loose.values.tolist() == [1.0, 1.0, 0.0]
    assert loose.details == [None, None, "no number in the answer"]
    assert NumericScorer(tolerance=0.001).score_all(answers, cases).values.tolist() == [
        0.0,
        1.0,
        0.0,
    ]
    with pytest.raises(InvalidInput, match=r"case 0: numeric needs 'expected' to be a number"):
        NumericScorer().check([_case("Paris")])


def test_a_scorer_refuses_cases_without_the_field_it_compares_with():
    with pytest.raises(InvalidInput, match=r"case 1 has no 'reference'; the contains scorer"):
        ContainsScorer(field="reference").check([_case("x", reference="x"), _case("x", index=1)])


# -- gates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bound"),
    [
        ("similarity >= 0.8", Bound("similarity", "min", 0.8)),
        ("mean(similarity) >= 0.8", Bound("similarity", "min", 0.8)),
        ("latency_p95_ms <= 2000", Bound("latency_p95_ms", "max", 2000.0)),
        ("similarity.pass_rate ≥ .9", Bound("similarity.pass_rate", "min", 0.9)),
        ("similarity - against.similarity >= -0.02", Bound("diff.similarity", "min", -0.02)),
        ("diff.exact>=0", Bound("diff.exact", "min", 0.0)),
    ],
)
def test_a_gate_is_a_minimum_or_a_maximum_on_a_metric(text, bound):
    assert parse_gate(text) == bound


def test_a_gate_with_another_operator_or_shape_is_refused():
    with pytest.raises(
        InvalidInput, match=r"the operator must be >= \(a minimum\) or <= \(a maximum\), got '>'"
    ):
        parse_gate("exact > 0.5")
    with pytest.raises(InvalidInput, match=r"is not METRIC >= NUMBER or METRIC <= NUMBER"):
        parse_gate("exact >= high")
    with pytest.raises(InvalidInput, match=r"compares a metric with the same one of --against"):
        parse_gate("exact - against.contains >= 0")


def test_gates_can_be_the_rules_mapping_of_models_check():
    bounds = parse_gates(
        {
            "metrics": {"similarity": {"min": 0.8, "max": 1}},
            "against": {"exact": {"min_delta": -0.01}},
        }
    )
    assert bounds == [
        Bound("similarity", "min", 0.8),
        Bound("similarity", "max", 1.0),
        Bound("diff.exact", "min", -0.01),
    ]
    with pytest.raises(
        InvalidInput, match=r"unknown section\(s\) slices; expected metrics, against"
    ):
        parse_gates({"slices": {}})


def test_a_verdict_says_what_was_measured_and_by_how_much_it_missed():
    verdicts = decide(
        [Bound("exact", "min", 0.9), Bound("failures", "max", 0), Bound("cost_usd", "max", 1)],
        {"exact": 0.75, "failures": 0.0},
    )
    assert verdicts == [
        Gate("exact >= 0.9", False, 0.75, 0.9, "exact 0.75 < 0.9 (off by 0.15)"),
        Gate("failures <= 0", True, 0.0, 0.0, "failures 0 ≤ 0"),
        Gate("cost_usd <= 1", False, None, 1.0, "cost_usd was not measured"),
    ]


# -- the judge's score ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("SCORE: 5", 1.0),
        ("The answer is right.\nSCORE: 4", 0.75),
        ("score = 1", 0.0),
        ("**SCORE:** 3", 0.5),
        ("SCORE: 2 at first; on reflection SCORE: 3", 0.5),
        ("SCORE: 7", None),
        ("I would rate it highly.", None),
        ("", None),
    ],
)
def test_a_judge_reply_maps_its_last_score_onto_zero_to_one(reply, score):
    assert parse_judge_score(reply) == score


def test_a_judge_scale_other_than_one_to_five():
    assert parse_judge_score("SCORE: 7", low=0, high=10) == 0.7


# -- paired differences -----------------------------------------------------------------


def test_paired_differences_have_the_candidates_sign_and_an_interval_around_the_mean():
    rng = np.random.default_rng(0)
    compared = rng.uniform(0, 1, 200)
    better = paired_difference(np.clip(compared + 0.1, 0, 1), compared)
    assert better.mean > 0 and better.ci_low > 0
    assert better.ci_low <= better.mean <= better.ci_high
    assert better.wins > better.losses and better.p_value < 0.001
    worse = paired_difference(compared, np.clip(compared + 0.1, 0, 1))
    assert worse.mean == pytest.approx(-better.mean) and worse.ci_high < 0


def test_pairs_with_an_undecided_score_are_left_out_and_counted():
    diff = paired_difference(np.array([1.0, math.nan, 0.0]), np.array([0.0, 1.0, 0.0]))
    assert (diff.n, diff.dropped, diff.wins, diff.ties) == (2, 1, 1, 1)
    assert diff.mean == 0.5
    nothing = paired_difference(np.array([math.nan]), np.array([1.0]))
    assert nothing.n == 0 and math.isnan(nothing.mean)
