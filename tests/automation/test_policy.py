"""Policies: parsed from YAML or dicts, every field checked with a message that says what to do."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from keel.automation import Policy, load_policy
from keel.automation.policy import parse_duration
from keel.errors import InvalidInput

FULL = """
name: churn-retrain
model: churn
deployment: churn-api
triggers:
  - drift: {window: 1h, share: 0.3}
  - drift: {window: 30m, columns: [age, plan]}
  - quality: {metric: accuracy, below: 0.85, min_labels: 200, window: 1d}
  - schedule: {cron: "0 3 * * *"}
  - dataset: {name: churn-train}
cooldown: 2h
retrain:
  pipeline: churn_pipeline:train
  params: {data: "datasets:/churn-train@latest", seed: 7}
  output: model
gates:
  data: datasets:/churn-holdout@latest
  target: churned
  rules:
    metrics: {roc_auc: {min: 0.8}}
    against: {roc_auc: {min_delta: 0.0}}
  latency: {p99_ms: 50, requests: 100}
rollout:
  canary: {weight: 20, min_requests: 150, max_duration: 45m}
  promote_when: {error_rate: 0.01, p99_ratio: 1.5, prediction_drift: 0.2}
  rollback_when: {error_rate: 0.05}
approval: {mode: auto}
"""


def test_a_full_policy_round_trips_through_yaml_and_dict(tmp_path: Path):
    path = tmp_path / "policy.yaml"
    path.write_text(FULL)
    policy = load_policy(path)
    assert [t.kind for t in policy.triggers] == ["drift", "drift", "quality", "schedule", "dataset"]
    assert policy.triggers[0].window == 3600 and policy.triggers[0].share == 0.3
    assert policy.triggers[1].columns == ("age", "plan") and policy.triggers[1].share is None
    assert policy.cooldown == 7200
    assert policy.rollout.canary.weight == 20 and policy.rollout.canary.max_duration == 2700
    assert policy.rollout.rollback_when.to_dict() == {"error_rate": 0.05}
    assert policy.gates.latency_p99_ms == 50 and policy.gates.latency_requests == 100
    assert Policy.from_dict(policy.to_dict()) == policy
    assert policy.triggers[2].describe() == "accuracy below 0.85 over 1d (at least 200 labels)"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"retrain": {"pipeline": "no_colon"}},
            r"policy.retrain.pipeline: expected module:attribute",
        ),
        (
            {"triggers": [{"drift": {"window": "soon"}}]},
            r"triggers\[0\].drift.window: expected a duration",
        ),
        ({"triggers": [{"rain": {}}]}, r"a trigger is one of drift, quality, schedule, dataset"),
        ({"triggers": [{"schedule": {"cron": "every day"}}]}, r"is not a cron expression"),
        ({"triggers": [{"drift": {"share": 1.5}}]}, r"share between 0 and 1"),
        ({"triggers": [{"quality": {"metric": "accuracy"}}]}, r"needs below"),
        ({"rollout": {"canary": {"weight": 100}}}, r"a canary takes 1 to 99 percent"),
        ({"rollout": {"promote_when": {"speed": 1}}}, r"unknown field\(s\) speed"),
        ({"approval": {"mode": "maybe"}}, r"expected auto or required"),
        ({"gates": {"rules": {"metrics": {"accuracy": {"min": 0.9}}}}}, r"rules need data"),
        ({"deployment": "no spaces allowed"}, r"policy deployment must be"),
        ({"surprise": 1}, r"unknown field\(s\) surprise"),
    ],
)
def test_bad_fields_are_named_with_what_was_expected(change, message):
    doc = {
        "name": "p",
        "model": "m",
        "deployment": "d",
        "retrain": {"pipeline": "mod:fn"},
        **change,
    }
    with pytest.raises(InvalidInput, match=message):
        Policy.from_dict(doc)


def test_a_missing_or_malformed_file_is_reported(tmp_path: Path):
    with pytest.raises(InvalidInput, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("name: [unclosed\n"))
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_policy(bad)
    partial = tmp_path / "partial.yaml"
    partial.write_text("name: p\nmodel: m\n")
    with pytest.raises(InvalidInput, match=r"partial.yaml: policy: missing deployment"):
        load_policy(partial)


def test_defaults_make_a_minimal_policy_complete():
    policy = Policy.from_dict(
        {"name": "p", "model": "m", "deployment": "d", "retrain": {"pipeline": "mod:fn"}}
    )
    assert policy.alias == "champion" and policy.cooldown == 3600
    assert policy.rollout.canary.weight == 10 and policy.rollout.canary.min_requests == 200
    assert policy.rollout.rollback_when.error_rate == 0.05
    assert policy.approval.mode == "auto" and policy.triggers == ()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90s", 90.0), ("30m", 1800.0), ("1.5h", 5400.0), ("250ms", 0.25)],
)
def test_durations(text, seconds):
    assert parse_duration(text, "x") == seconds
