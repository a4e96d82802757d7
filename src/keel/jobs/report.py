"""``keel jobs report``: GPU-hours asked for and used, idle share, right-sizing and cost, by group.

Per queue, team (the queue's ``team``) or model (the job's registered
``model_name``; ``-`` when none), over the jobs that ran in a window:

- **GPU-hours requested**: GPUs x wall hours of the jobs' running intervals
  (every attempt; see :mod:`keel.jobs.costing`), clipped to the window.
- **GPU-hours used**: the busy share of those hours, ``gpu_util_mean / 100`` x
  GPU-hours, for jobs whose worker sampled their GPUs. Jobs without samples are
  not guessed at: their hours are reported as ``gpu_hours_unmeasured`` and left
  out of the idle share.
- **Idle share**: ``1 - used / requested`` over the measured jobs.
- **Right-sizing**: the measured peak GPU memory (per device) with 10% headroom
  says which is the smallest GPU type that would have held it, and together with
  the peak utilisation, whether a share of the type the group ran on would do
  (``0.25 of an a100``).
- **Cost**: USD from the job price table. A job costed whole within the window
  keeps the cost recorded on it; a job cut by the window is costed for the part
  inside it at the prices in force then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput
from keel.jobs.costing import (
    UNKNOWN_GPU,
    Interval,
    charge,
    intervals_from_detail,
    running_intervals,
)
from keel.jobs.entities import Job
from keel.jobs.prices import JobPriceTable, job_prices_for
from keel.jobs.resources import format_memory, parse_memory
from keel.store.sql import now_ms

if TYPE_CHECKING:
    from keel.client import Client

__all__ = [
    "FALLBACK_GPU_MEMORY",
    "GROUPINGS",
    "HEADROOM",
    "Report",
    "ReportRow",
    "jobs_report",
    "right_size",
]

#: What a report groups jobs by.
GROUPINGS = ("queue", "team", "model")
#: The peak GPU memory is grown by this factor before it is fitted to a GPU.
HEADROOM = 1.10
#: Fractions of one GPU a right-sizing may suggest (MIG-like slices), smallest first.
SHARES = (0.125, 0.25, 0.5)
#: Memory per device of common GPU types, used only as a fallback: the pools'
#: declared or discovered inventories (``gpu_memory``) win for the types they have.
#: The order breaks ties between types of equal memory (the more common first).
FALLBACK_GPU_MEMORY: dict[str, int] = {
    "t4": parse_memory("16Gi"),
    "l4": parse_memory("24Gi"),
    "a10g": parse_memory("24Gi"),
    "v100": parse_memory("32Gi"),
    "a100": parse_memory("80Gi"),
    "h100": parse_memory("80Gi"),
}
_HOUR_MS = 3_600_000.0
_NO_GROUP = "-"


def _article(gpu_type: str) -> str:
    """``an a100``, ``an l4``, ``a t4``: by how the first letter is said."""
    return f"{'an' if gpu_type[:1] in set('aefhilmnorsx') else 'a'} {gpu_type}"


@dataclass(frozen=True)
class Fit:
    """What would have held a measured GPU load.

    Attributes:
        gpu_type: the smallest type whose memory holds the peak with headroom (None
            when none known does, or nothing was measured).
        gpu_memory: that type's memory per device (bytes).
        share: the fraction of ``share_of`` that would do (None: a whole one is needed).
        share_of: the type the share is of (the type the jobs ran on).
        suggestion: one line saying so.
    """

    gpu_type: str | None
    gpu_memory: int | None
    share: float | None
    share_of: str | None
    suggestion: str


def right_size(
    memory_peak: float | None,
    util_peak: float | None,
    ran_on: str | None,
    memory_by_type: Mapping[str, int],
    preferred: Iterable[str] = (),
) -> Fit:
    """The smallest GPU type, or share of ``ran_on``, that would have held the measured peak.

    Args:
        memory_peak: the peak GPU memory of one device (bytes), None when not measured.
        util_peak: the peak GPU utilisation (0-100), None when not measured.
        ran_on: the GPU type the jobs ran on.
        memory_by_type: memory per device by GPU type (the pools', then
            :data:`FALLBACK_GPU_MEMORY`).
        preferred: types to choose first among those of equal memory (the pools' own).
    """
    if memory_peak is None:
        return Fit(None, None, None, None, "no GPU memory measured")
    need = memory_peak * HEADROOM
    order = {k: i for i, k in enumerate(FALLBACK_GPU_MEMORY)}
    mine = set(preferred)
    fitting = sorted(
        (k for k, size in memory_by_type.items() if size >= need),
        key=lambda k: (memory_by_type[k], k not in mine, order.get(k, len(order)), k),
    )
    best = fitting[0] if fitting else None
    capacity = memory_by_type.get(ran_on) if ran_on else None
    if best is not None and ran_on and capacity and memory_by_type[best] >= capacity:
        best = ran_on  # no smaller type would do: staying is the suggestion
    share = None
    if capacity and util_peak is not None:
        # a slice must hold both the memory (with headroom) and the busiest moment
        busy = max(need / capacity, util_peak / 100.0)
        share = next((f for f in SHARES if busy <= f), None)
    parts = []
    peak = f"peak {format_memory(memory_peak)}"
    if best is None:
        parts.append(f"no known GPU type holds the {peak} with 10% headroom")
    elif best != ran_on:
        parts.append(
            f"{_article(best)} ({format_memory(memory_by_type[best])}) holds the {peak} "
            "with 10% headroom"
        )
    else:
        parts.append(f"{best} is the smallest type that holds the {peak} with 10% headroom")
    if share is not None and ran_on:
        util = "" if util_peak is None else f", peak util {util_peak:.0f}%"
        parts.append(f"{share:g} of {_article(ran_on)} would do{util}")
    return Fit(
        best, None if best is None else memory_by_type[best], share, ran_on, "; ".join(parts)
    )


@dataclass(frozen=True)
class ReportRow:
    """One group's line of the report.

    Attributes:
        group: the queue, team or model (``-`` for jobs without a team or model).
        jobs: jobs that ran (or were submitted) in the window.
        gpu_hours_requested: GPUs x wall hours running.
        gpu_hours_used: the busy share of the measured jobs' GPU-hours.
        gpu_hours_unmeasured: GPU-hours of jobs without GPU samples (not in the idle share).
        idle_share: ``1 - used / requested`` over the measured jobs (None: none measured).
        gpu_util_peak: the highest GPU utilisation sampled (0-100).
        gpu_memory_peak: the most GPU memory one device held (bytes).
        gpu_type: the type the group ran most GPU-hours on.
        fits_gpu_type: the smallest type that would have held ``gpu_memory_peak`` with 10%
            headroom; ``share`` of ``gpu_type`` that would have done (None: a whole one).
        suggestion: the right-sizing in words.
        cost_usd: USD at the job price table.
        unpriced: units x hours of resources no price covered, by resource.
    """

    group: str
    jobs: int = 0
    gpu_hours_requested: float = 0.0
    gpu_hours_used: float = 0.0
    gpu_hours_unmeasured: float = 0.0
    idle_share: float | None = None
    gpu_util_peak: float | None = None
    gpu_memory_peak: int | None = None
    gpu_type: str | None = None
    fits_gpu_type: str | None = None
    share: float | None = None
    suggestion: str = ""
    cost_usd: float = 0.0
    unpriced: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Report:
    """A jobs report: one row per group, and the total.

    Attributes:
        by: ``queue``, ``team`` or ``model``.
        since: the window's start (epoch ms), None for all time.
        until: its end (epoch ms); the report's time when not given.
        rows: by group name.
        total: every job of the window together.
    """

    by: str
    since: int | None
    until: int
    rows: list[ReportRow]
    total: ReportRow

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since,
            "until": self.until,
            "rows": [r.to_dict() for r in self.rows],
            "total": self.total.to_dict(),
        }


@dataclass
class _Tally:
    """A group's sums while jobs are added to it."""

    jobs: int = 0
    requested: float = 0.0
    used: float = 0.0
    measured: float = 0.0
    unmeasured: float = 0.0
    util_peak: float | None = None
    memory_peak: float | None = None
    by_type: dict[str, float] = field(default_factory=dict)
    cost: float = 0.0
    unpriced: dict[str, float] = field(default_factory=dict)

    def add(
        self, job: Job, gpu_hours: dict[str, float], usd: float, unpriced: Mapping[str, float]
    ) -> None:
        self.jobs += 1
        hours = sum(gpu_hours.values())
        self.requested += hours
        for kind, h in gpu_hours.items():
            self.by_type[kind] = self.by_type.get(kind, 0.0) + h
        usage = job.usage
        mean = usage.get("gpu_util_mean")
        if hours and isinstance(mean, int | float):
            self.measured += hours
            self.used += hours * min(max(float(mean), 0.0), 100.0) / 100.0
        elif hours:
            self.unmeasured += hours
        for key, attr in (("gpu_util_peak", "util_peak"), ("gpu_memory_peak", "memory_peak")):
            value = usage.get(key)
            if job.request.gpus and isinstance(value, int | float):
                current = getattr(self, attr)
                setattr(self, attr, float(value) if current is None else max(current, value))
        self.cost += usd
        for resource, units in unpriced.items():
            self.unpriced[resource] = self.unpriced.get(resource, 0.0) + float(units)

    def row(
        self, group: str, memory_by_type: Mapping[str, int], preferred: Iterable[str]
    ) -> ReportRow:
        ran_on = max(self.by_type, key=lambda k: (self.by_type[k], k)) if self.by_type else None
        if ran_on is None:
            fit = Fit(None, None, None, None, "no GPU jobs")
        else:
            fit = right_size(self.memory_peak, self.util_peak, ran_on, memory_by_type, preferred)
        return ReportRow(
            group=group,
            jobs=self.jobs,
            gpu_hours_requested=self.requested,
            gpu_hours_used=self.used,
            gpu_hours_unmeasured=self.unmeasured,
            idle_share=None if not self.measured else 1.0 - self.used / self.measured,
            gpu_util_peak=self.util_peak,
            gpu_memory_peak=None if self.memory_peak is None else int(self.memory_peak),
            gpu_type=ran_on,
            fits_gpu_type=fit.gpu_type,
            share=fit.share,
            suggestion=fit.suggestion,
            cost_usd=self.cost,
            unpriced=dict(sorted(self.unpriced.items())),
        )


def _window(value: Any, name: str) -> int | None:
    from keel.predictions import to_ms

    return to_ms(value, name)


def _job_part(
    client: Client, job: Job, table: JobPriceTable, since: int | None, until: int
) -> tuple[bool, dict[str, float], float, dict[str, float]]:
    """Whether ``job`` is in the window, its GPU-hours by type, USD and unpriced there."""
    intervals: list[Interval] | None = None
    whole = False
    # a job that never started holds nothing: its events need not be read
    if job.started_at is not None or job.cost_detail.get("intervals"):
        intervals = intervals_from_detail(job)
        whole = intervals is not None and job.cost is not None
        if intervals is None:
            intervals = running_intervals(job, client.jobs.events(job.id), now=until)
    inside = [
        i
        for i in intervals or ()
        if min(i.end, until) > (i.start if since is None else max(i.start, since))
    ]
    if not inside:
        submitted = (since is None or job.submitted_at >= since) and job.submitted_at < until
        return submitted, {}, 0.0, {}
    covered = all((since is None or i.start >= since) and i.end <= until for i in intervals or ())
    if whole and covered:
        usd, detail = float(job.cost or 0.0), job.cost_detail
    else:
        usd, detail = charge(job, inside, table, since=since, until=until)
    gpu_hours: dict[str, float] = {}
    if job.request.gpus:
        for i in inside:
            start = i.start if since is None else max(i.start, since)
            hours = job.request.gpus * (min(i.end, until) - start) / _HOUR_MS
            kind = i.gpu_type or UNKNOWN_GPU
            gpu_hours[kind] = gpu_hours.get(kind, 0.0) + hours
    return True, gpu_hours, usd, dict(detail.get("unpriced") or {})


def jobs_report(
    client: Client, *, by: str = "queue", since: Any = None, until: Any = None
) -> Report:
    """GPU-hours requested and used, idle share, right-sizing and cost per group of jobs.

    Args:
        client: a ``keel.Client``.
        by: ``queue``, ``team`` (the queue's team) or ``model`` (the registered model's name).
        since: the window's start: epoch ms, a datetime or ISO-8601 text; None for all time.
        until: its end, exclusive (default: now). Running time outside the window is not
            counted.

    Raises:
        InvalidInput: an unknown grouping or a bad time.
    """
    if by not in GROUPINGS:
        raise InvalidInput(f"a jobs report groups by one of {', '.join(GROUPINGS)}, got {by!r}")
    start = _window(since, "since")
    end = _window(until, "until")
    # the end is exclusive: by default one past now, so what happened this millisecond is in
    end = now_ms() + 1 if end is None else end
    if start is not None and start >= end:
        raise InvalidInput(f"since ({start}) must be before until ({end})")
    jobs = client.jobs
    teams = {q.name: q.team for q in jobs.list_queues()}
    pools = jobs.pools()
    memory_by_type = dict(FALLBACK_GPU_MEMORY)
    preferred: set[str] = set()
    for pool in pools:
        preferred.update(pool.inventory.gpus)
        memory_by_type.update(pool.inventory.gpu_memory)
    table = job_prices_for(client).table()
    tallies: dict[str, _Tally] = {}
    total = _Tally()
    for job in jobs.list(limit=None):
        included, gpu_hours, usd, unpriced = _job_part(client, job, table, start, end)
        if not included:
            continue
        if by == "queue":
            group = job.queue
        elif by == "team":
            group = teams.get(job.queue) or _NO_GROUP
        else:
            group = job.model_name or _NO_GROUP
        tallies.setdefault(group, _Tally()).add(job, gpu_hours, usd, unpriced)
        total.add(job, gpu_hours, usd, unpriced)
    rows = [tallies[g].row(g, memory_by_type, preferred) for g in sorted(tallies)]
    return Report(by, start, end, rows, total.row("total", memory_by_type, preferred))
