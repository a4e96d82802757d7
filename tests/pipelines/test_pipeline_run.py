"""Running pipelines: outputs by type, tracked step runs, retries, timeouts, failures, lineage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import keel
from keel.errors import InvalidInput
from keel.pipelines import StepFailed, downstream, run_pipeline, upstream

TYPES = """
import numpy as np
import pandas as pd
import pyarrow as pa
import keel
from sklearn.linear_model import LinearRegression

@keel.step(outputs=["frame", "series", "table", "array", "doc"])
def values():
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}, index=[10, 11, 12])
    return (
        frame,
        pd.Series([0.5, 1.5], name="s"),
        pa.table({"c": [1, 2]}),
        np.arange(6, dtype="int32").reshape(2, 3),
        {"n": np.int64(3), "items": (1, 2), "nested": {"ok": True}},
    )

@keel.step
def model(frame):
    keel.log_metric("fitted_rows", len(frame))
    return LinearRegression().fit(frame[["a"]], frame["a"] * 2.0)

@keel.step
def predict(model, array):
    return model.predict(pd.DataFrame({"a": array[0].astype("float64")})).tolist()

@keel.pipeline
def flow():
    frame, series, table, array, doc = values()
    fitted = model(frame)
    return {
        "frame": frame, "series": series, "table": table, "array": array, "doc": doc,
        "n": doc["n"], "model": fitted, "predicted": predict(fitted, array),
    }
"""


def test_outputs_are_stored_by_type_and_loaded_back(any_env, write_module):
    path = write_module("types", TYPES)
    run = run_pipeline(f"{path}:flow")
    out = run.outputs
    pd.testing.assert_frame_equal(
        out["frame"], pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}, index=[10, 11, 12])
    )
    pd.testing.assert_series_equal(out["series"], pd.Series([0.5, 1.5], name="s"))
    assert isinstance(out["table"], pa.Table) and out["table"].column("c").to_pylist() == [1, 2]
    np.testing.assert_array_equal(out["array"], np.arange(6, dtype="int32").reshape(2, 3))
    assert out["doc"] == {"n": 3, "items": [1, 2], "nested": {"ok": True}} and out["n"] == 3
    assert out["model"].coef_.tolist() == pytest.approx([2.0])
    assert out["predicted"] == pytest.approx([0.0, 2.0, 4.0])
    kinds = {m.name: m.type for m in run.step("values").materialized}
    assert kinds == {
        "frame": "dataframe",
        "series": "series",
        "table": "arrow",
        "array": "ndarray",
        "doc": "json",
    }
    assert run.step("model").materialized[0].type == "model"

    client = keel.Client()
    listed = {a.path for a in client.list_artifacts(run.step("values").run_id)}
    assert {"outputs/frame.parquet", "outputs/array.npy", "outputs/doc.json"} <= listed
    # A model output is a real model package among the step run's artifacts.
    loaded = keel.models.load_model(f"runs:/{run.step('model').run_id}/outputs/return")
    assert loaded.predict(pd.DataFrame({"a": [5.0]})).tolist() == pytest.approx([10.0])


def test_every_step_is_a_tracked_run_nested_under_the_pipeline_run(sqlite_env, write_module):
    path = write_module("types", TYPES)
    run = run_pipeline(f"{path}:flow", experiment="nightly")
    client = keel.Client()
    parent = client.get_run(run.run_id)
    assert (parent.info.status, parent.info.name, parent.tags["keel.kind"]) == (
        "FINISHED",
        "flow",
        "pipeline",
    )
    assert parent.metrics == {"doc.n": 3.0, "n": 3.0}  # returned numbers become its metrics
    assert client.get_experiment(parent.info.experiment_id).name == "nightly"
    for step in run.steps:
        info = client.get_run_info(step.run_id)
        assert (info.parent_id, info.status, info.name) == (run.run_id, "FINISHED", step.node)
    assert client.get_run(run.step("model").run_id).metrics == {"fitted_rows": 3.0}
    assert (
        client.get_environment(run.step("model").run_id)["environment_digest"]
        == (client.get_environment(run.run_id)["environment_digest"])
    )


def test_a_step_that_returns_what_keel_cannot_store_fails_with_the_reason(sqlite_env, write_module):
    path = write_module(
        "unstorable",
        """
        import keel

        @keel.step
        def thing():
            return object()

        @keel.pipeline
        def flow():
            return thing()
        """,
    )
    with pytest.raises(
        StepFailed,
        match=r"step 'thing' \(.*unstorable.py:\d+\) failed after 1 attempt\(s\): InvalidInput: .*returned a object, which Keel cannot store",
    ):
        run_pipeline(f"{path}:flow")


FLAKY = """
import pathlib
import keel

@keel.step(retries=2, retry_delay=0)
def flaky(fail_times: int):
    counter = pathlib.Path("attempts.txt")
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    if count <= fail_times:
        raise RuntimeError(f"attempt {count} failed")
    return count

@keel.step
def after(n):
    return n * 10

@keel.pipeline
def flow(fail_times: int = 1):
    return {"result": after(flaky(fail_times))}
"""


def test_a_failing_step_is_retried_until_it_succeeds(sqlite_env, write_module, tmp_path: Path):
    path = write_module("flaky", FLAKY)
    run = run_pipeline(f"{path}:flow", params={"fail_times": 2})
    assert run.outputs == {"result": 30}
    assert run.step("flaky").attempts == 3
    assert keel.Client().get_run_info(run.step("flaky").run_id).status == "FINISHED"
    from keel.governance import audit
    from keel.store import get_store

    changes = [
        e.after["status"]
        for e in audit.list_entries(
            get_store(sqlite_env),
            object_type="run",
            object_id=run.step("flaky").run_id,
            newest_first=False,
        )
        if e.action == "run.status"
    ]
    assert changes == ["RUNNING", "FAILED", "RUNNING", "FAILED", "RUNNING", "FINISHED"]


def test_a_step_failing_for_good_fails_the_run_and_skips_what_depends_on_it(
    any_env, write_module, tmp_path: Path
):
    path = write_module("flaky", FLAKY)
    with pytest.raises(
        StepFailed,
        match=r"step 'flaky' \(.*flaky.py:\d+\) failed after 3 attempt\(s\): RuntimeError: attempt 3 failed",
    ) as caught:
        run_pipeline(f"{path}:flow", params={"fail_times": 5})
    run = caught.value.run
    assert run.status == "FAILED" and [s.node for s in run.steps] == ["flaky"]
    client = keel.Client()
    assert client.get_run_info(run.run_id).status == "FAILED"
    assert client.get_run_info(run.step("flaky").run_id).status == "FAILED"
    stored = keel.pipelines.get_pipeline_run(run.run_id)
    assert "RuntimeError: attempt 3 failed" in (stored.step("flaky").error or "")
    assert "Traceback" in (stored.step("flaky").error or "")


SLOW = """
import time
import keel

@keel.step(timeout=1, retries=1, retry_delay=0)
def slow(seconds: float):
    time.sleep(seconds)
    return seconds

@keel.pipeline
def flow(seconds: float = 30.0):
    return slow(seconds)
"""


@pytest.mark.slow
def test_an_attempt_over_its_timeout_is_killed_and_counts_as_failed(sqlite_env, write_module):
    path = write_module("slow", SLOW)
    with pytest.raises(
        StepFailed,
        match="failed after 2 attempt\\(s\\): TimeoutError: the attempt ran longer than its 1s timeout and was killed",
    ):
        run_pipeline(f"{path}:flow")
    assert run_pipeline(f"{path}:flow", params={"seconds": 0.01}).outputs == 0.01


def test_parameters_are_canonical_json_in_the_cache_key(sqlite_env, write_module):
    path = write_module(
        "canon",
        """
        import keel

        @keel.step
        def echo(config: dict):
            return sorted(config)

        @keel.pipeline
        def flow(config: dict = {"b": 1, "a": 2}):
            return echo(config)
        """,
    )
    run_pipeline(f"{path}:flow")
    again = run_pipeline(f"{path}:flow", params={"config": {"a": 2, "b": 1}})
    assert again.steps[0].cached and again.outputs == ["a", "b"]


def test_unknown_executors_and_bad_seeds_are_refused_before_anything_runs(sqlite_env, write_module):
    path = write_module(
        "canon2",
        "import keel\n\n@keel.step\ndef one():\n    return 1\n\n@keel.pipeline\ndef flow():\n    return one()\n",
    )
    with pytest.raises(InvalidInput, match="executor must be one of local, ray, got 'dask'"):
        run_pipeline(f"{path}:flow", executor="dask")
    with pytest.raises(InvalidInput, match="seed must be an integer"):
        run_pipeline(f"{path}:flow", seed=-1)
    assert keel.pipelines.list_pipeline_runs() == []


TRAIN = """
import keel
from sklearn.ensemble import RandomForestClassifier

@keel.step
def features(ref: str):
    df = keel.load_dataset(ref)
    return df.assign(ratio=df["a"] / (df["b"] + 1))

@keel.step
def train(frame, trees: int = 5):
    model = RandomForestClassifier(n_estimators=trees, random_state=0)
    model.fit(frame[["a", "b", "ratio"]], frame["y"])
    info = keel.log_model(model, "model")
    version = keel.register_model(info.uri, "churn")
    keel.log_metric("train_acc", float(model.score(frame[["a", "b", "ratio"]], frame["y"])))
    return {"model": f"models:/churn/{version}"}

@keel.pipeline
def flow(data: str = "datasets:/churn", trees: int = 5):
    return train(features(data), trees=trees)
"""


def churn_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 10, n), rng.integers(0, 10, n)
    return pd.DataFrame({"a": a, "b": b, "y": (a > b).astype(int)})


def test_a_registered_model_walks_back_to_its_data_and_code(any_env, write_module):
    path = write_module("train", TRAIN)
    keel.log_dataset(churn_frame(), name="churn")
    run = run_pipeline(f"{path}:flow")
    assert run.outputs == {"model": "models:/churn/1"}
    train_run = run.step("train").run_id

    graph = upstream("models:/churn/1")
    assert f"runs:/{train_run}" in graph.nodes
    assert "datasets:/churn@1" in graph.uris("dataset")
    assert f"code:/{run.step('train').code_digest}" in graph.uris("code")
    assert f"runs:/{run.step('features').run_id}" in graph.uris("run")
    assert graph.nodes[f"runs:/{train_run}"].attributes["role"] == "step"

    below = downstream("datasets:/churn@1")
    assert f"runs:/{run.step('features').run_id}" in below.uris("run")
    assert "models:/churn/1" in below.uris("model")


def test_a_model_card_lists_the_datasets_its_pipeline_read(keel_env, write_module):
    path = write_module("train", TRAIN)
    keel.log_dataset(churn_frame(), name="churn")
    run_pipeline(f"{path}:flow")
    from keel.registry.card import build_card

    assert build_card(keel.Client(), "churn", 1)["datasets"] == ["datasets:/churn@1"]


def test_lineage_accepts_names_aliases_and_prefixes(sqlite_env, write_module):
    path = write_module("train", TRAIN)
    keel.log_dataset(churn_frame(), name="churn")
    run = run_pipeline(f"{path}:flow")
    keel.Client().set_alias("churn", "champion", 1)
    assert upstream("models:/churn@champion").root == "models:/churn/1"
    assert upstream("datasets:/churn").root == "datasets:/churn@1"
    assert upstream(f"runs:/{run.run_id[:10]}").root == f"runs:/{run.run_id}"
    with pytest.raises(InvalidInput, match="lineage URIs start with"):
        upstream("s3://bucket/x")


def test_a_cached_step_points_at_the_run_whose_outputs_it_reused(sqlite_env, write_module):
    path = write_module("train", TRAIN)
    keel.log_dataset(churn_frame(), name="churn")
    first = run_pipeline(f"{path}:flow")
    second = run_pipeline(f"{path}:flow", params={"trees": 6})
    assert second.step("features").cached and not second.step("train").cached
    cached_run = f"runs:/{second.step('features').run_id}"
    graph = upstream(cached_run, depth=1)
    assert f"runs:/{first.step('features').run_id}" in graph.nodes
    relations = {(e.src, e.relation) for e in graph.edges}
    assert (f"runs:/{first.step('features').run_id}", "reused") in relations
