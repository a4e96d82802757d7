"""Step caching: what invalidates a step's outputs, and what does not."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import keel
from keel.pipelines import run_pipeline

HELPERS = """
def scale(df, factor):
    return df * factor
"""

FLOW = """
import numpy as np
import pandas as pd
import keel
import helpers

@keel.step
def make(n: int):
    return pd.DataFrame({"x": np.arange(n, dtype="float64")})

@keel.step
def transform(df, factor: float = 2.0):
    return helpers.scale(df, factor)

@keel.step
def total(df):
    return float(df["x"].sum())

@keel.pipeline
def flow(n: int = 5, factor: float = 2.0):
    return {"total": total(transform(make(n), factor=factor))}
"""


def cached(run) -> dict[str, bool]:
    return {s.node: s.cached for s in run.steps}


def test_a_rerun_with_nothing_changed_serves_every_step_from_the_cache(any_env, write_module):
    write_module("helpers", HELPERS)
    path = write_module("flow", FLOW)
    first = run_pipeline(f"{path}:flow")
    assert cached(first) == {"make": False, "transform": False, "total": False}
    assert first.outputs == {"total": 20.0}
    second = run_pipeline(f"{path}:flow")
    assert cached(second) == {"make": True, "transform": True, "total": True}
    assert second.outputs == {"total": 20.0}
    for step in second.steps:
        assert step.source_run_id == first.step(step.node).run_id
        assert step.outputs == first.step(step.node).outputs
        assert keel.Client().get_run(step.run_id).tags["keel.cached"] == "true"


def test_editing_a_helper_the_step_calls_invalidates_that_step(sqlite_env, write_module):
    write_module("helpers", HELPERS)
    path = write_module("flow", FLOW)
    run_pipeline(f"{path}:flow")
    # Same result, different code: transform runs again; total's input bytes are unchanged.
    write_module("helpers", "def scale(df, factor):\n    return df * factor + 0\n")
    assert cached(run_pipeline(f"{path}:flow")) == {"make": True, "transform": False, "total": True}
    write_module("helpers", "def scale(df, factor):\n    return df * factor * 10\n")
    rerun = run_pipeline(f"{path}:flow")
    assert cached(rerun) == {"make": True, "transform": False, "total": False}
    assert rerun.outputs == {"total": 200.0}


def test_comments_and_formatting_change_no_code_digest(sqlite_env, write_module):
    write_module("helpers", HELPERS)
    path = write_module("flow", FLOW)
    run_pipeline(f"{path}:flow")
    write_module(
        "helpers",
        "# a comment\ndef scale(df,   factor):\n    '''Doc.'''\n    return df * factor  # same\n",
    )
    assert all(cached(run_pipeline(f"{path}:flow")).values())


def test_a_changed_parameter_reruns_only_the_steps_that_take_it(any_env, write_module):
    write_module("helpers", HELPERS)
    path = write_module("flow", FLOW)
    run_pipeline(f"{path}:flow")
    rerun = run_pipeline(f"{path}:flow", params={"factor": 3.0})
    assert cached(rerun) == {"make": True, "transform": False, "total": False}
    assert rerun.outputs == {"total": 30.0}
    # The same value again hits the cache.
    assert all(cached(run_pipeline(f"{path}:flow", params={"factor": 3.0})).values())


DATA_FLOW = """
import keel

@keel.step
def rows(ref: str):
    return len(keel.load_dataset(ref))

@keel.step(external=["notes.txt"])
def notes():
    with open("notes.txt") as f:
        return f.read()

@keel.pipeline
def flow(data: str = "datasets:/events"):
    return {"rows": rows(data), "notes": notes()}
"""


def test_new_input_content_invalidates_while_identical_content_does_not(
    any_env, write_module, tmp_path: Path
):
    path = write_module("data_flow", DATA_FLOW)
    keel.log_dataset(pd.DataFrame({"x": [1, 2]}), name="events")
    (tmp_path / "notes.txt").write_text("v1")
    first = run_pipeline(f"{path}:flow")
    assert first.params == {"data": "datasets:/events@1"}  # pinned when the run started
    assert first.outputs == {"rows": 2, "notes": "v1"}

    keel.log_dataset(pd.DataFrame({"x": [1, 2]}), name="events")  # same content: same version
    assert all(cached(run_pipeline(f"{path}:flow")).values())

    keel.log_dataset(pd.DataFrame({"x": [1, 2, 3]}), name="events")
    (tmp_path / "notes.txt").write_text("v2")
    rerun = run_pipeline(f"{path}:flow")
    assert cached(rerun) == {"rows": False, "notes": False}
    assert rerun.outputs == {"rows": 3, "notes": "v2"}
    assert rerun.params == {"data": "datasets:/events@2"}


def test_a_missing_external_input_is_reported_before_anything_runs(sqlite_env, write_module):
    path = write_module("data_flow", DATA_FLOW)
    keel.log_dataset(pd.DataFrame({"x": [1]}), name="events")
    from keel.errors import NotFound

    with pytest.raises(NotFound, match=r"step 'notes': external input 'notes\.txt' does not exist"):
        run_pipeline(f"{path}:flow")
    assert keel.pipelines.list_pipeline_runs() == []


CLOCK = """
import time
import keel

@keel.step(cache=False)
def now():
    return time.time_ns()

@keel.step
def same():
    return 1

@keel.pipeline
def flow():
    return {"now": now(), "same": same()}
"""


def test_no_cache_runs_every_step_and_cache_false_steps_always_run(sqlite_env, write_module):
    path = write_module("clock", CLOCK)
    run_pipeline(f"{path}:flow")
    assert cached(run_pipeline(f"{path}:flow")) == {"now": False, "same": True}
    assert cached(run_pipeline(f"{path}:flow", cache=False)) == {"now": False, "same": False}


def test_outputs_deleted_from_the_store_make_the_step_run_again(sqlite_env, write_module):
    write_module("helpers", HELPERS)
    path = write_module("flow", FLOW)
    first = run_pipeline(f"{path}:flow")
    from keel.artifacts import ArtifactStore

    (output,) = first.step("make").materialized
    (Path(sqlite_env.artifacts_url) / ArtifactStore.key(output.object)).unlink()
    rerun = run_pipeline(f"{path}:flow")
    assert cached(rerun)["make"] is False
    assert all(cached(run_pipeline(f"{path}:flow")).values())


def test_a_seed_is_part_of_the_cache_key(sqlite_env, write_module):
    write_module("helpers", HELPERS)
    path = write_module("flow", FLOW)
    run_pipeline(f"{path}:flow")
    assert not any(cached(run_pipeline(f"{path}:flow", seed=1)).values())
    assert all(cached(run_pipeline(f"{path}:flow", seed=1)).values())
