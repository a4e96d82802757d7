"""``keel jobs`` as users run it: the installed command in a child process, on SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import keel
from keel.jobs import Inventory

QUEUE = """\
name: team-a
team: vision
cohort: research
quotas:
  gpu:a100: 2
  cpus: 16
  memory: 64Gi
gpu_hours_per_day: 40
"""


@pytest.fixture
def queue_file(tmp_path: Path) -> Path:
    path = tmp_path / "team-a.yaml"
    path.write_text(QUEUE)
    return path


def _json(result) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _one_line_error(result, match: str) -> None:
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert match in result.stderr, result.stderr


def test_a_queue_applied_from_a_yaml_file_is_listed_and_shown(sqlite_env, run_keel, queue_file):
    applied = run_keel("jobs", "queues", "apply", str(queue_file), settings=sqlite_env)
    assert applied.returncode == 0, applied.stderr
    assert "Applied queue team-a (revision 1)" in applied.stdout
    [listed] = _json(run_keel("jobs", "queues", "list", "--json", settings=sqlite_env))
    assert listed["quotas"] == {"gpu:a100": 2.0, "cpus": 16.0, "memory": 64 * 1024**3}
    assert (listed["team"], listed["cohort"], listed["gpu_hours_per_day"]) == (
        "vision",
        "research",
        40.0,
    )
    shown = run_keel("jobs", "queues", "show", "team-a", settings=sqlite_env)
    assert "gpu:a100 2, cpus 16, memory 64Gi" in shown.stdout
    _one_line_error(
        run_keel("jobs", "queues", "show", "team-b", settings=sqlite_env),
        "no job queue 'team-b'; queues: team-a",
    )


def test_a_pipeline_and_a_command_are_submitted_listed_and_shown_with_events(
    sqlite_env, run_keel, queue_file
):
    run_keel("jobs", "queues", "apply", str(queue_file), settings=sqlite_env, check=True)
    pipeline = _json(
        run_keel(
            "jobs", "submit", "pipelines.train:train", "--queue", "team-a", "--gpus", "1",
            "--gpu-type", "a100", "--priority", "high", "-p", "lr=0.01", "-p", "model=rf",
            "--timeout", "600", "--retries", "2", "--json",
            settings=sqlite_env, env={"KEEL_USER": "alice"},
        )
    )  # fmt: skip
    assert (pipeline["kind"], pipeline["target"], pipeline["state"]) == (
        "pipeline",
        "pipelines.train:train",
        "queued",
    )
    assert pipeline["params"] == {"lr": 0.01, "model": "rf"}
    assert (pipeline["gpus"], pipeline["gpu_type"], pipeline["priority"]) == (1, "a100", "high")
    assert (pipeline["timeout_s"], pipeline["max_retries"]) == (600.0, 2)
    assert pipeline["submitted_by"] == "alice"
    # after --, even a lone word is a command, and its own options stay its own
    command = run_keel(
        "jobs", "submit", "--queue", "team-a", "--cpus", "2", "--memory", "4Gi", "--name",
        "train-cmd", "--", "python", "train.py", "--epochs", "3",
        settings=sqlite_env,
    )  # fmt: skip
    assert command.returncode == 0, command.stderr
    assert "Submitted job 2 (queued) to queue team-a: train-cmd" in command.stdout
    lone = _json(
        run_keel(
            "jobs", "submit", "--queue", "team-a", "--json", "--", "hostname", settings=sqlite_env
        )
    )
    assert (lone["kind"], lone["target"]) == ("command", ["hostname"])

    listed = _json(run_keel("jobs", "list", "--json", settings=sqlite_env))
    assert [j["id"] for j in listed] == [3, 2, 1]  # newest first
    high = _json(run_keel("jobs", "list", "--json", "--limit", "1", settings=sqlite_env))
    assert [j["id"] for j in high] == [3]
    shown = _json(run_keel("jobs", "show", "2", "--json", settings=sqlite_env))
    assert shown["target"] == ["python", "train.py", "--epochs", "3"]
    assert (shown["cpus"], shown["memory"]) == (2.0, 4 * 1024**3)
    [event] = shown["events"]
    assert (event["from_state"], event["to_state"]) == (None, "queued")
    assert "asking for 2 cpus, 4Gi" in event["reason"]
    table = run_keel("jobs", "show", "1", settings=sqlite_env)
    assert "pipelines.train:train" in table.stdout and '{"lr": 0.01, "model": "rf"}' in table.stdout


def test_why_names_what_a_job_waits_for_and_cancel_ends_a_queued_job(
    sqlite_env, run_keel, queue_file
):
    run_keel("jobs", "queues", "apply", str(queue_file), settings=sqlite_env, check=True)
    for _ in range(2):
        run_keel(
            "jobs", "submit", "--queue", "team-a", "--", "true", settings=sqlite_env, check=True
        )
    why = _json(run_keel("jobs", "why", "2", "--json", settings=sqlite_env))
    assert why["summary"] == "job 2 is queued in team-a, behind 1 job(s)"
    assert why["head"] == 1
    assert any("no worker is running" in r for r in why["reasons"])
    text = run_keel("jobs", "why", "1", settings=sqlite_env)
    assert "job 1 is queued in team-a, at the head" in text.stdout

    cancelled = run_keel("jobs", "cancel", "1", "--reason", "not needed", settings=sqlite_env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "Job 1 is cancelled" in cancelled.stdout
    shown = _json(run_keel("jobs", "show", "1", "--json", settings=sqlite_env))
    assert (shown["state"], shown["reason"]) == ("cancelled", "not needed")
    assert _json(run_keel("jobs", "why", "2", "--json", settings=sqlite_env))["head"] is None
    _one_line_error(
        run_keel("jobs", "cancel", "1", settings=sqlite_env), "job 1 has already cancelled"
    )
    states = _json(run_keel("jobs", "list", "--state", "queued", "--json", settings=sqlite_env))
    assert [j["id"] for j in states] == [2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--queue", "team-b", "--", "true"), "no job queue 'team-b'; queues: team-a"),
        (("--queue", "team-a", "--cpus", "-1", "--", "true"), "cpus must be 0 or more, got -1.0"),
        (
            ("--queue", "team-a", "--gpus", "5", "--", "true"),
            "this job can never run: queue team-a can hold at most what its quota and "
            "borrowing allow (gpu:a100 5 > 2)",
        ),
        (("--queue", "team-a", "--memory", "lots", "--", "true"), "memory must be a size such as"),
        (("--queue", "team-a", "--priority", "urgent", "--", "true"), "priority must be one of"),
        (("train.py", "--queue", "team-a"), "a pipeline target is module:attr"),
        (("--queue", "team-a"), "give a pipeline (module:attr) or a command after --"),
    ],
    ids=[
        "unknown-queue",
        "negative-cpus",
        "can-never-fit",
        "bad-memory",
        "bad-priority",
        "not-a-pipeline",
        "nothing",
    ],
)
def test_a_bad_submission_is_refused_in_one_line_and_queues_nothing(
    sqlite_env, run_keel, queue_file, args, message
):
    run_keel("jobs", "queues", "apply", str(queue_file), settings=sqlite_env, check=True)
    _one_line_error(run_keel("jobs", "submit", *args, settings=sqlite_env), message)
    assert keel.Client().jobs.list() == []


def test_schedule_once_admits_a_job_when_a_worker_pool_is_live(sqlite_env, run_keel, queue_file):
    run_keel("jobs", "queues", "apply", str(queue_file), settings=sqlite_env, check=True)
    run_keel(
        "jobs", "submit", "--queue", "team-a", "--gpus", "2", "--cpus", "4", "--", "true",
        settings=sqlite_env, check=True,
    )  # fmt: skip
    idle = run_keel("jobs", "schedule", "--once", settings=sqlite_env)
    assert "job 1: wait — no worker is running" in idle.stdout
    inventory = Inventory.from_dict(
        {"cpus": 8, "memory": "64Gi", "gpus": {"a100": 4, "l4": 2}, "gpu_memory": {"a100": "80Gi"}}
    )
    keel.Client().jobs.heartbeat("box-1", "local", inventory, owner="test-worker")

    [decision] = _json(run_keel("jobs", "schedule", "--once", "--json", settings=sqlite_env))
    assert (decision["job_id"], decision["action"], decision["pool"]) == (1, "admit", "box-1")
    assert (decision["gpu_type"], decision["devices"]) == ("a100", [0, 1])
    job = keel.Client().jobs.get(1)
    assert (job.state, job.pool, job.devices) == ("admitted", "box-1", [0, 1])
    why = _json(run_keel("jobs", "why", "1", "--json", settings=sqlite_env))
    assert why["state"] == "admitted"
    assert "it holds 2xa100, 4 cpus on pool box-1, a100 devices [0, 1]" in why["reasons"]
    again = run_keel("jobs", "schedule", "--once", settings=sqlite_env)
    assert again.returncode == 0 and "Nothing to decide" in again.stdout


def test_prices_are_set_and_listed_and_the_report_groups_jobs(sqlite_env, run_keel, queue_file):
    run_keel("jobs", "queues", "apply", str(queue_file), settings=sqlite_env, check=True)
    added = run_keel(
        "jobs", "prices", "set", "gpu:a100", "2.5", "--starts-at", "2026-01-01", settings=sqlite_env
    )
    assert added.returncode == 0, added.stderr
    assert "gpu:a100: $2.5 per hour from 2026-01-01T00:00:00Z" in added.stdout
    [price] = _json(run_keel("jobs", "prices", "list", "--json", settings=sqlite_env))
    assert (price["resource"], price["per_hour"], price["starts_at"]) == (
        "gpu:a100",
        2.5,
        1_767_225_600_000,
    )
    _one_line_error(
        run_keel("jobs", "prices", "set", "gpus", "1", settings=sqlite_env),
        "a priced resource is gpu:<type>",
    )
    run_keel("jobs", "submit", "--queue", "team-a", "--", "true", settings=sqlite_env, check=True)
    report = _json(run_keel("jobs", "report", "--by", "team", "--json", settings=sqlite_env))
    assert report["by"] == "team"
    [row] = report["rows"]
    assert (row["group"], row["jobs"], row["gpu_hours_requested"]) == ("vision", 1, 0.0)
    _one_line_error(
        run_keel("jobs", "report", "--by", "user", settings=sqlite_env),
        "a jobs report groups by one of queue, team, model, got 'user'",
    )


def test_logs_print_a_jobs_uploaded_output(sqlite_env, run_keel, queue_file):
    run_keel("jobs", "queues", "apply", str(queue_file), settings=sqlite_env, check=True)
    client = keel.Client()
    job = client.jobs.submit(["python", "train.py"], queue="team-a")
    none = run_keel("jobs", "logs", str(job.id), settings=sqlite_env)
    assert (none.returncode, none.stdout) == (0, "")
    assert none.stderr.strip() == f"job {job.id} has no output yet (queued)"
    blob = client.artifacts.put_bytes(b"epoch 1 loss 0.5\nepoch 2 loss 0.25\n")
    client.jobs.record(job, logs_digest=blob.digest)
    logs = run_keel("jobs", "logs", str(job.id), settings=sqlite_env)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "epoch 1 loss 0.5\nepoch 2 loss 0.25\n"
    client.jobs.cancel(job.id)  # ended: --follow prints the rest and returns
    followed = run_keel("jobs", "logs", str(job.id), "--follow", settings=sqlite_env)
    assert followed.stdout == "epoch 1 loss 0.5\nepoch 2 loss 0.25\n"


def test_reading_commands_refuse_a_folder_without_a_keel_home(run_keel, tmp_path):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    for args in (("jobs", "list"), ("jobs", "queues", "list"), ("jobs", "why", "1")):
        _one_line_error(run_keel(*args, cwd=empty), "no Keel home here")
    assert not (empty / ".keel").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--executor", "slurm"), "--executor must be local or ray, got 'slurm'"),
        (("--executor", "ray", "--inventory", "x.yaml"), "--inventory is for the local executor"),
        (("--grace", "0"), "--grace must be a positive number of seconds, got 0.0"),
        (("--inventory", "missing.yaml"), "missing.yaml"),
    ],
    ids=["unknown-executor", "ray-with-inventory", "no-grace", "missing-inventory"],
)
def test_a_worker_refuses_bad_options_before_it_starts(sqlite_env, run_keel, args, message):
    result = run_keel("jobs", "worker", "--max-seconds", "1", *args, settings=sqlite_env)
    _one_line_error(result, message)
    assert "Worker on pool" not in result.stdout
    assert keel.Client().jobs.pools() == []


@pytest.mark.slow
def test_a_worker_runs_an_admitted_job_on_its_gpus_and_stops_on_sigterm(
    sqlite_env, run_keel, queue_file, inventory_file, recorded_gpus
):
    import signal
    import subprocess
    import time

    from _support.cli import keel_command, keel_environ

    run_keel("jobs", "queues", "apply", str(queue_file), settings=sqlite_env, check=True)
    code = "import os; print('devices', os.environ['CUDA_VISIBLE_DEVICES'])"
    run_keel(
        "jobs", "submit", "--queue", "team-a", "--gpus", "1", "--", "python", "-c", code,
        settings=sqlite_env, check=True,
    )  # fmt: skip
    worker = subprocess.Popen(
        keel_command(
            "jobs", "worker", "--pool", "box-1", "--inventory", str(inventory_file),
            "--gpu-samples", str(recorded_gpus), "--poll", "0.2", "--sample", "0.2",
        ),
        env=keel_environ(sqlite_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while keel.Client().jobs.get(1).state != "succeeded" and time.monotonic() < deadline:
            assert worker.poll() is None, worker.communicate()
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, errors = worker.communicate(timeout=60)
    assert worker.returncode == 0, errors
    assert "Worker on pool box-1 (local): 8 cpus, memory 64Gi, 4xa100, 2xl4" in out
    assert "Worker on pool box-1 stopped" in out
    job = keel.Client().jobs.get(1)
    assert (job.state, job.pool, job.assigned_gpu_type, job.devices) == (
        "succeeded",
        "box-1",
        "a100",
        [0],
    )
    logs = run_keel("jobs", "logs", "1", settings=sqlite_env)
    assert "devices 0\n" in logs.stdout
