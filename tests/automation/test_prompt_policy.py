"""Prompt policies: parsed and checked like a model's, with the fields a prompt's loop needs."""

from __future__ import annotations

from pathlib import Path

import pytest

import keel
from keel.automation import Policy, PolicyStore, load_policy
from keel.automation.references import resolve_references
from keel.errors import InvalidInput, NotFound
from keel.serving.deployments import Deployments, build_spec

FULL = """
name: support-loop
prompt: support
deployment: support-llm
triggers:
  - prompt: {}
  - dataset: {name: support-evals}
  - schedule: {cron: "0 3 * * *"}
  - alert: {rule: llm_error_rate}
cooldown: 30m
gates:
  evals:
    dataset: datasets:/support-evals@latest
    scorers: [exact, "numeric:tolerance=0.01"]
    gates: ["exact >= 0.8", "diff.exact >= -0.05"]
    gateway: http://127.0.0.1:4000/v1
rollout:
  canary: {weight: 20, min_requests: 150, max_duration: 45m}
  promote_when: {error_rate: 0.01, p99_ratio: 1.5, cost_ratio: 1.2}
  rollback_when: {error_rate: 0.05, cost_per_request: 0.01, feedback_drop: 0.1}
approval: {mode: auto}
"""


def test_a_full_prompt_policy_round_trips_through_yaml_and_dict(tmp_path: Path):
    path = tmp_path / "policy.yaml"
    path.write_text(FULL)
    policy = load_policy(path)
    assert (policy.kind, policy.model, policy.is_prompt, policy.retrain) == (
        "prompt",
        "support",
        True,
        None,
    )
    assert [t.kind for t in policy.triggers] == ["prompt", "dataset", "schedule", "alert"]
    assert policy.triggers[3].rule == "llm_error_rate"
    assert policy.triggers[3].describe() == "the deployment's alert llm_error_rate is firing"
    evals = policy.gates.evals
    assert evals is not None and evals.scorers == ("exact", "numeric:tolerance=0.01")
    assert policy.rollout.rollback_when.to_dict() == {
        "error_rate": 0.05,
        "cost_per_request": 0.01,
        "feedback_drop": 0.1,
    }
    doc = policy.to_dict()
    assert doc["prompt"] == "support" and "model" not in doc and "retrain" not in doc
    assert Policy.from_dict(doc) == policy
    assert policy.uri(3) == "prompts:/support/3" and policy.label(3) == "support/3"


def test_a_minimal_prompt_policy_promotes_production_and_has_no_gates():
    policy = Policy.from_dict({"name": "p", "prompt": "support", "deployment": "d"})
    assert policy.alias == "production" and policy.gates.evals is None
    assert policy.to_dict()["gates"] == {}
    assert Policy.from_dict(policy.to_dict()) == policy


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"retrain": {"pipeline": "mod:fn"}}, r"unknown field\(s\) retrain"),
        ({"model": "churn"}, r"name either model .* or prompt .*, not both"),
        (
            {"triggers": [{"drift": {"window": "1h"}}]},
            r"a trigger is one of prompt, schedule, dataset, alert .* \(drift triggers are "
            r"for model policies\)",
        ),
        ({"triggers": [{"alert": {}}]}, r"triggers\[0\].alert.rule: expected a non-empty string"),
        ({"triggers": [{"prompt": {"name": "x"}}]}, r"triggers\[0\].prompt: unknown field"),
        (
            {"rollout": {"rollback_when": {"prediction_drift": 0.2}}},
            r"prediction_drift bound\(s\) a model canary's metrics, not a prompt's",
        ),
        (
            {"gates": {"data": "x.parquet"}},
            r"policy.gates: unknown field\(s\) data; expected evals",
        ),
        (
            {
                "gates": {
                    "evals": {
                        "dataset": "support-evals",
                        "scorers": ["exact"],
                        "gates": ["exact >= 1"],
                    }
                }
            },
            r"gates.evals.dataset: expected the eval set as a dataset URI",
        ),
        (
            {
                "gates": {
                    "evals": {
                        "dataset": "datasets:/e",
                        "scorers": ["exactly"],
                        "gates": ["exact >= 1"],
                    }
                }
            },
            r"gates.evals.scorers\[0\]: unknown scorer 'exactly'",
        ),
        (
            {
                "gates": {
                    "evals": {"dataset": "datasets:/e", "scorers": ["exact"], "gates": ["exact"]}
                }
            },
            r"gates.evals.gates\[0\]: ",
        ),
        (
            {"gates": {"evals": {"dataset": "datasets:/e", "scorers": ["exact"], "gates": []}}},
            r"gates.evals.gates: expected a non-empty list of conditions",
        ),
    ],
)
def test_bad_prompt_policy_fields_are_named_with_what_was_expected(change, message):
    doc = {"name": "p", "prompt": "support", "deployment": "d", **change}
    with pytest.raises(InvalidInput, match=message):
        Policy.from_dict(doc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"triggers": [{"prompt": {}}]}, r"\(prompt triggers are for prompt policies\)"),
        (
            {"rollout": {"promote_when": {"cost_ratio": 1.2}}},
            r"cost_ratio bound\(s\) a prompt canary's metrics, not a model's",
        ),
        ({"gates": {"evals": {}}}, r"policy.gates: unknown field\(s\) evals"),
    ],
)
def test_a_model_policy_refuses_what_only_a_prompt_policy_has(change, message):
    doc = {"name": "p", "model": "m", "deployment": "d", "retrain": {"pipeline": "mod:fn"}}
    with pytest.raises(InvalidInput, match=message):
        Policy.from_dict({**doc, **change})


def test_a_prompt_policy_resolves_its_prompt_deployment_and_eval_set(served):
    keel.prompts.register("support", template="Answer: {{ question }}", model="small")
    keel.prompts.set_alias("support", "production", 1)
    Deployments().create("support-llm", build_spec("prompts:/support@production", kind="prompt"))
    doc = {
        "name": "support-loop",
        "prompt": "suport",
        "deployment": "support-lm",
        "gates": {
            "evals": {
                "dataset": "datasets:/support-evalz",
                "scorers": ["exact"],
                "gates": ["exact >= 1"],
            }
        },
    }
    with pytest.raises(NotFound) as missing:
        resolve_references(load_policy(doc), keel.Client())
    text = str(missing.value)
    assert "3 references do not resolve" in text
    assert "policy.prompt: no prompt 'suport' (closest: support)" in text
    assert "policy.deployment: no prompt deployment 'support-lm' (closest: support-llm)" in text
    assert "policy.gates.evals.dataset: no dataset 'support-evalz'" in text

    # a model deployment is not a prompt's (nor the other way round)
    wrong = {"name": "support-loop", "prompt": "support", "deployment": "doubler-api"}
    with pytest.raises(
        InvalidInput, match=r"deployment 'doubler-api' routes models, and a prompt policy needs"
    ):
        PolicyStore().apply(wrong)
    backwards = {
        "name": "doubler-loop",
        "model": "doubler",
        "deployment": "support-llm",
        "retrain": {"pipeline": "keel.demo.pipeline:screening"},
    }
    with pytest.raises(InvalidInput, match=r"routes prompts, and a model policy needs"):
        PolicyStore().apply(backwards)

    policy, revision = PolicyStore().apply({**wrong, "deployment": "support-llm"})
    assert (policy.kind, revision) == ("prompt", 1)
    [row] = PolicyStore().list()
    assert (row["kind"], row["model"], row["deployment"]) == ("prompt", "support", "support-llm")
