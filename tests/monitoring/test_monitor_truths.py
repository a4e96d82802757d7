"""Monitoring never guesses: the task, the reference, the deployment and the verdict are facts.

Real pieces only: scikit-learn models trained on wine (``sklearn.datasets.load_wine``),
logged and registered in a real store, prediction logs written by the real logger,
a real pipeline and controller for promotion, and the ``keel`` CLI as a subprocess.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import keel
from _support.monitoring import HOUR, T0, Logs
from keel.errors import NotFound
from keel.monitoring import (
    configure_monitor,
    get_reference,
    list_alerts,
    monitor_history,
    parse_window,
    reference_info,
    run_monitor,
    set_reference,
)

TARGET = "target"


@dataclass
class Wine:
    """The wine table (features and a 3-class target) and a classifier fitted on it."""

    frame: pd.DataFrame
    features: list[str]
    estimator: Any

    @property
    def X(self) -> pd.DataFrame:
        return self.frame[self.features]


@pytest.fixture
def wine() -> Wine:
    pytest.importorskip("skops", reason="scikit-learn packages need skops")
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = load_wine(as_frame=True).frame
    frame.columns = [c.replace("/", "_") for c in frame.columns]
    features = [c for c in frame.columns if c != TARGET]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2_000))
    model.fit(frame[features], frame[TARGET])
    return Wine(frame, features, model)


def register(wine: Wine, **log_kwargs: Any) -> int:
    """Log the classifier (an input example gives its signature) and register it as ``wine``."""
    with keel.start_run():
        info = keel.log_model(wine.estimator, "model", input_example=wine.X.head(3), **log_kwargs)
    return keel.register_model(info.uri, "wine")


def serve(logs: Logs, wine: Wine, version: int, rows: pd.DataFrame | None = None) -> list[str]:
    """Log traffic for ``wine/<version>`` on ``wine-api`` in the hour starting at T0."""
    features = wine.X if rows is None else rows[wine.features]
    predicted = wine.estimator.predict(features)
    return logs.write(
        "wine-api", features, T0, model="wine", version=version, predictions=predicted
    )


@pytest.fixture
def logs(keel_env, tmp_path: Path) -> Logs:
    return Logs(keel_env.artifacts_url, tmp_path / "spill")


@pytest.fixture
def shell(keel_env, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Variables for ``keel`` child processes pointing at the test's home and store."""
    env = {"KEEL_HOME": str(keel_env.home), "KEEL_STORE_URL": keel_env.store_url, "COLUMNS": "250"}
    work = tmp_path / "work"
    work.mkdir()
    return env, work


# -- item 7: the task comes from the model version, not from the labels --------------------------


def test_the_task_and_classes_are_recorded_in_the_package_when_a_model_is_logged(
    keel_env, wine: Wine
):
    from sklearn.linear_model import LinearRegression

    register(wine)
    assert keel.load_model("models:/wine/1").metadata["task"] == {
        "type": "classification",
        "classes": [0, 1, 2],
    }
    with keel.start_run():
        info = keel.log_model(
            LinearRegression().fit(wine.X, wine.frame["alcohol"]),
            "model",
            input_example=wine.X.head(3),
        )
    assert keel.load_model(info.uri).metadata["task"] == {"type": "regression"}


def test_a_three_class_classifier_gets_accuracy_and_macro_f1_and_its_quality_rule_fires(
    keel_env, wine: Wine, logs: Logs
):
    from sklearn.metrics import accuracy_score, f1_score

    register(wine, reference_data=wine.X)
    ids = serve(logs, wine, 1)
    predicted = wine.estimator.predict(wine.X)
    labels = wine.frame[TARGET].to_numpy().copy()
    labels[::4] = (labels[::4] + 1) % 3  # a quarter of the answers turn out wrong
    logs.label("wine-api", ids, labels.tolist())
    configure_monitor("wine-api", quality={"accuracy": 0.9, "f1": 0.9})

    result = run_monitor("wine-api", end=T0 + HOUR)
    assert result.quality is not None and result.quality["task"] == "classification"
    metrics = result.quality["metrics"]
    assert set(metrics) == {"accuracy", "f1"}  # no RMSE or R² of class numbers
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert metrics["accuracy"] < 0.9 and result.labelled_rows == len(labels)
    fired = {a.rule for a in result.alerts if a.state == "firing"}
    assert {"quality:accuracy", "quality:f1"} <= fired


class Constant:
    """A custom model that says nothing about its task (no ``classes_``, not an estimator)."""

    def predict(self, data):
        return np.full(len(data), 1.0)

    def keel_save(self, path):
        (path / "constant").write_text("1")

    @classmethod
    def keel_load(cls, path):
        return cls()


def test_labels_of_a_version_that_records_no_task_are_counted_not_scored(
    keel_env, wine: Wine, logs: Logs
):
    with keel.start_run():
        info = keel.log_model(Constant(), "model", input_example=wine.X.head(3))
    assert "task" not in keel.load_model(info.uri).metadata
    keel.register_model(info.uri, "constant")
    ids = logs.write(
        "wine-api", wine.X, T0, model="constant", version=1, predictions=np.ones(len(wine.X))
    )
    logs.label("wine-api", ids, wine.frame[TARGET].tolist())  # 0, 1, 2: not a regression target

    result = run_monitor("wine-api", end=T0 + HOUR)
    assert result.quality == {
        "task": None,
        "rows": 0,
        "metrics": {},
        "excluded": {"constant/1 records no task": len(wine.X)},
    }
    assert result.labelled_rows == len(wine.X) and result.concept_drift is None


# -- item 10: every served version has a reference of its inputs, or an alert says so ------------


def test_a_version_registered_without_reference_data_takes_its_runs_training_dataset(
    keel_env, wine: Wine, logs: Logs
):
    train, valid = wine.frame.iloc[:150], wine.frame.iloc[150:]
    with keel.start_run():
        keel.log_dataset(train, name="wine-train")  # with the target column
        keel.log_dataset(valid, name="wine-valid")  # has the inputs too, but fewer rows
        info = keel.log_model(wine.estimator, "model", input_example=wine.X.head(3))
    version = keel.register_model(info.uri, "wine")

    source = reference_info("wine", version)
    assert source is not None and source["source"] == "dataset"
    assert source["dataset"] == "datasets:/wine-train@1" and source["rows"] == 150
    reference = get_reference("wine", version)
    assert reference is not None
    assert set(reference.names) == {f"input.{c}" for c in wine.features}  # no target

    serve(logs, wine, version, train)
    result = run_monitor("wine-api", end=T0 + HOUR)
    assert result.versions[f"wine/{version}"]["reference"] is True
    assert result.share_drifted == 0.0 and result.failed_checks == 0
    assert not any(a.rule == "no_reference" for a in result.alerts)


def test_reference_set_from_the_cli_profiles_the_inputs_and_leaves_the_target_out(
    keel_env, wine: Wine, logs: Logs, shell, run_keel
):
    env, work = shell
    register(wine)  # no reference_data, no dataset: no reference yet
    assert reference_info("wine", 1) is None
    wine.frame.to_parquet(work / "train.parquet")  # features and the target
    keel.init(home=work / "elsewhere")  # release the home: the CLI opens it itself

    out = run_keel(
        "monitor", "reference", "set", "wine", "1", "train.parquet", "--json", env=env, cwd=work
    )
    assert out.returncode == 0, out.stderr
    columns = set(json.loads(out.stdout)["columns"])
    assert columns == {f"input.{c}" for c in wine.features} | {"output.prediction"}

    keel.init(home=Path(env["KEEL_HOME"]), store_url=env["KEEL_STORE_URL"])
    serve(logs, wine, 1)
    result = run_monitor("wine-api", end=T0 + HOUR)
    assert result.failed_checks == 0  # no "input.target is missing" in every window
    assert not any(a.rule == "data_quality" for a in list_alerts("wine-api"))


def test_a_served_version_without_a_reference_raises_no_reference_once_naming_the_fix(
    keel_env, wine: Wine, logs: Logs
):
    register(wine)
    serve(logs, wine, 1)
    first = run_monitor("wine-api", end=T0 + HOUR)
    assert first.versions["wine/1"]["reference"] is False and first.share_drifted is None
    alert = next(a for a in first.alerts if a.rule == "no_reference")
    assert alert.state == "firing"
    assert "keel monitor reference set wine 1 TRAINING_DATA" in alert.message
    again = run_monitor("wine-api", end=T0 + HOUR + 1)
    assert not any(a.rule == "no_reference" for a in again.alerts)  # once, not every run

    set_reference("wine", 1, wine.frame)
    run_monitor("wine-api", end=T0 + HOUR + 2)
    resolved = run_monitor("wine-api", end=T0 + HOUR + 3)
    assert [a.state for a in resolved.alerts if a.rule == "no_reference"] == ["resolved"]
    assert [a.state for a in list_alerts("wine-api") if a.rule == "no_reference"] == [
        "resolved",
        "firing",
    ]


TRAIN_PIPELINE = """
import keel

@keel.step
def load(data):
    return keel.load_dataset(data)

@keel.step(cache=False)
def train(frame):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = frame.drop(columns=["target"])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(features, frame["target"])
    with_ = keel.log_model(model, "model", input_example=features.head(3))  # no reference_data
    return {"model": f"models:/wine/{keel.register_model(with_.uri, 'wine')}"}

@keel.pipeline
def retrain(data: str = "datasets:/wine-train"):
    return train(load(data))
"""


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Iterator[Path]:
    project = tmp_path / "project"
    project.mkdir()
    path = project / "wine_pipeline.py"
    path.write_text(textwrap.dedent(TRAIN_PIPELINE))
    yield path
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(str(project)):
            del sys.modules[name]


def _canary_traffic(root: str, versions: dict[tuple[int, str], int], at: int) -> None:
    """Requests answered by each (version, route), as a server's replicas log them."""
    from keel.predictions import PredictionLogger

    with PredictionLogger(root) as logger:
        for (version, route), count in versions.items():
            logger.log(
                "wine-api",
                {
                    "request_id": [f"{route}{i}" for i in range(count)],
                    "time": [at + i for i in range(count)],
                    "model": ["wine"] * count,
                    "version": [version] * count,
                    "route": [route] * count,
                    "latency_ms": [5.0] * count,
                    "row": [0] * count,
                    "output.prediction": np.zeros(count),
                },
                count,
            )


def test_a_version_the_loop_promotes_carries_its_own_reference(
    keel_env, wine: Wine, pipeline_file: Path
):
    from keel.automation import Controller, PolicyStore
    from keel.automation.state import CANARY, Transition
    from keel.pipelines import run_pipeline
    from keel.serving import Deployments
    from keel.serving.deployments import DeploymentSpec, Route

    register(wine, reference_data=wine.X)  # the champion, version 1
    keel.Client().set_alias("wine", "champion", 1)
    keel.log_dataset(wine.frame, name="wine-train")
    run = run_pipeline(f"{pipeline_file}:retrain", params={"data": "datasets:/wine-train@1"})
    assert run.outputs["model"] == "models:/wine/2"
    # Registered from inside a step: the lineage back to the dataset is not stored yet.
    assert reference_info("wine", 2) is None

    Deployments().create(
        "wine-api",
        DeploymentSpec(routes=(Route("wine", "champion", 90), Route("wine", "2", 10))),
    )
    store = PolicyStore()
    policy, _ = store.apply(
        {
            "name": "wine-loop",
            "model": "wine",
            "deployment": "wine-api",
            "retrain": {"pipeline": f"{pipeline_file}:retrain"},
            "rollout": {
                "canary": {"weight": 10, "min_requests": 5},
                "promote_when": {"error_rate": 0.01},
            },
        }
    )
    store.transition(
        store.state(policy.name),
        policy,
        Transition(
            CANARY,
            "gate_passed",
            "set up",
            changes={"candidate_version": 2, "phase_started_at": T0},
        ),
    )
    _canary_traffic(keel_env.artifacts_url, {(1, "primary"): 20, (2, "canary"): 10}, T0 + 1)

    Controller(clock=lambda: T0 + HOUR).step(policy.name)
    assert keel.Client().get_alias("wine", "champion") == 2
    source = reference_info("wine", 2)
    assert source is not None and source["source"] == "dataset"
    assert source["dataset"] == "datasets:/wine-train@1"
    reference = get_reference("wine", 2)
    assert reference is not None
    assert set(reference.names) == {f"input.{c}" for c in wine.features}


# -- item 11: a name that does not exist is an error, not an empty time series --------------------


def test_a_mistyped_deployment_is_not_found_and_names_the_closest_one(
    keel_env, wine: Wine, logs: Logs, shell, run_keel
):
    env, work = shell
    register(wine, reference_data=wine.X)
    serve(logs, wine, 1)
    with pytest.raises(NotFound, match=r"no deployment named 'wine-apii'.*did you mean 'wine-api'"):
        run_monitor("wine-apii", end=T0 + HOUR)
    with pytest.raises(NotFound, match="did you mean 'wine-api'"):
        monitor_history("wine-apii")
    keel.init(home=work / "elsewhere")

    for args in (["run", "wine-apii"], ["history", "wine-apii"], ["show", "wine-apii"]):
        out = run_keel("monitor", *args, env=env, cwd=work)
        assert out.returncode == 1, (args, out.stdout)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no deployment named 'wine-apii'")
        assert "did you mean 'wine-api'?" in lines[0]

    keel.init(home=Path(env["KEEL_HOME"]), store_url=env["KEEL_STORE_URL"])
    with keel.Client().store.read() as conn:
        from sqlalchemy import func, select

        from keel.store import schema as s

        assert conn.execute(select(func.count()).select_from(s.monitor_runs)).scalar() == 0


# -- item 12: keel drift fails broken data, and says what its statistics are ---------------------


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    """A reference and current files: the same distribution, an empty one, one missing a column."""
    rng = np.random.default_rng(0)
    n = 2_000
    reference = pd.DataFrame({"age": rng.normal(40, 10, n), "income": rng.lognormal(10, 0.5, n)})
    reference.to_parquet(tmp_path / "reference.parquet")
    same = pd.DataFrame({"age": rng.normal(40, 10, n), "income": rng.lognormal(10, 0.5, n)})
    same.to_csv(tmp_path / "same.csv", index=False)
    same.head(0).to_csv(tmp_path / "empty.csv", index=False)
    same[["age"]].to_csv(tmp_path / "missing.csv", index=False)
    return tmp_path


@pytest.fixture
def drift(run_keel) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``drift(folder, *args)``: ``keel drift reference.parquet *args`` run in ``folder``."""

    def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return run_keel("drift", "reference.parquet", *args, env={"COLUMNS": "250"}, cwd=folder)

    return run


def test_drift_gates_fail_on_an_empty_file_or_a_missing_column(pair: Path, drift):
    for current in ("empty.csv", "missing.csv"):
        plain = drift(pair, current)
        assert plain.returncode == 0, plain.stderr  # a report, not a gate
        assert "DATA QUALITY FAILED" in plain.stdout and "no drift" in plain.stdout
        assert re.search(r"Data quality: 1 check\(s\) failed", plain.stdout)
        for flag in ("--fail-on-drift", "--fail-on-quality"):
            gated = drift(pair, current, flag)
            assert gated.returncode == 1, (current, flag, gated.stdout)
    empty = drift(pair, "empty.csv", "--json")
    doc = json.loads(empty.stdout)
    assert [i["check"] for i in doc["issues"]] == ["empty"]  # not "numeric, string here"
    assert doc["quality_ok"] is False and doc["failed_checks"] == 1
    ok = drift(pair, "same.csv", "--fail-on-drift", "--fail-on-quality")
    assert ok.returncode == 0, ok.stdout
    assert "DATA QUALITY" not in ok.stdout


def test_the_html_report_names_each_statistic_and_the_threshold_in_force(pair: Path, drift):
    out = drift(pair, "missing.csv", "--override", "age=wasserstein:0.2", "--html", "m.html")
    assert out.returncode == 0, out.stderr
    page = (pair / "m.html").read_text(encoding="utf-8")
    verdict = re.search(r"<div class='verdict (\w+)' id='verdict'>([^<]*)</div>", page)
    assert verdict is not None
    assert verdict.group(1) == "drift"  # not the green banner: a check failed
    assert "Data quality failed: 1 check(s)" in verdict.group(2)
    row = re.search(r"<tr><td>age</td>.*?</tr>", page)
    assert row is not None
    assert "<td>distance</td>" in row.group(0) and "distance ≥ 0.2" in row.group(0)

    tested = drift(pair, "same.csv", "--html", "s.html")
    assert tested.returncode == 0
    page = (pair / "s.html").read_text(encoding="utf-8")
    row = re.search(r"<tr><td>income</td>.*?</tr>", page)
    assert row is not None
    assert "<td>p-value</td>" in row.group(0) and "p-value &lt; 0.01" in row.group(0)


# -- item 13: what `monitor set --window` says it takes, it takes ---------------------------------


def test_monitor_window_help_and_parsing_agree(keel_env, wine: Wine, logs: Logs, shell, run_keel):
    env, work = shell
    register(wine, reference_data=wine.X)
    serve(logs, wine, 1)
    keel.init(home=work / "elsewhere")
    for command in ("set", "run"):
        shown = run_keel("monitor", command, "--help", env=env, cwd=work).stdout
        line = next(x for x in shown.splitlines() if "--window" in x)
        examples = re.findall(r"'([^']+)'", line)
        assert examples == ["1h", "30m", "1h30m", "2d", "600"], line
        assert all(parse_window(e) > 0 for e in examples)

    out = run_keel("monitor", "set", "wine-api", "--window", "10", "--json", env=env, cwd=work)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["window"] == "10s"
    again = run_keel("monitor", "set", "wine-api", "--window", "1h30m", "--json", env=env, cwd=work)
    assert again.returncode == 0 and json.loads(again.stdout)["window"] == "1h30m"
    bad = run_keel("monitor", "set", "wine-api", "--window", "soon", env=env, cwd=work)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "error: window must be like '1h', '30m', '1h30m' or '2d' (units s, m, h, d, w), "
        "or seconds ('600'); got 'soon'"
    )
