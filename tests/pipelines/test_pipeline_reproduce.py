"""Reproduction: re-executing a pipeline run and comparing digests and metrics; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import keel
from keel.errors import InvalidInput
from keel.pipelines import reproduce, run_pipeline

SEEDED = """
import numpy as np
import pandas as pd
import keel
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

@keel.step(outputs=["train", "test"])
def data(n: int):
    X = np.random.rand(n, 4)  # NumPy's global generator: the run's seed decides what it draws
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    frame = pd.DataFrame(X, columns=list("abcd")).assign(y=y)
    return tuple(train_test_split(frame, test_size=0.25, random_state=0))

@keel.step
def fit(train, trees: int):
    model = RandomForestClassifier(n_estimators=trees, random_state=int(np.random.randint(0, 1000)))
    return model.fit(train[list("abcd")], train["y"])

@keel.step
def score(model, test):
    acc = float(model.score(test[list("abcd")], test["y"]))
    keel.log_metric("accuracy", acc)
    return {"accuracy": acc}

@keel.pipeline
def flow(n: int = 200, trees: int = 8):
    train, test = data(n)
    model = fit(train, trees)
    return {"model": model, "accuracy": score(model, test)["accuracy"]}
"""


@pytest.mark.slow
def test_a_seeded_scikit_learn_pipeline_reproduces_with_identical_digests(keel_env, write_module):
    path = write_module("seeded", SEEDED)
    original = run_pipeline(f"{path}:flow", seed=7)
    report = reproduce(original.run_id)
    assert report.identical, report.differences
    assert report.compared >= 6  # five output digests and the metrics
    again = keel.pipelines.get_pipeline_run(report.run_id)
    assert again.reproduces == original.run_id
    assert not any(s.cached for s in again.steps)  # re-executed, never served from the cache
    for step in original.steps:
        assert again.step(step.node).outputs == step.outputs


def test_an_unseeded_pipeline_lists_its_differences(sqlite_env, write_module):
    path = write_module("seeded", SEEDED)
    original = run_pipeline(f"{path}:flow", params={"n": 80, "trees": 3})
    report = reproduce(original.run_id)
    assert not report.identical
    assert any(line.startswith("step 'data' output 'train'") for line in report.differences)


def test_changed_code_is_named_in_the_report(sqlite_env, write_module):
    path = write_module("seeded", SEEDED)
    original = run_pipeline(f"{path}:flow", params={"n": 80, "trees": 3}, seed=1)
    write_module("seeded", SEEDED.replace("acc = float(", "acc = 0.5 * float("))
    report = reproduce(original.run_id)
    assert any("seeded.score" in note for note in report.notes)
    assert any("metric 'accuracy'" in line for line in report.differences)


def test_only_pipeline_runs_can_be_reproduced(sqlite_env, write_module):
    path = write_module("seeded", SEEDED)
    run = run_pipeline(f"{path}:flow", params={"n": 40, "trees": 2}, seed=1)
    with pytest.raises(InvalidInput, match=f"is step 'fit' of pipeline run {run.run_id}"):
        reproduce(run.step("fit").run_id)
    with keel.start_run() as plain:
        pass
    with pytest.raises(InvalidInput, match="is not a pipeline run"):
        reproduce(plain.id)


@pytest.mark.slow
def test_pipeline_lineage_and_reproduce_commands_from_a_fresh_folder(
    write_module, tmp_path: Path, run_keel
):
    path = write_module("seeded", SEEDED)
    folder = path.parent
    checked = run_keel("pipeline", "validate", "seeded.py:flow", "--json", cwd=folder)
    assert checked.returncode == 0, checked.stderr
    assert [s["node"] for s in json.loads(checked.stdout)["steps"]] == ["data", "fit", "score"]

    ran = run_keel(
        "pipeline", "run", "seeded.py:flow", "-p", "n=120", "--seed", "3", "--json", cwd=folder
    )
    assert ran.returncode == 0, ran.stderr
    run = json.loads(ran.stdout)
    assert run["status"] == "FINISHED" and run["params"] == {"n": 120, "trees": 8}

    again = run_keel("pipeline", "run", "seeded.py:flow", "-p", "n=120", "--seed", "3", cwd=folder)
    assert again.returncode == 0, again.stderr
    assert "(3 steps, 3 cached)" in again.stdout
    assert again.stderr.count("cached") >= 3  # each step says it was served from the cache

    shown = json.loads(run_keel("pipeline", "show", run["run_id"], "--json", cwd=folder).stdout)
    assert [s["node"] for s in shown["steps"]] == ["data", "fit", "score"]
    listed = json.loads(run_keel("pipeline", "list", "--json", cwd=folder).stdout)
    assert len(listed) == 2

    fit_run = next(s["run_id"] for s in run["steps"] if s["node"] == "fit")
    lineage = run_keel("lineage", "show", f"runs:/{fit_run}", "--upstream", "--json", cwd=folder)
    assert lineage.returncode == 0, lineage.stderr
    graph = json.loads(lineage.stdout)
    assert {n["kind"] for n in graph["nodes"]} >= {"run", "artifact", "code"}
    tree = run_keel("lineage", "show", f"runs:/{fit_run}", cwd=folder)
    assert "input train" in tree.stdout and "code" in tree.stdout

    same = run_keel("runs", "reproduce", run["run_id"], "--json", cwd=folder)
    assert same.returncode == 0, same.stdout + same.stderr
    assert json.loads(same.stdout)["identical"] is True

    unseeded = run_keel("pipeline", "run", "seeded.py:flow", "-p", "n=60", "--json", cwd=folder)
    differs = run_keel("runs", "reproduce", json.loads(unseeded.stdout)["run_id"], cwd=folder)
    assert differs.returncode == 1
    assert "difference(s)" in differs.stdout

    broken = run_keel("pipeline", "run", "seeded.py:flow", "-p", "nope=1", cwd=folder)
    assert broken.returncode == 1
    assert broken.stderr.strip() == (
        "error: pipeline 'flow' has no parameter(s) nope; its parameters are n, trees"
    )
