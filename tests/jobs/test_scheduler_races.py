"""Schedulers that race, stall or die: the lease and its fence keep admission exact.

Several scheduler processes (``_race_scheduler.py``) run passes on one store at once
with a lease short enough that they keep taking it from each other, often mid-pass;
one is killed with SIGKILL while it admits. Afterwards the store's own history (the
jobs' events) must show that no quota, cohort or device was ever over-committed, and
that every job was admitted exactly once, by one scheduler.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import keel
from _support.cli import keel_environ
from keel.errors import Conflict
from keel.jobs import Inventory, Job, JobEvent, JobStore, Queue, Scheduler, Step
from keel.jobs.entities import ADMITTED, QUEUED, RUNNING, SUCCEEDED
from keel.jobs.resources import MEMORY, parse_memory
from keel.store.lease import new_owner
from keel.store.sql import now_ms

SCRIPT = Path(__file__).with_name("_race_scheduler.py")
INVENTORY: dict[str, Any] = {
    "cpus": 32,
    "memory": "256Gi",
    "gpus": {"a100": 4, "l4": 2},
    "gpu_memory": {"a100": "80Gi", "l4": "24Gi"},
}
_EPS = 1e-9


def racer(settings: Any, *args: str) -> subprocess.Popen[str]:
    """A scheduler process on the test's store (see ``_race_scheduler.py``)."""
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=keel_environ(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_run(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def add_pool(jobs: JobStore, name: str, inventory: dict[str, Any] | None = None) -> None:
    jobs.heartbeat(name, "local", Inventory.from_dict(inventory or INVENTORY), f"worker-{name}")


def admissions(jobs: JobStore, job: Job) -> list[JobEvent]:
    """The job's admissions (queued -> admitted; admitted -> admitted is a stop request)."""
    return [e for e in jobs.events(job.id) if is_admission(e)]


def is_admission(event: JobEvent) -> bool:
    return (event.from_state, event.to_state) == (QUEUED, ADMITTED)


# -- the lease ---------------------------------------------------------------------------


@pytest.fixture
def jobs(keel_env) -> JobStore:
    return keel.Client().jobs


@pytest.fixture
def waiting(jobs) -> list[Job]:
    """Three queued 1-GPU jobs, a pool and a queue with room for all of them."""
    add_pool(jobs, "p1")
    jobs.apply_queue({"name": "team-a", "quotas": {"gpu:a100": 4, "cpus": 32}})
    return [jobs.submit(["python", "train.py"], queue="team-a", gpus=1) for _ in range(3)]


def test_a_scheduler_whose_lease_ran_out_before_it_admits_admits_nothing(jobs, waiting, caplog):
    caplog.set_level(logging.WARNING, logger="keel.jobs.scheduler")
    # A lease that has already run out when the first admission is written: what a
    # scheduler that stalled mid-pass for longer than its lease sees.
    stalled = Scheduler(owner="stalled", lease_seconds=-1.0)

    assert stalled.schedule() == []

    assert [jobs.get(j.id).state for j in waiting] == [QUEUED] * 3
    assert all(admissions(jobs, j) == [] for j in waiting)
    assert "scheduler stalled lost its lease on 'default'; this pass stops" in caplog.text
    successor = Scheduler(owner="successor")  # the lease ran out: anyone may take it
    assert [d.action for d in successor.schedule()] == ["admit"] * 3
    assert all(e.actor == "successor" for j in waiting for e in admissions(jobs, j))


def test_a_live_holder_keeps_other_schedulers_out_until_it_releases(jobs, waiting):
    holder = Scheduler(owner=new_owner())  # this process: alive, so never taken over early
    other = Scheduler(owner=new_owner())
    assert holder.acquire() is True

    assert other.acquire() is False
    assert other.schedule() == []
    assert [jobs.get(j.id).state for j in waiting] == [QUEUED] * 3

    holder.release()
    assert len(other.schedule()) == 3
    assert holder.acquire() is False  # now the other one holds it


def test_a_scheduler_whose_lease_was_taken_over_admits_nothing(jobs, waiting):
    old = Scheduler(owner="old", lease_seconds=0.2)
    assert old.acquire() is True
    time.sleep(0.3)  # its lease runs out without a renewal
    new = Scheduler(owner="new")
    assert new.acquire() is True

    assert old.schedule() == []
    assert old.acquire() is False
    assert [jobs.get(j.id).state for j in waiting] == [QUEUED] * 3
    assert len(new.schedule()) == 3


# -- racing schedulers -------------------------------------------------------------------


def submit_mix(jobs: JobStore, count: int, rng: random.Random) -> list[Job]:
    """Jobs of every shape: 1-3 a100s, 1-2 l4s or any type, CPUs and memory, all priorities."""
    submitted = []
    for _ in range(count):
        queue = rng.choice(["qa", "qb", "solo"])
        gpu_type = rng.choice(["a100", "a100", "l4", None])
        gpus = rng.randint(1, 3 if gpu_type == "a100" else 2)
        submitted.append(
            jobs.submit(
                ["python", "train.py"],
                queue=queue,
                gpus=gpus,
                gpu_type=gpu_type,
                cpus=rng.choice([1, 2, 4, 8]),
                memory=rng.choice(["1Gi", "16Gi", "64Gi"]),
                priority=rng.choice(["low", "normal", "high"]),
            )
        )
    return submitted


def play_worker(jobs: JobStore, total: int, rng: random.Random, seconds: float) -> None:
    """Start admitted jobs and end running ones at random until every job has ended.

    It does not stop a job a scheduler asked to preempt: the job ends on its own a little
    later, as a job can before its worker gets to it; so each job is admitted once.
    """
    deadline = time.monotonic() + seconds
    beat = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() - beat > 1.0:
            add_pool(jobs, "p1")
            add_pool(jobs, "p2")
            beat = time.monotonic()
        active = jobs.list(states=[ADMITTED, RUNNING], limit=None)
        for job in active:
            try:
                if job.state == ADMITTED:
                    jobs.transition(job, Step(RUNNING, "started", {"started_at": now_ms()}))
                elif rng.random() < 0.4:
                    jobs.transition(job, Step(SUCCEEDED, "exited 0", {"ended_at": now_ms()}))
            except Conflict:  # asked to stop since it was read: read it again next turn
                continue
        if len(jobs.list(states=[SUCCEEDED], limit=None)) == total:
            return
        time.sleep(0.01)
    pytest.fail("the racing schedulers did not admit every job in time")


def replay(jobs: JobStore, submitted: list[Job]) -> None:
    """Replay admissions and ends in the order the store wrote them; check each admission.

    After each admission: a pool's jobs hold distinct devices it has, and no more CPUs or
    memory than it has; a queue holds no more than its quota plus its borrowing limit,
    within its quota when the job was not admitted on borrowed quota, and its cohort
    within the cohort's quota when it was.
    """
    final = {j.id: jobs.get(j.id) for j in submitted}
    queues = {q.name: q for q in jobs.list_queues()}
    inventories = {p.name: p.inventory for p in jobs.pools()}
    events = sorted((e for j in submitted for e in jobs.events(j.id)), key=lambda e: e.id)
    active: dict[int, Job] = {}
    for event in events:
        job = final[event.job_id]
        if event.to_state == SUCCEEDED:
            del active[job.id]
        elif is_admission(event):
            active[job.id] = job
            check_pools(active, inventories, job)
            check_quotas(active, queues, job)


def check_pools(active: dict[int, Job], inventories: dict[str, Inventory], job: Job) -> None:
    on_pool = [j for j in active.values() if j.pool == job.pool]
    inventory = inventories[str(job.pool)]
    devices = [d for j in on_pool for d in j.devices]
    assert len(devices) == len(set(devices)), f"job {job.id}: a device given twice"
    assert set(job.devices) <= set(inventory.gpus[str(job.assigned_gpu_type)])
    assert len(job.devices) == job.request.gpus
    assert sum(j.request.cpus for j in on_pool) <= inventory.cpus + _EPS
    assert sum(j.request.memory for j in on_pool) <= inventory.memory


def check_quotas(active: dict[int, Job], queues: dict[str, Queue], job: Job) -> None:
    queue = queues[job.queue]
    usage: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for other in active.values():
        for resource, amount in other.vector().items():
            usage[other.queue][resource] += amount
    members = [q for q in queues.values() if queue.cohort and q.cohort == queue.cohort]
    for resource, amount in job.vector().items():
        if amount <= 0:
            continue
        used = usage[queue.name][resource]
        nominal = queue.quotas.get(resource, 0.0)
        limit = (queue.borrowing_limit or {}).get(resource, float("inf"))
        if not job.borrowed:
            assert used <= nominal + _EPS, f"job {job.id}: queue {queue.name} over its {resource}"
            continue
        assert queue.cohort is not None, f"job {job.id} borrowed outside any cohort"
        assert used <= nominal + limit + _EPS, f"job {job.id}: borrowed beyond the limit"
        if used > nominal + _EPS:
            cohort_used = sum(usage[q.name][resource] for q in members)
            cohort_nominal = sum(q.quotas.get(resource, 0.0) for q in members)
            assert cohort_used <= cohort_nominal + _EPS, f"job {job.id}: cohort over {resource}"


@pytest.mark.slow
def test_racing_scheduler_processes_never_overcommit_and_admit_each_job_once(
    keel_env, jobs, tmp_path
):
    add_pool(jobs, "p1")
    add_pool(jobs, "p2")
    room = {"cpus": 32, "memory": "256Gi"}
    # 9 a100s and 5 l4s of quota for 8 and 4 devices: quota, cohort and devices all bind.
    jobs.apply_queue(
        {"name": "qa", "cohort": "lab", "quotas": {"gpu:a100": 4, "gpu:l4": 1, **room}}
    )
    jobs.apply_queue(
        {
            "name": "qb",
            "cohort": "lab",
            "quotas": {"gpu:a100": 2, "gpu:l4": 1, **room},
            "borrowing_limit": {"gpu:a100": 1, "cpus": 8},
        }
    )
    jobs.apply_queue({"name": "solo", "quotas": {"gpu:a100": 3, "gpu:l4": 3, **room}})
    rng = random.Random(20)
    submitted = submit_mix(jobs, 60, rng)
    stop = tmp_path / "stop"
    owners = [f"racer-{n}" for n in range(3)]
    # A lease of 20 ms (30 on PostgreSQL, whose passes are slower) with pauses of up to
    # 80 ms between passes: they take it from each other all the time, and many a pass
    # outlives its lease and loses it mid-pass.
    lease = 0.03 if keel_env.store_url.startswith("postgresql") else 0.02
    procs = [
        racer(
            keel_env,
            "--owner",
            owner,
            "--lease-seconds",
            str(lease),
            "--max-admissions",
            "4",
            "--pause",
            "0.08",
            "--seed",
            str(n),
            "--stop-file",
            str(stop),
        )
        for n, owner in enumerate(owners)
    ]
    try:
        play_worker(jobs, len(submitted), rng, seconds=120)
    finally:
        stop.touch()
        results = [finish_run(p) for p in procs]

    by_scheduler = [r["admitted"] for r in results]
    assert sorted(i for ids in by_scheduler for i in ids) == sorted(j.id for j in submitted)
    for job in submitted:
        admitted = admissions(jobs, job)
        assert len(admitted) == 1, f"job {job.id} admitted {len(admitted)} times"
        assert admitted[0].actor in owners
    replay(jobs, submitted)


# -- a scheduler killed mid-admission ------------------------------------------------------------


def admitted_more_than(jobs: JobStore, count: int) -> bool:
    return len(jobs.list(states=[ADMITTED], limit=count + 1)) > count


@pytest.mark.slow
def test_a_scheduler_killed_mid_admission_leaves_each_job_admitted_once_or_queued(keel_env, jobs):
    big = {"cpus": 4096, "memory": "64Ti", "gpus": {"a100": 1024}}
    add_pool(jobs, "big", big)
    jobs.apply_queue({"name": "bulk", "quotas": {"gpu:a100": 1024, "cpus": 4096, MEMORY: "64Ti"}})
    total = 1500
    submitted = [
        jobs.submit(["python", "train.py"], queue="bulk", gpus=n % 2, cpus=1 + n % 3)
        for n in range(total)
    ]
    ids = sorted(j.id for j in submitted)
    rng = random.Random()
    for _ in range(3):  # each round: a new scheduler takes over from the dead one and is killed
        before = len(jobs.list(states=[ADMITTED], limit=None))
        proc = racer(keel_env)
        deadline = time.monotonic() + 60
        while not admitted_more_than(jobs, before):  # it holds the lease and is admitting
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the scheduler process admitted nothing"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.2))
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)  # reaped: its pid no longer runs on this host

    rows = jobs.list(limit=None)
    assert sorted(j.id for j in rows) == ids  # none lost, none duplicated
    states = {j.id: j.state for j in rows}
    assert set(states.values()) == {QUEUED, ADMITTED}, "it admitted every job before it was killed"
    for job in rows:
        events = jobs.events(job.id)
        assert events[0].to_state == QUEUED
        if job.state == QUEUED:
            assert len(events) == 1 and job.pool is None and job.devices == []
        else:
            assert [(e.from_state, e.to_state) for e in events] == [
                (None, QUEUED),
                (QUEUED, ADMITTED),
            ]
            assert job.pool == "big" and len(job.devices) == job.request.gpus

    # The last holder died holding a 30-second lease: a successor on this host takes it now.
    successor = Scheduler(lease_seconds=30.0)
    assert successor.acquire() is True
    decisions = successor.schedule()
    left = sorted(i for i, state in states.items() if state == QUEUED)
    assert sorted(d.job_id for d in decisions if d.action == "admit") == left
    rows = jobs.list(limit=None)
    assert sorted(j.id for j in rows) == ids and {j.state for j in rows} == {ADMITTED}
    for job_id in left:
        assert len(admissions(jobs, jobs.get(job_id))) == 1
    devices = [d for j in rows for d in j.devices]
    assert len(devices) == len(set(devices)) == total // 2
    assert sum(j.request.cpus for j in rows) <= big["cpus"]
    assert parse_memory(big["memory"]) >= sum(j.request.memory for j in rows)
