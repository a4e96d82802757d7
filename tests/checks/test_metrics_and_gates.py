"""Metrics agree with scikit-learn's; gates decide as the rules say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split

from keel.checks import (
    Rules,
    classification_metrics,
    evaluate,
    infer_task,
    load_rules,
    regression_metrics,
)
from keel.checks.metrics import roc_auc_binary
from keel.errors import InvalidInput


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    score = np.round(rng.random(500) * 0.6 + y * 0.3, 2)  # rounded: plenty of ties
    pred = (score > 0.5).astype(int)
    got = classification_metrics(y, pred, score, np.array([0, 1]))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score))
    proba = np.column_stack([1 - score, score])
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, np.clip(proba, 1e-15, 1)))


def test_multiclass_and_regression_metrics_match_sklearn():
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x[::2], y[::2])
    proba, pred = model.predict_proba(x[1::2]), model.predict(x[1::2])
    got = classification_metrics(y[1::2], pred, proba, model.classes_)
    assert got["f1"] == pytest.approx(skm.f1_score(y[1::2], pred, average="macro"))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y[1::2], proba, multi_class="ovr"))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y[1::2], proba))
    yr = np.linspace(0, 10, 50)
    pr = yr + np.sin(yr)
    reg = regression_metrics(yr, pr)
    assert reg["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(yr, pr)))
    assert reg["mae"] == pytest.approx(skm.mean_absolute_error(yr, pr))
    assert reg["r2"] == pytest.approx(skm.r2_score(yr, pr))


def test_task_inference():
    assert infer_task(np.array([0, 1, 1])) == "classification"
    assert infer_task(np.array(["a", "b"], dtype=object)) == "classification"
    assert infer_task(np.linspace(0, 1, 100)) == "regression"
    assert infer_task(np.arange(1000)) == "regression"
    assert np.isnan(roc_auc_binary(np.array([1, 1]), np.array([0.2, 0.3])))


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={"target": "y"})
    frame["size"] = np.where(frame["mean radius"] > 14, "large", "small")
    train, test = train_test_split(frame, test_size=0.4, random_state=0, stratify=frame["y"])
    features = [c for c in frame.columns if c not in ("y", "size")]

    class Model:
        def __init__(self, estimator):
            self.estimator = estimator.fit(train[features], train["y"])
            self.classes_ = self.estimator.classes_

        def predict(self, df):
            return self.estimator.predict(df[features])

        def predict_proba(self, df):
            return self.estimator.predict_proba(df[features])

    good = Model(LogisticRegression(max_iter=5000))
    weak = Model(DummyClassifier(strategy="prior"))
    return test, good, weak


def test_gates_pass_and_fail_with_reasons(cancer):
    test, good, weak = cancer
    rules = Rules.from_dict(
        {
            "metrics": {"accuracy": {"min": 0.9}, "log_loss": {"max": 0.3}},
            "against": {"roc_auc": {"min_delta": 0.0}},
            "slices": {"columns": ["size"], "metric": "accuracy", "max_gap": 0.5, "min_size": 10},
        }
    )
    report = evaluate(good, test, "y", rules, baseline=weak)
    assert report.passed, [g.detail for g in report.gates if not g.passed]
    assert report.metrics["accuracy"] > 0.9 and report.baseline_metrics["roc_auc"] == pytest.approx(
        0.5
    )
    assert set(report.slices["size"]) == {"large", "small"}
    assert sum(v["n"] for v in report.slices["size"].values()) == len(test)
    backwards = evaluate(weak, test, "y", rules, baseline=good)
    failed = {g.name for g in backwards.gates if not g.passed}
    # Predicting the majority class everywhere is right for small tumours, wrong for large.
    assert failed == {"accuracy min", "log_loss max", "roc_auc vs baseline", "slice gap size"}
    detail = next(g.detail for g in backwards.gates if g.name == "roc_auc vs baseline")
    assert "improvement -" in detail


def test_slice_gap_gate_uses_only_big_enough_slices(cancer):
    test, good, _ = cancer
    strict = Rules.from_dict(
        {"slices": {"columns": ["size"], "metric": "accuracy", "max_gap": 0.0, "min_size": 1}}
    )
    report = evaluate(good, test, "y", strict)
    values = [v["accuracy"] for v in report.slices["size"].values()]
    assert report.slice_gaps["size"] == pytest.approx(max(values) - min(values))
    assert report.passed is (report.slice_gaps["size"] == 0.0)
    lenient = Rules.from_dict(
        {"slices": {"columns": ["size"], "metric": "accuracy", "max_gap": 0.0, "min_size": 10**6}}
    )
    assert evaluate(good, test, "y", lenient).slice_gaps["size"] == 0.0


def test_data_validation_problems_fail_the_check(cancer):
    test, good, _ = cancer
    holey = test.copy()
    holey.loc[holey.index[:50], "mean radius"] = np.nan
    rules = Rules.from_dict({"data": {"max_missing_share": 0.05}})

    def validate(features):
        if "worst area" not in features.columns:
            raise InvalidInput("missing columns: worst area")

    report = evaluate(good, holey, "y", rules, validate=validate)
    assert not report.passed
    assert any("'mean radius' is " in p and "missing" in p for p in report.data_problems), (
        report.data_problems
    )
    # The model itself cannot take NaN: that is a reason to fail, not a crash.
    assert any("could not predict on the holdout: ValueError" in p for p in report.data_problems)
    dropped = evaluate(
        good, test, "y", Rules(), validate=lambda f: validate(f.drop(columns=["worst area"]))
    )
    assert dropped.data_problems == ["signature: missing columns: worst area"]


def test_regression_check(tmp_path: Path):
    x, y = load_diabetes(return_X_y=True, as_frame=True)
    model = LinearRegression().fit(x[:300], y[:300])
    holdout = x[300:].assign(target=y[300:])
    report = evaluate(model, holdout, "target", Rules.from_dict({"metrics": {"r2": {"min": 0.3}}}))
    assert report.task == "regression"
    assert report.metrics["r2"] == pytest.approx(skm.r2_score(y[300:], model.predict(x[300:])))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"metrics": {"acuracy": {"min": 1}}}, "unknown metric 'acuracy'"),
        ({"metrics": {"accuracy": {"least": 1}}}, "must be {min: x}"),
        ({"against": {"f1": {"min": 0}}}, "must be {min_delta: x}"),
        ({"gates": {}}, "unknown section"),
        ({"slices": {"columns": ["a"]}}, "needs a metric"),
        ({"task": "ranking"}, "classification or regression"),
    ],
)
def test_bad_rules_are_rejected(doc, message):
    with pytest.raises(InvalidInput, match=message.replace("{", r"\{").replace("}", r"\}")):
        Rules.from_dict(doc)


def test_rules_file_yaml(tmp_path: Path):
    path = tmp_path / "gates.yaml"
    path.write_text("metrics:\n  accuracy: {min: 0.8}\nagainst:\n  roc_auc: {min_delta: 0.01}\n")
    rules = load_rules(path)
    assert rules.thresholds == {"accuracy": {"min": 0.8}} and rules.against == {"roc_auc": 0.01}
    with pytest.raises(InvalidInput, match="does not exist"):
        load_rules(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("metrics: [unclosed")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_rules(tmp_path / "bad.yaml")


def test_missing_target_is_invalid_input(cancer):
    test, good, _ = cancer
    with pytest.raises(InvalidInput, match="target column 'label' is not in the data"):
        evaluate(good, test, "label", Rules())
    with pytest.raises(InvalidInput, match="no rows"):
        evaluate(good, test.iloc[:0], "y", Rules())
    assert isinstance(test, pd.DataFrame)
