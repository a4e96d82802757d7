"""``keel jobs report``: GPU-hours asked for and used, idle share, right-sizing and cost per group.

Jobs are moved with ``JobStore.transition`` as the scheduler and a worker move them,
and their measured use is recorded with ``JobStore.record`` in the worker's usage
keys, as if sampled from the GPUs of a virtual 4 x a100 + 2 x l4 pool.
"""

from __future__ import annotations

import time

import pytest

import keel
from keel.errors import InvalidInput
from keel.jobs import Inventory, Job, Step
from keel.jobs.costing import record_cost
from keel.jobs.prices import JobPrices
from keel.jobs.report import FALLBACK_GPU_MEMORY, jobs_report, right_size
from keel.jobs.resources import parse_memory
from keel.store.sql import now_ms

HOUR = 3_600_000
GIB = 1024**3
JAN = 1_767_225_600_000  # 2026-01-01T00:00:00Z
POOL = {
    "cpus": 64,
    "memory": "512Gi",
    "gpus": {"a100": 4, "l4": 2},
    "gpu_memory": {"a100": "80Gi", "l4": "24Gi"},
}


@pytest.fixture
def client(keel_env) -> keel.Client:
    client = keel.Client()
    client.jobs.heartbeat("pool-1", "local", Inventory.from_dict(POOL), owner="worker-1")
    client.jobs.apply_queue(
        {"name": "research", "team": "vision", "quotas": {"gpu:a100": 4, "gpu:l4": 2, "cpus": 32}}
    )
    client.jobs.apply_queue({"name": "adhoc", "quotas": {"gpu:l4": 2, "cpus": 8}})
    JobPrices(client).set("gpu:a100", 4.0, starts_at=JAN)
    JobPrices(client).set("gpu:l4", 1.0, starts_at=JAN)
    # CPUs have no price: their time is reported as unpriced
    return client


def _pause() -> None:
    # events are stamped in whole milliseconds: keep successive ones apart
    time.sleep(0.01)


def _ran(
    client: keel.Client,
    queue: str,
    gpu_type: str,
    *,
    gpus: int = 1,
    usage: dict | None = None,
    model: str | None = None,
) -> Job:
    """A job that was admitted, ran and succeeded, its usage and cost recorded as a worker does."""
    job = client.jobs.submit(["python", "train.py"], queue=queue, gpus=gpus, gpu_type=gpu_type)
    if model is not None:
        job = client.jobs.record(job, model_name=model, model_version=1)
    job = client.jobs.transition(
        job,
        Step(
            "admitted",
            "admitted to pool pool-1",
            {"assigned_gpu_type": gpu_type, "pool": "pool-1", "devices": list(range(gpus))},
        ),
    )
    _pause()
    job = client.jobs.transition(job, Step("running", "started", {"started_at": now_ms()}))
    _pause()
    job = client.jobs.transition(job, Step("succeeded", "exit 0", {"ended_at": now_ms()}))
    if usage is not None:
        job = client.jobs.record(job, usage=usage)
    return record_cost(client, job)


def _hours(client: keel.Client, job: Job) -> float:
    """Wall hours between the job's transition into running and out of it, from its events."""
    events = client.jobs.events(job.id)
    start = next(e.at for e in events if e.to_state == "running")
    end = next(e.at for e in events if e.from_state == "running")
    return (end - start) / HOUR


def test_the_report_shows_idle_share_and_a_smaller_gpu_that_would_have_held_the_peak(client):
    usage = {
        "samples": 12,
        "gpu_util_mean": 15.0,
        "gpu_util_peak": 20.0,
        "gpu_memory_peak": 18 * GIB,
        "gpu_memory_mean": 12 * GIB,
    }
    job = _ran(client, "research", "a100", gpus=2, usage=usage)
    unsampled = _ran(client, "adhoc", "l4")  # its worker recorded no GPU samples

    report = jobs_report(client, by="queue")

    research, adhoc = (next(r for r in report.rows if r.group == g) for g in ("research", "adhoc"))
    hours = 2 * _hours(client, job)
    assert research.jobs == 1
    assert research.gpu_hours_requested == pytest.approx(hours)
    assert research.gpu_hours_used == pytest.approx(0.15 * hours)
    assert research.idle_share == pytest.approx(0.85)
    assert research.gpu_memory_peak == 18 * GIB
    assert research.gpu_type == "a100"
    # 18Gi with 10% headroom is 19.8Gi: an l4 (24Gi) holds it, a t4 (16Gi) would not
    assert research.fits_gpu_type == "l4"
    assert research.share == 0.25  # 19.8Gi of 80Gi and a 20% peak: a quarter of an a100
    assert research.suggestion == (
        "an l4 (24Gi) holds the peak 18Gi with 10% headroom; "
        "0.25 of an a100 would do, peak util 20%"
    )
    assert research.cost_usd == pytest.approx(4.0 * hours)
    # a job without samples is counted as requested, and kept out of the idle share
    assert adhoc.gpu_hours_unmeasured == pytest.approx(_hours(client, unsampled))
    assert adhoc.gpu_hours_used == 0.0
    assert adhoc.idle_share is None
    assert adhoc.suggestion == "no GPU memory measured"
    assert report.total.jobs == 2
    assert report.total.cost_usd == pytest.approx(research.cost_usd + adhoc.cost_usd)
    assert report.to_dict()["rows"][1]["fits_gpu_type"] == "l4"


def test_the_report_groups_by_team_and_by_model(client):
    busy = {"gpu_util_mean": 90.0, "gpu_util_peak": 100.0, "gpu_memory_peak": 70 * GIB}
    _ran(client, "research", "a100", usage=busy, model="churn")
    _ran(client, "research", "a100", usage=busy, model="churn")
    _ran(client, "adhoc", "l4", usage={"gpu_util_mean": 50.0, "gpu_memory_peak": 2 * GIB})

    by_team = jobs_report(client, by="team")
    by_model = jobs_report(client, by="model")

    assert [(r.group, r.jobs) for r in by_team.rows] == [("-", 1), ("vision", 2)]
    assert [(r.group, r.jobs) for r in by_model.rows] == [("-", 1), ("churn", 2)]
    churn = by_model.rows[1]
    assert churn.idle_share == pytest.approx(0.10)
    # 70Gi with headroom needs a whole 80Gi GPU: the a100 it ran on is already right
    assert churn.fits_gpu_type == "a100"
    assert churn.share is None
    assert (
        churn.suggestion == "a100 is the smallest type that holds the peak 70Gi with 10% headroom"
    )
    with pytest.raises(InvalidInput, match=r"groups by one of queue, team, model, got 'pool'"):
        jobs_report(client, by="pool")


def test_a_window_counts_only_the_running_time_inside_it(client):
    job = _ran(client, "research", "a100", usage={"gpu_util_mean": 40.0})
    events = client.jobs.events(job.id)
    start = next(e.at for e in events if e.to_state == "running")
    end = next(e.at for e in events if e.from_state == "running")
    middle = (start + end) // 2

    first_half = jobs_report(client, since=start - HOUR, until=middle).rows[0]
    after = jobs_report(client, since=end + 1)
    whole = jobs_report(client).rows[0]

    assert first_half.gpu_hours_requested == pytest.approx((middle - start) / HOUR)
    assert first_half.cost_usd == pytest.approx(4.0 * (middle - start) / HOUR)
    assert first_half.gpu_hours_used == pytest.approx(0.4 * (middle - start) / HOUR)
    assert after.rows == []  # it neither ran nor was submitted after it ended
    assert whole.gpu_hours_requested == pytest.approx((end - start) / HOUR)
    with pytest.raises(InvalidInput, match=r"since .* must be before until"):
        jobs_report(client, since=end, until=start)


def test_the_report_keeps_a_recorded_cost_and_counts_unpriced_time(client):
    job = _ran(client, "adhoc", "l4", usage={"gpu_util_mean": 10.0})
    recorded = job.cost
    # a price dated back over the job's run does not rewrite what was recorded for it
    JobPrices(client).set("gpu:l4", 100.0, starts_at=JAN + 1)
    submitted = client.jobs.submit(["python", "x.py"], queue="research", gpus=1, gpu_type="a100")

    report = jobs_report(client)

    adhoc = next(r for r in report.rows if r.group == "adhoc")
    assert adhoc.cost_usd == pytest.approx(recorded)
    assert adhoc.unpriced == {"cpus": pytest.approx(_hours(client, job))}  # 1 CPU, no price
    # a job still queued is in the window (submitted in it) but holds nothing
    research = next(r for r in report.rows if r.group == "research")
    assert (research.jobs, research.gpu_hours_requested, research.cost_usd) == (1, 0.0, 0.0)
    assert submitted.state == "queued"


def test_right_sizing_falls_back_to_the_built_in_gpu_table():
    table = dict(FALLBACK_GPU_MEMORY)
    fit = right_size(parse_memory("18Gi"), 35.0, "a100", table)
    # l4 and a10g both have 24Gi; without pools the table's order prefers the l4
    assert (fit.gpu_type, fit.share) == ("l4", 0.5)
    assert right_size(parse_memory("14Gi"), None, "a100", table).gpu_type == "t4"
    assert right_size(parse_memory("14Gi"), None, "a100", table).share is None
    too_big = right_size(parse_memory("79Gi"), 100.0, "h100", table)
    assert too_big.gpu_type is None
    assert too_big.suggestion == "no known GPU type holds the peak 79Gi with 10% headroom"
    assert right_size(None, 50.0, "a100", table).suggestion == "no GPU memory measured"
    # a pool's own GPU of equal memory wins the tie
    assert right_size(parse_memory("18Gi"), None, "a100", table, {"a10g"}).gpu_type == "a10g"
