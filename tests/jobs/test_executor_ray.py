"""The Ray executor on a local two-CPU Ray that declares four (fake) A100s.

Ray does not check that a declared GPU exists: it assigns the declared ids and
sets ``CUDA_VISIBLE_DEVICES``, which is all these tests look at (a stand-in for
hardware we do not have). Commands are small Python scripts; the cluster is one
node, so tests of output coming back from another node pretend the worker sits
elsewhere.
"""

from __future__ import annotations

import json
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import keel
from keel.errors import InvalidInput
from keel.jobs.entities import Job
from keel.jobs.executors.ray import RayExecutor, RayHandle, gpus_by_type
from keel.jobs.resources import Request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fake_gpu_ray() -> Iterator[Any]:
    """A local Ray of 2 CPUs and 4 declared A100s, for this module only."""
    ray = pytest.importorskip(
        "ray", reason="the Ray executor tests need ray: pip install 'keel[ray]'"
    )
    if ray.is_initialized():  # another module's cluster has no GPUs
        ray.shutdown()
    ray.init(
        num_cpus=2,
        num_gpus=4,
        resources={"accelerator_type:A100": 4},
        include_dashboard=False,
        logging_level="WARNING",
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def executor(fake_gpu_ray: Any) -> Iterator[RayExecutor]:
    made = RayExecutor(grace_seconds=0.5)
    yield made
    made.close()


def py(body: str, *args: object) -> list[str]:
    """A command: this Python running ``body`` with ``args``."""
    return [sys.executable, "-c", textwrap.dedent(body), *map(str, args)]


def job(
    job_id: int = 1,
    *,
    gpus: int = 0,
    cpus: float = 1.0,
    memory: int = 0,
    gpu_type: str | None = None,
) -> Job:
    """An admitted command job as the worker hands it to an executor."""
    return Job(
        id=job_id,
        name="test",
        queue="q",
        priority=1,
        kind="command",
        target="[]",
        params={},
        request=Request(gpus, gpu_type, cpus, memory),
        timeout_s=None,
        max_retries=0,
        attempt=1,
        state="admitted",
        epoch=1,
        reason=None,
        submitted_at=0,
        submitted_by="test",
        updated_at=0,
        assigned_gpu_type=gpu_type,
        pool="ray",
    )


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """A hang guard, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what} in {timeout:g} s")
        time.sleep(0.05)


def finish(handle: RayHandle) -> int:
    wait_for(lambda: handle.poll() is not None, "the attempt end")
    code = handle.poll()
    assert code is not None
    return code


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


ENV_DUMP = """
    import json, os, sys
    names = ("CUDA_VISIBLE_DEVICES", "KEEL_JOB_ID")
    json.dump({k: os.environ.get(k) for k in names}, open(sys.argv[1], "w"))
"""


# -- inventory -------------------------------------------------------------------------


def test_inventory_reports_the_clusters_cpus_memory_and_four_a100s(executor, fake_gpu_ray):
    inventory = executor.inventory()

    assert inventory.gpus == {"a100": (0, 1, 2, 3)}
    assert inventory.cpus == 2.0
    assert inventory.memory == int(fake_gpu_ray.cluster_resources()["memory"]) > 0
    assert executor.accelerators_ == {"a100": ["accelerator_type:A100"]}


def test_gpus_without_an_accelerator_type_take_the_declared_type_numbered_after_typed_ones(
    fake_gpu_ray,
):
    # A second node (one we cannot start here) whose GPUs Ray knows no model of.
    untyped = {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}
    dead = {"Alive": False, "Resources": {"GPU": 8.0, "accelerator_type:H100": 1.0}}
    nodes = [*fake_gpu_ray.nodes(), untyped, dead]

    assert gpus_by_type(nodes, "l4")[0] == {"a100": (0, 1, 2, 3), "l4": (4, 5)}
    assert gpus_by_type([untyped])[0] == {"gpu": (0, 1)}
    # Ray's own per-node marker (amount 1) types all of the node's GPUs.
    real = {"Alive": True, "Resources": {"GPU": 8.0, "accelerator_type:H100": 1.0}}
    assert gpus_by_type([real]) == ({"h100": tuple(range(8))}, {"h100": ["accelerator_type:H100"]})


def test_an_untyped_gpu_type_must_be_a_gpu_type_name(fake_gpu_ray):
    with pytest.raises(InvalidInput, match="a GPU type must be 1-64 lower-case letters"):
        RayExecutor(gpu_types="Big GPU").inventory()


def test_the_request_maps_to_ray_cpus_gpus_memory_and_accelerator_type(executor):
    executor.inventory()

    assert executor.resources(job(gpus=2, cpus=0.5, memory=2**30, gpu_type="a100")) == {
        "num_cpus": 0.5,
        "num_gpus": 2,
        "memory": 2**30,
        "resources": {"accelerator_type:A100": 0.001},
    }
    # No memory asked: no memory option; a type the cluster lacks: Ray's GPU count alone.
    assert executor.resources(job(gpus=1, gpu_type="l4")) == {"num_cpus": 1.0, "num_gpus": 1}


# -- running attempts ------------------------------------------------------------------


def test_a_two_gpu_job_sees_the_two_gpus_ray_assigned_not_the_pools_indices(executor, tmp_path):
    seen = tmp_path / "env.json"
    env = {"CUDA_VISIBLE_DEVICES": "6,7", "KEEL_JOB_ID": "5"}
    handle = executor.start(
        job(5, gpus=2, gpu_type="a100"), py(ENV_DUMP, seen), env, tmp_path / "5.log"
    )

    assert finish(handle) == 0
    got = json.loads(seen.read_text())
    ids = got["CUDA_VISIBLE_DEVICES"].split(",")
    assert len(set(ids)) == 2 and set(ids) <= {"0", "1", "2", "3"}
    assert got["KEEL_JOB_ID"] == "5"


def test_a_job_without_gpus_sees_none(executor, tmp_path):
    seen = tmp_path / "env.json"
    handle = executor.start(
        job(6), py(ENV_DUMP, seen), {"CUDA_VISIBLE_DEVICES": "0"}, tmp_path / "6.log"
    )

    assert finish(handle) == 0
    assert json.loads(seen.read_text())["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.parametrize("code", [0, 7])
def test_the_exit_code_is_the_commands_and_its_output_goes_to_the_log(executor, tmp_path, code):
    log = tmp_path / "nested" / "out.log"
    body = "import sys; print('hello from ray', flush=True); sys.exit(int(sys.argv[1]))"
    handle = executor.start(job(), py(body, code), {}, log)

    assert finish(handle) == code
    assert log.read_text() == "hello from ray\n"


def test_a_command_that_cannot_start_exits_127_and_says_why_in_the_log(executor, tmp_path):
    log = tmp_path / "out.log"
    handle = executor.start(job(), ["/nonexistent/keel-command"], {}, log)

    assert finish(handle) == 127
    assert "cannot start '/nonexistent/keel-command'" in log.read_text()


def test_output_of_a_task_on_another_node_comes_back_and_is_appended_to_the_log(executor, tmp_path):
    executor.inventory()
    executor.node_id_ = "a-node-of-another-machine"  # the log is then not the task's to write
    log = tmp_path / "out.log"
    log.write_text("== earlier attempt ==\n")
    handle = executor.start(job(), py("print('from afar')"), {}, log)

    assert finish(handle) == 0
    assert log.read_text() == "== earlier attempt ==\nfrom afar\n"


# -- stopping --------------------------------------------------------------------------


def test_terminate_sends_sigterm_and_the_command_stops_cleanly(executor, tmp_path):
    marker = tmp_path / "marker"
    body = """
        import pathlib, signal, sys, time
        def stop(*_):
            pathlib.Path(sys.argv[1]).write_text("terminated")
            sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
        print("ready", flush=True)
        time.sleep(120)
    """
    log = tmp_path / "out.log"
    handle = executor.start(job(), py(body, marker), {}, log)
    wait_for(lambda: log.is_file() and "ready" in log.read_text(), "the command start")
    assert handle.poll() is None

    handle.terminate()

    assert finish(handle) == 143
    assert marker.read_text() == "terminated"


def test_a_command_ignoring_sigterm_is_killed_after_the_tasks_grace_period(executor, tmp_path):
    pid_file = tmp_path / "pid"
    body = """
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(120)
    """
    handle = executor.start(job(), py(body, pid_file), {}, tmp_path / "out.log")
    wait_for(lambda: pid_file.is_file() and pid_file.read_text() != "", "the command start")

    handle.terminate()

    assert finish(handle) == -signal.SIGKILL
    assert gone(int(pid_file.read_text()))


def test_kill_cancels_the_task_and_leaves_no_process_behind(executor, tmp_path):
    pid_file = tmp_path / "pid"
    body = """
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(120)
    """
    handle = executor.start(job(), py(body, pid_file), {}, tmp_path / "out.log")
    wait_for(lambda: pid_file.is_file() and pid_file.read_text() != "", "the command start")

    handle.kill()

    assert finish(handle) == -signal.SIGKILL
    pid = int(pid_file.read_text())
    wait_for(lambda: gone(pid), f"process {pid} gone after the kill")


def test_kill_after_terminate_stops_a_command_still_in_the_tasks_grace_period(
    fake_gpu_ray, tmp_path
):
    # The worker's own sequence: SIGTERM, its grace period, then kill (before the task's).
    patient = RayExecutor(grace_seconds=300)
    pid_file = tmp_path / "pid"
    body = """
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: open(sys.argv[1] + ".term", "w").close())
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(120)
    """
    handle = patient.start(job(), py(body, pid_file), {}, tmp_path / "out.log")
    wait_for(lambda: pid_file.is_file() and pid_file.read_text() != "", "the command start")
    handle.terminate()
    wait_for(lambda: Path(f"{pid_file}.term").exists(), "the SIGTERM reach the command")
    assert handle.poll() is None

    handle.kill()

    assert finish(handle) == -signal.SIGKILL
    pid = int(pid_file.read_text())
    wait_for(lambda: gone(pid), f"process {pid} gone after the kill")


@pytest.mark.parametrize("too_much", ["cpus", "memory"])
def test_a_job_asking_more_than_the_cluster_has_stays_pending(executor, tmp_path, too_much):
    have = executor.inventory()
    big = (
        job(1, cpus=have.cpus + 1) if too_much == "cpus" else job(1, cpus=1, memory=have.memory * 2)
    )
    pending = executor.start(big, py("pass"), {}, tmp_path / "big.log")
    # A job that fits, started after it, runs to its end meanwhile: Ray holds the big one.
    small = executor.start(job(2), py("pass"), {}, tmp_path / "small.log")
    assert finish(small) == 0

    assert pending.poll() is None

    pending.kill()
    assert finish(pending) == -signal.SIGKILL
    assert not (tmp_path / "big.log").exists()  # it never ran


# -- through the worker ----------------------------------------------------------------


def test_a_worker_on_ray_runs_a_submitted_gpu_job_to_success(
    sqlite_env, fake_gpu_ray, make_queue, turn_until, tmp_path
):
    from keel.jobs.worker import Worker, job_log

    make_queue("ray", {"gpu:a100": 4, "cpus": 2, "memory": "8Gi"})
    jobs = keel.Client().jobs
    seen = tmp_path / "env.json"
    submitted = jobs.submit(py(ENV_DUMP, seen), queue="ray", gpus=2, gpu_type="a100")
    worker = Worker(
        keel.Client(),
        RayExecutor(),
        pool="ray",
        grace_seconds=0.5,
        poll_seconds=0.1,
        sample_seconds=0.1,
    )
    try:
        turn_until(worker, lambda: jobs.get(submitted.id).state == "succeeded")
    finally:
        worker.shutdown()

    done = jobs.get(submitted.id)
    assert (done.pool, done.exit_code, done.assigned_gpu_type) == ("ray", 0, "a100")
    assert [p.executor for p in jobs.pools() if p.name == "ray"] == ["ray"]
    got = json.loads(seen.read_text())
    assert got["KEEL_JOB_ID"] == str(submitted.id)
    assert len(got["CUDA_VISIBLE_DEVICES"].split(",")) == 2
    assert "exited with code 0" in job_log(keel.Client(), done)
