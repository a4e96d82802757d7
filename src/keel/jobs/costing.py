"""What a job cost: its running time, resource by resource, at the prices in force then.

A job holds its resources (its GPUs of the type admission gave it, its CPUs and
its memory) while it is ``running``. A job may run several times (a preempted
attempt is requeued, a failed one retried), so the timing source is the job's
own events: every transition *into* ``running`` opens an interval, the next
transition *out of* it closes it (a job still running is counted up to now).
Events that ask a running job to stop (``running`` → ``running``) are not
transitions and change nothing.

Each interval is split at every price start time inside it
(:meth:`~keel.jobs.prices.JobPriceTable.segments`), so a price change in the
middle of a run charges each part at its own rate. Time of a resource with no
price in force is not guessed at: it is counted, in its own units, under
``detail["unpriced"]``.

Which GPU type an interval held is read from the admission that preceded it
(its event's ``detail["gpu_type"]``), then from what an earlier costing of the
job recorded for that interval, then from the job's current assignment (for
intervals under its latest admission only: a requeue clears it and a readmission
may give another type), then from a type the job asked for. Without any of these
the type of an earlier attempt is lost, and its GPU-hours are reported as
``gpu:unknown`` (unpriced) rather than charged at a guessed rate.

:func:`record_cost` stores the cost on the job (``cost``, ``cost_detail``) and
on its run (tags ``keel.job.cost_usd``, ``keel.job.gpu_hours``); the worker
calls it at the end of every attempt. :func:`version_cost` sums the jobs that
registered a model version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.jobs.entities import ADMITTED, RUNNING, Job, JobEvent
from keel.jobs.prices import JobPriceTable, job_prices_for
from keel.jobs.resources import CPUS, MEMORY, gpu_key
from keel.store.sql import now_ms

if TYPE_CHECKING:
    from keel.client import Client

__all__ = [
    "UNKNOWN_GPU",
    "Interval",
    "charge",
    "intervals_from_detail",
    "job_cost",
    "record_cost",
    "running_intervals",
    "version_cost",
]

_HOUR_MS = 3_600_000.0
_GIB = float(1024**3)
#: The GPU type an interval is reported under when no record says which type it held.
UNKNOWN_GPU = "unknown"


@dataclass(frozen=True)
class Interval:
    """One stretch of running: ``[start, end)`` in epoch ms, holding ``gpu_type`` GPUs.

    Attributes:
        start: when the job entered ``running``.
        end: when it left it (or the moment it was costed, when ``open``).
        gpu_type: the type of the GPUs it held (None for a job without GPUs).
        open: it was still running when costed.
    """

    start: int
    end: int
    gpu_type: str | None = None
    open: bool = False

    @property
    def hours(self) -> float:
        return max(0, self.end - self.start) / _HOUR_MS

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "gpu_type": self.gpu_type, "open": self.open}


def _known_types(job: Job) -> dict[int, str]:
    """GPU types an earlier costing recorded, by interval start."""
    found: dict[int, str] = {}
    for item in job.cost_detail.get("intervals") or ():
        kind = item.get("gpu_type") if isinstance(item, dict) else None
        if isinstance(kind, str) and kind != UNKNOWN_GPU and isinstance(item.get("start"), int):
            found[item["start"]] = kind
    return found


def running_intervals(
    job: Job, events: Iterable[JobEvent], *, now: int | None = None
) -> list[Interval]:
    """The job's running intervals from its events, oldest first (see the module docstring).

    Args:
        job: the job (its assignment and request name the GPU type when no event does).
        events: its events, oldest first (``JobStore.events``).
        now: epoch ms that closes an interval still open; by default now, or the job's
            ``ended_at`` when it has ended without a closing event.
    """
    recorded = _known_types(job)
    intervals: list[Interval] = []
    ordinals: list[int] = []  # per interval: the admission it ran under
    admissions = 0
    admitted_type: str | None = None
    opened: tuple[int, str | None, int] | None = None
    for event in events:
        if event.from_state == event.to_state:
            continue  # a request to stop, not a transition
        if event.to_state == ADMITTED:
            admissions += 1
            kind = event.detail.get("gpu_type")
            admitted_type = kind if isinstance(kind, str) else None
        if event.from_state == RUNNING and opened is not None:
            intervals.append(Interval(opened[0], max(event.at, opened[0]), opened[1]))
            ordinals.append(opened[2])
            opened = None
        if event.to_state == RUNNING:
            kind = event.detail.get("gpu_type")
            opened = (event.at, kind if isinstance(kind, str) else admitted_type, admissions)
    if opened is not None:
        if job.state == RUNNING or job.ended_at is None:
            end, still = (now_ms() if now is None else now), True
        else:
            end, still = job.ended_at, False
        intervals.append(Interval(opened[0], max(end, opened[0]), opened[1], still))
        ordinals.append(opened[2])
    if not job.request.gpus:
        return [Interval(i.start, i.end, None, i.open) for i in intervals]
    typed = []
    for interval, ordinal in zip(intervals, ordinals, strict=True):
        # the job's assignment only speaks for its latest admission (a requeue clears it,
        # a readmission may give another type); a type it asked for speaks for all
        kind = (
            interval.gpu_type
            or recorded.get(interval.start)
            or (job.assigned_gpu_type if ordinal == admissions else None)
            or job.request.gpu_type
            or UNKNOWN_GPU
        )
        typed.append(Interval(interval.start, interval.end, kind, interval.open))
    return typed


def _held(job: Job, gpu_type: str | None) -> dict[str, float]:
    """What ``job`` holds per hour in priced units: GPUs, CPUs, GiB of memory."""
    held: dict[str, float] = {}
    if job.request.gpus:
        held[gpu_key(gpu_type or UNKNOWN_GPU)] = float(job.request.gpus)
    if job.request.cpus:
        held[CPUS] = float(job.request.cpus)
    if job.request.memory:
        held[MEMORY] = job.request.memory / _GIB
    return held


def charge(
    job: Job,
    intervals: Sequence[Interval],
    table: JobPriceTable,
    *,
    since: int | None = None,
    until: int | None = None,
) -> tuple[float, dict[str, Any]]:
    """USD for ``job`` holding its resources over ``intervals``, clipped to ``[since, until)``.

    Returns:
        ``(usd, detail)``; ``detail`` has ``resources`` (per resource: ``amount`` held,
        ``hours`` of amount x time, ``usd``), ``unpriced`` (per resource, the units x hours
        no price was in force for), ``hours`` (wall hours running), ``gpu_hours``
        (GPUs x wall hours), and ``intervals`` (as costed).
    """
    usd = 0.0
    resources: dict[str, dict[str, float]] = {}
    unpriced: dict[str, float] = {}
    clipped: list[Interval] = []
    for interval in intervals:
        start = interval.start if since is None else max(interval.start, since)
        end = interval.end if until is None else min(interval.end, until)
        if end <= start:
            continue
        clipped.append(Interval(start, end, interval.gpu_type, interval.open))
        for resource, amount in _held(job, interval.gpu_type).items():
            line = resources.setdefault(resource, {"amount": amount, "hours": 0.0, "usd": 0.0})
            line["amount"] = amount
            for begin, stop, price in table.segments(resource, start, end):
                units = amount * (stop - begin) / _HOUR_MS
                line["hours"] += units
                if price is None:
                    unpriced[resource] = unpriced.get(resource, 0.0) + units
                else:
                    line["usd"] += units * price.per_hour
                    usd += units * price.per_hour
    hours = sum(i.hours for i in clipped)
    detail: dict[str, Any] = {
        "currency": "USD",
        "hours": hours,
        "gpu_hours": job.request.gpus * hours,
        "resources": resources,
        "unpriced": unpriced,
        "intervals": [i.to_dict() for i in clipped],
    }
    return usd, detail


def job_cost(
    job: Job,
    table: JobPriceTable,
    *,
    events: Iterable[JobEvent] | None = None,
    now: int | None = None,
) -> tuple[float, dict[str, Any]]:
    """USD of ``job``'s attempts so far, and the detail of how (see :func:`charge`).

    Args:
        job: the job.
        table: the price table to cost it with (``JobPrices(client).table()``).
        events: its events, oldest first (``JobStore.events``); without them, the
            job's own ``[started_at, ended_at]`` is its one interval (its last attempt only).
        now: epoch ms that closes an interval still open (default: now).
    """
    if events is not None:
        intervals = running_intervals(job, events, now=now)
    elif job.started_at is None:
        intervals = []
    else:
        still = job.ended_at is None
        end = (now_ms() if now is None else now) if still else job.ended_at
        assert end is not None
        kind = (
            (job.assigned_gpu_type or job.request.gpu_type or UNKNOWN_GPU)
            if job.request.gpus
            else None
        )
        intervals = [Interval(job.started_at, max(end, job.started_at), kind, still)]
    usd, detail = charge(job, intervals, table)
    detail["costed_at"] = now_ms() if now is None else now
    return usd, detail


def intervals_from_detail(job: Job) -> list[Interval] | None:
    """The intervals a recorded cost says the job ran (None when it has no closed record).

    A record whose last interval was still open is stale and gives None, so the caller
    reads the events again.
    """
    items = job.cost_detail.get("intervals")
    if not isinstance(items, list):
        return None
    intervals = [
        Interval(int(i["start"]), int(i["end"]), i.get("gpu_type"), bool(i.get("open")))
        for i in items
        if isinstance(i, dict)
    ]
    if any(i.open for i in intervals) or job.state in (RUNNING, ADMITTED):
        return None
    return intervals


def record_cost(client: Client, job: Job) -> Job:
    """Cost ``job`` from its events and the price table, and store it on the job and its run.

    Writes ``jobs.cost`` and ``jobs.cost_detail`` (:meth:`JobStore.record`), and, when
    the job has a run, the run tags ``keel.job.cost_usd`` and ``keel.job.gpu_hours``
    (and ``keel.job.unpriced`` naming the resources no price covered). Safe to call
    again: every call recomputes the whole job from its events.

    Returns:
        The job as stored after the write.
    """
    jobs = client.jobs
    table = job_prices_for(client).table()
    events = jobs.events(job.id)
    current = jobs.get(job.id)
    usd, detail = job_cost(current, table, events=events)
    stored = jobs.record(current, cost=usd, cost_detail=detail)
    if stored.run_id:
        tags = {
            "keel.job.cost_usd": f"{usd:.6f}",
            "keel.job.gpu_hours": f"{detail['gpu_hours']:.6f}",
        }
        if detail["unpriced"]:
            tags["keel.job.unpriced"] = ",".join(sorted(detail["unpriced"]))
        client.set_tags(stored.run_id, tags)
    return stored


def version_cost(client: Client, name: str, version: int) -> float:
    """USD recorded on the jobs that registered model ``name`` version ``version``.

    Includes automation's retrains (they are jobs like any other). Jobs not costed yet
    count as 0.
    """
    return sum(job.cost or 0.0 for job in client.jobs.list(model=(name, version), limit=None))
