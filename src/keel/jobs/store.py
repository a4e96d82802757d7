"""Jobs, queues and pools in the metadata store, and the one way a job's state changes.

How the database settles each race:

- **A transition** (:meth:`JobStore.transition`) is ``UPDATE … WHERE id = ? AND
  epoch = ? AND state = ?`` that moves ``epoch`` on by one, written in the same
  transaction as the :class:`~keel.jobs.entities.JobEvent` that explains it. Two
  writers that read the same job cannot both move it: the second one's update
  matches no row and raises ``Conflict``.
- **Admission** is a transition done by the scheduler under its lease, in a
  transaction that also moves the scheduler row's own epoch while checking that
  the lease is still its own (see :mod:`keel.jobs.scheduler`). A scheduler that
  lost its lease cannot admit anything, so two never admit on one snapshot.
- **Requests** that a worker carries out (cancel a running job, preempt one) set a
  time column by compare-and-set and add an event; the worker that runs the job
  sees it on its next poll, stops the process and makes the transition.
- **Queues** move by revision (compare-and-set), each change audited.

:class:`JobStore` runs this SQL on the client's own store. Through ``keel
server`` its methods are REST calls to routes that run this same class there.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, or_, select, update

from keel.errors import Conflict, InvalidInput, NotFound
from keel.governance import audit
from keel.jobs.entities import (
    ACTIVE,
    CANCELLED,
    ENDED,
    QUEUED,
    RUNNING,
    STATES,
    TRANSITIONS,
    Job,
    JobEvent,
    Pool,
    Queue,
)
from keel.jobs.resources import Inventory, Request, check_priority, check_vector
from keel.store import schema as s
from keel.store.lease import holder_is_dead
from keel.store.sql import insert_on_conflict, now_ms
from keel.transport.base import ClientPart
from keel.validation import check_name

if TYPE_CHECKING:
    from keel.client import Client
    from keel.transport import Transport

__all__ = ["KINDS", "RECORD_FIELDS", "JobStore", "Step", "jobs_for", "load_queue"]

KINDS = ("pipeline", "command")
#: Facts a worker records on a job without a transition (they never decide admission).
RECORD_FIELDS = frozenset(
    {
        "pid",
        "usage",
        "run_id",
        "model_name",
        "model_version",
        "logs_digest",
        "cost",
        "cost_detail",
        "seconds_run",
    }
)
#: Columns a transition may change along with ``state`` (besides times it sets itself).
_TRANSITION_FIELDS = frozenset(
    {
        "assigned_gpu_type",
        "pool",
        "devices",
        "borrowed",
        "preempt_requested_at",
        "cancel_requested_at",
        "exit_code",
        "attempt",
        "admitted_at",
        "started_at",
        "ended_at",
        *RECORD_FIELDS,
    }
)
_JSON_FIELDS = frozenset({"devices", "usage", "cost_detail"})
_QUEUE_KEYS = ("name", "team", "cohort", "quotas", "borrowing_limit", "gpu_hours_per_day")


@dataclass(frozen=True)
class Step:
    """One transition: the state to move to, why, and what else changes with it."""

    state: str
    reason: str
    changes: Mapping[str, Any] | None = None
    detail: Mapping[str, Any] | None = None


def load_queue(source: Any) -> Queue:
    """A checked :class:`Queue` from a mapping, a YAML/JSON file, or a queue.

    Raises:
        InvalidInput: an unknown key, a bad name, amount or limit (the message says which).
    """
    if isinstance(source, Queue):
        source = source.to_dict()
    if isinstance(source, str | os.PathLike):
        import yaml

        path = Path(source)
        try:
            source = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise InvalidInput(f"no queue file {str(path)!r}") from None
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{path}: not YAML or JSON: {exc}") from None
    if not isinstance(source, Mapping):
        raise InvalidInput(f"a queue must be a mapping with name and quotas, got {source!r}")
    doc = {k: v for k, v in source.items() if k not in {"revision", "updated_at", "updated_by"}}
    unknown = sorted(set(doc) - set(_QUEUE_KEYS))
    if unknown:
        raise InvalidInput(
            f"queue: unknown key(s) {', '.join(unknown)}; expected {', '.join(_QUEUE_KEYS)}"
        )
    name = check_name(doc.get("name"), "queue name")
    team = doc.get("team")
    cohort = doc.get("cohort")
    hours = doc.get("gpu_hours_per_day")
    if hours is not None and (
        isinstance(hours, bool) or not isinstance(hours, int | float) or hours < 0
    ):
        raise InvalidInput(f"queue {name}: gpu_hours_per_day must be 0 or more, got {hours!r}")
    limit = doc.get("borrowing_limit")
    return Queue(
        name=name,
        quotas=check_vector(doc.get("quotas") or {}, f"queue {name}: quotas"),
        team=None if team is None else check_name(team, "team name"),
        cohort=None if cohort is None else check_name(cohort, "cohort name"),
        borrowing_limit=None
        if limit is None
        else check_vector(limit, f"queue {name}: borrowing_limit"),
        gpu_hours_per_day=None if hours is None else float(hours),
    )


def _values(changes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if k in _JSON_FIELDS else v for k, v in changes.items()}


def _check_step(step: Step) -> None:
    if step.state not in STATES:
        raise InvalidInput(f"unknown job state {step.state!r}; expected {', '.join(STATES)}")
    unknown = sorted(set(step.changes or {}) - _TRANSITION_FIELDS)
    if unknown:
        raise InvalidInput(f"a job transition cannot change {', '.join(unknown)}")


def _event(
    job_id: int,
    from_state: str | None,
    to_state: str,
    reason: str,
    actor: str,
    detail: Mapping[str, Any] | None,
    at: int,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "at": at,
        "from_state": from_state,
        "to_state": to_state,
        "reason": reason,
        "actor": actor,
        "detail": json.dumps(dict(detail)) if detail else None,
    }


def write_event(
    conn: Connection,
    job_id: int,
    from_state: str | None,
    to_state: str,
    reason: str,
    actor: str,
    detail: Mapping[str, Any] | None = None,
    at: int | None = None,
) -> None:
    """Append one event to ``job_id``'s history in the caller's transaction."""
    row = _event(job_id, from_state, to_state, reason, actor, detail, at or now_ms())
    conn.execute(s.job_events.insert().values(**row))


def move(conn: Connection, job: Job, steps: Sequence[Step], actor: str) -> Job:
    """Apply ``steps`` to ``job`` in the caller's transaction, by compare-and-set.

    Raises:
        InvalidInput: a step names a state that cannot follow the one before it.
        Conflict: the job moved since ``job`` was read (nothing is written).
    """
    state, epoch = job.state, job.epoch
    at = now_ms()
    values: dict[str, Any] = {}
    events = []
    for step in steps:
        _check_step(step)
        if step.state not in TRANSITIONS[state]:
            raise InvalidInput(
                f"job {job.id} cannot go from {state} to {step.state}; from {state} it may go "
                f"to {', '.join(TRANSITIONS[state]) or 'nothing (it has ended)'}"
            )
        events.append(_event(job.id, state, step.state, step.reason, actor, step.detail, at))
        values.update(_values(step.changes or {}))
        values.update(state=step.state, reason=step.reason)
        state = step.state
    # One round trip moves the row and hands it back; the events follow in the same
    # transaction only once the compare-and-set has held.
    row = conn.execute(
        update(s.jobs)
        .where(s.jobs.c.id == job.id, s.jobs.c.epoch == epoch, s.jobs.c.state == job.state)
        .values(epoch=epoch + 1, updated_at=at, **values)
        .returning(*s.jobs.c)
    ).first()
    if row is None:
        raise Conflict(f"job {job.id} changed while it was being moved to {state}; read it again")
    conn.execute(s.job_events.insert(), events)
    span = _gpu_span(job, steps[0] if steps else None, at)
    if span is not None:
        conn.execute(s.job_gpu_spans.insert().values(**span))
    return Job.from_row(row)


def _gpu_span(job: Job, first: Step | None, at: int) -> dict[str, Any] | None:
    """The GPU span an attempt leaves when ``first`` takes it out of ``running``, if any.

    The queue's GPU-hour budget adds these up; the job row keeps only its last
    attempt's times, so a retried or preempted job would otherwise count once.
    """
    if job.state != RUNNING or first is None or first.state == RUNNING:
        return None
    if not job.request.gpus or job.started_at is None:
        return None
    ended = (first.changes or {}).get("ended_at") or at
    return {
        "job_id": job.id,
        "queue": job.queue,
        "gpus": job.request.gpus,
        "started_at": job.started_at,
        "ended_at": max(int(ended), job.started_at),
    }


class JobStore(ClientPart):
    """Queues, jobs, their events and pools (see the module docstring for the races).

    Args:
        client: a ``keel.Client`` (or its transport).
    """

    @property
    def actor(self) -> str:
        return str(self.transport.user)

    # -- queues ----------------------------------------------------------------------

    def apply_queue(self, source: Any, *, expected_revision: int | None = None) -> Queue:
        """Create or replace a queue (a mapping, YAML file or :class:`Queue`).

        Jobs admitted under the old quotas keep running; admission from now on uses
        the new ones. Audited as ``job_queue.apply``.

        Args:
            source: the queue (see :func:`load_queue`).
            expected_revision: refuse (``Conflict``) unless the stored queue is at it.
        """
        queue = load_queue(source)
        at = now_ms()
        actor = self.actor
        with self.transport.store.write() as conn:
            row = conn.execute(
                select(s.job_queues).where(s.job_queues.c.name == queue.name)
            ).first()
            before = None if row is None else Queue.from_row(row)
            if expected_revision is not None and (
                before is None or before.revision != expected_revision
            ):
                raise Conflict(
                    f"queue {queue.name!r} is at revision {None if before is None else before.revision}, "
                    f"not {expected_revision}; read it again"
                )
            values = {
                "team": queue.team,
                "cohort": queue.cohort,
                "quotas": json.dumps(queue.quotas),
                "borrowing_limit": None
                if queue.borrowing_limit is None
                else json.dumps(queue.borrowing_limit),
                "gpu_hours_per_day": queue.gpu_hours_per_day,
                "updated_at": at,
                "updated_by": actor,
            }
            if before is None:
                conn.execute(
                    s.job_queues.insert().values(
                        name=queue.name, revision=1, created_at=at, **values
                    )
                )
            else:
                same = {k: v for k, v in before.to_dict().items() if k in _QUEUE_KEYS}
                if same == {k: v for k, v in queue.to_dict().items() if k in _QUEUE_KEYS}:
                    return before
                done = conn.execute(
                    update(s.job_queues)
                    .where(
                        s.job_queues.c.name == queue.name,
                        s.job_queues.c.revision == before.revision,
                    )
                    .values(revision=before.revision + 1, **values)
                )
                if done.rowcount != 1:
                    raise Conflict(
                        f"queue {queue.name!r} changed while it was applied; apply again"
                    )
            audit.record(
                conn,
                actor=actor,
                action="job_queue.apply",
                object_type="job_queue",
                object_id=queue.name,
                before=None if before is None else before.to_dict(),
                after=queue.to_dict(),
            )
            stored = conn.execute(
                select(s.job_queues).where(s.job_queues.c.name == queue.name)
            ).one()
        return Queue.from_row(stored)

    def get_queue(self, name: str) -> Queue:
        with self.transport.store.read() as conn:
            row = conn.execute(select(s.job_queues).where(s.job_queues.c.name == name)).first()
            if row is None:
                names = conn.execute(select(s.job_queues.c.name).order_by(s.job_queues.c.name))
                known = [r.name for r in names]
                raise NotFound(
                    f"no job queue {name!r}; "
                    + (f"queues: {', '.join(known)}" if known else "there are no queues yet")
                    + "; create one with `keel jobs queues apply FILE`"
                )
        return Queue.from_row(row)

    def list_queues(self) -> builtins.list[Queue]:
        with self.transport.store.read() as conn:
            rows = conn.execute(select(s.job_queues).order_by(s.job_queues.c.name))
            return [Queue.from_row(r) for r in rows]

    # -- jobs ------------------------------------------------------------------------

    def submit(
        self,
        target: str | Sequence[str],
        *,
        queue: str,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
        priority: str | int = "normal",
        gpus: int = 0,
        gpu_type: str | None = None,
        cpus: float = 1.0,
        memory: int | str = 0,
        timeout: float | None = None,
        retries: int = 0,
        policy: str | None = None,
    ) -> Job:
        """Queue a pipeline (``"module:attr"``) or a command (a list of arguments).

        Args:
            target: ``module:attr`` of a pipeline, or a command's arguments.
            queue: the queue to wait in.
            params: the pipeline's parameters (pipelines only).
            name: a label; by default the pipeline or the command's first argument.
            priority: ``low``, ``normal`` or ``high``.
            gpus: whole GPUs; ``gpu_type`` their type (any the queue has, by default).
            cpus: CPUs; ``memory``: bytes or a size (``16Gi``).
            timeout: seconds one attempt may run before it is stopped and fails.
            retries: how many times a failed attempt is queued again.
            policy: the automation policy that asked for it (set by the controller).

        Raises:
            InvalidInput: a bad value, or a request that can never fit: not in the
                queue's quota with what it may borrow, nor in any pool's inventory.
            NotFound: no such queue.
        """
        from keel.jobs.admission import never_fits

        kind, text = _check_target(target)
        if params is not None and not isinstance(params, Mapping):
            raise InvalidInput(f"params must be a mapping of name to value, got {params!r}")
        if kind == "command" and params:
            raise InvalidInput("params are for pipelines; a command takes its arguments")
        request = Request.check(gpus=gpus, gpu_type=gpu_type, cpus=cpus, memory=memory)
        rank = check_priority(priority)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise InvalidInput(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInput(f"retries must be a whole number, 0 or more, got {retries!r}")
        label = name or (text if kind == "pipeline" else json.loads(text)[0])
        label = label[:256]
        at = now_ms()
        actor = self.actor
        # The checks read (the queue, its cohort, the pools) outside the write, which then
        # holds the store's write lock only for the insert and its event.
        with self.transport.store.read() as conn:
            cohort = select(s.job_queues.c.cohort).where(s.job_queues.c.name == queue)
            queues = [
                Queue.from_row(r)
                for r in conn.execute(
                    select(s.job_queues).where(
                        or_(s.job_queues.c.name == queue, s.job_queues.c.cohort.in_(cohort))
                    )
                )
            ]
            found = next((q for q in queues if q.name == queue), None)
            if found is None:
                names = conn.execute(select(s.job_queues.c.name).order_by(s.job_queues.c.name))
                raise NotFound(
                    f"no job queue {queue!r}; queues: {', '.join(r.name for r in names) or 'none'}; "
                    "create one with `keel jobs queues apply FILE`"
                )
            pools = [Pool.from_row(r) for r in conn.execute(select(s.job_pools))]
        why_not = never_fits(request, found, queues, [p.inventory for p in pools])
        if why_not:
            raise InvalidInput(f"this job can never run: {why_not}")
        values = {
            "name": label,
            "queue": queue,
            "priority": rank,
            "kind": kind,
            "target": text,
            "params": json.dumps(dict(params or {}), sort_keys=True, default=str),
            "gpus": request.gpus,
            "gpu_type": request.gpu_type,
            "cpus": request.cpus,
            "memory": request.memory,
            "timeout_s": None if timeout is None else float(timeout),
            "max_retries": retries,
            "attempt": 1,
            "state": QUEUED,
            "epoch": 0,
            "reason": f"submitted to queue {queue}",
            "submitted_at": at,
            "submitted_by": actor,
            "updated_at": at,
            "policy": policy,
            "borrowed": False,
            "seconds_run": 0.0,
        }
        with self.transport.store.write() as conn:
            row = conn.execute(s.jobs.insert().returning(*s.jobs.c), values).one()
            job_id = int(row.id)
            write_event(
                conn,
                job_id,
                None,
                QUEUED,
                f"submitted by {actor} to queue {queue} asking for {request.describe()}",
                actor,
                at=at,
            )
        return Job.from_row(row)

    def get(self, job_id: int) -> Job:
        """The job, or ``NotFound``."""
        with self.transport.store.read() as conn:
            row = conn.execute(select(s.jobs).where(s.jobs.c.id == int(job_id))).first()
        if row is None:
            raise NotFound(f"no job {job_id}; list them with `keel jobs list`")
        return Job.from_row(row)

    def list(
        self,
        *,
        queue: str | None = None,
        states: Sequence[str] | None = None,
        policy: str | None = None,
        pool: str | None = None,
        model: tuple[str, int] | None = None,
        limit: int | None = 100,
    ) -> builtins.list[Job]:
        """Jobs, newest first, filtered by queue, states, policy, pool or registered version.

        Args:
            model: ``(name, version)``: only the jobs that registered that model version.
        """
        for state in states or ():
            if state not in STATES:
                raise InvalidInput(f"unknown job state {state!r}; expected {', '.join(STATES)}")
        query = select(s.jobs).order_by(s.jobs.c.id.desc())
        if queue is not None:
            query = query.where(s.jobs.c.queue == queue)
        if states:
            query = query.where(s.jobs.c.state.in_(list(states)))
        if policy is not None:
            query = query.where(s.jobs.c.policy == policy)
        if pool is not None:
            query = query.where(s.jobs.c.pool == pool)
        if model is not None:
            query = query.where(
                s.jobs.c.model_name == model[0], s.jobs.c.model_version == int(model[1])
            )
        if limit is not None:
            query = query.limit(limit)
        with self.transport.store.read() as conn:
            return [Job.from_row(r) for r in conn.execute(query)]

    def events(self, job_id: int) -> builtins.list[JobEvent]:
        """A job's events, oldest first."""
        self.get(job_id)
        query = select(s.job_events).where(s.job_events.c.job_id == int(job_id))
        with self.transport.store.read() as conn:
            return [JobEvent.from_row(r) for r in conn.execute(query.order_by(s.job_events.c.id))]

    def transition(self, job: Job, *steps: Step) -> Job:
        """Move ``job`` through ``steps`` in one transaction (see :func:`move`).

        Raises:
            Conflict: it moved since it was read; nothing is written.
        """
        with self.transport.store.write() as conn:
            return move(conn, job, steps, self.actor)

    def record(self, job: Job, **facts: Any) -> Job:
        """Record facts about a job (``pid``, ``usage``, ``run_id`` …) without a transition.

        Raises:
            InvalidInput: a field that is not one of :data:`RECORD_FIELDS`.
        """
        unknown = sorted(set(facts) - RECORD_FIELDS)
        if unknown:
            raise InvalidInput(
                f"cannot record {', '.join(unknown)} on a job; recordable: "
                f"{', '.join(sorted(RECORD_FIELDS))}"
            )
        with self.transport.store.write() as conn:
            conn.execute(
                update(s.jobs)
                .where(s.jobs.c.id == job.id)
                .values(updated_at=now_ms(), **_values(facts))
            )
            return Job.from_row(conn.execute(select(s.jobs).where(s.jobs.c.id == job.id)).one())

    def cancel(self, job_id: int, reason: str | None = None) -> Job:
        """Cancel a job: at once when it holds no process, else ask its worker to stop it.

        Raises:
            Conflict: the job has already ended.
        """
        why = reason or f"cancelled by {self.actor}"
        for _ in range(5):
            job = self.get(job_id)
            if job.state in ENDED:
                raise Conflict(f"job {job.id} has already {job.state}; nothing to cancel")
            try:
                if job.state == RUNNING:
                    if job.cancel_requested_at is not None:
                        return job
                    with self.transport.store.write() as conn:
                        return _request(conn, job, "cancel_requested_at", why, self.actor)
                return self.transition(job, Step(CANCELLED, why, {"ended_at": now_ms()}))
            except Conflict:
                continue
        raise Conflict(f"job {job_id} kept changing while it was cancelled; try again")

    # -- pools -----------------------------------------------------------------------

    def heartbeat(self, name: str, executor: str, inventory: Inventory, owner: str) -> Pool:
        """Register or refresh a pool (a worker's inventory); live while heartbeats continue.

        Raises:
            Conflict: another live worker holds this pool name.
        """
        check_name(name, "pool name")
        at = now_ms()
        values = {
            "executor": executor,
            "inventory": json.dumps(inventory.to_dict()),
            "owner": owner,
            "heartbeat_at": at,
        }
        with self.transport.store.write() as conn:
            row = conn.execute(select(s.job_pools).where(s.job_pools.c.name == name)).first()
            if row is None:
                stmt = insert_on_conflict(conn, s.job_pools).values(
                    name=name, started_at=at, **values
                )
                conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
            elif (
                row.owner != owner
                and row.heartbeat_at >= at - POOL_TIMEOUT_MS
                and not holder_is_dead(row.owner)
            ):
                raise Conflict(
                    f"pool {name!r} is held by a live worker ({row.owner}); give this worker "
                    "another --pool name or stop the other one"
                )
            else:
                started = row.started_at if row.owner == owner else at
                conn.execute(
                    update(s.job_pools)
                    .where(s.job_pools.c.name == name, s.job_pools.c.owner == row.owner)
                    .values(started_at=started, **values)
                )
            return Pool.from_row(
                conn.execute(select(s.job_pools).where(s.job_pools.c.name == name)).one()
            )

    def pools(self, *, live_only: bool = False) -> builtins.list[Pool]:
        """Every pool, or only those whose worker beat within :data:`POOL_TIMEOUT_MS`."""
        query = select(s.job_pools).order_by(s.job_pools.c.name)
        if live_only:
            query = query.where(s.job_pools.c.heartbeat_at >= now_ms() - POOL_TIMEOUT_MS)
        with self.transport.store.read() as conn:
            return [Pool.from_row(r) for r in conn.execute(query)]


#: A pool whose worker has not beaten for this long is gone: its jobs are requeued.
POOL_TIMEOUT_MS = 30_000


def _request(conn: Connection, job: Job, column: str, reason: str, actor: str) -> Job:
    """Set a request column (cancel or preempt) on a held job by compare-and-set, with an event."""
    at = now_ms()
    row = conn.execute(
        update(s.jobs)
        .where(s.jobs.c.id == job.id, s.jobs.c.epoch == job.epoch, s.jobs.c.state == job.state)
        .values(**{column: at}, epoch=job.epoch + 1, updated_at=at)
        .returning(*s.jobs.c)
    ).first()
    if row is None:
        raise Conflict(f"job {job.id} changed while it was being asked to stop; read it again")
    write_event(conn, job.id, job.state, job.state, reason, actor, at=at)
    return Job.from_row(row)


def request_stop(conn: Connection, job: Job, column: str, reason: str, actor: str) -> Job:
    """Ask the worker running ``job`` to stop it (``cancel_requested_at``/``preempt_requested_at``)."""
    if column not in ("cancel_requested_at", "preempt_requested_at"):
        raise ValueError(column)
    if job.state not in ACTIVE:
        raise Conflict(f"job {job.id} is {job.state}: it holds no process to stop")
    return _request(conn, job, column, reason, actor)


def _check_target(target: object) -> tuple[str, str]:
    """``("pipeline", "module:attr")`` or ``("command", '["python", "train.py"]')``."""
    if isinstance(target, str):
        module, sep, attr = target.partition(":")
        if (
            sep
            and module
            and attr
            and all(part.isidentifier() for part in [*module.split("."), *attr.split(".")])
        ):
            return "pipeline", target
        raise InvalidInput(
            f"a pipeline target is module:attr (such as pipelines.train:train), got {target!r}; "
            "give a command as a list of arguments (after -- on the command line)"
        )
    if (
        isinstance(target, Sequence)
        and target
        and all(isinstance(a, str) for a in target)
        and target[0]
    ):
        return "command", json.dumps(list(target))
    raise InvalidInput(f"a command is a non-empty list of arguments, got {target!r}")


def jobs_for(client: Client | Transport) -> JobStore:
    """The jobs part of ``client``: SQL locally, REST calls through ``keel server``."""
    part = JobStore(client)
    if part.remote is not None:
        from keel.jobs.remote import RemoteJobStore

        return RemoteJobStore(client)
    return part
