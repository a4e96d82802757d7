"""Admission: which queued job runs next, where, on what, and who makes room for it.

One pass of :meth:`Scheduler.schedule`:

1. **Lost pools.** A job admitted to (or running on) a pool whose worker stopped
   sending heartbeats is requeued; that is a preemption, not a failed attempt.
2. **Heads.** Each queue offers its head: the queued job of highest priority, then
   earliest arrival. Heads are taken across queues by priority, then those that fit
   their own queue's quota before those that would borrow, then arrival. A
   head that cannot be admitted blocks its queue for this pass (strict FIFO): a
   later, smaller job of the same queue never jumps it.
3. **Fit.** A job is admitted only when *all* it asks for fits at once:
   - its queue's quota: for every resource, usage plus the request stays within the
     queue's nominal quota, or the excess is borrowed from the cohort: within the
     queue's ``borrowing_limit``, and within the cohort's idle quota (the sum of its
     queues' quotas minus the sum of their usage);
   - the queue's GPU-hours over the trailing 24 hours, counting the job's GPUs for
     its whole timeout when it has one;
   - one live pool's free inventory: CPUs, memory and whole devices of one GPU type.
   A job that asks for GPUs of no particular type tries the queue's types in the
   order the queue lists them.
4. **Preemption.** A head that does not fit may make room by preempting jobs that
   run on borrowed quota in its cohort: those of lower priority, and, when the head
   fits within its own queue's nominal quota (a lender taking its quota back), those
   of other queues at its own priority or lower. Victims go lowest priority first,
   then most recently admitted, and only as many as make the head fit; if all of
   them would not, none is touched. A victim's worker stops it (SIGTERM, then a
   grace period) and it is requeued.

**Races.** The pass runs under the scheduler's lease (one row of ``job_scheduler``,
taken and renewed as the automation controller does with its policies). Every
admission is its own transaction, which also moves the lease row's ``epoch`` while
checking that the lease is still this scheduler's: a scheduler that lost its lease
(it stalled, and another took over) admits nothing more. A scheduler killed at any
point leaves each job admitted (with its event) or not; a successor sees the usage
the dead one's admissions hold, so nothing is admitted twice.

:meth:`Scheduler.why` runs the same fit on a fresh snapshot and says, in terms of
quota, inventory and the jobs ahead, what a queued job waits for.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, func, or_, select, update

from keel.errors import Conflict
from keel.jobs.admission import Placement, Snapshot, load_snapshot
from keel.jobs.entities import ACTIVE, ADMITTED, CANCELLED, PREEMPTED, QUEUED, RUNNING, Job
from keel.jobs.store import POOL_TIMEOUT_MS, JobStore, Step, move, request_stop
from keel.store import schema as s
from keel.store.lease import holder_is_dead, new_owner
from keel.store.sql import insert_on_conflict, now_ms

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["Decision", "Explanation", "LeaseLost", "Scheduler"]

log = logging.getLogger(__name__)

_EPS = 1e-9
_DAY_MS = 24 * 3600 * 1000
#: Queued jobs read per queue before a pass's first decision, and then at a time for a
#: queue that admits (a pass refills when they run out).
_FIRST = 2
_HEADS_BATCH = 16


class LeaseLost(Conflict):
    """This scheduler no longer holds its lease; another one schedules now."""


@dataclass(frozen=True)
class Decision:
    """What one step of a pass did to a job.

    Attributes:
        job_id: the job.
        action: ``admit``, ``preempt`` (victims were asked to stop for it), ``wait``
            (it blocks its queue this pass) or ``requeue`` (its pool was lost).
        reason: why, in words.
        pool: where it was admitted; ``devices`` the GPU indices there.
        gpu_type: the GPU type it was given.
        borrowed: admitted on quota borrowed from its cohort.
        victims: the jobs asked to stop for it.
        elapsed_ms: how long the decision took, reads and writes included.
    """

    job_id: int
    action: str
    reason: str
    pool: str | None = None
    devices: tuple[int, ...] = ()
    gpu_type: str | None = None
    borrowed: bool = False
    victims: tuple[int, ...] = ()
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "action": self.action,
            "reason": self.reason,
            "pool": self.pool,
            "devices": list(self.devices),
            "gpu_type": self.gpu_type,
            "borrowed": self.borrowed,
            "victims": list(self.victims),
            "elapsed_ms": self.elapsed_ms,
        }


@dataclass(frozen=True)
class Explanation:
    """Why a job is where it is (``keel jobs why``).

    Attributes:
        job_id: the job.
        state: its state.
        summary: one sentence.
        reasons: the details: each quota, inventory or ordering fact that holds it.
        ahead: queued jobs of its queue that go before it.
        head: the head of its queue, when that is another job.
    """

    job_id: int
    state: str
    summary: str
    reasons: list[str] = field(default_factory=list)
    ahead: int = 0
    head: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "summary": self.summary,
            "reasons": list(self.reasons),
            "ahead": self.ahead,
            "head": self.head,
        }


# -- the scheduler ----------------------------------------------------------------------


class Scheduler:
    """Admits queued jobs to pools, under the store's scheduler lease.

    Args:
        client: a ``keel.Client`` (default: one from the settings).
        name: the lease's name; schedulers sharing a store share it.
        owner: this scheduler's lease id (default ``host:pid:random``).
        lease_seconds: how long the lease lasts without renewal; each pass renews it.
        pool_timeout_ms: a pool whose worker has not beaten for this long is lost.

    Example:
        >>> decisions = Scheduler(keel.Client()).schedule()
        >>> [d.action for d in decisions]
        ['admit', 'admit', 'wait']
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        name: str = "default",
        owner: str | None = None,
        lease_seconds: float = 30.0,
        pool_timeout_ms: int = POOL_TIMEOUT_MS,
    ) -> None:
        from keel.client import Client

        self.client = client or Client()
        self.name = name
        self.owner = owner or new_owner()
        self.lease_seconds = lease_seconds
        self.pool_timeout_ms = pool_timeout_ms

    @property
    def jobs(self) -> JobStore:
        return JobStore(self.client)

    # -- the lease --------------------------------------------------------------------

    def acquire(self) -> bool:
        """Take or renew the lease; False while another live scheduler holds it."""
        now = now_ms()
        until = now + int(self.lease_seconds * 1000)
        table = s.job_scheduler
        with self.client.store.write() as conn:
            stmt = insert_on_conflict(conn, table).values(name=self.name, epoch=0)
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
            done = conn.execute(
                update(table)
                .where(
                    table.c.name == self.name,
                    or_(
                        table.c.lease_owner.is_(None),
                        table.c.lease_owner == self.owner,
                        table.c.lease_until < now,
                    ),
                )
                .values(lease_owner=self.owner, lease_until=until)
            )
            if done.rowcount == 1:
                return True
            holder = conn.execute(
                select(table.c.lease_owner).where(table.c.name == self.name)
            ).scalar()
            if not holder_is_dead(holder):
                return False
            taken = conn.execute(  # its holder died on this host: take it over now
                update(table)
                .where(table.c.name == self.name, table.c.lease_owner == holder)
                .values(lease_owner=self.owner, lease_until=until)
            )
            return taken.rowcount == 1

    def release(self) -> None:
        """Give the lease up (another scheduler may take it at once)."""
        table = s.job_scheduler
        with self.client.store.write() as conn:
            conn.execute(
                update(table)
                .where(table.c.name == self.name, table.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None)
            )

    def _fence(self, conn: Connection) -> None:
        table = s.job_scheduler
        done = conn.execute(
            update(table)
            .where(
                table.c.name == self.name,
                table.c.lease_owner == self.owner,
                table.c.lease_until >= now_ms(),
            )
            .values(epoch=table.c.epoch + 1)
        )
        if done.rowcount != 1:
            raise LeaseLost(f"scheduler {self.owner} lost its lease on {self.name!r}")

    # -- a pass -----------------------------------------------------------------------

    def schedule(self, *, max_admissions: int | None = None) -> list[Decision]:
        """One pass (see the module docstring); nothing when another scheduler holds the lease.

        Args:
            max_admissions: stop after admitting this many jobs.

        Returns:
            One decision per job acted on or blocked, in the order they were made.
        """
        if not self.acquire():
            return []
        with self.client.store.read() as conn:
            snapshot, lost = load_snapshot(conn, now_ms(), self.pool_timeout_ms)
        decisions = [d for d in (self._requeue_lost(job) for job in lost) if d is not None]
        # Every queue's first heads are read before the first decision, as part of the
        # pass's setup; only a queue that admits reads on, a batch at a time.
        heads = {q: deque(jobs) for q, jobs in self._heads(list(snapshot.queues), _FIRST).items()}
        exhausted = {q for q, jobs in heads.items() if len(jobs) < _FIRST}
        blocked: set[str] = set()
        admitted = 0

        def head(queue: str) -> Job | None:
            waiting = heads[queue]
            if not waiting and queue not in exhausted:
                waiting.extend(self._heads([queue], _HEADS_BATCH)[queue])
                if len(waiting) < _HEADS_BATCH:
                    exhausted.add(queue)
            return waiting[0] if waiting else None

        try:
            while max_admissions is None or admitted < max_admissions:
                started = time.perf_counter()
                offers = [
                    job
                    for job in (head(q) for q in snapshot.queues if q not in blocked)
                    if job is not None
                ]
                if not offers:
                    break
                # At one priority, a head within its own queue's quota goes before one
                # that must borrow: otherwise a requeued borrower, older than the lender's
                # head, is admitted again and preempted again, and the lender never runs.
                job = min(offers, key=lambda j: (-j.priority, not snapshot.within_nominal(j), j.id))
                decision = self._decide(job, snapshot, started)
                decisions.append(decision)
                if decision.action == "admit":
                    admitted += 1
                    heads[job.queue].popleft()
                elif decision.action == "skip":
                    heads[job.queue].popleft()
                else:
                    blocked.add(job.queue)
        except LeaseLost as exc:
            log.warning("keel: %s; this pass stops", exc)
        return [d for d in decisions if d.action != "skip"]

    def _heads(self, queues: list[str], limit: int) -> dict[str, list[Job]]:
        """The first ``limit`` queued jobs of each queue, in admission order, in one read."""
        found: dict[str, list[Job]] = {}
        with self.client.store.read() as conn:
            for queue in queues:
                query = (
                    select(s.jobs)
                    .where(s.jobs.c.queue == queue, s.jobs.c.state == QUEUED)
                    .order_by(s.jobs.c.priority.desc(), s.jobs.c.id)
                    .limit(limit)
                )
                found[queue] = [Job.from_row(r) for r in conn.execute(query)]
        return found

    def _decide(self, job: Job, snapshot: Snapshot, started: float) -> Decision:
        def elapsed() -> float:
            return (time.perf_counter() - started) * 1000

        placed = snapshot.fit(job)
        if isinstance(placed, Placement):
            reason = (
                f"admitted to pool {placed.pool}"
                + (
                    f" with {job.request.gpus}x{placed.gpu_type} {list(placed.devices)}"
                    if job.request.gpus
                    else ""
                )
                + (
                    " on quota borrowed from cohort " + str(snapshot.queues[job.queue].cohort)
                    if placed.borrowed
                    else ""
                )
            )
            changes = {
                "assigned_gpu_type": placed.gpu_type,
                "pool": placed.pool,
                "devices": list(placed.devices),
                "borrowed": placed.borrowed,
                "admitted_at": now_ms(),
                "preempt_requested_at": None,
                "cancel_requested_at": None,
            }
            try:
                with self.client.store.write() as conn:
                    self._fence(conn)
                    detail = {
                        "gpu_type": placed.gpu_type,
                        "pool": placed.pool,
                        "devices": list(placed.devices),
                    }
                    moved = move(conn, job, [Step(ADMITTED, reason, changes, detail)], self.owner)
            except LeaseLost:
                raise
            except Conflict:  # cancelled (or moved) since it was read: not ours to admit
                return Decision(job.id, "skip", "it changed since it was read")
            snapshot.hold(moved)
            return Decision(
                job.id,
                "admit",
                reason,
                placed.pool,
                placed.devices,
                placed.gpu_type,
                placed.borrowed,
                elapsed_ms=elapsed(),
            )
        found = snapshot.victims(job)
        if found is None:
            return Decision(job.id, "wait", "; ".join(placed), elapsed_ms=elapsed())
        new, pending = found
        if not new:
            ids = ", ".join(f"#{j.id}" for j in pending)
            return Decision(
                job.id, "wait", f"waiting for preempted job(s) {ids} to stop", elapsed_ms=elapsed()
            )
        asked = []
        with self.client.store.write() as conn:
            self._fence(conn)
            for victim in new:
                why = (
                    f"preempted for job #{job.id} ({job.priority_name}, queue {job.queue}), "
                    f"which needs {job.request.describe()}; this job runs on quota borrowed "
                    f"from cohort {snapshot.queues[victim.queue].cohort}"
                )
                try:
                    asked.append(
                        request_stop(conn, victim, "preempt_requested_at", why, self.owner)
                    )
                except Conflict:
                    continue
        for victim in asked:
            snapshot.release(victim)
            snapshot.hold(victim)  # still holds its resources until its worker stops it
            snapshot.promised[victim.id] = job.id
        ids = ", ".join(f"#{j.id}" for j in asked)
        return Decision(
            job.id,
            "preempt",
            f"asked {ids} to stop to make room",
            victims=tuple(j.id for j in asked),
            elapsed_ms=elapsed(),
        )

    def _requeue_lost(self, job: Job) -> Decision | None:
        started = time.perf_counter()
        reason = f"its pool {job.pool} stopped sending heartbeats; requeued"
        clear: dict[str, Any] = {
            "pool": None,
            "devices": [],
            "assigned_gpu_type": None,
            "borrowed": False,
            "preempt_requested_at": None,
            "cancel_requested_at": None,
            "pid": None,
        }
        if job.cancel_requested_at is not None:  # it was being cancelled: it stays cancelled
            steps = [
                Step(CANCELLED, f"cancelled; its pool {job.pool} was lost", {"ended_at": now_ms()})
            ]
        elif job.state == RUNNING:
            steps = [
                Step(
                    PREEMPTED,
                    f"its pool {job.pool} stopped sending heartbeats",
                    {"ended_at": now_ms()},
                ),
                Step(QUEUED, "requeued after its pool was lost", clear),
            ]
        else:
            steps = [Step(QUEUED, reason, clear)]
        try:
            with self.client.store.write() as conn:
                self._fence(conn)
                move(conn, job, steps, self.owner)
        except LeaseLost:
            raise
        except Conflict:
            return None
        return Decision(
            job.id, "requeue", reason, elapsed_ms=(time.perf_counter() - started) * 1000
        )

    # -- why --------------------------------------------------------------------------

    def why(self, job_id: int) -> Explanation:
        """What ``job_id`` waits for, or why it is where it is."""
        job = self.jobs.get(job_id)
        if job.state != QUEUED:
            reasons = [job.reason or ""]
            if job.state in ACTIVE:
                where = f"pool {job.pool}" + (
                    f", {job.assigned_gpu_type} devices {job.devices}" if job.devices else ""
                )
                reasons.append(f"it holds {job.request.describe(job.assigned_gpu_type)} on {where}")
                if job.borrowed:
                    reasons.append(
                        "it runs on borrowed quota: a higher-priority job may preempt it"
                    )
                if job.preempt_requested_at:
                    reasons.append("it has been asked to stop (preempted) and will be requeued")
                if job.cancel_requested_at:
                    reasons.append("it has been asked to stop (cancelled)")
            return Explanation(
                job.id, job.state, f"job {job.id} is {job.state}", [r for r in reasons if r]
            )
        now = now_ms()
        with self.client.store.read() as conn:
            snapshot, _ = load_snapshot(conn, now, self.pool_timeout_ms)
            first = conn.execute(
                select(s.jobs)
                .where(s.jobs.c.queue == job.queue, s.jobs.c.state == QUEUED)
                .order_by(s.jobs.c.priority.desc(), s.jobs.c.id)
                .limit(1)
            ).first()
            ahead = int(
                conn.execute(
                    select(func.count())
                    .select_from(s.jobs)
                    .where(
                        s.jobs.c.queue == job.queue,
                        s.jobs.c.state == QUEUED,
                        or_(
                            s.jobs.c.priority > job.priority,
                            and_(s.jobs.c.priority == job.priority, s.jobs.c.id < job.id),
                        ),
                    )
                ).scalar()
                or 0
            )
        head = Job.from_row(first) if first is not None else job
        reasons = []
        if head.id != job.id:
            reasons.append(
                f"{ahead} queued job(s) of queue {job.queue} go before it (higher priority, or "
                f"the same and earlier); the head is job #{head.id} ({head.priority_name}, "
                f"asking for {head.request.describe()})"
            )
        placed = snapshot.fit(head)
        subject = "it" if head.id == job.id else f"the head #{head.id}"
        if isinstance(placed, Placement):
            reasons.append(
                f"{subject} fits now (pool {placed.pool}); it is admitted on the scheduler's next "
                "pass"
            )
        else:
            reasons += [f"{subject}: {p}" for p in placed]
            found = snapshot.victims(head)
            if found is not None:
                new, pending = found
                if new:
                    ids = ", ".join(f"#{j.id}" for j in [*new, *pending])
                    reasons.append(f"{subject} can make room by preempting borrowed job(s) {ids}")
                else:
                    ids = ", ".join(f"#{j.id}" for j in pending)
                    reasons.append(f"{subject} waits for preempted job(s) {ids} to stop")
        summary = f"job {job.id} is queued in {job.queue}, " + (
            "at the head" if head.id == job.id else f"behind {ahead} job(s)"
        )
        return Explanation(
            job.id, QUEUED, summary, reasons, ahead, None if head.id == job.id else head.id
        )
