"""The unmodified mlflow client's tracking flows against a real ``keel server``.

Each flow runs the mlflow client in its own virtualenv and then checks Keel's
side through :class:`keel.Client` over the same server: what MLflow logged is
an ordinary Keel experiment, run, param, metric history, tag and artifact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import keel

FLOW = r"""
import json, os, sys, tempfile
import mlflow

experiment_name = sys.argv[1]
mlflow.set_experiment(experiment_name)
with tempfile.TemporaryDirectory() as folder:
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("hello from mlflow")
    os.makedirs(os.path.join(folder, "plots", "deep"))
    with open(os.path.join(folder, "plots", "a.csv"), "w") as f:
        f.write("x,y\n1,2\n")
    with open(os.path.join(folder, "plots", "deep", "b.txt"), "w") as f:
        f.write("deep")
    with mlflow.start_run(run_name="first") as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"depth": 3, "model": "rf"})
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.9, "f1": 0.8}, step=7)
        mlflow.set_tag("stage", "dev")
        mlflow.set_tags({"team": "risk"})
        mlflow.log_artifact(os.path.join(folder, "notes.txt"))
        mlflow.log_artifacts(os.path.join(folder, "plots"), artifact_path="plots")
        mlflow.log_dict({"a": 1, "b": [1, 2]}, "config/params.json")
    with mlflow.start_run(run_name="second") as other:
        mlflow.log_param("model", "lr")
        mlflow.log_metric("acc", 0.5)
    mlflow.end_run()

client = mlflow.MlflowClient()
found = mlflow.search_runs(
    experiment_names=[experiment_name],
    filter_string="metrics.acc > 0.7 and params.model = 'rf' and tags.stage = 'dev'",
    output_format="list",
)
ordered = mlflow.search_runs(
    experiment_names=[experiment_name], order_by=["metrics.acc ASC"], output_format="list"
)
history = client.get_metric_history(run.info.run_id, "loss")
download = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=tempfile.mkdtemp())
files = sorted(
    os.path.relpath(os.path.join(root, name), download)
    for root, _, names in os.walk(download) for name in names
)
got = client.get_run(run.info.run_id)
print(json.dumps({
    "experiment_id": run.info.experiment_id,
    "run_id": run.info.run_id,
    "other_id": other.info.run_id,
    "artifact_uri": run.info.artifact_uri,
    "found": [r.info.run_id for r in found],
    "ordered": [r.info.run_id for r in ordered],
    "history": [[m.step, m.value] for m in history],
    "files": files,
    "notes": open(os.path.join(download, "notes.txt")).read(),
    "listed": [[f.path, f.is_dir] for f in client.list_artifacts(run.info.run_id, "plots")],
    "dict": mlflow.artifacts.load_dict(run.info.artifact_uri + "/config/params.json"),
    "status": got.info.status,
    "params": got.data.params,
    "tags": {k: v for k, v in got.data.tags.items() if not k.startswith("mlflow.source")},
    "run_name": got.info.run_name,
}))
"""


@pytest.fixture(scope="module")
def flow(
    run_mlflow: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The tracking flow, run once by the mlflow client."""
    cwd = tmp_path_factory.mktemp("mlflow-flow")
    return dict(run_mlflow(FLOW, "mlflow-flow", cwd=cwd))


def test_an_mlflow_experiment_and_run_are_keel_ones(
    flow: dict[str, Any], keel_client: keel.Client
) -> None:
    experiment = keel_client.tracking.get_experiment_by_name("mlflow-flow")
    assert experiment is not None
    assert flow["experiment_id"] == str(experiment.id)
    run = keel_client.tracking.get_run(flow["run_id"])
    assert run.info.experiment_id == experiment.id
    assert run.info.name == "first"
    assert run.info.status == "FINISHED"
    assert run.info.end_time is not None
    assert flow["artifact_uri"] == f"mlflow-artifacts:/{experiment.id}/{flow['run_id']}/artifacts"


def test_params_tags_and_metrics_logged_by_mlflow_land_in_keel(
    flow: dict[str, Any], keel_client: keel.Client
) -> None:
    run = keel_client.tracking.get_run(flow["run_id"])
    assert run.params == {"lr": "0.01", "depth": "3", "model": "rf"}
    assert run.tags["stage"] == "dev" and run.tags["team"] == "risk"
    assert run.metrics == {"loss": pytest.approx(1 / 3), "acc": 0.9, "f1": 0.8}
    history = keel_client.tracking.get_metric_history(flow["run_id"], "loss")
    assert [(p.step, p.value) for p in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert [p.step for p in keel_client.tracking.get_metric_history(flow["run_id"], "acc")] == [7]


def test_mlflow_reads_back_what_it_logged(flow: dict[str, Any]) -> None:
    assert flow["status"] == "FINISHED"
    assert flow["run_name"] == "first"
    assert flow["params"] == {"lr": "0.01", "depth": "3", "model": "rf"}
    assert flow["tags"]["stage"] == "dev" and flow["tags"]["mlflow.runName"] == "first"
    assert flow["history"] == [[0, 1.0], [1, 0.5], [2, pytest.approx(1 / 3)]]


def test_artifacts_uploaded_by_mlflow_are_keel_run_artifacts(
    flow: dict[str, Any], keel_client: keel.Client, tmp_path: Path
) -> None:
    entries = {e.path: e.size for e in keel_client.tracking.list_artifacts(flow["run_id"])}
    assert set(entries) == {"notes.txt", "plots/a.csv", "plots/deep/b.txt", "config/params.json"}
    assert entries["notes.txt"] == len("hello from mlflow")
    assert keel_client.tracking.load_dict(flow["run_id"], "config/params.json") == {
        "a": 1,
        "b": [1, 2],
    }
    got = keel_client.tracking.download_artifacts(flow["run_id"], "plots/a.csv", tmp_path)
    assert got.read_text() == "x,y\n1,2\n"


def test_mlflow_lists_and_downloads_the_artifacts_it_uploaded(flow: dict[str, Any]) -> None:
    assert flow["files"] == [
        "config/params.json",
        "notes.txt",
        "plots/a.csv",
        "plots/deep/b.txt",
    ]
    assert flow["notes"] == "hello from mlflow"
    assert flow["listed"] == [["plots/a.csv", False], ["plots/deep", True]]
    assert flow["dict"] == {"a": 1, "b": [1, 2]}


def test_search_runs_translates_mlflow_filters_and_order(
    flow: dict[str, Any], keel_client: keel.Client
) -> None:
    assert flow["found"] == [flow["run_id"]]
    assert flow["ordered"] == [flow["other_id"], flow["run_id"]]
    # the same runs, seen through Keel's own search
    keel_found = keel_client.tracking.search_runs(
        filter_string="metrics.acc > 0.7 AND params.model = 'rf'"
    )
    assert flow["run_id"] in [r.id for r in keel_found]


AUTOLOG = r"""
import json, sys
import mlflow
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

mlflow.set_experiment(sys.argv[1])
mlflow.sklearn.autolog()
X, y = load_iris(return_X_y=True)
with mlflow.start_run() as run:
    LogisticRegression(C=0.5, max_iter=300).fit(X, y)
model = mlflow.last_logged_model()
found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
loaded = mlflow.sklearn.load_model(f"models:/{model.model_id}")
print(json.dumps({
    "run_id": run.info.run_id,
    "model_id": model.model_id,
    "model_status": str(model.status),
    "found": [m.model_id for m in found],
    "loaded_predicts": loaded.predict(X[:5]).tolist(),
}))
"""


@pytest.fixture(scope="module")
def autologged(
    run_mlflow: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return dict(run_mlflow(AUTOLOG, "mlflow-autolog", cwd=tmp_path_factory.mktemp("autolog")))


def test_sklearn_autolog_logs_params_and_metrics_to_the_keel_run(
    autologged: dict[str, Any], keel_client: keel.Client
) -> None:
    run = keel_client.tracking.get_run(autologged["run_id"])
    assert run.info.status == "FINISHED"
    assert run.params["C"] == "0.5" and run.params["max_iter"] == "300"
    assert 0.9 < run.metrics["training_accuracy_score"] <= 1.0
    assert run.tags["estimator_name"] == "LogisticRegression"


def test_sklearn_autolog_model_is_a_logged_model_whose_files_are_run_artifacts(
    autologged: dict[str, Any], keel_client: keel.Client
) -> None:
    model_id = autologged["model_id"]
    assert autologged["model_status"] == "READY"
    assert autologged["found"] == [model_id]
    paths = {e.path for e in keel_client.tracking.list_artifacts(autologged["run_id"])}
    assert f"models/{model_id}/MLmodel" in paths
    assert any(p.startswith(f"models/{model_id}/model.") for p in paths), paths
    assert autologged["loaded_predicts"] == [0, 0, 0, 0, 0]
