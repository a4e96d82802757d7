"""The jobs routes: queues, jobs, their events, why a job waits, the report and prices.

Each route checks what it needs, then runs :class:`~keel.jobs.store.JobStore`
(and the scheduler's :meth:`~keel.jobs.Scheduler.why`, the report, the price
table) as the token's user over the server's store. Jobs, queues and prices
have no grant scope of their own (like datasets), so every check is global:

==========================================  ========================================
listing and reading queues, jobs, events,    ``read`` somewhere (any grant): what
pools, why a job waits, the report, logs,    runs on the shared GPUs and what it
prices                                       costs is no secret among users
submitting a job                             ``write`` (global)
cancelling a job                             ``write`` (global) for a job the caller
                                             submitted; ``admin`` for anyone else's
applying a queue                             ``admin``: quotas decide who gets the
                                             GPUs, so changing them is a control
adding a price row                           ``admin``: prices decide what spend is
                                             reported, like the LLM price table
==========================================  ========================================

Who submitted a job is the token's user, never a field of the request: the
body has no ``submitted_by``, and the store records its caller. A job's
``policy`` label is accepted from the body so that the automation controller,
running through the server with its own token, can find its retrains again.

Running jobs is not done here: ``keel jobs worker`` and ``keel jobs schedule``
work on the metadata store itself (see :mod:`keel.jobs.remote`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from keel.errors import InvalidInput
from keel.jobs.entities import STATES, Job
from keel.jobs.remote import report, why
from keel.jobs.store import JobStore, load_queue
from keel.server.context import Caller, CallerDep
from keel.transport.wire import to_wire
from keel.validation import MAX_NAME_CHARS

router = APIRouter(tags=["jobs"])

_MAX_ID = 2**31 - 1
_MAX_MS = 2**63 - 1
_MAX_BYTES = 2**62
_MAX_COUNT = 2**31 - 1
_MAX_ARGS = 10_000
_ARG_CHARS = 100_000
_REASON_CHARS = 1_000

JobId = Annotated[int, Path(ge=1, le=_MAX_ID, description="a job's id")]
QueueName = Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS, description="a queue")]


class QueueApply(BaseModel):
    """Create or replace a queue, optionally only from a known revision."""

    queue: dict[str, Any] = Field(
        description="name, team, cohort, quotas, borrowing_limit, gpu_hours_per_day", max_length=16
    )
    expected_revision: int | None = Field(default=None, ge=0, le=_MAX_COUNT)


class Submission(BaseModel):
    """A job to queue: a pipeline (``module:attr``) or a command, and what it asks for."""

    target: (
        Annotated[str, Field(min_length=1, max_length=_ARG_CHARS)]
        | list[Annotated[str, Field(max_length=_ARG_CHARS)]]
    ) = Field(description="module:attr of a pipeline, or a command's arguments")
    queue: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    params: dict[str, Any] | None = Field(default=None, description="a pipeline's parameters")
    name: str | None = Field(default=None, max_length=256)
    priority: str | int = Field(default="normal", description="low, normal or high")
    gpus: int = Field(default=0, le=_MAX_COUNT)
    gpu_type: str | None = Field(default=None, max_length=64)
    cpus: float = Field(default=1.0, le=1e9)
    memory: Annotated[int, Field(le=_MAX_BYTES)] | Annotated[str, Field(max_length=64)] = Field(
        default=0, description="bytes, or a size such as 16Gi"
    )
    timeout: float | None = Field(default=None, le=1e12, description="seconds per attempt")
    retries: int = Field(default=0, le=_MAX_COUNT)
    policy: str | None = Field(default=None, max_length=MAX_NAME_CHARS)


class Cancel(BaseModel):
    """Why a job is cancelled (recorded on its event)."""

    reason: str | None = Field(default=None, max_length=_REASON_CHARS)


class NewJobPrice(BaseModel):
    """A price row: USD per hour of one resource, in force from ``starts_at``."""

    resource: str = Field(min_length=1, max_length=80, description="gpu:<type>, cpus or memory")
    per_hour: float = Field(ge=0, description="USD per GPU-hour, CPU-hour or GiB-hour")
    starts_at: int | None = Field(
        default=None, ge=0, le=_MAX_MS, description="epoch ms it applies from (default: now)"
    )


def _jobs(caller: Caller) -> JobStore:
    return JobStore(caller.client)


def _reader(caller: Caller) -> JobStore:
    caller.require_somewhere("read", "reading jobs, queues and prices")
    return _jobs(caller)


def _job(job: Job) -> Any:
    return to_wire(job.to_dict())


# -- queues (before /jobs/{job_id}: their paths are not ids) ------------------------------


@router.get("/jobs/queues")
def list_queues(caller: CallerDep) -> Any:
    """Every queue with its quotas, cohort and borrowing limits."""
    return to_wire(_reader(caller).list_queues())


@router.get("/jobs/queues/{name}")
def get_queue(name: QueueName, caller: CallerDep) -> Any:
    """One queue."""
    return to_wire(_reader(caller).get_queue(name))


@router.put("/jobs/queues/{name}")
def apply_queue(name: QueueName, body: QueueApply, caller: CallerDep) -> Any:
    """Create or replace a queue (``admin``; audited)."""
    caller.require("admin")
    queue = load_queue(body.queue)
    if queue.name != name:
        raise InvalidInput(f"the queue is named {queue.name!r}, but was sent to {name!r}")
    return to_wire(_jobs(caller).apply_queue(queue, expected_revision=body.expected_revision))


# -- pools, the report and prices -----------------------------------------------------------


@router.get("/jobs/pools")
def list_pools(caller: CallerDep, live_only: bool = False) -> Any:
    """The workers' pools and their inventories (only live ones with ``live_only``)."""
    return [p.to_dict() for p in _reader(caller).pools(live_only=live_only)]


@router.get("/jobs/report")
def jobs_report(
    caller: CallerDep,
    by: Annotated[str, Query(max_length=16, description="queue, team or model")] = "queue",
    since: Annotated[int | None, Query(ge=-_MAX_MS, le=_MAX_MS, description="epoch ms")] = None,
    until: Annotated[int | None, Query(ge=-_MAX_MS, le=_MAX_MS, description="epoch ms")] = None,
) -> Any:
    """GPU-hours requested vs used, idle share, right-sizing and cost, per queue, team or model."""
    _reader(caller)
    return to_wire(report(caller.client, by=by, since=since, until=until))


@router.get("/jobs/prices")
def list_prices(
    caller: CallerDep,
    resource: Annotated[str | None, Query(min_length=1, max_length=80)] = None,
) -> Any:
    """Every job price row (or one resource's), by resource and start time."""
    from keel.jobs.prices import JobPrices

    _reader(caller)
    return to_wire(JobPrices(caller.client).list(resource))


@router.post("/jobs/prices", status_code=201)
def set_price(body: NewJobPrice, caller: CallerDep) -> Any:
    """Add a job price row (``admin``; rows are never changed; audited)."""
    from keel.jobs.prices import JobPrices

    caller.require("admin")
    return to_wire(
        JobPrices(caller.client).set(body.resource, body.per_hour, starts_at=body.starts_at)
    )


# -- jobs -----------------------------------------------------------------------------------


@router.post("/jobs", status_code=201)
def submit(body: Submission, caller: CallerDep) -> Any:
    """Queue a job as the token's user (``write``)."""
    caller.require("write")
    if isinstance(body.target, list) and len(body.target) > _MAX_ARGS:
        raise InvalidInput(f"a command may have at most {_MAX_ARGS} arguments")
    job = _jobs(caller).submit(
        body.target,
        queue=body.queue,
        params=body.params,
        name=body.name,
        priority=body.priority,
        gpus=body.gpus,
        gpu_type=body.gpu_type,
        cpus=body.cpus,
        memory=body.memory,
        timeout=body.timeout,
        retries=body.retries,
        policy=body.policy,
    )
    return _job(job)


@router.get("/jobs")
def list_jobs(
    caller: CallerDep,
    queue: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
    state: Annotated[list[str] | None, Query(max_length=len(STATES))] = None,
    policy: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
    pool: Annotated[str | None, Query(max_length=256)] = None,
    model_name: Annotated[str | None, Query(max_length=256)] = None,
    model_version: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
    limit: Annotated[int, Query(ge=0, le=1_000_000, description="0: no limit")] = 100,
) -> Any:
    """Jobs, newest first, filtered by queue, states, policy, pool or registered version."""
    if (model_name is None) != (model_version is None):
        raise InvalidInput("model_name and model_version go together (a registered version)")
    model = None if model_name is None or model_version is None else (model_name, model_version)
    jobs = _reader(caller).list(
        queue=queue, states=state, policy=policy, pool=pool, model=model, limit=limit or None
    )
    return [_job(j) for j in jobs]


@router.get("/jobs/{job_id}")
def get_job(job_id: JobId, caller: CallerDep) -> Any:
    """One job."""
    return _job(_reader(caller).get(job_id))


@router.get("/jobs/{job_id}/events")
def job_events(job_id: JobId, caller: CallerDep) -> Any:
    """A job's events, oldest first, each with its reason."""
    return to_wire(_reader(caller).events(job_id))


@router.get("/jobs/{job_id}/why")
def why_job(job_id: JobId, caller: CallerDep) -> Any:
    """What the job waits for, or why it is where it is."""
    _reader(caller)
    return to_wire(why(caller.client, job_id))


@router.get("/jobs/{job_id}/logs")
def job_logs(job_id: JobId, caller: CallerDep) -> Response:
    """The job's output so far, as text: its uploaded log (empty before an attempt ended)."""
    from keel.jobs.worker import job_log

    job = _reader(caller).get(job_id)
    return Response(job_log(caller.client, job), media_type="text/plain; charset=utf-8")


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: JobId, caller: CallerDep, body: Cancel | None = None) -> Any:
    """Cancel a job: ``write`` for one's own job, ``admin`` for another's."""
    caller.require("write")
    jobs = _jobs(caller)
    if jobs.get(job_id).submitted_by != caller.user:
        caller.require("admin")
    return _job(jobs.cancel(job_id, None if body is None else body.reason))
