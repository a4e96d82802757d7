"""The records of ``keel jobs``: queues, jobs, their events and the pools they run on.

A job moves through states::

    queued ─► admitted ─► running ─► succeeded
      ▲  │        │          ├─────► failed ──► (queued again while retries remain)
      │  │        │          ├─────► preempted ─► queued (requeued, not a retry)
      │  └────────┴──────────┴─────► cancelled
      └── admitted (its pool stopped) ─┘

Every change is a compare-and-set on the row's ``epoch``, written with a
:class:`JobEvent` that says why (see :mod:`keel.jobs.store`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from keel.jobs.resources import Inventory, Request, priority_name

__all__ = [
    "ACTIVE",
    "ENDED",
    "STATES",
    "TRANSITIONS",
    "Job",
    "JobEvent",
    "Pool",
    "Queue",
]

QUEUED = "queued"
ADMITTED = "admitted"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
PREEMPTED = "preempted"
CANCELLED = "cancelled"
STATES = (QUEUED, ADMITTED, RUNNING, SUCCEEDED, FAILED, PREEMPTED, CANCELLED)
#: States that hold resources of a pool.
ACTIVE = (ADMITTED, RUNNING)
#: States a job ends in (``failed`` and ``preempted`` may be followed by ``queued``).
ENDED = (SUCCEEDED, FAILED, CANCELLED)

#: Which state may follow which.
TRANSITIONS: dict[str | None, tuple[str, ...]] = {
    None: (QUEUED,),
    QUEUED: (ADMITTED, CANCELLED),
    ADMITTED: (RUNNING, QUEUED, FAILED, CANCELLED),
    RUNNING: (SUCCEEDED, FAILED, PREEMPTED, CANCELLED),
    FAILED: (QUEUED,),
    PREEMPTED: (QUEUED,),
    SUCCEEDED: (),
    CANCELLED: (),
}


def _json(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default


@dataclass(frozen=True)
class Queue:
    """A queue: nominal quota per resource, its cohort, borrowing limit and GPU-hour budget.

    Attributes:
        name: the queue's name (``team-a``).
        quotas: nominal quota per resource (``{"gpu:a100": 2, "cpus": 16, "memory": ...}``);
            a resource not listed has a quota of 0 (the queue can only borrow it).
        team: the team the queue's spend is reported under.
        cohort: queues of one cohort lend each other their idle quota.
        borrowing_limit: the most of each resource this queue may borrow beyond its quota
            (a resource not listed: no limit but the cohort's idle quota).
        gpu_hours_per_day: GPU-hours the queue's jobs may use in any trailing 24 hours.
        revision: moves by one with every change.
    """

    name: str
    quotas: dict[str, float]
    team: str | None = None
    cohort: str | None = None
    borrowing_limit: dict[str, float] | None = None
    gpu_hours_per_day: float | None = None
    revision: int = 0
    updated_at: int = 0
    updated_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "team": self.team,
            "cohort": self.cohort,
            "quotas": dict(self.quotas),
            "borrowing_limit": None if self.borrowing_limit is None else dict(self.borrowing_limit),
            "gpu_hours_per_day": self.gpu_hours_per_day,
            "revision": self.revision,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }

    @classmethod
    def from_row(cls, row: Any) -> Queue:
        return cls(
            name=row.name,
            quotas=_json(row.quotas, {}),
            team=row.team,
            cohort=row.cohort,
            borrowing_limit=_json(row.borrowing_limit, None),
            gpu_hours_per_day=row.gpu_hours_per_day,
            revision=row.revision,
            updated_at=row.updated_at,
            updated_by=row.updated_by,
        )

    @property
    def gpu_types(self) -> list[str]:
        """The GPU types this queue has quota for, in the order admission tries them."""
        return [k.removeprefix("gpu:") for k in self.quotas if k.startswith("gpu:")]


@dataclass(frozen=True)
class Job:
    """One job: what it runs, what it asks for, where it stands.

    Attributes:
        id: the store's number for it.
        name: a label (the pipeline or the command's first word by default).
        queue: the queue it waits in.
        priority: 0 (low), 1 (normal) or 2 (high).
        kind: ``pipeline`` (``target`` is ``module:attr``, run with ``params``) or
            ``command`` (``target`` is a JSON list of arguments).
        request: the resources it asked for.
        timeout_s: seconds one attempt may run before it is stopped and fails.
        max_retries: how many times a failed attempt is queued again.
        attempt: the current attempt, from 1 (a preemption does not count one).
        state: see :data:`STATES`.
        epoch: moves by one with every change (the compare-and-set token).
        reason: why it is in its state (the last event's reason).
        assigned_gpu_type: the GPU type admission gave it.
        pool: the pool it was admitted to; ``devices`` are the GPU indices there.
        borrowed: admitted on quota borrowed from its cohort (so it may be preempted).
        usage: measured peaks and means (``gpu_util_mean``, ``gpu_memory_peak``,
            ``cpu_percent_mean``, ``rss_peak`` …) of its attempts.
        cost: USD of its attempts so far, from the price table; ``cost_detail`` per resource.
        policy: the automation policy whose retrain it is, if any.
        run_id: the tracked run (a pipeline's run) it made.
        model_name: the registered model its pipeline registered (with ``model_version``).
        seconds_run: wall seconds of all its attempts.
    """

    id: int
    name: str
    queue: str
    priority: int
    kind: str
    target: str
    params: dict[str, Any]
    request: Request
    timeout_s: float | None
    max_retries: int
    attempt: int
    state: str
    epoch: int
    reason: str | None
    submitted_at: int
    submitted_by: str
    updated_at: int
    admitted_at: int | None = None
    started_at: int | None = None
    ended_at: int | None = None
    assigned_gpu_type: str | None = None
    pool: str | None = None
    devices: list[int] = field(default_factory=list)
    borrowed: bool = False
    preempt_requested_at: int | None = None
    cancel_requested_at: int | None = None
    pid: int | None = None
    exit_code: int | None = None
    policy: str | None = None
    run_id: str | None = None
    model_name: str | None = None
    model_version: int | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    cost: float | None = None
    cost_detail: dict[str, Any] = field(default_factory=dict)
    logs_digest: str | None = None
    seconds_run: float = 0.0

    @property
    def command(self) -> list[str]:
        """A command job's arguments."""
        return list(json.loads(self.target)) if self.kind == "command" else []

    @property
    def priority_name(self) -> str:
        return priority_name(self.priority)

    def vector(self) -> dict[str, float]:
        """The resources it holds (or would hold) with its assigned GPU type."""
        return self.request.vector(self.assigned_gpu_type)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "queue": self.queue,
            "priority": self.priority_name,
            "kind": self.kind,
            "target": self.command if self.kind == "command" else self.target,
            "params": self.params,
            "gpus": self.request.gpus,
            "gpu_type": self.request.gpu_type,
            "cpus": self.request.cpus,
            "memory": self.request.memory,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "attempt": self.attempt,
            "state": self.state,
            "epoch": self.epoch,
            "reason": self.reason,
            "submitted_at": self.submitted_at,
            "submitted_by": self.submitted_by,
            "updated_at": self.updated_at,
            "admitted_at": self.admitted_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "assigned_gpu_type": self.assigned_gpu_type,
            "pool": self.pool,
            "devices": list(self.devices),
            "borrowed": self.borrowed,
            "preempt_requested_at": self.preempt_requested_at,
            "cancel_requested_at": self.cancel_requested_at,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "policy": self.policy,
            "run_id": self.run_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "usage": self.usage,
            "cost": self.cost,
            "cost_detail": self.cost_detail,
            "logs_digest": self.logs_digest,
            "seconds_run": self.seconds_run,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Job:
        """The inverse of :meth:`to_dict` (how a job crosses the server's REST API)."""
        from keel.jobs.resources import check_priority

        values = dict(doc)
        request = Request(
            values.pop("gpus"), values.pop("gpu_type"), values.pop("cpus"), values.pop("memory")
        )
        target = values.pop("target")
        if values["kind"] == "command":
            target = json.dumps(list(target))
        values["priority"] = check_priority(values["priority"])
        return cls(request=request, target=target, **values)

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls(
            id=row.id,
            name=row.name,
            queue=row.queue,
            priority=row.priority,
            kind=row.kind,
            target=row.target,
            params=_json(row.params, {}),
            request=Request(row.gpus, row.gpu_type, row.cpus, row.memory),
            timeout_s=row.timeout_s,
            max_retries=row.max_retries,
            attempt=row.attempt,
            state=row.state,
            epoch=row.epoch,
            reason=row.reason,
            submitted_at=row.submitted_at,
            submitted_by=row.submitted_by,
            updated_at=row.updated_at,
            admitted_at=row.admitted_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
            assigned_gpu_type=row.assigned_gpu_type,
            pool=row.pool,
            devices=_json(row.devices, []),
            borrowed=bool(row.borrowed),
            preempt_requested_at=row.preempt_requested_at,
            cancel_requested_at=row.cancel_requested_at,
            pid=row.pid,
            exit_code=row.exit_code,
            policy=row.policy,
            run_id=row.run_id,
            model_name=row.model_name,
            model_version=row.model_version,
            usage=_json(row.usage, {}),
            cost=row.cost,
            cost_detail=_json(row.cost_detail, {}),
            logs_digest=row.logs_digest,
            seconds_run=row.seconds_run or 0.0,
        )


@dataclass(frozen=True)
class JobEvent:
    """One transition of a job, with its reason."""

    id: int
    job_id: int
    at: int
    from_state: str | None
    to_state: str
    reason: str
    actor: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job_id": self.job_id,
            "at": self.at,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "reason": self.reason,
            "actor": self.actor,
            "detail": self.detail,
        }

    @classmethod
    def from_row(cls, row: Any) -> JobEvent:
        return cls(
            row.id,
            row.job_id,
            row.at,
            row.from_state,
            row.to_state,
            row.reason,
            row.actor,
            _json(row.detail, {}),
        )


@dataclass(frozen=True)
class Pool:
    """A worker's inventory, live while its heartbeat is recent."""

    name: str
    executor: str
    inventory: Inventory
    owner: str
    started_at: int
    heartbeat_at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "executor": self.executor,
            "inventory": self.inventory.to_dict(),
            "owner": self.owner,
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at,
        }

    @classmethod
    def from_row(cls, row: Any) -> Pool:
        return cls(
            row.name,
            row.executor,
            Inventory.from_dict(json.loads(row.inventory)),
            row.owner,
            row.started_at,
            row.heartbeat_at,
        )

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Pool:
        values = dict(doc)
        values["inventory"] = Inventory.from_dict(values["inventory"])
        return cls(**values)
