"""The scheduler's admission rules, on real SQLite and PostgreSQL, with a virtual inventory.

No worker runs here: a pool is registered through :meth:`JobStore.heartbeat` with a
declared inventory (4 x a100 and 2 x l4), and the test plays the worker's part by
moving jobs through their later states with :meth:`JobStore.transition` (admitted ->
running -> succeeded frees what a job holds; running -> preempted -> queued is what
a worker does to a victim it stopped).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import keel
from keel.errors import InvalidInput, NotFound
from keel.jobs import Decision, Inventory, Job, JobStore, Scheduler, Step
from keel.jobs.entities import ADMITTED, FAILED, PREEMPTED, QUEUED, RUNNING, SUCCEEDED
from keel.store.sql import now_ms

#: The virtual machine every test schedules on (a stand-in for hardware we do not have).
INVENTORY: dict[str, Any] = {
    "cpus": 32,
    "memory": "256Gi",
    "gpus": {"a100": 4, "l4": 2},
    "gpu_memory": {"a100": "80Gi", "l4": "24Gi"},
}
#: CPU and memory quota of every test queue: enough that GPUs are what binds.
ROOM = {"cpus": 32, "memory": "256Gi"}
HOUR_MS = 3_600_000


@pytest.fixture
def jobs(keel_env) -> JobStore:
    """The jobs part of a client on the parametrized store (SQLite, then PostgreSQL)."""
    return keel.Client().jobs


def add_pool(jobs: JobStore, name: str = "p1", inventory: dict[str, Any] | None = None) -> None:
    jobs.heartbeat(name, "local", Inventory.from_dict(inventory or INVENTORY), f"worker-{name}")


def add_queue(jobs: JobStore, name: str, gpus: dict[str, int], **fields: Any) -> None:
    quotas = {f"gpu:{kind}": count for kind, count in gpus.items()}
    jobs.apply_queue({"name": name, "quotas": {**quotas, **ROOM}, **fields})


def submit(
    jobs: JobStore, queue: str, gpus: int = 1, gpu_type: str | None = "a100", **options: Any
) -> Job:
    return jobs.submit(
        ["python", "train.py"],
        queue=queue,
        gpus=gpus,
        gpu_type=gpu_type if gpus else None,
        **options,
    )


def scheduler(**options: Any) -> Scheduler:
    # One owner for every pass of a test: a second owner would wait for the first's lease.
    return Scheduler(owner="test-scheduler", **options)


def admitted(decisions: list[Decision]) -> list[int]:
    return [d.job_id for d in decisions if d.action == "admit"]


def only(decisions: list[Decision], job: Job) -> Decision:
    found = [d for d in decisions if d.job_id == job.id]
    assert len(found) == 1, decisions
    return found[0]


def start(jobs: JobStore, job: Job, started_at: int | None = None) -> Job:
    """What a worker does when it starts an admitted job."""
    return jobs.transition(
        jobs.get(job.id), Step(RUNNING, "started", {"started_at": started_at or now_ms()})
    )


def finish(jobs: JobStore, job: Job, ended_at: int | None = None) -> Job:
    """What a worker does when a running job exits 0: it frees what the job held."""
    return jobs.transition(
        jobs.get(job.id),
        Step(SUCCEEDED, "exited 0", {"ended_at": ended_at or now_ms(), "exit_code": 0}),
    )


def run_to_end(jobs: JobStore, job: Job) -> Job:
    return finish(jobs, start(jobs, job))


def stop_preempted(jobs: JobStore, job: Job) -> Job:
    """What a worker does to a victim it was asked to stop: preempted, then queued again."""
    current = jobs.get(job.id)
    assert current.preempt_requested_at is not None
    cleared = {
        "pool": None,
        "devices": [],
        "assigned_gpu_type": None,
        "borrowed": False,
        "preempt_requested_at": None,
    }
    return jobs.transition(
        current,
        Step(PREEMPTED, "stopped by its worker (SIGTERM)", {"ended_at": now_ms()}),
        Step(QUEUED, "requeued after preemption", cleared),
    )


def next_ms() -> None:
    """Wait for the clock's next millisecond, so two admissions get distinct times."""
    mark = now_ms()
    while now_ms() == mark:
        time.sleep(0.001)


# -- quota ----------------------------------------------------------------------------


def test_quota_admits_two_one_gpu_jobs_and_the_third_waits_naming_queue_and_gpu(jobs):
    add_pool(jobs)
    add_queue(jobs, "team-a", {"a100": 2})
    first, second, third = (submit(jobs, "team-a") for _ in range(3))

    decisions = scheduler().schedule()

    assert admitted(decisions) == [first.id, second.id]
    wait = only(decisions, third)
    assert wait.action == "wait"
    assert wait.reason == (
        "queue team-a has 2 of gpu:a100 as quota, 2 in use, and is in no cohort to borrow from"
    )
    held = [jobs.get(first.id), jobs.get(second.id)]
    assert [j.state for j in held] == [ADMITTED, ADMITTED]
    assert [j.assigned_gpu_type for j in held] == ["a100", "a100"]
    assert sorted(held[0].devices + held[1].devices) == [0, 1]
    assert jobs.get(third.id).state == QUEUED

    run_to_end(jobs, first)  # its GPU and its quota are free again
    assert admitted(scheduler().schedule()) == [third.id]
    assert jobs.get(third.id).devices == held[0].devices


def test_a_job_without_a_gpu_type_takes_the_queue_types_in_the_order_listed(jobs):
    add_pool(jobs)
    add_queue(jobs, "mixed", {"l4": 1, "a100": 2})  # l4 first: tried first
    any_gpu = [submit(jobs, "mixed", gpu_type=None) for _ in range(4)]

    decisions = scheduler().schedule()

    assert admitted(decisions) == [j.id for j in any_gpu[:3]]
    assert [jobs.get(j.id).assigned_gpu_type for j in any_gpu[:3]] == ["l4", "a100", "a100"]
    assert jobs.get(any_gpu[0].id).devices == [4]  # l4 devices are numbered after the a100s
    assert only(decisions, any_gpu[3]).reason == (
        "queue mixed has 1 of gpu:l4 as quota, 1 in use, and is in no cohort to borrow from; "
        "queue mixed has 2 of gpu:a100 as quota, 2 in use, and is in no cohort to borrow from"
    )


def test_max_admissions_stops_the_pass_early(jobs):
    add_pool(jobs)
    add_queue(jobs, "team-a", {"a100": 4})
    batch = [submit(jobs, "team-a") for _ in range(3)]

    assert admitted(scheduler().schedule(max_admissions=2)) == [batch[0].id, batch[1].id]
    assert jobs.get(batch[2].id).state == QUEUED
    assert admitted(scheduler().schedule()) == [batch[2].id]


# -- all or nothing, and FIFO ---------------------------------------------------------------


def test_a_job_never_starts_on_part_of_what_it_asks_for(jobs):
    add_pool(jobs)
    add_queue(jobs, "small", {"a100": 2})
    add_queue(jobs, "big", {"a100": 4})
    add_queue(jobs, "other", {"a100": 1})
    s1, s2 = submit(jobs, "small"), submit(jobs, "small")
    wide = submit(jobs, "big", gpus=3)
    narrow = submit(jobs, "big")  # fits the two free GPUs, but comes after its queue's head
    later = submit(jobs, "other")  # another queue: not held back by big's head

    decisions = scheduler().schedule()

    assert [(d.job_id, d.action) for d in decisions] == [
        (s1.id, "admit"),
        (s2.id, "admit"),
        (wide.id, "wait"),
        (later.id, "admit"),
    ]
    assert only(decisions, wide).reason == (
        "no live pool has room for 3xa100, 1 cpus (pool p1: 2 of 4 a100 free)"
    )
    for job in (wide, narrow):  # nothing was given to either, not even part of it
        stored = jobs.get(job.id)
        assert (stored.state, stored.pool, stored.devices) == (QUEUED, None, [])
    assert [e.to_state for e in jobs.events(wide.id)] == [QUEUED]

    run_to_end(jobs, s1)
    run_to_end(jobs, s2)
    decisions = scheduler().schedule()
    assert admitted(decisions) == [wide.id]
    assert sorted(jobs.get(wide.id).devices) == sorted(
        set(range(4)) - set(jobs.get(later.id).devices)
    )
    assert only(decisions, narrow).reason == (
        "no live pool has room for 1xa100, 1 cpus (pool p1: 0 of 4 a100 free)"
    )


def test_a_job_is_never_split_across_pools(jobs):
    add_pool(jobs, "p1", {"cpus": 32, "memory": "256Gi", "gpus": {"a100": 2}})
    add_pool(jobs, "p2", {"cpus": 32, "memory": "256Gi", "gpus": {"a100": 4}})
    add_queue(jobs, "team-a", {"a100": 6})
    add_queue(jobs, "team-b", {"a100": 2})
    holder = submit(jobs, "team-a", gpus=3)  # only p2 has 3
    assert admitted(scheduler().schedule()) == [holder.id]
    assert jobs.get(holder.id).pool == "p2"
    three = submit(jobs, "team-a", gpus=3)  # 3 GPUs are free in all, but no pool has 3
    pair = submit(jobs, "team-b", gpus=2)

    decisions = scheduler().schedule()

    assert only(decisions, three).reason == (
        "no live pool has room for 3xa100, 1 cpus "
        "(pool p1: 2 of 2 a100 free; pool p2: 1 of 4 a100 free)"
    )
    assert admitted(decisions) == [pair.id]
    assert (jobs.get(pair.id).pool, jobs.get(pair.id).devices) == ("p1", [0, 1])
    assert (jobs.get(three.id).pool, jobs.get(three.id).devices) == (None, [])


def test_cpu_and_memory_are_part_of_the_fit(jobs):
    add_pool(jobs)
    jobs.apply_queue({"name": "cpu", "quotas": {"cpus": 64, "memory": "512Gi"}})
    hog = jobs.submit(["python", "etl.py"], queue="cpu", cpus=20, memory="200Gi")
    more_cpu = jobs.submit(["python", "etl.py"], queue="cpu", cpus=16, memory="1Gi")

    decisions = scheduler().schedule()

    assert admitted(decisions) == [hog.id]
    assert only(decisions, more_cpu).reason == (
        "no live pool has room for 16 cpus, 1Gi (pool p1: 12 of 32 cpus free)"
    )
    run_to_end(jobs, hog)
    jobs.cancel(more_cpu.id)
    big = jobs.submit(["python", "etl.py"], queue="cpu", cpus=1, memory="200Gi")
    second = jobs.submit(["python", "etl.py"], queue="cpu", cpus=1, memory="100Gi")
    decisions = scheduler().schedule()
    assert admitted(decisions) == [big.id]
    assert only(decisions, second).reason == (
        "no live pool has room for 1 cpus, 100Gi (pool p1: 56Gi of 256Gi memory free)"
    )


# -- priorities -------------------------------------------------------------------------


def test_within_a_queue_high_goes_before_normal_before_low_then_arrival(jobs):
    add_pool(jobs)
    add_queue(jobs, "team-a", {"a100": 4})
    low1 = submit(jobs, "team-a", priority="low")
    normal1 = submit(jobs, "team-a", priority="normal")
    high = submit(jobs, "team-a", priority="high")
    normal2 = submit(jobs, "team-a", priority="normal")
    low2 = submit(jobs, "team-a", priority="low")

    decisions = scheduler().schedule()

    assert admitted(decisions) == [high.id, normal1.id, normal2.id, low1.id]
    assert only(decisions, low2).action == "wait"


def test_heads_of_queues_are_taken_by_priority_then_arrival(jobs):
    add_pool(jobs)
    for name in ("x", "y", "z"):
        add_queue(jobs, name, {"a100": 4})
    x_normal = submit(jobs, "x", priority="normal")
    y_low = submit(jobs, "y", priority="low")
    z_high = submit(jobs, "z", priority="high")
    y_high = submit(jobs, "y", priority="high")  # y's head: it outranks y's earlier low job
    x_low = submit(jobs, "x", priority="low")

    decisions = scheduler().schedule()

    assert admitted(decisions) == [z_high.id, y_high.id, x_normal.id, y_low.id]
    assert only(decisions, x_low).reason.startswith("no live pool has room for 1xa100")


def test_at_one_priority_a_head_within_its_quota_goes_before_an_earlier_borrower(jobs):
    add_pool(jobs, "p1", {"cpus": 32, "memory": "256Gi", "gpus": {"a100": 3}})
    add_queue(jobs, "owner", {"a100": 2}, cohort="shared")
    add_queue(jobs, "guest", {"a100": 2}, cohort="shared")
    for job in [submit(jobs, "guest"), submit(jobs, "guest")]:
        scheduler().schedule()
        start(jobs, job)
    borrower = submit(jobs, "guest")  # earlier, but it would borrow owner's quota
    lender = submit(jobs, "owner")  # later, within its own quota

    decisions = scheduler().schedule()

    # Otherwise the borrower takes the last GPU and the lender preempts it at once.
    assert [(d.job_id, d.action) for d in decisions] == [
        (lender.id, "admit"),
        (borrower.id, "wait"),
    ]
    assert preempt_requested(jobs) == []


# -- borrowing ----------------------------------------------------------------------------


def test_an_idle_queue_quota_is_borrowed_up_to_the_borrowing_limit(jobs):
    add_pool(jobs)
    add_queue(jobs, "lender", {"a100": 2}, cohort="research")
    add_queue(jobs, "borrower", {"a100": 1}, cohort="research", borrowing_limit={"gpu:a100": 1})
    own, lent, beyond = (submit(jobs, "borrower") for _ in range(3))

    decisions = scheduler().schedule()

    assert admitted(decisions) == [own.id, lent.id]
    assert only(decisions, own).borrowed is False
    assert only(decisions, lent).borrowed is True
    assert only(decisions, lent).reason.endswith("on quota borrowed from cohort research")
    assert (jobs.get(own.id).borrowed, jobs.get(lent.id).borrowed) == (False, True)
    assert only(decisions, beyond).reason == (
        "queue borrower would borrow 2 of gpu:a100, beyond its borrowing limit of 1 "
        "(quota 1, 2 in use)"
    )


def test_borrowing_takes_only_the_cohort_idle_quota(jobs):
    add_pool(jobs)
    add_queue(jobs, "lender", {"a100": 1}, cohort="research")
    add_queue(jobs, "borrower", {"a100": 1}, cohort="research")
    busy = submit(jobs, "lender")
    own = submit(jobs, "borrower")
    extra = submit(jobs, "borrower")

    decisions = scheduler().schedule()

    assert admitted(decisions) == [busy.id, own.id]
    assert only(decisions, extra).reason == (
        "queue borrower needs to borrow 1 of gpu:a100, but cohort research has 2 of its "
        "2 in use, 0 idle"
    )
    run_to_end(jobs, busy)  # the lender goes idle: its quota can be lent
    decisions = scheduler().schedule()
    assert admitted(decisions) == [extra.id]
    assert jobs.get(extra.id).borrowed is True


def test_a_job_of_any_gpu_type_borrows_a_type_only_its_cohort_has_quota_for(jobs):
    add_pool(jobs)
    add_queue(jobs, "gpu-team", {"l4": 2}, cohort="research")
    add_queue(jobs, "cpu-team", {}, cohort="research")
    job = submit(jobs, "cpu-team", gpu_type=None)

    decisions = scheduler().schedule()

    assert admitted(decisions) == [job.id]
    stored = jobs.get(job.id)
    assert (stored.assigned_gpu_type, stored.devices, stored.borrowed) == ("l4", [4], True)


def test_a_queue_in_no_cohort_cannot_borrow(jobs):
    add_pool(jobs)
    add_queue(jobs, "idle", {"a100": 3}, cohort="research")
    add_queue(jobs, "solo", {"a100": 1}, borrowing_limit={"gpu:a100": 3})
    first, second = submit(jobs, "solo"), submit(jobs, "solo")

    decisions = scheduler().schedule()

    assert admitted(decisions) == [first.id]
    assert only(decisions, second).reason == (
        "queue solo has 1 of gpu:a100 as quota, 1 in use, and is in no cohort to borrow from"
    )
    assert jobs.get(first.id).borrowed is False


# -- the GPU-hour budget --------------------------------------------------------------------


def test_a_queue_over_its_gpu_hours_per_day_waits_with_the_budget_in_the_reason(jobs):
    add_pool(jobs)
    add_queue(jobs, "budget", {"a100": 4}, gpu_hours_per_day=3)
    yesterday = submit(jobs, "budget", gpus=2)
    today = submit(jobs, "budget", gpus=2)
    assert admitted(scheduler().schedule()) == [yesterday.id, today.id]
    now = now_ms()
    # 8 GPU-hours that ended 26 hours ago: outside the trailing 24 hours, they do not count.
    finish(jobs, start(jobs, yesterday, now - 30 * HOUR_MS), now - 26 * HOUR_MS)
    finish(jobs, start(jobs, today, now - HOUR_MS), now)  # 2 GPU-hours

    long = submit(jobs, "budget", timeout=2 * 3600)  # its timeout counts: 2 + 2 > 3
    decisions = scheduler().schedule()
    assert only(decisions, long).reason == (
        "queue budget used 2.00 of its 3 GPU-hours in the last 24 hours "
        "plus up to 2.00 for this job's timeout"
    )
    jobs.cancel(long.id)

    short = submit(jobs, "budget")  # no timeout: 2 used of 3, it may start
    assert admitted(scheduler().schedule()) == [short.id]
    start(jobs, short, now_ms() - HOUR_MS * 3 // 2)  # still running, 1.5 hours in
    over = submit(jobs, "budget")
    decisions = scheduler().schedule()
    assert only(decisions, over).action == "wait"
    assert only(decisions, over).reason == (
        "queue budget used 3.50 of its 3 GPU-hours in the last 24 hours"
    )
    why = scheduler().why(over.id)
    assert "it: queue budget used 3.50 of its 3 GPU-hours in the last 24 hours" in why.reasons


def test_every_attempt_of_a_retried_or_preempted_job_counts_against_the_budget(jobs):
    add_pool(jobs)
    add_queue(jobs, "budget", {"a100": 4}, gpu_hours_per_day=4.5)
    job = submit(jobs, "budget", gpus=2, retries=1)
    assert admitted(scheduler().schedule()) == [job.id]
    now = now_ms()
    # attempt 1 fails after an hour on 2 GPUs and is queued again: 2 GPU-hours
    running = start(jobs, job, now - 3 * HOUR_MS)
    jobs.transition(
        running,
        Step(FAILED, "exited 1", {"ended_at": now - 2 * HOUR_MS, "exit_code": 1}),
        Step(QUEUED, "retried", {"pool": None, "devices": [], "assigned_gpu_type": None}),
    )
    assert admitted(scheduler().schedule()) == [job.id]
    # attempt 2 runs an hour and a half, is preempted and queued: 3 more
    running = start(jobs, job, now - 2 * HOUR_MS)
    jobs.transition(
        running,
        Step(PREEMPTED, "stopped", {"ended_at": now - HOUR_MS // 2}),
        Step(QUEUED, "requeued", {"pool": None, "devices": [], "assigned_gpu_type": None}),
    )
    decisions = scheduler().schedule()
    # the job row now holds attempt 2's times only (3 GPU-hours); the budget holds both
    assert only(decisions, job).reason == (
        "queue budget used 5.00 of its 4.5 GPU-hours in the last 24 hours"
    )
    assert jobs.get(job.id).state == QUEUED


# -- preemption ---------------------------------------------------------------------------------


def borrowers(jobs: JobStore, priorities: tuple[str, str]) -> tuple[list[Job], list[Job]]:
    """Queue guest holds all 4 a100s of cohort 'shared': 2 of its own, 2 borrowed from owner.

    Returns its two jobs on its own quota and its two borrowers (admitted in that order,
    with the given priorities), all running.
    """
    add_pool(jobs)
    add_queue(jobs, "owner", {"a100": 2}, cohort="shared")
    add_queue(jobs, "guest", {"a100": 2}, cohort="shared")
    nominal = [submit(jobs, "guest", priority="normal") for _ in range(2)]
    assert admitted(scheduler().schedule()) == [j.id for j in nominal]
    borrowed = []
    for priority in priorities:  # one pass each: distinct admission times
        next_ms()
        job = submit(jobs, "guest", priority=priority)
        assert admitted(scheduler().schedule()) == [job.id]
        borrowed.append(job)
    for job in [*nominal, *borrowed]:
        start(jobs, job)
    assert [jobs.get(j.id).borrowed for j in [*nominal, *borrowed]] == [False, False, True, True]
    return nominal, borrowed


def preempt_requested(jobs: JobStore) -> list[int]:
    return sorted(j.id for j in jobs.list(limit=None) if j.preempt_requested_at is not None)


@pytest.mark.parametrize(
    ("priorities", "victim"),
    [
        (("low", "normal"), 0),  # the lowest priority goes first, though admitted earlier
        (("low", "low"), 1),  # the same priority: the most recently admitted goes first
    ],
)
def test_preemption_asks_lowest_priority_then_latest_borrower_and_only_as_many_as_needed(
    jobs, priorities, victim
):
    _, borrowed = borrowers(jobs, priorities)
    high = submit(jobs, "owner", priority="high")

    decisions = scheduler().schedule()

    chosen = borrowed[victim]
    assert [(d.job_id, d.action, d.victims) for d in decisions] == [
        (high.id, "preempt", (chosen.id,))
    ]
    assert decisions[0].reason == f"asked #{chosen.id} to stop to make room"
    assert preempt_requested(jobs) == [chosen.id]
    stopping = jobs.get(chosen.id)
    assert stopping.state == RUNNING  # its worker stops it; the scheduler only asks
    assert jobs.events(chosen.id)[-1].reason == (
        f"preempted for job #{high.id} (high, queue owner), which needs 1xa100, 1 cpus; "
        "this job runs on quota borrowed from cohort shared"
    )
    assert jobs.get(high.id).state == QUEUED


def test_preemption_takes_every_borrower_when_the_head_needs_all_their_room(jobs):
    _, borrowed = borrowers(jobs, ("low", "normal"))
    high = submit(jobs, "owner", gpus=2, priority="high")

    decisions = scheduler().schedule()

    assert only(decisions, high).victims == (borrowed[0].id, borrowed[1].id)
    assert preempt_requested(jobs) == sorted(j.id for j in borrowed)


def test_no_one_is_asked_to_stop_when_all_borrowers_would_not_make_room(jobs):
    nominal, _ = borrowers(jobs, ("low", "low"))
    # 3 GPUs: the two borrowers free only 2; guest's own two jobs are never preempted.
    high = submit(jobs, "owner", gpus=3, priority="high")

    decisions = scheduler().schedule()

    assert [(d.job_id, d.action) for d in decisions] == [(high.id, "wait")]
    assert preempt_requested(jobs) == []
    assert all(jobs.get(j.id).state == RUNNING for j in nominal)


def test_jobs_on_their_own_quota_are_never_preempted(jobs):
    add_pool(jobs)
    add_queue(jobs, "team-a", {"a100": 4})
    lows = [submit(jobs, "team-a", priority="low") for _ in range(4)]
    scheduler().schedule()
    for job in lows:
        start(jobs, job)
    high = submit(jobs, "team-a", priority="high")

    decisions = scheduler().schedule()

    assert [(d.job_id, d.action) for d in decisions] == [(high.id, "wait")]
    assert preempt_requested(jobs) == []


def test_a_lender_takes_its_quota_back_from_borrowers_at_its_own_priority(jobs):
    _, borrowed = borrowers(jobs, ("normal", "normal"))
    # Same priority, within owner's own quota: a lender reclaiming what it lent.
    reclaim = submit(jobs, "owner", priority="normal")
    decisions = scheduler().schedule()
    assert only(decisions, reclaim).victims == (borrowed[1].id,)


def test_a_lender_within_its_quota_never_takes_the_cohort_past_its_total(jobs):
    # The pool has 8 a100s, the cohort's quotas only 4: the lender's job fits its own
    # quota and the pool, but its quota is lent out, so it reclaims it instead of
    # running beside the borrowers on a fifth GPU.
    _, borrowed = borrowers(jobs, ("normal", "normal"))
    add_pool(jobs, "p2", {"cpus": 32, "memory": "256Gi", "gpus": {"a100": 4}})
    reclaim = submit(jobs, "owner", priority="normal")

    decisions = scheduler().schedule()

    assert [(d.job_id, d.action, d.victims) for d in decisions] == [
        (reclaim.id, "preempt", (borrowed[1].id,))
    ]
    assert jobs.get(reclaim.id).state == QUEUED
    assert Scheduler().why(reclaim.id).reasons[0] == (
        "it: queue owner is within its quota of gpu:a100 (0 of 2 in use), but cohort shared "
        "has lent it out: 4 of its 4 in use, 0 idle"
    )


def test_a_borrower_does_not_preempt_another_borrower_of_its_priority(jobs):
    add_pool(jobs)
    add_queue(jobs, "owner", {"a100": 2}, cohort="shared")
    add_queue(jobs, "guest", {"a100": 1}, cohort="shared")
    add_queue(jobs, "third", {"a100": 1}, cohort="shared")
    # guest borrows owner's two GPUs (plus its own one); third holds its own.
    guests = [submit(jobs, "guest") for _ in range(3)]
    own = submit(jobs, "third")
    assert sorted(admitted(scheduler().schedule())) == [*(j.id for j in guests), own.id]
    extra = submit(jobs, "third")  # third would have to borrow too: not a reclaim

    decisions = scheduler().schedule()

    assert [(d.job_id, d.action) for d in decisions] == [(extra.id, "wait")]
    assert preempt_requested(jobs) == []


def test_preempted_victims_are_requeued_and_the_high_job_is_admitted_in_their_place(jobs):
    _, borrowed = borrowers(jobs, ("low", "low"))
    high = submit(jobs, "owner", priority="high")
    first = scheduler().schedule()
    assert only(first, high).victims == (borrowed[1].id,)
    victim = borrowed[1]

    # A second pass while the victim is still stopping asks no one else.
    second = scheduler().schedule()
    assert [(d.job_id, d.action) for d in second] == [(high.id, "wait")]
    assert second[0].reason == f"waiting for preempted job(s) #{victim.id} to stop"
    assert preempt_requested(jobs) == [victim.id]
    why = scheduler().why(high.id)
    assert f"it waits for preempted job(s) #{victim.id} to stop" in why.reasons
    assert "it has been asked to stop (preempted) and will be requeued" in (
        scheduler().why(victim.id).reasons
    )

    held = jobs.get(victim.id).devices
    stop_preempted(jobs, victim)  # the worker stopped it
    third = scheduler().schedule()

    assert admitted(third) == [high.id]
    now_high = jobs.get(high.id)
    assert (now_high.state, now_high.devices, now_high.borrowed) == (ADMITTED, held, False)
    requeued = jobs.get(victim.id)
    assert (requeued.state, requeued.attempt, requeued.pool) == (QUEUED, 1, None)
    assert only(third, victim).reason == (
        "queue guest needs to borrow 2 of gpu:a100, but cohort shared has 4 of its 4 in use, 0 idle"
    )
    assert [(e.from_state, e.to_state) for e in jobs.events(victim.id)] == [
        (None, QUEUED),
        (QUEUED, ADMITTED),
        (ADMITTED, RUNNING),
        (RUNNING, RUNNING),  # asked to stop
        (RUNNING, PREEMPTED),
        (PREEMPTED, QUEUED),
    ]


# -- lost pools ---------------------------------------------------------------------------------


def test_jobs_on_a_pool_that_stopped_beating_are_requeued(jobs):
    add_pool(jobs, "gone")
    add_pool(jobs, "live")
    add_queue(jobs, "team-a", {"a100": 8, "l4": 2})
    on_gone = submit(jobs, "team-a", gpus=4)  # "gone" sorts first: it fills it
    waiting_start = submit(jobs, "team-a", gpus=2, gpu_type="l4")
    on_live = submit(jobs, "team-a")
    scheduler().schedule()
    assert [jobs.get(j.id).pool for j in (on_gone, waiting_start, on_live)] == [
        "gone",
        "gone",
        "live",
    ]
    start(jobs, on_gone)
    start(jobs, on_live)
    time.sleep(0.6)
    add_pool(jobs, "live")  # only this worker is still beating

    decisions = scheduler(pool_timeout_ms=500).schedule()

    requeues = {d.job_id: d.reason for d in decisions if d.action == "requeue"}
    assert requeues == {
        on_gone.id: "its pool gone stopped sending heartbeats; requeued",
        waiting_start.id: "its pool gone stopped sending heartbeats; requeued",
    }
    lost = jobs.get(on_gone.id)
    assert (lost.state, lost.attempt, lost.pool, lost.devices) == (QUEUED, 1, None, [])
    assert [(e.from_state, e.to_state) for e in jobs.events(on_gone.id)][-2:] == [
        (RUNNING, PREEMPTED),
        (PREEMPTED, QUEUED),
    ]
    # The admitted one (not started yet) moves straight back to queued.
    assert [(e.from_state, e.to_state) for e in jobs.events(waiting_start.id)] == [
        (None, QUEUED),
        (QUEUED, ADMITTED),
        (ADMITTED, QUEUED),
    ]
    # Requeued, the 4-GPU job heads its queue again and waits: live has 3 a100s free.
    assert [d.action for d in decisions if d.job_id == on_gone.id] == ["requeue", "wait"]
    assert on_live.id not in {d.job_id for d in decisions}  # its pool is live
    assert jobs.get(on_live.id).state == RUNNING


# -- why -------------------------------------------------------------------------------------------


def test_why_names_the_head_and_how_many_jobs_are_ahead(jobs):
    add_pool(jobs)
    add_queue(jobs, "team-a", {"a100": 1})
    running = submit(jobs, "team-a")
    scheduler().schedule()
    head, middle, last = (submit(jobs, "team-a") for _ in range(3))

    why = scheduler().why(last.id)

    assert why.summary == f"job {last.id} is queued in team-a, behind 2 job(s)"
    assert (why.state, why.ahead, why.head) == (QUEUED, 2, head.id)
    assert why.reasons[0] == (
        "2 queued job(s) of queue team-a go before it (higher priority, or the same and "
        f"earlier); the head is job #{head.id} (normal, asking for 1xa100, 1 cpus)"
    )
    assert (
        f"the head #{head.id}: queue team-a has 1 of gpu:a100 as quota, 1 in use, "
        in (why.reasons[1])
    )
    urgent = submit(jobs, "team-a", priority="high")  # later, but ahead of all three
    assert scheduler().why(head.id).head == urgent.id
    assert scheduler().why(middle.id).ahead == 2
    assert scheduler().why(urgent.id).summary == f"job {urgent.id} is queued in team-a, at the head"
    assert scheduler().why(running.id).summary == f"job {running.id} is admitted"


def test_why_at_the_head_names_the_quota_and_the_cohort_that_hold_it(jobs):
    add_pool(jobs)
    add_queue(jobs, "lender", {"a100": 1}, cohort="research")
    add_queue(jobs, "borrower", {"a100": 1}, cohort="research")
    submit(jobs, "lender")
    submit(jobs, "borrower")
    scheduler().schedule()
    blocked = submit(jobs, "borrower")

    why = scheduler().why(blocked.id)

    assert why.summary == f"job {blocked.id} is queued in borrower, at the head"
    assert why.head is None
    assert why.reasons == [
        "it: queue borrower needs to borrow 1 of gpu:a100, but cohort research has 2 of its "
        "2 in use, 0 idle"
    ]


def test_why_on_inventory_names_the_pool_and_its_free_counts(jobs):
    add_pool(jobs)
    add_queue(jobs, "team-a", {"a100": 8})
    submit(jobs, "team-a", gpus=3)
    scheduler().schedule()
    wide = submit(jobs, "team-a", gpus=2)

    why = scheduler().why(wide.id)

    assert why.reasons == [
        "it: no live pool has room for 2xa100, 1 cpus (pool p1: 1 of 4 a100 free)"
    ]


def test_why_and_schedule_say_to_start_a_worker_when_no_pool_is_live(jobs):
    add_queue(jobs, "team-a", {"a100": 1})
    job = submit(jobs, "team-a")
    start_one = "no worker is running: start one with `keel jobs worker`"

    assert scheduler().why(job.id).reasons == [f"it: {start_one}"]
    decisions = scheduler().schedule()
    assert [(d.job_id, d.action, d.reason) for d in decisions] == [(job.id, "wait", start_one)]


def test_why_an_admitted_job_says_where_it_runs_and_what_it_holds(jobs):
    add_pool(jobs)
    add_queue(jobs, "lender", {"a100": 1}, cohort="research")
    add_queue(jobs, "borrower", {"a100": 1}, cohort="research")
    own, lent = submit(jobs, "borrower"), submit(jobs, "borrower", gpu_type="a100")
    scheduler().schedule()

    why = scheduler().why(lent.id)

    assert (why.state, why.summary) == (ADMITTED, f"job {lent.id} is admitted")
    assert why.reasons == [
        "admitted to pool p1 with 1xa100 [1] on quota borrowed from cohort research",
        "it holds 1xa100, 1 cpus on pool p1, a100 devices [1]",
        "it runs on borrowed quota: a higher-priority job may preempt it",
    ]
    assert "it runs on borrowed quota" not in " ".join(scheduler().why(own.id).reasons)
    with pytest.raises(NotFound, match=r"no job 999; list them with `keel jobs list`"):
        scheduler().why(999)


def test_why_says_a_head_that_fits_is_admitted_on_the_next_pass(jobs):
    add_pool(jobs)
    add_queue(jobs, "team-a", {"a100": 1})
    job = submit(jobs, "team-a")
    assert scheduler().why(job.id).reasons == [
        "it fits now (pool p1); it is admitted on the scheduler's next pass"
    ]


def test_why_names_the_borrowers_a_high_job_can_preempt(jobs):
    _, borrowed = borrowers(jobs, ("low", "normal"))
    high = submit(jobs, "owner", priority="high")
    why = scheduler().why(high.id)
    assert why.reasons[-1] == f"it can make room by preempting borrowed job(s) #{borrowed[0].id}"
    assert preempt_requested(jobs) == []  # why only says; it asks no one to stop


# -- bad input at submit -------------------------------------------------------------------------


@pytest.fixture
def shop(jobs) -> JobStore:
    """Queues alpha (4 a100, no cohort) and borrower/lender in cohort research, and one pool."""
    add_pool(jobs)
    add_queue(jobs, "alpha", {"a100": 4, "l4": 2})
    add_queue(jobs, "lender", {"a100": 4}, cohort="research")
    add_queue(jobs, "borrower", {"a100": 1}, cohort="research", borrowing_limit={"gpu:a100": 1})
    add_queue(jobs, "wide", {"a100": 8})  # more quota than any pool has
    add_queue(jobs, "cpu-only", {})
    return jobs


def test_submit_to_an_unknown_queue_lists_the_queues(shop):
    with pytest.raises(
        NotFound,
        match=r"^no job queue 'nope'; queues: [a-z, -]+; "
        r"create one with `keel jobs queues apply FILE`$",
    ) as refused:
        submit(shop, "nope")
    listed = str(refused.value).split("queues: ")[1].split(";")[0].split(", ")
    assert sorted(listed) == ["alpha", "borrower", "cpu-only", "lender", "wide"]
    assert shop.list() == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cpus": -1}, r"^cpus must be 0 or more, got -1$"),
        ({"gpus": -1}, r"^gpus must be a whole number, 0 or more, got -1$"),
        ({"memory": -5}, r"^memory must be 0 or more bytes, got -5$"),
        ({"memory": "-1Gi"}, r"^memory must be a size such as 16Gi, 512Mi, 2G or a number"),
        (
            {"gpus": 0, "gpu_type": "a100"},
            r"^gpu_type 'a100' was given without gpus; add --gpus N$",
        ),
        (
            {"gpus": 0, "cpus": 0},
            r"^a job must ask for some CPU or a GPU; cpus is 0 and gpus is 0$",
        ),
        ({"priority": "urgent"}, r"^priority must be one of low, normal, high, got 'urgent'$"),
    ],
)
def test_submit_rejects_bad_resources(shop, options, message):
    with pytest.raises(InvalidInput, match=message):
        shop.submit(["python", "train.py"], queue="alpha", **options)
    assert shop.list() == []


@pytest.mark.parametrize(
    ("queue", "options", "message"),
    [
        (
            "alpha",
            {"gpus": 5, "gpu_type": "a100"},
            r"queue alpha can hold at most what its quota and borrowing allow "
            r"\(gpu:a100 5 > 4\)$",
        ),
        (  # quota 1 + a borrowing limit of 1, though the cohort has 4 idle
            "borrower",
            {"gpus": 3, "gpu_type": "a100"},
            r"queue borrower can hold at most .* \(gpu:a100 3 > 2\)$",
        ),
        (
            "wide",
            {"gpus": 5, "gpu_type": "a100"},
            r"no pool has 5xa100, 1 cpus in its whole inventory$",
        ),
        (
            "alpha",
            {"gpus": 0, "cpus": 33},
            r"queue alpha can hold at most .* \(cpus 33 > 32\)$",
        ),
        (
            "alpha",
            {"gpus": 1, "gpu_type": "h100"},
            r"queue alpha can hold at most .* \(gpu:h100 1 > 0\)$",
        ),
        (
            "cpu-only",
            {"gpus": 1, "gpu_type": None},
            r"it asks for 1 GPU\(s\), and queue cpu-only and its cohort have no "
            r"GPU quota of any type$",
        ),
    ],
)
def test_submit_rejects_a_job_that_can_never_fit(shop, queue, options, message):
    with pytest.raises(InvalidInput, match=r"^this job can never run: " + message):
        shop.submit(["python", "train.py"], queue=queue, **options)
    assert shop.list() == []


def test_a_job_within_quota_and_borrowing_is_accepted_though_it_waits(shop):
    job = shop.submit(["python", "train.py"], queue="borrower", gpus=2, gpu_type="a100")
    assert job.state == QUEUED
    assert [e.reason for e in shop.events(job.id)] == [
        f"submitted by {shop.actor} to queue borrower asking for 2xa100, 1 cpus"
    ]


def test_preemption_does_not_stop_a_borrower_whose_room_the_head_does_not_use(jobs):
    two = {"cpus": 32, "memory": "256Gi", "gpus": {"a100": 2}}
    add_pool(jobs, "p1", two)
    add_pool(jobs, "p2", two)
    add_queue(jobs, "owner", {"a100": 2}, cohort="shared")
    add_queue(jobs, "guest", {"a100": 2}, cohort="shared")
    own = submit(jobs, "guest", priority="normal")  # p1
    assert admitted(scheduler().schedule()) == [own.id]
    next_ms()
    pair = submit(jobs, "guest", gpus=2, priority="low")  # p2, borrowed
    assert admitted(scheduler().schedule()) == [pair.id]
    next_ms()
    single = submit(jobs, "guest", priority="low")  # p1, borrowed, the latest admitted
    assert admitted(scheduler().schedule()) == [single.id]
    assert [jobs.get(j.id).pool for j in (own, pair, single)] == ["p1", "p2", "p1"]
    high = submit(jobs, "owner", gpus=2, priority="high")

    decisions = scheduler().schedule()

    # Stopping the latest borrower frees one GPU of p1, where own still holds the other:
    # only the pair on p2 makes room for two GPUs on one pool.
    assert only(decisions, high).victims == (pair.id,)
    assert preempt_requested(jobs) == [pair.id]
