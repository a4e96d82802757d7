"""The worker with the local executor: real subprocesses, on SQLite and PostgreSQL.

GPUs are the virtual inventory (4 x a100, 2 x l4) read through recorded NVML samples.
Commands are small Python scripts that write what they see to files in the test's folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

import keel
from keel.jobs import Inventory, Scheduler
from keel.jobs.entry import main as entry_main
from keel.jobs.entry import registered_model
from keel.jobs.executors import LocalExecutor
from keel.jobs.sampling import RecordedGpuReader
from keel.jobs.worker import Worker, follow_job_log, job_log, job_log_path


def py(body: str, *args: object) -> list[str]:
    """A command: this Python running ``body`` with ``args``."""
    return [sys.executable, "-c", textwrap.dedent(body), *map(str, args)]


#: Writes "started", traps SIGTERM (writes the marker, exits 143) and waits; on a run
#: after the marker exists, it finishes at once (a job that checkpointed).
RESUMABLE = """
    import pathlib, signal, sys, time
    marker, started = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    if marker.exists():
        sys.exit(0)
    def stop(*_):
        marker.write_text("terminated")
        sys.exit(143)
    signal.signal(signal.SIGTERM, stop)
    started.write_text("started")
    time.sleep(120)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what} in {timeout:g} s")
        time.sleep(0.1)


@pytest.fixture
def worker(virtual_inventory: Inventory, recorded_gpus: Path) -> Iterator[Callable[..., Worker]]:
    """``worker(pool="w1", **options)``: a fast-turning local worker on the virtual inventory."""
    made: list[Worker] = []

    def make(pool: str = "w1", **options: object) -> Worker:
        settings: dict[str, object] = {
            "grace_seconds": 0.5,
            "poll_seconds": 0.1,
            "sample_seconds": 0.1,
            "gpu_reader": RecordedGpuReader(recorded_gpus),
        }
        settings.update(options)
        made.append(
            Worker(keel.Client(), LocalExecutor(virtual_inventory), pool=pool, **settings)  # type: ignore[arg-type]
        )
        return made[-1]

    yield make
    for each in made:
        each.shutdown()


@pytest.fixture
def gpu_queue(make_queue: Callable[..., object]) -> str:
    make_queue("gpu", {"gpu:a100": 4, "gpu:l4": 2, "cpus": 8, "memory": "64Gi"})
    return "gpu"


@pytest.fixture
def lab(make_queue: Callable[..., object]) -> None:
    """Cohort ``lab``: ``prod`` owns the four a100s, ``research`` owns none and borrows them."""
    make_queue("prod", {"gpu:a100": 4, "cpus": 4}, cohort="lab")
    make_queue("research", {"gpu:a100": 0, "cpus": 4}, cohort="lab")


def state_of(job_id: int, state: str) -> Callable[[], bool]:
    return lambda: keel.Client().jobs.get(job_id).state == state


def transitions(job_id: int) -> list[tuple[str | None, str]]:
    return [
        (e.from_state, e.to_state)
        for e in keel.Client().jobs.events(job_id)
        if e.from_state != e.to_state
    ]


# -- environment and outcomes ----------------------------------------------------------


def test_each_job_sees_exactly_its_devices_in_cuda_visible_devices(
    keel_env, gpu_queue, worker, turn_until, tmp_path
):
    jobs = keel.Client().jobs
    dump = """
        import json, os, sys
        names = ("CUDA_VISIBLE_DEVICES", "KEEL_JOB_ID", "KEEL_STORE_URL", "KEEL_HOME")
        json.dump({k: os.environ.get(k) for k in names}, open(sys.argv[1], "w"))
    """
    asks = {"a100": {"gpus": 2, "gpu_type": "a100"}, "l4": {"gpus": 1, "gpu_type": "l4"}, "cpu": {}}
    submitted = {
        name: jobs.submit(py(dump, tmp_path / f"{name}.json"), queue=gpu_queue, **ask)
        for name, ask in asks.items()
    }
    turn_until(worker(), lambda: all(state_of(j.id, "succeeded")() for j in submitted.values()))

    seen = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in asks}
    done = {name: jobs.get(job.id) for name, job in submitted.items()}
    for name, job in done.items():
        assert seen[name]["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, job.devices))
        assert seen[name]["KEEL_JOB_ID"] == str(job.id)
        assert seen[name]["KEEL_STORE_URL"] == keel_env.store_url
        assert seen[name]["KEEL_HOME"] == str(keel_env.home)
    assert len(done["a100"].devices) == 2 and set(done["a100"].devices) <= {0, 1, 2, 3}
    assert len(done["l4"].devices) == 1 and set(done["l4"].devices) <= {4, 5}
    assert seen["cpu"]["CUDA_VISIBLE_DEVICES"] == ""


def test_exit_code_zero_succeeds_and_a_failure_is_retried_until_retries_run_out(
    keel_env, gpu_queue, worker, turn_until, tmp_path
):
    jobs = keel.Client().jobs
    tries = tmp_path / "tries.txt"
    failing = jobs.submit(
        py("import sys; open(sys.argv[1], 'a').write('x\\n'); sys.exit(3)", tries),
        queue=gpu_queue,
        retries=2,
    )
    passing = jobs.submit(py("pass"), queue=gpu_queue)
    turn_until(
        worker(), lambda: state_of(failing.id, "failed")() and state_of(passing.id, "succeeded")()
    )

    failed = jobs.get(failing.id)
    assert (failed.attempt, failed.exit_code) == (3, 3)
    assert failed.reason == "failed; exited with code 3"
    assert tries.read_text() == "x\n" * 3
    requeues = [
        e.reason for e in jobs.events(failing.id) if e.to_state == "queued" and e.from_state
    ]
    assert requeues == ["retry 2 of 3", "retry 3 of 3"]
    assert failed.seconds_run > 0 and failed.usage["seconds"] == pytest.approx(failed.seconds_run)
    succeeded = jobs.get(passing.id)
    assert (succeeded.attempt, succeeded.exit_code) == (1, 0)
    assert transitions(passing.id) == [
        (None, "queued"),
        ("queued", "admitted"),
        ("admitted", "running"),
        ("running", "succeeded"),
    ]


def test_a_job_past_its_timeout_is_stopped_and_fails_with_the_reason(
    keel_env, gpu_queue, worker, turn_until, tmp_path
):
    jobs = keel.Client().jobs
    pid_file = tmp_path / "pid"
    job = jobs.submit(
        py(
            "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)",
            pid_file,
        ),
        queue=gpu_queue,
        timeout=0.5,
    )
    turn_until(worker(), state_of(job.id, "failed"))

    failed = jobs.get(job.id)
    assert failed.reason == "timed out after 0.5 s"
    assert failed.exit_code == -signal.SIGTERM
    assert gone(int(pid_file.read_text()))


def test_a_command_that_cannot_start_fails_with_the_reason(keel_env, gpu_queue, worker, turn_until):
    jobs = keel.Client().jobs
    job = jobs.submit(["no-such-command-for-keel"], queue=gpu_queue)
    turn_until(worker(), state_of(job.id, "failed"))
    assert jobs.get(job.id).reason.startswith("could not start: job")
    assert "cannot start 'no-such-command-for-keel'" in jobs.get(job.id).reason


# -- stopping --------------------------------------------------------------------------


def test_cancelling_a_running_job_sends_sigterm_and_it_ends_cancelled(
    keel_env, gpu_queue, worker, turn_until, tmp_path
):
    jobs = keel.Client().jobs
    marker, started = tmp_path / "marker", tmp_path / "started"
    job = jobs.submit(py(RESUMABLE, marker, started), queue=gpu_queue)
    w = worker()
    turn_until(w, started.exists)
    jobs.cancel(job.id, reason="cancelled by the test")
    turn_until(w, state_of(job.id, "cancelled"))

    assert marker.read_text() == "terminated"
    cancelled = jobs.get(job.id)
    assert cancelled.reason == "cancelled; exited with code 143"
    assert [e.reason for e in jobs.events(job.id) if e.from_state == e.to_state == "running"] == [
        "cancelled by the test"
    ]


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(
    keel_env, gpu_queue, worker, turn_until, tmp_path
):
    jobs = keel.Client().jobs
    started = tmp_path / "started"
    stubborn = """
        import pathlib, signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path(sys.argv[1]).write_text("started")
        time.sleep(120)
    """
    job = jobs.submit(py(stubborn, started), queue=gpu_queue)
    w = worker(grace_seconds=0.3)
    turn_until(w, started.exists)
    jobs.cancel(job.id)
    turn_until(w, state_of(job.id, "cancelled"))

    cancelled = jobs.get(job.id)
    assert cancelled.reason == "cancelled; killed after the 0.3 s grace period"
    assert cancelled.exit_code == -signal.SIGKILL
    assert "SIGKILL after the 0.3 s grace period" in job_log(keel.Client(), cancelled)


def test_stopping_reaches_the_whole_process_tree_and_leftovers_die_with_the_job(
    keel_env, gpu_queue, worker, turn_until, tmp_path
):
    jobs = keel.Client().jobs
    spawner = """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open(sys.argv[1], "w").write(str(child.pid))
        if sys.argv[2] == "wait":
            time.sleep(120)
    """
    waiting = jobs.submit(py(spawner, tmp_path / "a.pid", "wait"), queue=gpu_queue)
    leaving = jobs.submit(py(spawner, tmp_path / "b.pid", "leave"), queue=gpu_queue)
    w = worker()
    turn_until(w, lambda: (tmp_path / "a.pid").exists() and state_of(leaving.id, "succeeded")())
    jobs.cancel(waiting.id)
    turn_until(w, state_of(waiting.id, "cancelled"))

    # The cancelled job's grandchild got the signal too; the finished job's leftover was killed.
    wait_for(lambda: gone(int((tmp_path / "a.pid").read_text())), "the cancelled job's child end")
    wait_for(lambda: gone(int((tmp_path / "b.pid").read_text())), "the leftover child end")


def test_a_stopped_worker_requeues_its_running_jobs(
    keel_env, gpu_queue, worker, turn_until, tmp_path
):
    jobs = keel.Client().jobs
    marker, started = tmp_path / "marker", tmp_path / "started"
    job = jobs.submit(py(RESUMABLE, marker, started), queue=gpu_queue, gpus=1)
    w = worker()
    turn_until(w, started.exists)
    w.shutdown()

    requeued = jobs.get(job.id)
    assert (requeued.state, requeued.attempt, requeued.pool, requeued.devices) == (
        "queued",
        1,
        None,
        [],
    )
    assert marker.read_text() == "terminated"
    assert transitions(job.id)[-2:] == [("running", "preempted"), ("preempted", "queued")]


# -- preemption ------------------------------------------------------------------------


def test_a_high_priority_job_preempts_a_borrower_which_is_requeued_and_runs_again(
    keel_env, lab, worker, turn_until, tmp_path
):
    jobs = keel.Client().jobs
    marker, started = tmp_path / "marker", tmp_path / "started"
    borrower = jobs.submit(
        py(RESUMABLE, marker, started), queue="research", gpus=4, gpu_type="a100", priority="low"
    )
    w = worker()
    turn_until(w, started.exists)
    assert jobs.get(borrower.id).borrowed
    urgent = jobs.submit(py("pass"), queue="prod", gpus=2, gpu_type="a100", priority="high")
    turn_until(
        w, lambda: state_of(urgent.id, "succeeded")() and state_of(borrower.id, "succeeded")()
    )

    assert marker.read_text() == "terminated"  # it got SIGTERM, and its second run resumed
    done = jobs.get(borrower.id)
    assert done.attempt == 1
    assert transitions(borrower.id) == [
        (None, "queued"),
        ("queued", "admitted"),
        ("admitted", "running"),
        ("running", "preempted"),
        ("preempted", "queued"),
        ("queued", "admitted"),
        ("admitted", "running"),
        ("running", "succeeded"),
    ]
    events = jobs.events(borrower.id)
    asked = [e for e in events if e.from_state == e.to_state == "running"]
    assert len(asked) == 1 and asked[0].reason.startswith(f"preempted for job #{urgent.id}")
    preempted = next(e for e in events if e.to_state == "preempted")
    assert preempted.reason == "preempted; exited with code 143"
    # It came back only once the urgent job had finished with the GPUs it needed.
    readmitted = [e for e in events if e.to_state == "admitted"][-1]
    urgent_end = next(e for e in jobs.events(urgent.id) if e.to_state == "succeeded")
    assert readmitted.id > urgent_end.id


def test_a_job_asked_to_stop_before_it_started_is_requeued_without_running(
    keel_env, lab, worker, turn_until, tmp_path
):
    client = keel.Client()
    jobs = client.jobs
    ran = tmp_path / "ran"
    borrower = jobs.submit(
        py("import sys; open(sys.argv[1], 'w').write('ran')", ran),
        queue="research",
        gpus=4,
        gpu_type="a100",
        priority="low",
    )
    w = worker(schedule=False)
    scheduler = Scheduler(client)
    w.run_once()  # heartbeat: the pool is live
    assert [d.action for d in scheduler.schedule()] == ["admit"]
    urgent = jobs.submit(py("pass"), queue="prod", gpus=2, gpu_type="a100", priority="high")
    assert [d.action for d in scheduler.schedule()] == ["preempt"]
    w.run_once()

    requeued = jobs.get(borrower.id)
    assert (requeued.state, requeued.reason) == ("queued", "preempted before it started; requeued")
    assert not ran.exists()
    assert scheduler.schedule()[0].job_id == urgent.id
    turn_until(w, state_of(urgent.id, "succeeded"))


# -- pipelines -------------------------------------------------------------------------

RESUMING_FLOW = """
    import pathlib, time
    import keel

    @keel.step
    def prepare(n: int) -> int:
        return n * 2

    @keel.step
    def train(x: int, marker: str) -> int:
        path = pathlib.Path(marker)
        if not path.exists():
            path.write_text("training")
            time.sleep(120)
        return x + 1

    @keel.pipeline
    def flow(n: int = 3, marker: str = "marker"):
        return {"value": train(prepare(n), marker), "model": "models:/churn/3"}
"""


def test_a_preempted_pipeline_job_resumes_with_its_finished_step_from_the_cache(
    keel_env, lab, worker, turn_until, tmp_path
):
    (tmp_path / "resuming_flow.py").write_text(textwrap.dedent(RESUMING_FLOW))
    client = keel.Client()
    jobs = client.jobs
    marker = tmp_path / "marker"
    job = jobs.submit(
        "resuming_flow:flow",
        params={"n": 4, "marker": str(marker)},
        queue="research",
        gpus=4,
        priority="low",
    )
    w = worker(grace_seconds=5.0)
    turn_until(w, marker.exists)  # prepare finished; train is running
    first_run = jobs.get(job.id).run_id
    assert first_run is not None
    jobs.submit(py("pass"), queue="prod", gpus=2, priority="high")
    turn_until(w, state_of(job.id, "succeeded"))

    done = jobs.get(job.id)
    assert done.attempt == 1 and ("running", "preempted") in transitions(job.id)
    assert done.run_id != first_run
    assert client.get_run_info(first_run).status == "KILLED"
    steps = {s.node: s.cached for s in keel.pipelines.get_pipeline_run(done.run_id).steps}
    assert steps == {"prepare": True, "train": False}
    assert (done.model_name, done.model_version) == ("churn", 3)
    tags = client.get_run(done.run_id).tags
    assert (tags["keel.job.id"], tags["keel.job.queue"]) == (str(job.id), "research")


USING_GPUS = """
    import time
    import keel

    @keel.step
    def burn(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @keel.pipeline
    def flow(seconds: float = 1.0):
        return {"slept": burn(seconds)}
"""


def test_usage_sampled_from_the_recorded_gpus_lands_on_the_job_and_its_run(
    keel_env, gpu_queue, worker, turn_until, tmp_path, recorded_gpus
):
    (tmp_path / "using_gpus.py").write_text(textwrap.dedent(USING_GPUS))
    client = keel.Client()
    jobs = client.jobs
    job = jobs.submit(
        "using_gpus:flow", params={"seconds": 1.0}, queue=gpu_queue, gpus=2, gpu_type="a100"
    )
    turn_until(worker(), state_of(job.id, "succeeded"))

    done = jobs.get(job.id)
    usage = done.usage
    samples = usage["samples"]
    assert samples >= 1
    recorded = RecordedGpuReader(recorded_gpus)
    replayed = [
        recorded.readings(device)[i % len(recorded.readings(device))]
        for device in done.devices
        for i in range(samples)
    ]
    assert usage["gpu_readings"] == 2 * samples
    assert usage["gpu_util_mean"] == pytest.approx(
        sum(r.util_percent for r in replayed) / len(replayed)
    )
    assert usage["gpu_util_peak"] == max(r.util_percent for r in replayed)
    assert usage["gpu_memory_peak"] == max(r.memory_bytes for r in replayed)
    assert usage["gpu_memory_mean"] == pytest.approx(
        sum(r.memory_bytes for r in replayed) / len(replayed)
    )
    assert usage["gpu_seconds"] == pytest.approx(2 * usage["seconds"], rel=1e-3)
    assert usage["rss_peak"] > 20 * 2**20  # a Python with Keel imported
    assert usage["cpu_percent_peak"] >= usage["cpu_percent_mean"] >= 0

    run = client.get_run(done.run_id)
    assert run.metrics["job.gpu_util_mean"] == pytest.approx(usage["gpu_util_mean"])
    assert run.metrics["job.gpu_memory_peak"] == pytest.approx(usage["gpu_memory_peak"])
    assert run.metrics["job.rss_peak"] == pytest.approx(usage["rss_peak"])
    assert (run.tags["keel.job.id"], run.tags["keel.job.queue"]) == (str(job.id), gpu_queue)


FAILING_FLOW = """
    import keel

    @keel.step
    def boom(n: int) -> int:
        raise ValueError("bad data in row 7")

    @keel.pipeline
    def flow(n: int = 1):
        return {"out": boom(n)}
"""


def test_a_failing_pipeline_job_fails_with_one_line_and_keeps_its_run(
    keel_env, gpu_queue, worker, turn_until, tmp_path
):
    (tmp_path / "failing_flow.py").write_text(textwrap.dedent(FAILING_FLOW))
    client = keel.Client()
    job = client.jobs.submit("failing_flow:flow", queue=gpu_queue)
    turn_until(worker(), state_of(job.id, "failed"))

    failed = client.jobs.get(job.id)
    assert failed.exit_code == 1
    assert client.get_run_info(failed.run_id).status == "FAILED"
    lines = [line for line in job_log(client, failed).splitlines() if line.startswith("keel: job")]
    assert len(lines) == 1
    assert lines[0].startswith(f"keel: job {job.id} failed: step 'boom'")
    assert "ValueError: bad data in row 7" in lines[0]


def test_registered_model_reads_the_model_output_or_the_only_models_uri():
    assert registered_model({"model": "models:/churn/3", "auc": 0.9}) == ("churn", 3)
    assert registered_model({"best": "models:/churn/4"}) == ("churn", 4)
    assert registered_model({"a": "models:/x/1", "b": "models:/y/2"}) is None
    assert registered_model({"model": "models:/churn@champion"}) is None
    assert registered_model(None) is None


def test_the_entry_point_refuses_a_job_id_that_is_not_a_number(capsys):
    assert entry_main(["seven"]) == 2
    assert "usage: python -m keel.jobs.entry JOB_ID" in capsys.readouterr().err


# -- logs ------------------------------------------------------------------------------


def test_logs_are_live_while_running_and_uploaded_when_the_attempt_ends(
    keel_env, gpu_queue, worker, turn_until, tmp_path
):
    client = keel.Client()
    go = tmp_path / "go"
    talker = """
        import pathlib, sys, time
        print("hello", flush=True)
        while not pathlib.Path(sys.argv[1]).exists():
            time.sleep(0.05)
        print("bye", flush=True)
    """
    job = client.jobs.submit(py(talker, go), queue=gpu_queue)
    w = worker()
    turn_until(w, lambda: "hello" in job_log(client, job.id))
    assert client.jobs.get(job.id).logs_digest is None
    chunks: list[str] = []
    follower = threading.Thread(
        target=lambda: chunks.extend(follow_job_log(client, job.id, poll_seconds=0.05))
    )
    follower.start()
    go.write_text("go")
    turn_until(w, state_of(job.id, "succeeded"))
    follower.join(30)

    done = client.jobs.get(job.id)
    text = job_log(client, done)
    assert text.startswith(f"== keel: job {job.id} attempt 1 on pool w1, ")
    assert "hello\n" in text and "bye\n" in text and "exited with code 0 after" in text
    local = job_log_path(keel_env.home, job.id).read_bytes()
    assert client.artifacts.get_bytes(done.logs_digest) == local
    assert "".join(chunks) == text


# -- a worker that dies ----------------------------------------------------------------

WORKER = """
    import sys
    import keel
    from keel.jobs.executors import LocalExecutor
    from keel.jobs.worker import Worker

    Worker(
        keel.Client(), LocalExecutor(inventory_file=sys.argv[1]), pool="a",
        poll_seconds=0.1, grace_seconds=0.5,
    ).run()
"""

WAITER = """
    import os, pathlib, sys, time
    folder = pathlib.Path(sys.argv[1])
    (folder / f"started-{os.getpid()}").write_text("started")
    while not (folder / "go").exists():
        time.sleep(0.05)
    with open(folder / "done", "a") as f:
        f.write(f"{os.getpid()}\\n")
"""


def test_a_killed_workers_job_is_requeued_and_runs_once_more_elsewhere(
    keel_env, gpu_queue, worker, turn_until, tmp_path, inventory_file
):
    client = keel.Client()
    jobs = client.jobs
    job = jobs.submit(py(WAITER, tmp_path), queue=gpu_queue, gpus=1, gpu_type="a100")
    env = {
        **os.environ,
        "KEEL_HOME": str(keel_env.home),
        "KEEL_STORE_URL": keel_env.store_url,
        "KEEL_ARTIFACTS_URL": keel_env.artifacts_url,
    }
    first = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), str(inventory_file)], env=env, cwd=tmp_path
    )
    try:
        wait_for(lambda: any(tmp_path.glob("started-*")), "the job start on worker a")
        assert jobs.get(job.id).pool == "a"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    [started] = tmp_path.glob("started-*")
    wait_for(lambda: gone(int(started.name.removeprefix("started-"))), "the orphaned attempt end")

    (tmp_path / "go").write_text("go")
    second = worker("b", scheduler=Scheduler(client, pool_timeout_ms=1500))
    turn_until(second, state_of(job.id, "succeeded"))

    done = jobs.get(job.id)
    assert (done.pool, done.attempt) == ("b", 1)
    assert len((tmp_path / "done").read_text().splitlines()) == 1  # it finished once
    assert len(jobs.list(limit=None)) == 1
    assert transitions(job.id) == [
        (None, "queued"),
        ("queued", "admitted"),
        ("admitted", "running"),
        ("running", "preempted"),
        ("preempted", "queued"),
        ("queued", "admitted"),
        ("admitted", "running"),
        ("running", "succeeded"),
    ]
    lost = next(e for e in jobs.events(job.id) if e.to_state == "preempted")
    assert lost.reason == "its pool a stopped sending heartbeats"
