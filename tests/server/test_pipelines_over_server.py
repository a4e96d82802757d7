"""Pipelines through ``keel server``: steps run here, every record and output goes to the server.

Each test runs on ``any_env``'s server mode (a real server process on PostgreSQL
and loopback S3). The steps run in this process (or a fresh one), but the
client's home never gets a database: pipeline runs, step runs, cache rows and
lineage edges are the server's, and step outputs go through its blob routes.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

import keel
from _support.control_plane import ControlPlane
from keel.artifacts import ArtifactStore
from keel.config import Settings, load_settings
from keel.errors import InvalidInput, PermissionDenied
from keel.pipelines import downstream, run_pipeline, upstream
from keel.pipelines.executors import Executor, Handle
from keel.pipelines.lineage import Edge
from keel.pipelines.materialize import Materialized
from keel.pipelines.part import pipeline_records_for
from keel.pipelines.remote import RemotePipelineRecords
from keel.pipelines.task import StepResult, StepTask, execute_task
from keel.tracking.remote import tracking_for
from keel.transport.http import HttpTransport

#: Runs a test on ``any_env``'s server mode only.
server_only = pytest.mark.parametrize("any_env", ["server"], indirect=True)


@pytest.fixture
def write_module(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Write ``<name>.py`` in a project folder (the code digest reads real files); forget it after.

    The same fixture as ``tests/pipelines/conftest.py``'s, which this folder cannot see.
    """
    project = tmp_path / "project"
    project.mkdir()

    def forget() -> None:
        for name, module in list(sys.modules.items()):
            if (getattr(module, "__file__", None) or "").startswith(str(project)):
                del sys.modules[name]

    def write(name: str, source: str) -> Path:
        path = project / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        forget()
        return path

    yield write
    forget()
    while str(project) in sys.path:
        sys.path.remove(str(project))


FLOW = """
import keel

def executed(name):
    # every execution leaves a line here, so a step served from the cache leaves none
    with open(f"executed-{name}.txt", "a") as f:
        f.write("x\\n")

@keel.step
def load(ref: str):
    executed("load")
    return keel.load_dataset(ref)

@keel.step
def total(df, factor: float = 2.0):
    executed("total")
    keel.log_metric("rows", len(df))
    return float(df["x"].sum() * factor)

@keel.pipeline
def flow(data: str = "datasets:/events", factor: float = 2.0):
    return {"total": total(load(data), factor=factor)}
"""

PLAIN = """
import numpy as np
import pandas as pd
import keel

@keel.step
def make(n: int):
    return pd.DataFrame({"x": np.arange(n, dtype="float64")})

@keel.step
def total(df):
    return float(df["x"].sum())

@keel.pipeline
def flow(n: int = 4):
    return {"total": total(make(n))}
"""


def executions(name: str) -> int:
    path = Path(f"executed-{name}.txt")
    return len(path.read_text().splitlines()) if path.exists() else 0


def databases(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.suffix in (".db", ".sqlite") or "keel.db" in p.name]


@server_only
def test_a_two_step_pipeline_runs_caches_and_traces_lineage_through_the_server(
    any_env: Settings, control_plane: ControlPlane, write_module
) -> None:
    path = write_module("flow", FLOW)
    keel.log_dataset(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), name="events")

    first = run_pipeline(f"{path}:flow", experiment="nightly")
    assert first.outputs == {"total": 12.0}
    assert first.params == {"data": "datasets:/events@1", "factor": 2.0}
    assert (executions("load"), executions("total")) == (1, 1)

    second = run_pipeline(f"{path}:flow", experiment="nightly")
    assert second.outputs == {"total": 12.0}
    assert [(s.node, s.cached) for s in second.steps] == [("load", True), ("total", True)]
    assert (executions("load"), executions("total")) == (1, 1)  # nothing ran again
    for step in second.steps:
        assert step.source_run_id == first.step(step.node).run_id

    # The records are the server's: read back through its routes, as another client would.
    with control_plane.http() as http:
        listed = http.get("/pipeline-runs", params={"pipeline": "flow"}).json()
        assert [r["run_id"] for r in listed] == [second.run_id, first.run_id]
        stored = http.get(f"/pipeline-runs/{second.run_id}").json()
        assert [s["cached"] for s in stored["steps"]] == [True, True]
        # every output object is held by the server's blob store
        for step in first.steps:
            for output in step.materialized:
                assert http.head(f"/blobs/{ArtifactStore.key(output.object)}").status_code == 200
    again = keel.pipelines.get_pipeline_run(first.run_id[:10])
    assert again.step("total").outputs == first.step("total").outputs
    assert [r["run_id"] for r in keel.pipelines.list_pipeline_runs("flow")] == [
        second.run_id,
        first.run_id,
    ]
    client = keel.Client()
    assert client.get_run(first.step("total").run_id).metrics == {"rows": 3.0}
    parent = client.get_run_info(first.run_id)
    assert client.get_experiment(parent.experiment_id).name == "nightly"
    assert {a.path for a in client.list_artifacts(first.step("load").run_id)} == {
        "outputs/return.parquet"
    }

    # Lineage: the total walks back to the dataset; the cached step to the run it reused.
    total_run = f"runs:/{first.step('total').run_id}"
    graph = upstream(total_run)
    assert "datasets:/events@1" in graph.uris("dataset")
    assert f"runs:/{first.step('load').run_id}" in graph.uris("run")
    assert f"code:/{first.step('total').code_digest}" in graph.uris("code")
    assert total_run in downstream("datasets:/events@1").uris("run")
    reused = upstream(f"runs:/{second.step('total').run_id}", depth=1)
    assert (total_run, "reused") in {(e.src, e.relation) for e in reused.edges}

    assert databases(any_env.home) == []


@server_only
def test_a_scoped_editor_runs_pipelines_in_their_experiment_and_sees_only_those(
    any_env: Settings, control_plane: ControlPlane, write_module, tmp_path: Path
) -> None:
    path = write_module("plain", PLAIN)
    guarded = run_pipeline(f"{path}:flow", experiment="guarded")  # as the admin
    token = control_plane.make_user("ed")
    with control_plane.http() as http:
        body = {"user": "ed", "role": "editor", "scope_kind": "experiment", "scope_name": "theirs"}
        assert http.post("/roles", json=body).status_code == 200

    keel.init(home=tmp_path / "ed", server_url=control_plane.url, token=token)
    # The admin's cached outputs are in an experiment ed may not read: a miss, not a leak.
    mine = run_pipeline(f"{path}:flow", experiment="theirs")
    assert mine.outputs == {"total": 6.0}
    assert [s.cached for s in mine.steps] == [False, False]
    assert all(s.cached for s in run_pipeline(f"{path}:flow", experiment="theirs").steps)

    assert {r["run_id"] for r in keel.pipelines.list_pipeline_runs()} >= {mine.run_id}
    assert guarded.run_id not in {r["run_id"] for r in keel.pipelines.list_pipeline_runs()}
    with pytest.raises(PermissionDenied, match="lacks permission 'read' on experiment 'guarded'"):
        keel.pipelines.get_pipeline_run(guarded.run_id)
    with pytest.raises(PermissionDenied, match="lacks permission 'write' on experiment 'guarded'"):
        run_pipeline(f"{path}:flow", experiment="guarded")
    assert databases(tmp_path / "ed") == []


def _records(url: str, token: str, home: Path) -> RemotePipelineRecords:
    settings = load_settings(home=home, server_url=url, token=token)
    records = pipeline_records_for(tracking_for(HttpTransport(settings)))
    assert isinstance(records, RemotePipelineRecords)
    return records


@server_only
def test_the_server_refuses_foreign_edges_missing_outputs_and_writers_without_write(
    any_env: Settings, control_plane: ControlPlane, tmp_path: Path
) -> None:
    admin = _records(control_plane.url, control_plane.admin_token, tmp_path / "a")
    client = keel.Client()
    run = client.create_run(client.create_experiment("guarded"), "p", capture=False).id
    other = client.create_run(client.get_experiment_by_name("guarded").id, capture=False).id  # type: ignore[union-attr]
    start = {
        "run_id": run,
        "pipeline": "p",
        "target": "flow.py:p",
        "code_digest": "a" * 64,
        "code_snapshot": None,
        "params": {},
        "executor": "local",
        "seed": None,
        "use_cache": True,
        "reproduces": None,
    }
    with pytest.raises(InvalidInput, match=f"does not touch runs:/{run}"):
        admin.insert_pipeline_run(
            **start, edges=[Edge(f"runs:/{other}", "models:/churn/1", "registered")]
        )
    with pytest.raises(InvalidInput, match="not a pipeline run"):
        admin.get_pipeline_record(run)  # nothing was recorded

    viewer = _records(control_plane.url, control_plane.make_user("vera", "viewer"), tmp_path / "v")
    with pytest.raises(PermissionDenied, match="lacks permission 'write'"):
        viewer.insert_pipeline_run(**start, edges=[])
    admin.insert_pipeline_run(**start, edges=[Edge("code:/" + "a" * 64, f"runs:/{run}", "code")])
    assert viewer.get_pipeline_record(run).target == "flow.py:p"  # reading is enough to see it

    step = admin.create_step_run(
        experiment_id=0,  # the server takes the pipeline run's own experiment
        pipeline_run_id=run,
        node="make",
        step="flow.make",
        code_digest="b" * 64,
        cache_key="c" * 64,
        inputs={},
        cached=False,
    )
    assert client.get_run_info(step).experiment_id == client.get_run_info(run).experiment_id
    missing = Materialized("return", "json", "d" * 64, "d" * 64, 3)
    outcome = {
        "run_id": step,
        "step": "flow.make",
        "attempts": 1,
        "seconds": 0.1,
        "cache_key": "c" * 64,
        "remember": True,
        "edges": [],
    }
    with pytest.raises(InvalidInput, match="which this server does not hold"):
        admin.finish_step(outputs=[missing], **outcome)
    assert admin.lookup_cache("c" * 64) is None  # no cache row names the missing object

    stored = client.artifacts.put_bytes(json.dumps(7).encode())
    made = Materialized("return", "json", stored.digest, stored.digest, stored.size)
    admin.finish_step(outputs=[made], **outcome)
    hit = admin.lookup_cache("c" * 64)
    assert hit is not None and (hit.run_id, hit.outputs) == (step, [made])
    with pytest.raises(PermissionDenied, match="lacks permission 'write'"):
        viewer.finish_step(outputs=[made], **outcome)


def _execute_pickled(task: bytes) -> StepResult:
    import cloudpickle

    return execute_task(cloudpickle.loads(task))


class SpawnExecutor(Executor):
    """Each attempt in a freshly started interpreter: it knows only what the task carries.

    Steps travel by value, as the Ray executor sends them (cloudpickle).
    """

    name = "spawn"

    def start(self, modules: list[ModuleType]) -> None:
        self.cloudpickle = pytest.importorskip("cloudpickle")
        for module in modules:
            self.cloudpickle.register_pickle_by_value(module)

    def submit(self, task: StepTask) -> Handle:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            result = pool.apply(_execute_pickled, (self.cloudpickle.dumps(task),))
        return Handle(task, result)

    def wait(self, handles: list[Handle]) -> list[tuple[Handle, StepResult]]:
        return [(h, h.state) for h in handles]


@server_only
def test_steps_in_a_fresh_process_reach_the_same_server_with_the_same_token(
    any_env: Settings, write_module
) -> None:
    path = write_module("plain", PLAIN)
    run = run_pipeline(f"{path}:flow", executor=SpawnExecutor())
    assert run.outputs == {"total": 6.0}
    client = keel.Client()
    for step in run.steps:
        info = client.get_run_info(step.run_id)
        assert (info.status, info.parent_id) == ("FINISHED", run.run_id)
    assert keel.pipelines.get_pipeline_run(run.run_id).executor == "spawn"
    assert databases(any_env.home) == []


@server_only
def test_keel_pipeline_run_works_through_the_server(
    any_env: Settings, control_plane: ControlPlane, write_module, run_keel, tmp_path: Path
) -> None:
    path = write_module("plain", PLAIN)
    home = tmp_path / "cli-home"
    env = control_plane.environ(KEEL_HOME=str(home))
    first = run_keel("pipeline", "run", f"{path}:flow", "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["outputs"] == {"total": 6.0}
    second = run_keel("pipeline", "run", f"{path}:flow", "--json", env=env)
    assert second.returncode == 0, second.stderr
    run = json.loads(second.stdout)
    assert [s["cached"] for s in run["steps"]] == [True, True]
    assert keel.pipelines.get_pipeline_run(run["run_id"]).status == "FINISHED"
    assert databases(home) == []
