"""A check scores every holdout row: a class the model never saw is scored, counted and fails it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import keel
from keel.checks import Rules, classification_metrics, evaluate

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@pytest.fixture(scope="module")
def two_of_three():
    """A classifier trained on iris classes 0 and 1 only, and a holdout holding all three."""
    frame = load_iris(as_frame=True).frame
    train = frame[frame["target"] < 2].iloc[::2]
    holdout = frame.iloc[1::2].reset_index(drop=True)
    model = LogisticRegression(max_iter=2000).fit(train[FEATURES], train["target"])
    return model, holdout


def _with_unseen_columns(proba: np.ndarray, extra: int) -> np.ndarray:
    return np.column_stack([proba, np.zeros((len(proba), extra))])


def test_metrics_score_a_class_the_model_never_saw_as_sklearn_does_with_probability_zero(
    two_of_three,
):
    model, holdout = two_of_three
    y = holdout["target"].to_numpy()
    proba = model.predict_proba(holdout[FEATURES])
    pred = model.predict(holdout[FEATURES])
    got = classification_metrics(y, pred, proba, model.classes_)
    # The model's view of the same rows: class 2 exists, the model gives it probability 0.
    full = _with_unseen_columns(proba, 1)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, full, labels=[0, 1, 2]))
    assert got["log_loss"] > 10  # -log(eps) for a third of the rows, not the 0.0x of the seen ones
    assert got["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, full, multi_class="ovr", labels=[0, 1, 2])
    )
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))


def test_log_loss_clips_with_the_machine_epsilon_of_the_probabilities_dtype():
    y = np.array([0, 1, 1, 0])
    proba = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32)
    got = classification_metrics(y, np.array([0, 0, 1, 0]), proba, np.array([0, 1]))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba), rel=1e-6)
    eps = np.finfo(np.float32).eps
    assert got["log_loss"] == pytest.approx(
        -(np.log(1 - eps) + np.log(eps) + np.log(1 - eps) + np.log(0.5)) / 4, rel=1e-6
    )


def test_a_binary_model_scored_on_a_third_class_uses_one_vs_rest_over_all_classes():
    y = np.array(["a", "b", "a", "b", "c", "c"], dtype=object)
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5], [0.1, 0.9]])
    pred = np.array(["a", "b", "a", "b", "a", "b"], dtype=object)
    got = classification_metrics(y, pred, proba, np.array(["a", "b"], dtype=object))
    full = _with_unseen_columns(proba, 1)
    assert got["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, full, multi_class="ovr", labels=["a", "b", "c"])
    )
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, full, labels=["a", "b", "c"]))


def test_a_check_counts_rows_of_an_unseen_class_and_fails_its_data_validation(two_of_three):
    model, holdout = two_of_three
    rules = Rules.from_dict({"metrics": {"log_loss": {"max": 0.5}}})
    report = evaluate(model, holdout, "target", rules)
    unseen = int((holdout["target"] == 2).sum())
    assert report.unseen_class_rows == unseen == 25
    assert not report.passed
    assert report.data_problems == [
        f"{unseen} of {len(holdout)} holdout rows have a class the model was never trained on "
        f"(2: {unseen} rows); they are scored as wrong, with probability 0 for their class. "
        "Retrain on these classes, or leave their rows out of the holdout"
    ]
    assert {g.name: g.passed for g in report.gates} == {"log_loss max": False}
    assert report.to_dict()["unseen_class_rows"] == unseen
    seen_only = holdout[holdout["target"] < 2]
    clean = evaluate(model, seen_only, "target", rules)
    assert clean.unseen_class_rows == 0 and clean.data_problems == [] and clean.passed


@pytest.mark.slow
def test_models_check_from_the_command_line_fails_a_model_that_never_saw_a_class(
    sqlite_env, two_of_three, tmp_path: Path, run_keel
):
    pytest.importorskip("skops", reason="model packages for scikit-learn need skops")
    model, holdout = two_of_three
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=holdout[FEATURES].head(3))
    keel.register_model(info.uri, "iris")
    data = tmp_path / "holdout.parquet"
    holdout.to_parquet(data)
    rules = tmp_path / "gates.yaml"
    rules.write_text("metrics: {log_loss: {max: 0.5}}\n")
    args = ("models", "check", "iris", "1", "--data", str(data), "--target", "target")
    result = run_keel(*args, "--rules", str(rules), "--json", settings=sqlite_env)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is False and report["unseen_class_rows"] == 25
    assert report["metrics"]["log_loss"] > 10
    assert [g["name"] for g in report["gates"] if not g["passed"]] == ["log_loss max"]
    assert "never trained on (2: 25 rows)" in report["data_problems"][0]
    human = run_keel(*args, settings=sqlite_env)
    assert human.returncode == 1 and "never trained on" in human.stdout
