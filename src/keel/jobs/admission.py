"""The fit: whether a job's whole request fits its queue's quota, the cohort and a pool now.

:class:`Snapshot` is what one scheduling pass (or one ``keel jobs why``) decides on:
queues, live pools' inventories, what the active jobs hold, and the GPU-seconds
each queue used in the trailing 24 hours. Its methods are the rules of admission
(see :mod:`keel.jobs.scheduler` for the order they are applied in); every refusal
is a sentence that names the quota, cohort or pool that holds the job back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from keel.jobs.entities import ACTIVE, RUNNING, Job, Pool, Queue
from keel.jobs.resources import CPUS, MEMORY, Inventory, Request, format_memory
from keel.store import schema as s

__all__ = ["Placement", "Snapshot", "load_snapshot", "never_fits"]

_EPS = 1e-9
_DAY_MS = 24 * 3600 * 1000


@dataclass
class Placement:
    gpu_type: str | None
    pool: str
    devices: tuple[int, ...]
    borrowed: bool


class Snapshot:
    """Queues, live pools, what active jobs hold, and GPU-seconds per queue today."""

    def __init__(
        self,
        queues: dict[str, Queue],
        pools: dict[str, Inventory],
        active: list[Job],
        gpu_seconds: dict[str, float],
    ) -> None:
        self.queues = queues
        self.pools = pools
        self.active: dict[int, Job] = {}
        self.usage: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.pool_used: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.devices_used: dict[str, set[int]] = defaultdict(set)
        self.gpu_seconds = gpu_seconds
        self.cohorts: dict[str, list[Queue]] = defaultdict(list)
        #: Victims asked to stop in this pass, by the head their room is for: another
        #: head of the cohort chooses its own victims instead of counting on that room.
        self.promised: dict[int, int] = {}
        for queue in queues.values():
            if queue.cohort is not None:
                self.cohorts[queue.cohort].append(queue)
        for job in active:
            self.hold(job)

    def hold(self, job: Job) -> None:
        self.active[job.id] = job
        for resource, amount in job.vector().items():
            self.usage[job.queue][resource] += amount
            if job.pool is not None:
                self.pool_used[job.pool][resource] += amount
        if job.pool is not None:
            self.devices_used[job.pool].update(job.devices)

    def release(self, job: Job) -> None:
        self.active.pop(job.id, None)
        for resource, amount in job.vector().items():
            self.usage[job.queue][resource] -= amount
            if job.pool is not None:
                self.pool_used[job.pool][resource] -= amount
        if job.pool is not None:
            self.devices_used[job.pool].difference_update(job.devices)

    # -- quota ----------------------------------------------------------------------

    def quota_problem(self, queue: Queue, vector: dict[str, float]) -> tuple[str | None, bool]:
        """``(None, borrowed)`` when ``vector`` fits ``queue``'s quota, else ``(why, _)``."""
        borrowed = False
        used = self.usage[queue.name]
        for resource, amount in vector.items():
            if amount <= 0:
                continue
            nominal = float(queue.quotas.get(resource, 0.0))
            after = used[resource] + amount
            show = _show(resource)
            if after <= nominal + _EPS:
                # Within its own quota, but that quota may be lent out: the cohort's total
                # holds, and the lender takes its quota back by preempting the borrowers.
                lent = self._cohort_short(queue, resource, amount)
                if lent is not None:
                    return (
                        f"queue {queue.name} is within its quota of {resource} "
                        f"({show(used[resource])} of {show(nominal)} in use), but cohort "
                        f"{queue.cohort} has lent it out: {lent}",
                        False,
                    )
                continue
            if queue.cohort is None:
                return (
                    f"queue {queue.name} has {show(nominal)} of {resource} as quota, "
                    f"{show(used[resource])} in use, and is in no cohort to borrow from",
                    False,
                )
            limit = (queue.borrowing_limit or {}).get(resource)
            if limit is not None and after - nominal > limit + _EPS:
                return (
                    f"queue {queue.name} would borrow {show(after - nominal)} of {resource}, "
                    f"beyond its borrowing limit of {show(limit)} (quota {show(nominal)}, "
                    f"{show(used[resource])} in use)",
                    False,
                )
            short = self._cohort_short(queue, resource, amount)
            if short is not None:
                return (
                    f"queue {queue.name} needs to borrow {show(after - nominal)} of {resource}, "
                    f"but cohort {queue.cohort} has {short}",
                    False,
                )
            borrowed = True
        return None, borrowed

    def _cohort_short(self, queue: Queue, resource: str, amount: float) -> str | None:
        """Why ``queue``'s cohort cannot hold ``amount`` more of ``resource``, or None."""
        if queue.cohort is None:
            return None
        members = self.cohorts[queue.cohort]
        total = sum(float(q.quotas.get(resource, 0.0)) for q in members)
        in_use = sum(self.usage[q.name][resource] for q in members)
        if in_use + amount <= total + _EPS:
            return None
        show = _show(resource)
        return f"{show(in_use)} of its {show(total)} in use, {show(max(0.0, total - in_use))} idle"

    def gpu_hours_problem(self, queue: Queue, job: Job) -> str | None:
        if queue.gpu_hours_per_day is None or not job.request.gpus:
            return None
        used_h = self.gpu_seconds.get(queue.name, 0.0) / 3600
        ask_h = job.request.gpus * (job.timeout_s or 0.0) / 3600
        if used_h + ask_h > queue.gpu_hours_per_day + _EPS:
            ask = f" plus up to {ask_h:.2f} for this job's timeout" if ask_h else ""
            return (
                f"queue {queue.name} used {used_h:.2f} of its {queue.gpu_hours_per_day:g} "
                f"GPU-hours in the last 24 hours{ask}"
            )
        return None

    # -- inventory ------------------------------------------------------------------

    def place(self, request: Request, gpu_type: str | None) -> tuple[str, tuple[int, ...]] | str:
        """``(pool, devices)`` of the first live pool with room, else why none has."""
        if not self.pools:
            return "no worker is running: start one with `keel jobs worker`"
        shortfalls = []
        for name, inventory in sorted(self.pools.items()):
            used = self.pool_used[name]
            free_cpus = inventory.cpus - used[CPUS]
            free_memory = inventory.memory - used[MEMORY]
            missing = []
            if request.cpus > free_cpus + _EPS:
                missing.append(f"{free_cpus:g} of {inventory.cpus:g} cpus free")
            if request.memory > free_memory + _EPS:
                missing.append(
                    f"{format_memory(max(0.0, free_memory))} of "
                    f"{format_memory(inventory.memory)} memory free"
                )
            devices: tuple[int, ...] = ()
            if request.gpus:
                assert gpu_type is not None
                owned = inventory.gpus.get(gpu_type, ())
                free = [d for d in owned if d not in self.devices_used[name]]
                if len(free) < request.gpus:
                    missing.append(f"{len(free)} of {len(owned)} {gpu_type} free")
                devices = tuple(sorted(free)[: request.gpus])
            if not missing:
                return name, devices
            shortfalls.append(f"pool {name}: {', '.join(missing)}")
        return f"no live pool has room for {request.describe(gpu_type)} ({'; '.join(shortfalls)})"

    # -- the whole fit ----------------------------------------------------------------

    def gpu_types(self, queue: Queue, request: Request) -> list[str | None]:
        if not request.gpus:
            return [None]
        if request.gpu_type is not None:
            return [request.gpu_type]
        kinds = list(queue.gpu_types)
        for member in self.cohorts.get(queue.cohort or "", []):
            kinds += [k for k in member.gpu_types if k not in kinds]
        return list(kinds)

    def fit(self, job: Job) -> Placement | list[str]:
        """Where ``job`` fits now, or every reason it does not (one per GPU type tried)."""
        queue = self.queues[job.queue]
        problems: list[str] = []
        hours = self.gpu_hours_problem(queue, job)
        if hours:
            return [hours]
        kinds = self.gpu_types(queue, job.request)
        if not kinds:
            return [f"queue {queue.name} and its cohort have no GPU quota of any type"]
        for kind in kinds:
            vector = job.request.vector(kind)
            problem, borrowed = self.quota_problem(queue, vector)
            if problem:
                problems.append(problem)
                continue
            placed = self.place(job.request, kind)
            if isinstance(placed, str):
                problems.append(placed)
                continue
            return Placement(kind, placed[0], placed[1], borrowed)
        return problems

    def within_nominal(self, job: Job) -> bool:
        """True when ``job`` fits its own queue's nominal quota for some GPU type."""
        queue = self.queues[job.queue]
        used = self.usage[queue.name]
        for kind in self.gpu_types(queue, job.request):
            vector = job.request.vector(kind)
            if all(
                used[r] + a <= float(queue.quotas.get(r, 0.0)) + _EPS
                for r, a in vector.items()
                if a > 0
            ):
                return True
        return False

    def victims(self, job: Job) -> tuple[list[Job], list[Job]] | None:
        """``(new victims, pending ones)`` whose stopping makes ``job`` fit, else None."""
        queue = self.queues[job.queue]
        cohort = {q.name for q in self.cohorts.get(queue.cohort or "", [])} | {queue.name}
        reclaim = self.within_nominal(job)
        candidates = [
            other
            for other in self.active.values()
            if other.borrowed
            and other.queue in cohort
            and self.promised.get(other.id, job.id) == job.id
            and (
                other.priority < job.priority
                or (reclaim and other.queue != job.queue and other.priority <= job.priority)
            )
        ]
        # Already asked to stop first (they are going anyway), then lowest priority,
        # then the most recently admitted (the least work lost).
        candidates.sort(
            key=lambda j: (j.preempt_requested_at is None, j.priority, -(j.admitted_at or 0))
        )
        taken: list[Job] = []
        try:
            for other in candidates:
                self.release(other)
                taken.append(other)
                if isinstance(self.fit(job), Placement):
                    break
            else:
                return None
            # The last one taken made the fit; an earlier one may have freed room the head
            # does not use (on another pool): keep back each the fit does without, trying
            # the most valuable (taken last) first.
            for other in reversed(taken[:-1]):
                self.hold(other)
                if isinstance(self.fit(job), Placement):
                    taken.remove(other)
                else:
                    self.release(other)
            pending = [j for j in taken if j.preempt_requested_at is not None]
            new = [j for j in taken if j.preempt_requested_at is None]
            return new, pending
        finally:
            for other in taken:
                self.hold(other)


def _show(resource: str) -> Any:
    if resource == MEMORY:
        return lambda v: format_memory(max(0.0, v))
    return lambda v: f"{v:g}"


def load_snapshot(conn: Connection, now: int, pool_timeout_ms: int) -> tuple[Snapshot, list[Job]]:
    """The snapshot, and the active jobs whose pool is no longer live."""
    queues = {q.name: q for q in (Queue.from_row(r) for r in conn.execute(select(s.job_queues)))}
    live = conn.execute(
        select(s.job_pools).where(s.job_pools.c.heartbeat_at >= now - pool_timeout_ms)
    )
    pools = {p.name: p.inventory for p in (Pool.from_row(r) for r in live)}
    active = [
        Job.from_row(r)
        for r in conn.execute(select(s.jobs).where(s.jobs.c.state.in_(list(ACTIVE))))
    ]
    lost = [j for j in active if j.pool not in pools]
    gpu_seconds: dict[str, float] = defaultdict(float)
    since = now - _DAY_MS
    # Attempts that stopped within the window (every attempt of a retried job), then
    # those running now, each counted from the window's start at the earliest.
    spans = conn.execute(
        select(
            s.job_gpu_spans.c.queue,
            s.job_gpu_spans.c.gpus,
            s.job_gpu_spans.c.started_at,
            s.job_gpu_spans.c.ended_at,
        ).where(s.job_gpu_spans.c.ended_at >= since)
    )
    running = (
        (j.queue, j.request.gpus, j.started_at, now)
        for j in active
        if j.state == RUNNING and j.request.gpus and j.started_at is not None
    )
    for queue, gpus, started_at, ended_at in [*spans, *running]:
        start = max(started_at, since)
        if ended_at > start:
            gpu_seconds[queue] += gpus * (ended_at - start) / 1000
    held = [j for j in active if j.pool in pools]
    return Snapshot(queues, pools, held, gpu_seconds), lost


def never_fits(
    request: Request, queue: Queue, queues: Sequence[Queue], inventories: Iterable[Inventory]
) -> str | None:
    """Why ``request`` can never be admitted to ``queue``, or None when it could be one day.

    It could when, for some GPU type, the queue's quota plus what it may borrow (the
    cohort's quota beyond its own, within its borrowing limit) holds the request, and
    so does some known pool's whole inventory (when any pool is known).
    """
    members = [q for q in queues if queue.cohort is not None and q.cohort == queue.cohort]
    pools = list(inventories)
    snapshot = Snapshot({q.name: q for q in [*queues, queue]}, {}, [], {})
    kinds = snapshot.gpu_types(queue, request)
    if not kinds:
        return (
            f"it asks for {request.gpus} GPU(s), and queue {queue.name} and its cohort have "
            "no GPU quota of any type"
        )
    problems = []
    for kind in kinds:
        vector = request.vector(kind)
        short = []
        for resource, amount in vector.items():
            nominal = float(queue.quotas.get(resource, 0.0))
            reach = nominal
            if queue.cohort is not None:
                cohort_total = sum(float(q.quotas.get(resource, 0.0)) for q in members)
                extra = max(0.0, cohort_total - nominal)
                limit = (queue.borrowing_limit or {}).get(resource)
                reach = nominal + (extra if limit is None else min(extra, limit))
            if amount > reach + _EPS:
                show = _show(resource)
                short.append(f"{resource} {show(amount)} > {show(reach)}")
        if short:
            problems.append(
                f"queue {queue.name} can hold at most what its quota and borrowing allow "
                f"({'; '.join(short)})"
            )
            continue
        if pools and not any(
            request.cpus <= inv.cpus + _EPS
            and request.memory <= inv.memory
            and (kind is None or len(inv.gpus.get(kind, ())) >= request.gpus)
            for inv in pools
        ):
            problems.append(f"no pool has {request.describe(kind)} in its whole inventory")
            continue
        return None
    return "; ".join(problems)
