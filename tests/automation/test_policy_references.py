"""A policy is checked against the store before it is stored, and a tick says when a cycle failed.

Every name a policy uses (model, deployment, pipeline and its parameters,
datasets, evaluation data and its target column) must resolve; all that do
not are listed in one error, each with the closest existing names.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

import keel
from keel.automation import Controller, PolicyStore, history, load_policy
from keel.automation.references import resolve_references
from keel.errors import InvalidInput, NotFound

PIPELINE = """
import keel


@keel.step
def fit(data: str, seed: int) -> str:
    raise RuntimeError("the training table has no rows")


@keel.pipeline
def train(data: str, seed: int = 0):
    return {"model": fit(data, seed)}
"""


@pytest.fixture
def world(served, tmp_path: Path):
    """'doubler' and 'doubler-api', a pipeline file, datasets 'train-data' and 'holdout-data'."""
    return _world(served, tmp_path)


@pytest.fixture
def world_anywhere(served_anywhere, tmp_path: Path):
    """As :func:`world`, also with the client going through a real ``keel server``."""
    return _world(served_anywhere, tmp_path)


def _world(served, tmp_path: Path):
    pipes = tmp_path / "training.py"
    pipes.write_text(textwrap.dedent(PIPELINE))
    keel.log_dataset(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), name="train-data")
    holdout = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0], "label": [0, 1]})
    keel.log_dataset(holdout, name="holdout-data")
    holdout_file = tmp_path / "holdout.parquet"
    holdout.to_parquet(holdout_file)
    return served, pipes, holdout_file


def _policy(pipes: Path, **changes) -> dict:
    doc = {
        "name": "doubler-loop",
        "model": "doubler",
        "deployment": "doubler-api",
        "triggers": [{"dataset": {"name": "train-data"}}],
        "retrain": {
            "pipeline": f"{pipes}:train",
            "params": {"data": "datasets:/train-data@latest", "seed": 7},
        },
        "gates": {
            "data": "datasets:/holdout-data@latest",
            "target": "label",
            "rules": {"metrics": {"accuracy": {"min": 0.5}}},
        },
    }
    doc.update(changes)
    return doc


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_dry_run_lists_every_missing_reference_in_one_line_with_the_closest_names(
    world, tmp_path: Path, run_keel
):
    settings, pipes, holdout_file = world
    doc = _policy(
        pipes,
        model="dubler",
        deployment="doubler-apy",
        triggers=[{"dataset": {"name": "train-dat"}}],
        retrain={"pipeline": f"{pipes}:trian"},
        gates={"data": str(holdout_file.with_name("holdot.parquet")), "target": "label"},
    )
    path = _write(tmp_path, doc)
    for args in (("--dry-run",), ()):  # applying for real checks the same, before storing
        result = run_keel("policy", "apply", str(path), *args, settings=settings)
        assert result.returncode == 1, result.stdout + result.stderr
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, line
        assert "policy 'doubler-loop': 5 references do not resolve" in line
        for expected in (
            "policy.model: no registered model 'dubler' (closest: doubler)",
            "policy.deployment: no deployment 'doubler-apy' (closest: doubler-api)",
            f"policy.retrain.pipeline: {pipes} has no pipeline 'trian' (closest: train)",
            "policy.triggers[0].dataset.name: no dataset 'train-dat' (closest: train-data)",
            f"policy.gates.data: no file {holdout_file.with_name('holdot.parquet')} "
            "(closest: holdout.parquet)",
        ):
            assert expected in line, line
    assert json.loads(run_keel("automation", "status", "--json", settings=settings).stdout) == []
    # Once every name resolves, the dry run says so and still stores nothing.
    dry = run_keel(
        "policy", "apply", str(_write(tmp_path, _policy(pipes))), "--dry-run", settings=settings
    )
    assert dry.returncode == 0, dry.stderr
    assert "policy 'doubler-loop' is valid" in dry.stdout
    assert json.loads(run_keel("automation", "status", "--json", settings=settings).stdout) == []
    with_file = _policy(pipes, gates={"data": str(holdout_file), "target": "label"})
    assert (
        run_keel("policy", "apply", str(_write(tmp_path, with_file)), settings=settings).returncode
        == 0
    )


def test_dry_run_checks_pipeline_parameters_their_datasets_and_the_target_column(
    world, tmp_path: Path, run_keel
):
    settings, pipes, _ = world
    doc = _policy(pipes)
    doc["retrain"]["params"] = {"data": "datasets:/train-dta@latest", "sed": 7}
    doc["gates"]["target"] = "labell"
    result = run_keel("policy", "apply", str(_write(tmp_path, doc)), "--dry-run", settings=settings)
    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "3 references do not resolve" in line
    assert "policy.retrain.params.sed: pipeline 'train' has no parameter 'sed' (closest: seed)" in (
        line
    )
    assert "policy.retrain.params.data: no dataset 'train-dta' (closest: train-data)" in line
    assert (
        "policy.gates.target: no column 'labell' in datasets:/holdout-data@1 (closest: label)"
        in line
    )


def test_resolving_raises_not_found_for_missing_names_and_invalid_input_for_wrong_ones(
    world_anywhere,
):
    _, pipes, _ = world_anywhere
    client = keel.Client()
    with pytest.raises(NotFound, match=r"1 reference does not resolve: policy.model: no reg"):
        resolve_references(load_policy(_policy(pipes, model="nope")), client)
    needs_data = _policy(pipes, retrain={"pipeline": f"{pipes}:train", "params": {"seed": 1}})
    with pytest.raises(
        InvalidInput, match=r"policy.retrain.params: pipeline 'train' needs a value for data"
    ):
        resolve_references(load_policy(needs_data), client)
    not_a_pipeline = _policy(pipes, retrain={"pipeline": f"{pipes}:keel"})
    with pytest.raises(InvalidInput, match=r"is a module, not a pipeline"):
        resolve_references(load_policy(not_a_pipeline), client)
    resolved = resolve_references(load_policy(_policy(pipes)), client)
    assert resolved.datasets == {"train-data": 1}
    with pytest.raises(InvalidInput, match=r"policy.triggers\[0\].quality.metric: expected one of"):
        load_policy(_policy(pipes, triggers=[{"quality": {"metric": "acuracy", "below": 0.8}}]))


def test_a_dataset_version_added_between_apply_and_the_first_tick_triggers(world_anywhere):
    _, pipes, _ = world_anywhere
    PolicyStore().apply(_policy(pipes))
    keel.log_dataset(pd.DataFrame({"x": [4.0, 5.0]}), name="train-data")
    Controller().tick()
    kinds = [(e.kind, e.reason) for e in history("doubler-loop")]
    assert kinds[0] == ("triggered", "dataset train-data has a new version 2 (previous 1)")


def test_a_dataset_trigger_added_by_a_new_revision_counts_versions_from_that_apply(
    world_anywhere,
):
    _, pipes, _ = world_anywhere
    store = PolicyStore()
    store.apply(_policy(pipes, triggers=[]))
    Controller().tick()
    keel.log_dataset(pd.DataFrame({"x": [4.0]}), name="train-data")  # before the trigger: old
    store.apply(_policy(pipes))
    keel.log_dataset(pd.DataFrame({"x": [5.0]}), name="train-data")
    Controller().tick()
    triggered = [e.reason for e in history("doubler-loop") if e.kind == "triggered"]
    assert triggered == ["dataset train-data has a new version 3 (previous 2)"]


@pytest.mark.slow
def test_tick_exits_non_zero_when_a_cycle_ended_in_failure(world, tmp_path: Path, run_keel):
    settings, pipes, _ = world
    assert (
        run_keel(
            "policy", "apply", str(_write(tmp_path, _policy(pipes))), settings=settings
        ).returncode
        == 0
    )
    keel.log_dataset(pd.DataFrame({"x": [4.0, 5.0]}), name="train-data")
    failed = run_keel("automation", "tick", "--json", settings=settings)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    (result,) = json.loads(failed.stdout)
    assert result["failed"] is True
    assert [e["kind"] for e in result["events"]] == [
        "triggered",
        "retrain_started",
        "retrain_failed",
    ]
    assert "the training table has no rows" in result["events"][-1]["reason"]
    # Cooling down: nothing happens, nothing failed.
    quiet = run_keel("automation", "tick", settings=settings)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "doubler-loop: idle, nothing to do" in quiet.stdout
