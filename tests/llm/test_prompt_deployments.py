"""Prompt deployments: the deployments' routes, revisions and rollback, naming prompt versions."""

from __future__ import annotations

import pytest

import keel
from keel.errors import Conflict, InvalidInput, NotFound
from keel.serving.deployments import Deployments, DeploymentSpec, build_spec
from keel.serving.runtime import Runtime


@pytest.fixture
def two_versions(support):
    keel.prompts.register("support", **support)
    keel.prompts.register("support", **{**support, "parameters": {"temperature": 0.9}})
    keel.prompts.set_alias("support", "production", 1)


def test_a_prompt_canary_splits_and_rolls_back_like_a_model(any_env, two_versions):
    deployments = Deployments(keel.Client())
    created = deployments.create("support-llm", build_spec("support@production", kind="prompt"))
    assert created.spec.kind == "prompt"
    assert created.spec.uri(created.spec.primary) == "prompts:/support@production"

    canaried = deployments.set_spec(
        "support-llm", created.spec.with_canary("support", 2, 10), "try v2"
    )
    assert [(r.ref, r.weight) for r in canaried.spec.routes] == [("production", 90), ("2", 10)]
    assert canaried.spec.kind == "prompt"  # the canary's route names a prompt version too
    status = deployments.status("support-llm")
    assert [(r["label"], r["version"], r["problem"]) for r in status["routes"]] == [
        ("support@production", 1, None),
        ("support/2", 2, None),
    ]
    assert status["spec"]["kind"] == "prompt"

    rolled = deployments.rollback("support-llm")
    assert rolled.spec == created.spec
    assert deployments.get("support-llm").spec.kind == "prompt"


def test_promoting_a_prompt_canary_follows_the_alias(any_env, two_versions):
    spec = build_spec("support@production", ["support/2:20"], kind="prompt")
    promoted = spec.promoted("support", 2, "production")
    assert [(r.model, r.ref, r.weight) for r in promoted.routes] == [("support", "production", 100)]
    assert promoted.kind == "prompt"


def test_one_prompt_deployment_per_primary_alias(any_env, two_versions):
    deployments = Deployments(keel.Client())
    deployments.create("support-llm", build_spec("support@production", kind="prompt"))
    with pytest.raises(Conflict, match="'support-llm' already splits prompts:/support@production"):
        deployments.create("support-llm-2", build_spec("support@production", kind="prompt"))
    # a route pinned to a version is another primary: allowed
    deployments.create("support-pinned", build_spec("support/1", kind="prompt"))


def test_a_prompt_deployment_names_prompts_that_exist(any_env, two_versions):
    deployments = Deployments(keel.Client())
    with pytest.raises(NotFound, match="staging"):
        deployments.create("support-llm", build_spec("support@staging", kind="prompt"))
    with pytest.raises(NotFound):
        deployments.create("nope-llm", build_spec("nope@production", kind="prompt"))
    # a model deployment does not find a prompt of that name
    with pytest.raises(NotFound):
        deployments.create("support-model", build_spec("support@production"))


def test_a_prompt_deployment_has_no_shadow_or_batching():
    with pytest.raises(InvalidInput, match="no shadow and no batching"):
        build_spec("support@production", shadow="support/2", kind="prompt")
    with pytest.raises(InvalidInput, match="kind must be one of model, prompt"):
        DeploymentSpec.from_dict({"routes": [{"model": "a", "ref": "1"}], "kind": "agent"})


def test_model_specs_keep_their_stored_shape():
    spec = build_spec("churn@champion")
    assert "kind" not in spec.to_dict()
    assert DeploymentSpec.from_dict(spec.to_dict()) == spec
    prompt = build_spec("prompts:/support@production", kind="prompt")
    assert prompt.to_dict()["kind"] == "prompt"
    assert DeploymentSpec.from_dict(prompt.to_dict()) == prompt


def test_keel_serve_refuses_a_prompt_deployment(sqlite_env, support):
    keel.prompts.register("support", **support)
    keel.prompts.set_alias("support", "production", 1)
    Deployments(keel.Client()).create(
        "support-llm", build_spec("support@production", kind="prompt")
    )
    with pytest.raises(InvalidInput, match=r"routes prompts, not models; .*keel gateway start"):
        Runtime("support-llm").build()


def test_deploy_create_takes_a_prompt(sqlite_env, support, run_keel):
    keel.prompts.register("support", **support)
    keel.prompts.set_alias("support", "production", 1)
    made = run_keel(
        "deploy",
        "create",
        "support-llm",
        "--prompt",
        "support@production",
        "--json",
        settings=sqlite_env,
    )
    assert made.returncode == 0, made.stderr
    assert '"kind": "prompt"' in made.stdout
    both = run_keel(
        "deploy",
        "create",
        "x",
        "--prompt",
        "support@production",
        "--model",
        "churn@champion",
        settings=sqlite_env,
    )
    assert both.returncode != 0
    assert "exactly one of --model NAME@ALIAS and --prompt NAME@ALIAS" in both.stderr
