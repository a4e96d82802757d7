"""``keel import mlflow`` against a real MLflow database made by the mlflow client.

The mlflow client runs in its own virtualenv (its pins clash with Keel's), as a
subprocess: it builds the tracking database and artifact root once per module,
and the tests import that history into each of Keel's stores.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

import keel
from _support.mlflow import MLFLOW_PYTHON, NO_MLFLOW, run_mlflow
from keel.errors import InvalidInput
from keel.interop import ImportSummary, import_mlflow

pytestmark = pytest.mark.slow

# Builds the history: experiments, runs (one nested, one left running), params, metric
# histories, tags, an artifact, two versions of a registered model and an alias, a
# model with a deleted version, and a deleted experiment. Prints what the tests expect.
_BUILD = textwrap.dedent(
    """
    import json, math, sys
    import mlflow, numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    client = MlflowClient()
    X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    model = LogisticRegression().fit(X, y)

    mlflow.set_experiment("churn")
    with mlflow.start_run(run_name="first") as first:
        mlflow.log_params({"lr": 0.1, "depth": 3})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metric("loss", 0.15, step=4)  # a second point at the same step
        mlflow.log_metric("gap", float("nan"))
        mlflow.set_tag("team", "risk")
        with open("note.txt", "wb") as f:
            f.write(b"hello \\x00 keel")
        mlflow.log_artifact("note.txt", "docs")
        logged = mlflow.sklearn.log_model(model, name="model", input_example=X[:2])
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("inner", 2.0)
    v1 = mlflow.register_model(logged.model_uri, "churn-model")
    with mlflow.start_run(run_name="second") as second:
        mlflow.sklearn.log_model(model, name="model")
    v2 = mlflow.register_model(f"runs:/{second.info.run_id}/model", "churn-model")
    client.set_registered_model_alias("churn-model", "champion", 1)

    mlflow.register_model(logged.model_uri, "gappy")
    mlflow.register_model(f"runs:/{second.info.run_id}/model", "gappy")
    mlflow.register_model(f"runs:/{second.info.run_id}/model", "gappy")
    client.delete_model_version("gappy", 2)

    mlflow.set_experiment("ablation")
    running = client.create_run(mlflow.get_experiment_by_name("ablation").experiment_id,
                                run_name="still-running")
    for step in range(3):
        client.log_metric(running.info.run_id, "acc", 0.5 + step / 10, step=step)
    client.log_param(running.info.run_id, "seed", "7")

    old = mlflow.create_experiment("old")
    with mlflow.start_run(experiment_id=old):
        mlflow.log_metric("x", 1.0)
    client.delete_experiment(old)

    def history(run_id, key):
        points = client.get_metric_history(run_id, key)
        return sorted(
            [m.step, m.timestamp, None if math.isnan(m.value) else m.value] for m in points
        )

    runs = {}
    for run in (first, child, second, running):
        info = client.get_run(run.info.run_id).info
        runs[info.run_name] = {"id": info.run_id, "start": info.start_time,
                               "end": info.end_time, "status": info.status,
                               "user": info.user_id}
    print(json.dumps({
        "runs": runs,
        "loss": history(first.info.run_id, "loss"),
        "model_ids": [v1.source.split("/")[-1], v2.source.split("/")[-1]],
    }))
    """
)

# Adds to the history: more points for the running run, which then ends; a new run.
_ADD = textwrap.dedent(
    """
    import json, sys
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    client = MlflowClient()
    run_id = sys.argv[1]
    for step in range(3, 6):
        client.log_metric(run_id, "acc", 0.5 + step / 10, step=step)
    client.set_terminated(run_id, "FINISHED")
    mlflow.set_experiment("ablation")
    with mlflow.start_run(run_name="third") as third:
        mlflow.log_param("seed", "8")
        mlflow.log_metric("acc", 0.9)
    print(json.dumps({"third": third.info.run_id}))
    """
)


@pytest.fixture(scope="module")
def mlflow_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """An MLflow folder (``mlflow.db`` and ``mlruns/``) the mlflow client filled, and its facts."""
    if not MLFLOW_PYTHON.exists():
        pytest.skip(NO_MLFLOW)
    root = tmp_path_factory.mktemp("mlflow")
    return root, run_mlflow(_BUILD, cwd=root)


@pytest.fixture
def keel_env(any_env: keel.config.Settings) -> keel.config.Settings:
    """Keel on each store; through a server once the server can carry a run's history."""
    if any_env.server_url:
        from keel.errors import NotFound
        from keel.tracking.remote import RemoteTracking

        if "start_time" not in inspect.signature(RemoteTracking.create_run).parameters:
            pytest.skip("keel server's run route does not take a run's start time and user yet")
        try:
            keel.Client().transport.request("GET", "/imports", params={"source": "probe"})
        except NotFound:
            pytest.skip("keel server does not mount the import routes yet")
    return any_env


def _import(root: Path) -> ImportSummary:
    return import_mlflow(f"sqlite:///{root / 'mlflow.db'}", root / "mlruns")


def _keel_runs(client: keel.Client) -> dict[str, Any]:
    return {r.info.name: r for r in client.tracking.search_runs().runs}


def test_import_brings_runs_with_their_times_params_tags_and_full_metric_histories(
    keel_env: keel.config.Settings, mlflow_history: tuple[Path, dict[str, Any]]
) -> None:
    root, facts = mlflow_history
    summary = _import(root)

    client = keel.Client()
    assert {e.name for e in client.list_experiments()} == {"Default", "churn", "ablation"}
    runs = _keel_runs(client)
    assert set(runs) == {"first", "child", "second", "still-running"}
    assert summary.new["runs"] == 4
    for name, expected in facts["runs"].items():
        info = runs[name].info
        assert (info.status, info.start_time, info.end_time, info.user) == (
            expected["status"],
            expected["start"],
            expected["end"],
            expected["user"],
        ), name
    first = runs["first"]
    assert first.params == {"lr": "0.1", "depth": "3"}
    assert first.tags["team"] == "risk"
    assert first.tags["mlflow.runName"] == "first"
    assert runs["child"].info.parent_id == first.info.id
    loss = client.tracking.get_metric_history(first.info.id, "loss")
    assert sorted([m.step, m.timestamp, m.value] for m in loss) == facts["loss"]
    assert len(loss) == 6  # both points at step 4 kept
    (gap,) = client.tracking.get_metric_history(first.info.id, "gap")
    assert math.isnan(gap.value)
    assert runs["still-running"].info.status == "RUNNING"


def test_import_copies_artifacts_and_logged_model_files_byte_for_byte(
    keel_env: keel.config.Settings, mlflow_history: tuple[Path, dict[str, Any]]
) -> None:
    root, facts = mlflow_history
    _import(root)

    client = keel.Client()
    first = _keel_runs(client)["first"].info.id
    (note,) = client.tracking.list_artifacts(first, "docs")
    assert note.path == "docs/note.txt"
    assert client.artifacts.get_bytes(note.digest) == b"hello \x00 keel"
    model_id = facts["model_ids"][0]
    model_dir = next(root.glob(f"mlruns/*/models/{model_id}/artifacts"))
    stored = {e.path: e for e in client.tracking.list_artifacts(first, f"models/{model_id}")}
    on_disk = {
        f"models/{model_id}/{p.relative_to(model_dir).as_posix()}": p
        for p in model_dir.rglob("*")
        if p.is_file()
    }
    assert set(stored) == set(on_disk) and f"models/{model_id}/MLmodel" in stored
    for path, file in on_disk.items():
        assert client.artifacts.get_bytes(stored[path].digest) == file.read_bytes(), path


def test_import_registers_versions_numbered_as_in_mlflow_with_their_alias(
    keel_env: keel.config.Settings, mlflow_history: tuple[Path, dict[str, Any]]
) -> None:
    root, facts = mlflow_history
    summary = _import(root)

    client = keel.Client()
    runs = _keel_runs(client)
    versions = client.registry.list_model_versions("churn-model")
    assert [v.version for v in versions] == [1, 2]
    assert [v.source for v in versions] == [
        f"runs:/{runs['first'].info.id}/models/{facts['model_ids'][0]}",
        f"runs:/{runs['second'].info.id}/models/{facts['model_ids'][1]}",
    ]
    assert client.registry.get_alias("churn-model", "champion") == 1
    # MLflow's format stored as is: the package's files are MLflow's own
    resolved = client.registry.resolve_model("models:/churn-model@champion")
    assert resolved.manifest_digest == versions[0].manifest_digest
    # gappy: versions 1 and 3 (2 was deleted) become Keel's 1 and 2, and the import says so
    assert [v.version for v in client.registry.list_model_versions("gappy")] == [1, 2]
    assert summary.renumbered == [{"model": "gappy", "mlflow_version": 3, "keel_version": 2}]


def test_import_reports_what_it_could_not_map(
    keel_env: keel.config.Settings, mlflow_history: tuple[Path, dict[str, Any]]
) -> None:
    root, _ = mlflow_history
    summary = _import(root)

    unmapped = summary.unmapped
    assert unmapped["deleted experiments (not imported, nor their runs)"] == 1
    assert unmapped["runs of deleted experiments"] == 1
    assert any(reason.startswith("logged model tags") for reason in unmapped)
    assert "old" not in {e.name for e in keel.Client().list_experiments()}


def test_a_second_import_brings_nothing_new_and_duplicates_nothing(
    keel_env: keel.config.Settings, mlflow_history: tuple[Path, dict[str, Any]]
) -> None:
    root, _ = mlflow_history
    first = _import(root)
    client = keel.Client()
    points = client.tracking.count_metric_points()
    artifacts = {
        n: len(client.tracking.list_artifacts(r.info.id)) for n, r in _keel_runs(client).items()
    }

    again = _import(root)

    assert first.total_new > 0
    assert again.total_new == 0
    assert again.new == dict.fromkeys(again.new, 0)
    assert again.updated_runs == 0  # the running run gained nothing in MLflow
    assert client.tracking.count_metric_points() == points
    assert {
        n: len(client.tracking.list_artifacts(r.info.id)) for n, r in _keel_runs(client).items()
    } == artifacts
    assert [v.version for v in client.registry.list_model_versions("churn-model")] == [1, 2]


def test_a_later_import_brings_only_new_runs_and_the_points_a_running_run_gained(
    keel_env: keel.config.Settings,
    mlflow_history: tuple[Path, dict[str, Any]],
    tmp_path: Path,
) -> None:
    # a copy, so the module's history stays as built; its artifact root moved with it,
    # which the import resolves by MLflow's layout, not the recorded absolute paths
    root, facts = mlflow_history
    copy = tmp_path / "mlflow"
    shutil.copytree(root, copy)
    _import(copy)
    running = facts["runs"]["still-running"]["id"]
    run_mlflow(_ADD, running, cwd=copy)

    summary = _import(copy)

    assert summary.new["runs"] == 1
    assert summary.new["metric_points"] == 3 + 1  # the running run's 3 new points, third's 1
    assert summary.new["params"] == 1
    assert summary.updated_runs == 1
    assert summary.new["model_versions"] == 0
    client = keel.Client()
    runs = _keel_runs(client)
    assert "third" in runs and runs["third"].params == {"seed": "8"}
    caught_up = runs["still-running"]
    assert caught_up.info.status == "FINISHED"
    acc = client.tracking.get_metric_history(caught_up.info.id, "acc")
    assert [m.step for m in acc] == [0, 1, 2, 3, 4, 5]


def test_a_database_that_is_not_mlflows_is_one_clear_error(
    sqlite_env: keel.config.Settings, tmp_path: Path
) -> None:
    keel.Client().list_experiments()  # Keel's own database: tables named like MLflow's
    with pytest.raises(
        InvalidInput, match=r"is not an MLflow tracking database: it has no .*run_uuid"
    ):
        import_mlflow(f"sqlite:///{sqlite_env.home / 'keel.db'}", tmp_path)
    with pytest.raises(InvalidInput, match=r"no MLflow database at .*missing\.db"):
        import_mlflow(f"sqlite:///{tmp_path / 'missing.db'}", tmp_path)
    with pytest.raises(InvalidInput, match=r"expected an MLflow database URL"):
        import_mlflow("not a url", tmp_path)


def test_cli_imports_prints_json_and_refuses_bad_input_in_one_line(
    sqlite_env: keel.config.Settings,
    mlflow_history: tuple[Path, dict[str, Any]],
    run_keel: Any,
    tmp_path: Path,
) -> None:
    root, _ = mlflow_history
    source = f"sqlite:///{root / 'mlflow.db'}"
    done = run_keel(
        "import",
        "mlflow",
        "--from",
        source,
        "--artifacts",
        str(root / "mlruns"),
        "--json",
        settings=sqlite_env,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["new"]["runs"] == 4 and summary["new"]["model_versions"] == 4
    assert summary["source"] == source

    again = run_keel(
        "import",
        "mlflow",
        "--from",
        source,
        "--artifacts",
        str(root / "mlruns"),
        settings=sqlite_env,
    )
    assert again.returncode == 0, again.stderr
    assert "nothing new" in again.stdout

    not_mlflow = run_keel(
        "import",
        "mlflow",
        "--from",
        f"sqlite:///{sqlite_env.home / 'keel.db'}",
        "--artifacts",
        str(root / "mlruns"),
        settings=sqlite_env,
    )
    assert not_mlflow.returncode != 0
    assert not_mlflow.stderr.count("\n") == 1
    assert "is not an MLflow tracking database" in not_mlflow.stderr

    no_folder = run_keel(
        "import",
        "mlflow",
        "--from",
        source,
        "--artifacts",
        str(tmp_path / "nowhere"),
        settings=sqlite_env,
    )
    assert no_folder.returncode != 0
    assert "is not a folder" in no_folder.stderr and no_folder.stderr.count("\n") == 1
