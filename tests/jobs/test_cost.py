"""Job prices and job cost: rows only added, running time split at price changes, every attempt.

Jobs are made with ``JobStore.submit`` and moved with ``JobStore.transition`` as a
scheduler and a worker would move them; the store stamps each event with the time it
is written, so the tests read those times back and place price changes between them.
"""

from __future__ import annotations

import time

import pytest

import keel
from keel.errors import Conflict, InvalidInput
from keel.governance import audit
from keel.jobs import Job, Step
from keel.jobs.costing import job_cost, record_cost, running_intervals, version_cost
from keel.jobs.prices import JobPrices, JobPriceTable
from keel.store.sql import now_ms

HOUR = 3_600_000
GIB = 1024**3
JAN = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _queue(client: keel.Client) -> None:
    client.jobs.apply_queue(
        {
            "name": "train",
            "team": "vision",
            "quotas": {"gpu:a100": 4, "gpu:l4": 2, "cpus": 32, "memory": "256Gi"},
        }
    )


def _pause() -> None:
    # events are stamped in whole milliseconds: keep successive ones apart
    time.sleep(0.01)


def _run(client: keel.Client, job: Job, gpu_type: str | None, *, detail: bool = False) -> Job:
    """Admit ``job`` (as the scheduler does) and start it (as a worker does)."""
    changes = {
        "assigned_gpu_type": gpu_type,
        "pool": "pool-1",
        "devices": list(range(job.request.gpus)),
        "admitted_at": now_ms(),
    }
    job = client.jobs.transition(
        job,
        Step(
            "admitted",
            "admitted to pool pool-1",
            changes,
            {"gpu_type": gpu_type} if detail else None,
        ),
    )
    _pause()
    return client.jobs.transition(job, Step("running", "started", {"started_at": now_ms()}))


def _stop(client: keel.Client, job: Job, state: str) -> Job:
    _pause()
    steps = [Step(state, f"attempt {state}", {"ended_at": now_ms()})]
    if state in ("preempted", "failed"):
        # a requeue gives the resources back: the assignment is cleared
        steps.append(
            Step("queued", "requeued", {"assigned_gpu_type": None, "pool": None, "devices": []})
        )
    return client.jobs.transition(job, *steps)


def _running_spans(client: keel.Client, job: Job) -> list[tuple[int, int]]:
    """``(start, end)`` of each running interval, straight from the stored events."""
    spans, start = [], None
    for event in client.jobs.events(job.id):
        if event.to_state == "running" and event.from_state != "running":
            start = event.at
        elif event.from_state == "running" and event.to_state != "running":
            spans.append((start, event.at))
    return spans


def test_a_price_change_mid_run_charges_each_part_at_its_own_rate(keel_env):
    client = keel.Client()
    _queue(client)
    job = client.jobs.submit(
        ["python", "train.py"], queue="train", gpus=2, gpu_type="a100", cpus=4, memory="16Gi"
    )
    job = _run(client, job, "a100")
    _pause()
    job = _stop(client, job, "succeeded")
    [(start, end)] = _running_spans(client, job)
    middle = (start + end) // 2
    prices = JobPrices(client)
    prices.set("gpu:a100", 3.0, starts_at=JAN)
    prices.set("gpu:a100", 5.0, starts_at=middle)
    prices.set("cpus", 0.5, starts_at=JAN)
    prices.set("memory", 0.01, starts_at=JAN)

    usd, detail = job_cost(job, prices.table(), events=client.jobs.events(job.id))

    before, after = (middle - start) / HOUR, (end - middle) / HOUR
    gpu = 2 * (before * 3.0 + after * 5.0)
    cpu = 4 * (before + after) * 0.5
    memory = 16 * (before + after) * 0.01
    assert usd == pytest.approx(gpu + cpu + memory)
    assert detail["resources"]["gpu:a100"]["usd"] == pytest.approx(gpu)
    # charged at the old rate throughout, it would have cost less: the split is real
    assert detail["resources"]["gpu:a100"]["usd"] > 2 * (before + after) * 3.0
    assert detail["gpu_hours"] == pytest.approx(2 * (before + after))
    assert detail["unpriced"] == {}
    assert detail["intervals"] == [{"start": start, "end": end, "gpu_type": "a100", "open": False}]


def test_a_preempted_attempt_and_its_rerun_are_both_costed_but_not_the_wait(keel_env):
    client = keel.Client()
    _queue(client)
    JobPrices(client).set("gpu:a100", 2.0, starts_at=JAN)
    job = client.jobs.submit(["python", "train.py"], queue="train", gpus=1, gpu_type="a100", cpus=0)
    job = _run(client, job, "a100")
    job = _stop(client, job, "preempted")
    assert job.assigned_gpu_type is None  # the requeue cleared it
    first = record_cost(client, job)  # as the worker does at the end of an attempt
    _pause()  # queued again: this wait holds nothing
    job = _run(client, first, "a100")
    _pause()
    # a cancel request on a running job is an event running -> running, not a transition
    client.jobs.cancel(job.id)
    job = _stop(client, client.jobs.get(job.id), "cancelled")

    stored = record_cost(client, job)

    spans = _running_spans(client, job)
    assert len(spans) == 2
    hours = sum(end - start for start, end in spans) / HOUR
    assert stored.cost == pytest.approx(2.0 * hours)
    assert stored.cost > first.cost > 0  # type: ignore[operator]
    assert [(i["start"], i["end"]) for i in stored.cost_detail["intervals"]] == spans
    assert stored.cost_detail["gpu_hours"] == pytest.approx(hours)
    assert client.jobs.get(job.id).cost == stored.cost


def test_each_attempt_is_charged_for_the_gpu_type_it_was_admitted_with(keel_env):
    client = keel.Client()
    _queue(client)
    prices = JobPrices(client)
    prices.set("gpu:a100", 4.0, starts_at=JAN)
    prices.set("gpu:l4", 1.0, starts_at=JAN)
    # asks for any type: the first attempt got an l4, the rerun an a100
    job = client.jobs.submit(["python", "train.py"], queue="train", gpus=1, cpus=0)
    job = _run(client, job, "l4", detail=True)
    job = _stop(client, job, "preempted")
    job = _run(client, job, "a100", detail=True)
    job = _stop(client, job, "succeeded")
    (s1, e1), (s2, e2) = _running_spans(client, job)

    usd, detail = job_cost(job, prices.table(), events=client.jobs.events(job.id))

    assert [i["gpu_type"] for i in detail["intervals"]] == ["l4", "a100"]
    assert usd == pytest.approx((e1 - s1) / HOUR * 1.0 + (e2 - s2) / HOUR * 4.0)
    assert set(detail["resources"]) == {"gpu:l4", "gpu:a100"}


def test_a_gpu_type_known_only_before_a_requeue_is_kept_from_the_earlier_costing(keel_env):
    client = keel.Client()
    _queue(client)
    prices = JobPrices(client)
    prices.set("gpu:a100", 4.0, starts_at=JAN)
    prices.set("gpu:l4", 1.0, starts_at=JAN)
    recorded = client.jobs.submit(["python", "train.py"], queue="train", gpus=1, cpus=0)
    lost = client.jobs.submit(["python", "train.py"], queue="train", gpus=1, cpus=0)
    for job in (recorded, lost):
        job = _run(client, client.jobs.get(job.id), "l4")  # no type in the admission's detail
        _pause()
        job = client.jobs.transition(job, Step("preempted", "preempted", {"ended_at": now_ms()}))
        if job.id == recorded.id:
            record_cost(client, job)  # costed while the assignment still says l4
        job = client.jobs.transition(
            job, Step("queued", "requeued", {"assigned_gpu_type": None, "pool": None})
        )
        job = _run(client, job, "a100")
        _stop(client, job, "succeeded")

    kept = record_cost(client, client.jobs.get(recorded.id))
    unknown = record_cost(client, client.jobs.get(lost.id))

    assert [i["gpu_type"] for i in kept.cost_detail["intervals"]] == ["l4", "a100"]
    assert kept.cost_detail["unpriced"] == {}
    # nothing says which type the first attempt held: its GPU-hours are not guessed at
    assert [i["gpu_type"] for i in unknown.cost_detail["intervals"]] == ["unknown", "a100"]
    (start, end), _ = _running_spans(client, unknown)
    assert unknown.cost_detail["unpriced"] == {"gpu:unknown": pytest.approx((end - start) / HOUR)}


def test_a_resource_without_a_price_in_force_is_counted_as_unpriced(keel_env):
    client = keel.Client()
    _queue(client)
    job = client.jobs.submit(
        ["python", "train.py"], queue="train", gpus=1, gpu_type="l4", cpus=2, memory="8Gi"
    )
    job = _run(client, job, "l4")
    _pause()
    job = _stop(client, job, "failed")
    [(start, end)] = _running_spans(client, job)
    middle = (start + end) // 2
    prices = JobPrices(client)
    prices.set("gpu:l4", 1.0, starts_at=middle)  # the GPU's first price came mid-run
    prices.set("cpus", 0.1, starts_at=JAN)  # memory has no price at all

    usd, detail = job_cost(job, prices.table(), events=client.jobs.events(job.id))

    assert detail["unpriced"] == {
        "gpu:l4": pytest.approx((middle - start) / HOUR),
        "memory": pytest.approx(8 * (end - start) / HOUR),
    }
    assert usd == pytest.approx((end - middle) / HOUR * 1.0 + 2 * (end - start) / HOUR * 0.1)


def test_a_job_still_running_is_costed_up_to_now(keel_env):
    client = keel.Client()
    _queue(client)
    JobPrices(client).set("gpu:a100", 2.0, starts_at=JAN)
    job = client.jobs.submit(["python", "train.py"], queue="train", gpus=1, gpu_type="a100", cpus=0)
    job = _run(client, job, "a100")
    events = client.jobs.events(job.id)
    started = events[-1].at

    usd, detail = job_cost(job, JobPrices(client).table(), events=events, now=started + HOUR)

    assert usd == pytest.approx(2.0)
    assert detail["intervals"][0]["open"] is True
    assert running_intervals(job, events, now=started + 2 * HOUR)[0].hours == pytest.approx(2.0)


def test_price_rows_are_only_added_audited_and_checked(keel_env):
    prices = JobPrices(keel.Client())
    first = prices.set("gpu:a100", 2.5, starts_at="2026-01-01T00:00:00Z")
    prices.set("gpu:a100", 3.0, starts_at=JAN + HOUR)
    prices.set("memory", 0)
    with pytest.raises(
        Conflict, match=r"'gpu:a100' already has a price starting at 2026-01-01T00:00:00Z"
    ):
        prices.set("gpu:a100", 9.0, starts_at=JAN)
    with pytest.raises(InvalidInput, match=r"per_hour must be 0 or more USD per GPU-hour, got -1"):
        prices.set("gpu:l4", -1)
    with pytest.raises(InvalidInput, match=r"per_hour must be 0 or more USD per GiB-hour"):
        prices.set("memory", -0.5)
    with pytest.raises(InvalidInput, match=r"a finite number of USD per CPU-hour, got nan"):
        prices.set("cpus", float("nan"))
    with pytest.raises(InvalidInput, match=r"gpu:<type> .* cpus .* or memory .*; got 'disk'"):
        prices.set("disk", 1.0)
    with pytest.raises(InvalidInput, match=r"a GPU type must be"):
        prices.set("gpu:A 100", 1.0)
    assert first.starts_at == JAN
    assert first.created_by == keel.Client().user
    assert [(p.resource, p.per_hour) for p in prices.list()] == [
        ("gpu:a100", 2.5),
        ("gpu:a100", 3.0),
        ("memory", 0.0),
    ]
    assert prices.list("gpu:a100")[0] == first
    table = prices.table()
    assert table.rate("gpu:a100", JAN - 1) is None
    assert table.rate("gpu:a100", JAN + HOUR - 1) == 2.5
    assert table.rate("gpu:a100", JAN + HOUR) == 3.0
    entries = audit.list_entries(keel.Client().store, object_type="job_price")
    assert [(e.action, e.object_id) for e in entries] == [
        ("job_price.set", "memory"),
        ("job_price.set", "gpu:a100"),
        ("job_price.set", "gpu:a100"),
    ]
    assert entries[-1].after == {"per_hour": 2.5, "starts_at": JAN}


def test_price_rows_cross_every_transport_the_same_way(any_env):
    client = keel.Client()
    prices = JobPrices(client)
    first = prices.set("gpu:l4", 0.8, starts_at=JAN)
    prices.set("cpus", 0.05, starts_at=JAN)
    with pytest.raises(Conflict, match=r"'gpu:l4' already has a price starting at"):
        prices.set("gpu:l4", 1.0, starts_at=JAN)
    with pytest.raises(InvalidInput, match=r"per_hour must be 0 or more USD per CPU-hour"):
        prices.set("cpus", -1)
    assert prices.list("gpu:l4") == [first]
    assert first.created_by == client.user
    assert [p.resource for p in prices.list()] == ["cpus", "gpu:l4"]
    assert prices.table().rate("gpu:l4", JAN + HOUR) == 0.8


def test_segments_split_an_interval_at_each_start_inside_it():
    from keel.jobs.prices import JobPrice

    table = JobPriceTable(
        [JobPrice("cpus", rate, start, 0, "me") for rate, start in ((1.0, 100), (2.0, 200))]
    )
    pieces = [
        (a, b, None if p is None else p.per_hour) for a, b, p in table.segments("cpus", 50, 250)
    ]
    assert pieces == [(50, 100, None), (100, 200, 1.0), (200, 250, 2.0)]
    # a start exactly at the interval's start does not cut off an empty piece
    assert [(a, b) for a, b, _ in table.segments("cpus", 100, 150)] == [(100, 150)]
    assert table.segments("gpu:a100", 0, 10) == [(0, 10, None)]
    assert table.segments("cpus", 10, 10) == []


def test_record_cost_tags_the_run_and_version_cost_sums_the_jobs_that_registered_it(keel_env):
    client = keel.Client()
    _queue(client)
    JobPrices(client).set("gpu:a100", 2.0, starts_at=JAN)
    experiment = client.get_or_create_experiment("jobs")
    costs = []
    for version in (1, 1, 2):
        run = client.create_run(experiment.id, capture=False)
        job = client.jobs.submit(
            ["python", "train.py"], queue="train", gpus=1, gpu_type="a100", cpus=0
        )
        job = client.jobs.record(job, run_id=run.id, model_name="churn", model_version=version)
        job = _run(client, job, "a100")
        _pause()
        job = record_cost(client, _stop(client, job, "succeeded"))
        costs.append(job.cost)
        tags = client.get_run(run.id).tags
        assert float(tags["keel.job.cost_usd"]) == pytest.approx(job.cost, abs=1e-6)
        assert float(tags["keel.job.gpu_hours"]) == pytest.approx(
            job.cost_detail["gpu_hours"], abs=1e-6
        )
        assert "keel.job.unpriced" not in tags

    assert version_cost(client, "churn", 1) == pytest.approx(costs[0] + costs[1])
    assert version_cost(client, "churn", 2) == pytest.approx(costs[2])
    assert version_cost(client, "churn", 3) == 0.0
