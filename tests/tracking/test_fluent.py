"""The MLflow-like module API on each mode: embedded SQLite, PostgreSQL, and through keel server.

One test stays on the two local stores: it is about the artifact backends (a local
folder and S3) behind a local client, which the server mode does not choose.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import keel
from keel.errors import Conflict, InvalidInput, NotFound


def test_run_context_records_params_metrics_tags_and_finishes(any_env):
    keel.set_experiment("exp")
    with keel.start_run(name="first") as run:
        keel.log_params({"lr": 0.01, "model": "rf"})
        keel.log_param("depth", 8)
        keel.set_tags({"team": "fraud"})
        for epoch in range(5):
            keel.log_metric("loss", 1.0 / (epoch + 1))
        keel.log_metrics({"acc": 0.9, "f1": 0.8}, step=3)
    stored = keel.Client().get_run(run.id)
    assert stored.info.status == "FINISHED"
    assert stored.info.end_time is not None and stored.info.end_time >= stored.info.start_time
    assert stored.info.name == "first"
    assert stored.params == {"depth": "8", "lr": "0.01", "model": "rf"}
    assert stored.metrics == {"acc": 0.9, "f1": 0.8, "loss": pytest.approx(0.2)}
    assert stored.tags == {"team": "fraud"}
    history = keel.Client().get_metric_history(run.id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])


def test_exception_inside_run_marks_it_failed_and_propagates(any_env):
    with pytest.raises(RuntimeError, match="boom"), keel.start_run() as run:
        keel.log_metric("x", 1)
        raise RuntimeError("boom")
    info = keel.Client().get_run(run.id)
    assert info.info.status == "FAILED"
    assert info.metrics == {"x": 1.0}  # what was logged before the failure is kept
    assert keel.active_run() is None


def test_param_is_write_once(any_env):
    with keel.start_run() as run:
        keel.log_param("lr", 0.1)
        keel.log_param("lr", 0.1)  # the same value again is fine
        with pytest.raises(Conflict, match=r"param 'lr' .* is already '0\.1'"):
            keel.log_param("lr", 0.2)
        with pytest.raises(Conflict):
            keel.log_params({"batch": 32, "lr": 0.3})
    # The failed batch wrote nothing, not even its valid half.
    assert keel.Client().get_run(run.id).params == {"lr": "0.1"}


def test_nan_and_infinities_are_kept(any_env):
    with keel.start_run() as run:
        keel.log_metric("nan", float("nan"))
        keel.log_metric("pinf", float("inf"))
        keel.log_metric("ninf", -math.inf)
    metrics = keel.Client().get_run(run.id).metrics
    assert math.isnan(metrics["nan"])
    assert metrics["pinf"] == math.inf
    assert metrics["ninf"] == -math.inf
    history = keel.Client().get_metric_history(run.id, "nan")
    assert len(history) == 1 and math.isnan(history[0].value)


def test_explicit_steps_and_latest_value_is_the_highest_step(any_env):
    client = keel.Client()
    with keel.start_run() as run:
        keel.log_metric("acc", 0.5, step=10)
        keel.log_metric("acc", 0.9, step=2)  # an older step logged later
        keel.flush()
        assert client.get_run(run.id).metrics["acc"] == 0.5
        keel.log_metric("acc", 0.7)  # no step: one past the highest so far
    assert client.get_run(run.id).metrics["acc"] == 0.7
    assert [(m.step, m.value) for m in client.get_metric_history(run.id, "acc")] == [
        (2, 0.9),
        (10, 0.5),
        (11, 0.7),
    ]


def test_nested_runs_and_refusal_without_nested(any_env):
    with keel.start_run(name="parent") as parent:
        with pytest.raises(InvalidInput, match=r"already active.*nested=True"):
            keel.start_run()
        with keel.start_run(name="child", nested=True) as child:
            keel.log_metric("m", 1)
        assert keel.active_run() is parent
    assert keel.Client().get_run(child.id).info.parent_id == parent.id
    assert keel.Client().get_run(child.id).info.status == "FINISHED"


def test_resume_run_continues_steps(any_env):
    with keel.start_run() as run:
        keel.log_metric("loss", 3.0)
        keel.log_metric("loss", 2.0)
    with keel.start_run(run_id=run.id):
        keel.log_metric("loss", 1.0)
    history = keel.Client().get_metric_history(run.id, "loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert keel.Client().get_run(run.id).info.status == "FINISHED"


def test_bad_input_raises_clear_errors_and_changes_nothing(any_env):
    client = keel.Client()
    with keel.start_run() as run:
        with pytest.raises(InvalidInput, match=r"metric 'acc' must be a number.*got str"):
            keel.log_metric("acc", "high")
        with pytest.raises(InvalidInput, match="must be a number"):
            keel.log_metric("acc", None)
        with pytest.raises(InvalidInput, match="limit is 250"):
            keel.log_metric("k" * 251, 1.0)
        with pytest.raises(InvalidInput, match="limit is 250"):
            keel.log_param("p" * 300, 1)
        with pytest.raises(InvalidInput, match="may only contain"):
            keel.set_tag("bad\nkey", "x")
        with pytest.raises(InvalidInput, match="limit is 6000"):
            keel.log_param("long", "x" * 6001)
        with pytest.raises(InvalidInput, match="step must be an integer"):
            keel.log_metric("acc", 1.0, step=1.5)
        with pytest.raises(InvalidInput):
            keel.log_metrics({"ok": 1.0, "bad": "x"})
    stored = client.get_run(run.id)
    assert stored.metrics == {} and stored.params == {} and stored.tags == {}
    assert client.count_metric_points(run.id) == 0


def test_unknown_run_id_is_not_found_everywhere(any_env):
    client = keel.Client()
    missing = "0" * 32
    for call in (
        lambda: client.get_run(missing),
        lambda: client.log_param(missing, "a", 1),
        lambda: client.set_tag(missing, "a", 1),
        lambda: client.log_metric(missing, "a", 1.0),
        lambda: client.set_terminated(missing),
        lambda: client.get_metric_history(missing, "a"),
        lambda: keel.start_run(run_id=missing),
    ):
        with pytest.raises(NotFound, match="no run with id"):
            call()
    assert client.search_runs().runs == []


def test_client_logs_by_id_synchronously(any_env):
    client = keel.Client()
    experiment_id = client.create_experiment("by-id")
    with pytest.raises(Conflict, match="already exists"):
        client.create_experiment("by-id")
    info = client.create_run(experiment_id, "r", capture=False)
    client.log_metric(info.id, "m", 2.5, step=7)
    client.log_batch(info.id, params={"p": "v"}, tags={"t": "x"})
    client.set_terminated(info.id, "KILLED")
    run = client.get_run(info.id)
    assert (run.metrics, run.params, run.tags, run.info.status) == (
        {"m": 2.5},
        {"p": "v"},
        {"t": "x"},
        "KILLED",
    )
    with pytest.raises(InvalidInput, match="status must be one of"):
        client.set_terminated(info.id, "DONE")


def test_artifacts_round_trip_and_deduplicate(any_env, tmp_path: Path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (src / "sub" / "config.json").write_text('{"a": 1}')
    single = tmp_path / "notes.txt"
    single.write_text("hello")
    with keel.start_run() as run:
        keel.log_artifact(single)
        keel.log_artifact(single, artifact_path="copies")
        keel.log_artifacts(src, artifact_path="model")
        keel.log_dict({"threshold": 0.5}, "config/threshold.json")
    client = keel.Client()
    paths = [a.path for a in client.list_artifacts(run.id)]
    assert paths == [
        "config/threshold.json",
        "copies/notes.txt",
        "model/sub/config.json",
        "model/weights.bin",
        "notes.txt",
    ]
    digests = {a.path: a.digest for a in client.list_artifacts(run.id)}
    assert digests["notes.txt"] == digests["copies/notes.txt"]
    out = client.download_artifacts(run.id, "model", tmp_path / "out")
    assert (out / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    assert json.loads((out / "sub" / "config.json").read_text()) == {"a": 1}
    assert client.load_dict(run.id, "config/threshold.json") == {"threshold": 0.5}
    with pytest.raises(InvalidInput, match="must be relative"):
        client.log_artifact(run.id, single, artifact_path="../escape")
    with pytest.raises(NotFound, match="no artifact"):
        client.download_artifacts(run.id, "nope", tmp_path / "x")


def test_logging_without_a_run_starts_one(any_env):
    keel.log_metric("auto", 1.0)
    run = keel.active_run()
    assert run is not None
    keel.end_run()
    assert keel.Client().get_run(run.id).metrics == {"auto": 1.0}


def test_search_runs_returns_dataframe_for_the_current_experiment(any_env):
    keel.set_experiment("a")
    for lr in (0.1, 0.01, 0.001):
        with keel.start_run():
            keel.log_param("lr", lr)
            keel.log_metric("acc", 1 - lr)
    keel.set_experiment("b")
    with keel.start_run():
        keel.log_metric("acc", 0.999)
    keel.set_experiment("a")
    frame = keel.search_runs("params.lr < 0.05", order_by=["metrics.acc DESC"])
    assert list(frame["params.lr"]) == ["0.001", "0.01"]
    assert list(frame["metrics.acc"]) == pytest.approx([0.999, 0.99])
    everywhere = keel.search_runs("metrics.acc > 0.95", search_all_experiments=True)
    assert len(everywhere) == 3


def test_run_artifacts_on_local_folder_and_s3(
    tmp_path: Path, store_url, artifacts_url, s3_endpoint
):
    keel.init(
        home=tmp_path / ".keel",
        store_url=store_url,
        artifacts_url=artifacts_url,
        s3_endpoint_url=s3_endpoint,
    )
    src = tmp_path / "data"
    src.mkdir()
    (src / "a.csv").write_text("x,y\n1,2\n")
    (src / "b.bin").write_bytes(bytes(range(256)) * 64)
    with keel.start_run() as run:
        keel.log_artifacts(src, artifact_path="data")
        keel.log_dict({"nan": float("nan")}, "meta.json")
    client = keel.Client()
    assert [a.path for a in client.list_artifacts(run.id)] == [
        "data/a.csv",
        "data/b.bin",
        "meta.json",
    ]
    out = client.download_artifacts(run.id, "data", tmp_path / "back")
    assert (out / "b.bin").read_bytes() == bytes(range(256)) * 64
    assert math.isnan(client.load_dict(run.id, "meta.json")["nan"])
    if artifacts_url.startswith("s3://"):
        assert client.artifacts.url == artifacts_url
        assert not (tmp_path / ".keel" / "artifacts").exists()


def test_search_frame_time_columns_have_one_dtype_whether_or_not_runs_ended(any_env):
    keel.set_experiment("times")
    keel.start_run()
    running = keel.search_runs()
    keel.end_run()
    ended = keel.search_runs()
    assert (
        str(running["start_time"].dtype) == str(running["end_time"].dtype) == "datetime64[ms, UTC]"
    )
    assert running["end_time"].isna().all()
    assert str(ended["end_time"].dtype) == "datetime64[ms, UTC]"
    assert (ended["end_time"] >= ended["start_time"]).all()


def test_artifact_prefixes_match_literally_not_as_like_patterns(any_env, tmp_path: Path):
    for folder in ("clf", "c_f", "100%"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.txt").write_text(folder)
    with keel.start_run() as run:
        for folder in ("clf", "c_f", "100%"):
            keel.log_artifacts(tmp_path / folder, artifact_path=folder)
    client = keel.Client()
    assert [a.path for a in client.list_artifacts(run.id, "c_f")] == ["c_f/a.txt"]
    assert [a.path for a in client.list_artifacts(run.id, "100%")] == ["100%/a.txt"]
    out = client.download_artifacts(run.id, "c_f", tmp_path / "out")
    assert (out / "a.txt").read_text() == "c_f"
