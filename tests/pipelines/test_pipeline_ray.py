"""The Ray executor on a local two-CPU Ray: same results as local, resources passed through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keel.errors import InvalidInput
from keel.pipelines import run_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip(
        "ray", reason="the Ray executor tests need ray: pip install 'keel[ray]'"
    )
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


FLOW = """
import numpy as np
import pandas as pd
import keel
import helpers

@keel.step
def make(n: int):
    return pd.DataFrame({"x": np.arange(n, dtype="float64")})

@keel.step(cpus=2)
def heavy(df):
    import ray
    keel.log_metric("rows", len(df))
    try:
        return {"cpus": ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)}
    except AssertionError:  # not in a Ray worker: the local executor ran it
        return {"cpus": None}

@keel.step(cpus=1, memory="100MB")
def left(df):
    return helpers.double(df)

@keel.step(cpus=1)
def right(df):
    return df.x.to_numpy() + 1

@keel.step
def join(a, b):
    return float(a.x.sum() + b.sum())

@keel.pipeline
def flow(n: int = 10):
    df = make(n)
    return {"total": join(left(df), right(df)), "heavy": heavy(df)}
"""

HELPERS = "def double(df):\n    return df * 2\n"


def test_ray_gives_the_same_outputs_as_the_local_executor(sqlite_env, write_module, local_ray):
    write_module("helpers", HELPERS)
    path = write_module("flow", FLOW)
    local = run_pipeline(f"{path}:flow", cache=False)
    remote = run_pipeline(f"{path}:flow", executor="ray", cache=False)
    assert remote.outputs["total"] == local.outputs["total"] == 145.0
    for step in local.steps:
        if step.node != "heavy":
            assert remote.step(step.node).outputs == step.outputs
    assert local.outputs["heavy"] == {"cpus": None}
    assert remote.outputs["heavy"] == {"cpus": 2.0}  # the step's request reached Ray
    import keel

    client = keel.Client()
    heavy = client.get_run(remote.step("heavy").run_id)
    assert heavy.metrics == {"rows": 10.0} and heavy.info.parent_id == remote.run_id
    cached = run_pipeline(f"{path}:flow", executor="ray")
    assert all(s.cached for s in cached.steps)


def test_a_request_beyond_the_cluster_is_refused_before_anything_runs(
    sqlite_env, write_module, local_ray
):
    path = write_module(
        "greedy",
        """
        import keel

        @keel.step(gpus=1)
        def train():
            return 1

        @keel.pipeline
        def flow():
            return train()
        """,
    )
    with pytest.raises(
        InvalidInput, match=r"greedy.py:\d+: step 'train' asks for 1 GPU but the Ray cluster has 0"
    ):
        run_pipeline(f"{path}:flow", executor="ray")
    import keel

    assert keel.pipelines.list_pipeline_runs() == []
