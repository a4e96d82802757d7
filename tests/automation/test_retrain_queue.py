"""A policy's retrain through a job queue: submitted once, waited for, followed to its end.

The pool is virtual (an inventory of two A100s that no machine here has); the
store, the scheduler's admissions and the pipeline runs are real. Where a test
drives the job itself, it moves it as a worker does (one transition per
attempt's end) and records what ``keel.jobs.entry`` records.
"""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

import keel
from keel.automation import Controller, Policy, PolicyStore, history
from keel.automation.resources import RetrainResources, queue_problem
from keel.errors import InvalidInput
from keel.jobs import Inventory, Job, Scheduler, Step
from keel.jobs.entities import CANCELLED, FAILED, PREEMPTED, QUEUED, RUNNING, SUCCEEDED
from keel.store.sql import now_ms

MODULE = "keel_retrain_pipes"
PIPELINE = f'''
import os
import time

import numpy as np

import keel


class Doubler:
    """A tiny model saved without pickle."""

    def predict(self, data):
        return np.asarray(data, dtype=float).sum(axis=1) * 2

    def keel_save(self, path):
        (path / "marker").write_text("doubler")

    @classmethod
    def keel_load(cls, path):
        return cls()


@keel.step
def prepare(data: str, seed: int) -> int:
    return len(keel.load_dataset(data)) + seed


@keel.step(cache=False)  # it registers a version: a side effect to repeat every time
def fit(rows: int) -> str:
    # Under a worker, the test sees this step start and says when it may go on.
    started, gate = os.environ.get("RETRAIN_STARTED"), os.environ.get("RETRAIN_GATE")
    if started:
        with open(started, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
    while gate and not os.path.exists(gate):
        time.sleep(0.05)
    info = keel.log_model(Doubler(), "model", input_example=np.ones((3, 2)))
    return f"models:/doubler/{{keel.register_model(info.uri, 'doubler')}}"


@keel.pipeline
def train(data: str, seed: int = 0):
    return {{"model": fit(prepare(data, seed)), "note": "{MODULE}"}}
'''
RESOURCES = {
    "gpus": 1,
    "gpu_type": "a100",
    "cpus": 2,
    "memory": "4Gi",
    "priority": "high",
    "timeout": "1h",
    "retries": 1,
}
POOL = Inventory.from_dict({"cpus": 8, "memory": "32Gi", "gpus": {"a100": 2}})


def _policy(**retrain) -> dict:
    return {
        "name": "doubler-loop",
        "model": "doubler",
        "deployment": "doubler-api",
        "triggers": [{"dataset": {"name": "train-data"}}],
        "cooldown": "1s",
        "retrain": {
            "pipeline": f"{MODULE}:train",
            "params": {"data": "datasets:/train-data@latest", "seed": 7},
            "queue": "train",
            "resources": dict(RESOURCES),
            **retrain,
        },
    }


@pytest.fixture
def world(served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """'doubler' (champion 1 of 2), its deployment, a training pipeline module, dataset
    'train-data', job queue 'train' and a live virtual pool 'p1' of two A100s."""
    folder = tmp_path / "pipes"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(PIPELINE))
    monkeypatch.syspath_prepend(str(folder))
    # a worker's job process imports it too
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    )
    keel.log_dataset(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), name="train-data")
    jobs = keel.Client().jobs
    jobs.apply_queue({"name": "train", "quotas": {"gpu:a100": 2, "cpus": 8, "memory": "32Gi"}})
    jobs.heartbeat("p1", "local", POOL, owner="test-pool")
    return served


def _triggered(**retrain) -> Controller:
    """Apply the policy and give its trigger news: a new version of 'train-data'."""
    PolicyStore().apply(_policy(**retrain))
    keel.log_dataset(pd.DataFrame({"x": [4.0, 5.0]}), name="train-data")
    return Controller()


def _kinds() -> list[str]:
    return [e.kind for e in history("doubler-loop") if e.kind != "resumed"]


def _only_job() -> Job:
    [job] = keel.Client().jobs.list(policy="doubler-loop")
    return job


def _admit(job: Job) -> Job:
    """One pass of the real scheduler, which admits ``job`` to the virtual pool."""
    decisions = Scheduler(keel.Client(), owner="test-scheduler").schedule()
    assert [(d.job_id, d.action) for d in decisions] == [(job.id, "admit")]
    return keel.Client().jobs.get(job.id)


def _start(job: Job) -> Job:
    """What a worker does when it starts an admitted job's process."""
    return keel.Client().jobs.transition(
        job, Step(RUNNING, "started on p1", {"started_at": now_ms()})
    )


def _run_as_entry(job: Job, *, record_model: bool) -> Job:
    """What ``keel.jobs.entry`` does: run the pipeline, record its run (and its model)."""
    from keel.pipelines import run_pipeline

    run = run_pipeline(job.target, params=job.params)
    facts: dict = {"run_id": run.run_id}
    if record_model:
        facts.update(model_name="doubler", model_version=int(run.outputs["model"].split("/")[-1]))
    jobs = keel.Client().jobs
    jobs.record(job, **facts)
    return jobs.transition(
        jobs.get(job.id), Step(SUCCEEDED, "exited with code 0", {"ended_at": now_ms()})
    )


# -- the policy ---------------------------------------------------------------------------------


def test_queue_and_resources_round_trip_and_a_retrain_without_them_is_unchanged():
    policy = Policy.from_dict(_policy())
    retrain = policy.retrain
    assert retrain is not None and retrain.queue == "train"
    assert retrain.resources == RetrainResources(
        gpus=1,
        gpu_type="a100",
        cpus=2.0,
        memory=4 * 1024**3,
        priority="high",
        timeout=3600.0,
        retries=1,
    )
    assert Policy.from_dict(policy.to_dict()) == policy
    assert policy.to_dict()["retrain"]["resources"]["memory"] == 4 * 1024**3
    assert retrain.resources.describe() == "1xa100, 2 cpus, 4Gi, high priority, timeout 1h, 1 retry"

    # A queue without resources asks for the defaults: one CPU at normal priority.
    bare = Policy.from_dict(_policy(resources=None))
    assert bare.retrain is not None and bare.retrain.resources is None
    assert RetrainResources().describe() == "1 cpus, normal priority"
    assert Policy.from_dict(bare.to_dict()) == bare

    plain = _policy()
    del plain["retrain"]["queue"], plain["retrain"]["resources"]
    unqueued = Policy.from_dict(plain)
    assert unqueued.retrain is not None and unqueued.retrain.queue is None
    assert set(unqueued.to_dict()["retrain"]) == {"pipeline", "params", "output"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"resources": {"gpu": 1}},
            r"policy.retrain.resources: unknown field\(s\) gpu; expected gpus",
        ),
        (
            {"resources": {"gpus": -1}},
            r"resources.gpus: expected a whole number of GPUs, 0 or more, got -1",
        ),
        ({"resources": {"gpus": 1.5}}, r"resources.gpus: expected a whole number of GPUs"),
        (
            {"resources": {"cpus": -2}},
            r"resources.cpus: expected a number of CPUs, 0 or more, got -2",
        ),
        ({"resources": {"cpus": 0}}, r"resources: a job must ask for some CPU or a GPU"),
        ({"resources": {"memory": -1}}, r"resources.memory must be 0 or more bytes, got -1"),
        ({"resources": {"memory": "lots"}}, r"resources.memory must be a size such as 16Gi"),
        ({"resources": {"gpu_type": "a100"}}, r"resources.gpu_type: 'a100' was given without gpus"),
        (
            {"resources": {"gpus": 1, "gpu_type": "A 100"}},
            r"resources.gpu_type: a GPU type must be",
        ),
        (
            {"resources": {"priority": "urgent"}},
            r"resources.priority: expected one of low, normal, high",
        ),
        ({"resources": {"timeout": -5}}, r"resources.timeout: a duration must be positive"),
        ({"resources": {"timeout": "soon"}}, r"resources.timeout: expected a duration"),
        ({"resources": {"retries": -1}}, r"resources.retries: expected a whole number, 0 or more"),
        ({"resources": [1]}, r"policy.retrain.resources: expected a mapping"),
        ({"queue": "no spaces"}, r"policy.retrain.queue: a job queue name must be"),
        ({"queue": None}, r"policy.retrain.resources: resources are what a queued retrain asks"),
        ({"pipeline": "pipes/train.py:train"}, r"a queued retrain runs as a job, which imports"),
    ],
)
def test_bad_queue_settings_are_named_with_what_was_expected(change, message):
    with pytest.raises(InvalidInput, match=message):
        Policy.from_dict(_policy(**change))


def test_a_missing_queue_is_named_with_the_closest_and_a_job_that_can_never_fit_is_refused(
    keel_env,
):
    jobs = keel.Client().jobs
    missing = Policy.from_dict(_policy(queue="trian")).retrain
    assert missing is not None
    assert queue_problem(missing.queue, missing.resources, keel.Client()) == (
        "no job queue 'trian' (there are no job queues yet); create it with "
        "`keel jobs queues apply FILE`",
        True,
    )
    jobs.apply_queue({"name": "train", "quotas": {"gpu:a100": 2, "cpus": 8, "memory": "32Gi"}})
    assert queue_problem(missing.queue, missing.resources, keel.Client()) == (
        "no job queue 'trian' (closest: train); create it with `keel jobs queues apply FILE`",
        True,
    )
    greedy = Policy.from_dict(_policy(resources={"gpus": 4, "gpu_type": "a100"})).retrain
    assert greedy is not None
    problem = queue_problem(greedy.queue, greedy.resources, keel.Client())
    assert problem is not None and problem[1] is False
    assert problem[0].startswith("the retrain's job could never run in queue train: ")
    assert "gpu:a100 4 > 2" in problem[0]
    fits = Policy.from_dict(_policy()).retrain
    assert fits is not None and queue_problem(fits.queue, fits.resources, keel.Client()) is None


# -- the controller -----------------------------------------------------------------------------


def test_a_queued_retrain_submits_one_job_with_the_policys_resources_then_waits(world):
    controller = _triggered()
    [result] = controller.tick()
    assert _kinds() == ["triggered", "retrain_started"]
    job = _only_job()
    assert (job.kind, job.target, job.queue, job.policy) == (
        "pipeline",
        f"{MODULE}:train",
        "train",
        "doubler-loop",
    )
    # the parameters the trigger pinned, and what the policy asks for
    assert job.params == {"data": "datasets:/train-data@2", "seed": 7}
    assert (job.request.gpus, job.request.gpu_type, job.request.cpus, job.request.memory) == (
        1,
        "a100",
        2.0,
        4 * 1024**3,
    )
    assert (job.priority_name, job.timeout_s, job.max_retries, job.state) == (
        "high",
        3600.0,
        1,
        QUEUED,
    )
    started = history("doubler-loop")[-1]
    assert f"as job {job.id} to queue train" in started.reason
    assert "asking for 1xa100, 2 cpus, 4Gi, high priority, timeout 1h, 1 retry" in started.reason
    assert started.details["job"] == job.id
    state = PolicyStore().state("doubler-loop")
    assert state.state == "retraining" and state.detail["job"] == job.id
    assert result.after == "retraining"
    assert (
        result.waiting == f"retrain job {job.id} is queued in queue train: submitted to queue train"
    )

    # While it waits in the queue, then runs, ticks write nothing and submit nothing.
    for move in (None, _admit, _start):
        if move is not None:
            job = move(job)
        epoch = PolicyStore().state("doubler-loop").epoch
        [result] = Controller().tick()
        assert result.events == [] and result.after == "retraining"
        assert result.waiting is not None and f"is {job.state} in queue train" in result.waiting
        assert PolicyStore().state("doubler-loop").epoch == epoch
        assert _only_job().id == job.id
    assert "on pool p1" in (result.waiting or "")
    assert _kinds() == ["triggered", "retrain_started"]  # and no "resumed" for waiting


@pytest.mark.parametrize("record_model", [True, False], ids=["recorded", "from-outputs"])
def test_a_succeeded_job_moves_the_cycle_to_gating_with_the_version_it_registered(
    world, record_model
):
    _triggered().tick()
    job = _start(_admit(_only_job()))
    _run_as_entry(job, record_model=record_model)

    [result] = Controller().tick()
    finished = next(e for e in result.events if e.kind == "retrain_finished")
    run_id = keel.Client().jobs.get(job.id).run_id
    assert finished.version == 3
    assert finished.reason == f"pipeline run {run_id} (job {job.id}) registered doubler/3"
    # the step outputs read back from the store, as an in-process run returns them
    assert finished.details == {
        "run_id": run_id,
        "outputs": {"model": "models:/doubler/3", "note": MODULE},
        "job": job.id,
    }
    # then the gates (none) pass and the canary starts, exactly as after an in-process run
    assert [e.kind for e in result.events] == ["retrain_finished", "gate_passed", "canary_started"]
    state = PolicyStore().state("doubler-loop")
    assert (state.state, state.candidate_version, state.pipeline_run_id) == ("canary", 3, run_id)
    assert len(keel.Client().jobs.list(policy="doubler-loop")) == 1


@pytest.mark.parametrize("ending", [FAILED, CANCELLED])
def test_a_failed_or_cancelled_job_ends_the_cycle_with_the_jobs_reason(world, ending):
    _triggered().tick()
    jobs = keel.Client().jobs
    job = _start(_admit(_only_job()))
    if ending == FAILED:
        # its last attempt: a worker requeues a failed attempt in the same transition
        # while retries remain, so a job seen failed has none left
        jobs.transition(
            job,
            Step(FAILED, "exited with code 1: RuntimeError: no rows", {"ended_at": now_ms()}),
        )
    else:
        jobs.transition(job, Step(CANCELLED, "cancelled by ops", {"ended_at": now_ms()}))

    [result] = Controller().tick()
    assert result.failed and result.after == "idle"
    [failed] = result.events
    assert failed.kind == "retrain_failed"
    if ending == FAILED:
        assert failed.reason == (
            f"retrain job {job.id} failed in queue train: exited with code 1: RuntimeError: no rows"
        )
    else:
        assert failed.reason == f"retrain job {job.id} cancelled in queue train: cancelled by ops"
    assert failed.details["job"] == job.id and failed.details["state"] == ending
    assert _kinds() == ["triggered", "retrain_started", "retrain_failed"]


def test_a_preempted_retrain_is_waited_for_on_the_same_job_and_never_submitted_twice(world):
    _triggered().tick()
    jobs = keel.Client().jobs
    job = _start(_admit(_only_job()))

    # Preempted: its worker stopped it, and has not requeued it yet.
    job = jobs.transition(
        job, Step(PREEMPTED, "preempted for job 99 (higher priority)", {"ended_at": now_ms()})
    )
    [result] = Controller().tick()
    assert result.events == [] and result.after == "retraining"
    assert result.waiting == (
        f"retrain job {job.id} is preempted in queue train: preempted for job 99 (higher priority)"
    )
    # Requeued (same attempt), admitted again, started again: still the same job.
    job = jobs.transition(
        job, Step(QUEUED, "requeued after preemption", {"pool": None, "devices": []})
    )
    for move in (None, _admit, _start):
        if move is not None:
            job = move(job)
        [result] = Controller().tick()
        assert result.events == [] and result.after == "retraining"
    assert job.state == RUNNING and job.attempt == 1
    assert [j.id for j in jobs.list(policy="doubler-loop")] == [job.id]

    _run_as_entry(job, record_model=True)
    [result] = Controller().tick()
    assert result.events[0].kind == "retrain_finished" and result.events[0].version == 3
    assert [j.id for j in jobs.list(policy="doubler-loop")] == [job.id]
    assert _kinds().count("retrain_started") == 1


@contextlib.contextmanager
def refusing_retrain_started(store) -> Iterator[None]:
    """A database trigger that fails the insert of a ``retrain_started`` event: the
    controller stops after the job is submitted and before the cycle records it."""
    refusal = "the database refused the retrain_started event"
    with store.write() as conn:
        if store.is_sqlite:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_started BEFORE INSERT ON automation_events "
                    f"WHEN NEW.kind = 'retrain_started' BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_started() RETURNS trigger AS $$ BEGIN "
                    f"RAISE EXCEPTION '{refusal}' USING ERRCODE = 'integrity_constraint_violation'; "
                    "END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_started BEFORE INSERT ON automation_events FOR EACH ROW "
                    "WHEN (NEW.kind = 'retrain_started') EXECUTE FUNCTION refuse_started()"
                )
            )
    try:
        yield
    finally:  # the PostgreSQL test database outlives this test: leave no trigger behind
        with store.write() as conn:
            if store.is_sqlite:
                conn.execute(text("DROP TRIGGER refuse_started"))
            else:
                conn.execute(text("DROP TRIGGER refuse_started ON automation_events"))
                conn.execute(text("DROP FUNCTION refuse_started()"))


def test_a_job_submitted_by_a_controller_that_stopped_before_recording_it_is_followed(world):
    controller = _triggered()
    client = keel.Client()
    with (
        refusing_retrain_started(client.store),
        pytest.raises(SQLIntegrityError, match="refused the retrain_started event"),
    ):
        controller.tick()
    job = _only_job()  # submitted, and the cycle does not know it
    state = PolicyStore().state("doubler-loop")
    assert state.state == "retraining" and "job" not in state.detail

    [result] = Controller().tick()
    assert [e.kind for e in result.events] == ["resumed", "retrain_started"]
    assert result.events[-1].reason.startswith(f"following job {job.id} ({MODULE}:train)")
    assert PolicyStore().state("doubler-loop").detail["job"] == job.id
    assert [j.id for j in client.jobs.list(policy="doubler-loop")] == [job.id]


def test_a_job_that_is_refused_at_submission_ends_the_cycle_with_the_reason(world):
    controller = _triggered()
    # The queue shrank after the policy was applied: the job could never fit now.
    keel.Client().jobs.apply_queue({"name": "train", "quotas": {"cpus": 8, "memory": "32Gi"}})
    [result] = controller.tick()
    assert _kinds() == ["triggered", "retrain_failed"]
    assert result.events[-1].reason.startswith(
        "the retrain could not be queued in train: this job can never run:"
    )
    assert keel.Client().jobs.list(policy="doubler-loop") == []


def test_without_a_queue_the_controller_runs_the_pipeline_itself_and_submits_no_job(world):
    plain = _policy()
    del plain["retrain"]["queue"], plain["retrain"]["resources"]
    PolicyStore().apply(plain)
    keel.log_dataset(pd.DataFrame({"x": [4.0, 5.0]}), name="train-data")
    [result] = Controller().tick()
    assert [e.kind for e in result.events][:3] == [
        "triggered",
        "retrain_started",
        "retrain_finished",
    ]
    assert result.events[2].version == 3 and result.waiting is None
    assert keel.Client().jobs.list() == []


# -- end to end, on a worker --------------------------------------------------------------------


def _turn_until(worker, done, what: str, turns: int = 1200) -> None:
    """Turn ``worker`` until ``done()`` holds (a bound on turns, never on time)."""
    for _ in range(turns):
        worker.run_once()
        if done():
            return
        time.sleep(0.05)
    jobs = keel.Client().jobs
    where = "; ".join(f"job {j.id} {j.state}: {j.reason}" for j in jobs.list())
    raise AssertionError(f"the worker never got to {what} ({where})")


@pytest.mark.slow
def test_a_retrain_run_by_a_worker_is_preempted_requeued_resumed_and_gated(
    world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from keel.jobs.executors import LocalExecutor
    from keel.jobs.worker import Worker
    from keel.pipelines import get_pipeline_run

    started, gate = tmp_path / "fit-started", tmp_path / "fit-gate"
    monkeypatch.setenv("RETRAIN_STARTED", str(started))
    monkeypatch.setenv("RETRAIN_GATE", str(gate))
    client = keel.Client()
    jobs = client.jobs
    # The retrain borrows its A100 from the cohort; 'urgent' lends it and takes it back.
    jobs.apply_queue({"name": "train", "cohort": "lab", "quotas": {"cpus": 8, "memory": "32Gi"}})
    jobs.apply_queue(
        {"name": "urgent", "cohort": "lab", "quotas": {"gpu:a100": 2, "cpus": 4, "memory": "4Gi"}}
    )
    controller = _triggered(resources={**RESOURCES, "priority": "normal"})
    controller.tick()
    retrain = _only_job()
    worker = Worker(
        client,
        LocalExecutor(POOL, cwd=tmp_path),
        pool="p1",
        grace_seconds=5.0,
        poll_seconds=0.05,
        sample_seconds=0.5,
        owner="test-pool",
    )
    try:
        _turn_until(
            worker,
            lambda: started.is_file() and jobs.get(retrain.id).state == RUNNING,
            "the retrain's fit step",
        )
        assert jobs.get(retrain.id).borrowed
        [result] = controller.tick()
        assert result.events == [] and f"job {retrain.id} is running" in (result.waiting or "")

        # A higher-priority job of the lending queue: the scheduler preempts the borrowing retrain.
        urgent = jobs.submit(
            [sys.executable, "-c", "pass"],
            queue="urgent",
            gpus=2,
            gpu_type="a100",
            cpus=1,
            priority="high",
        )
        _turn_until(
            worker,
            lambda: any(e.to_state == PREEMPTED for e in jobs.events(retrain.id)),
            "the retrain's preemption",
        )
        [result] = controller.tick()
        assert result.events == [] and result.after == "retraining"
        assert f"retrain job {retrain.id} is " in (result.waiting or "")

        gate.write_text("go")
        _turn_until(
            worker,
            lambda: jobs.get(retrain.id).state == SUCCEEDED,
            "the retrain's second attempt",
        )
    finally:
        worker.shutdown()
    assert jobs.get(urgent.id).state == SUCCEEDED
    done = jobs.get(retrain.id)
    assert done.attempt == 1  # a preemption is not a failed attempt
    assert (done.model_name, done.model_version) == ("doubler", 3)
    assert len(started.read_text().split()) == 2  # fit began twice, in two processes
    # The second attempt resumed: the step finished before the preemption came from the cache.
    assert get_pipeline_run(done.run_id).step("prepare").cached

    [result] = controller.tick()
    assert [e.kind for e in result.events] == ["retrain_finished", "gate_passed", "canary_started"]
    assert result.events[0].version == 3 and result.events[0].details["job"] == retrain.id
    state = PolicyStore().state("doubler-loop")
    assert (state.state, state.candidate_version, state.pipeline_run_id) == (
        "canary",
        3,
        done.run_id,
    )
    assert [j.id for j in jobs.list(policy="doubler-loop")] == [retrain.id]
    assert _kinds() == [
        "triggered",
        "retrain_started",
        "retrain_finished",
        "gate_passed",
        "canary_started",
    ]
