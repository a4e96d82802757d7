"""Queues, jobs and their events through ``keel server``.

:class:`RemoteJobStore` is what ``keel.Client().jobs`` gives on a client of the
http transport (see :func:`keel.jobs.store.jobs_for`): each method is one
request to a route of :mod:`keel.server.routes.jobs`, where the server checks
the caller's permissions and runs :class:`~keel.jobs.store.JobStore`'s own code
as the token's user. So a job submitted through a server is ``submitted_by``
the token's user, whatever the client says about itself.

What a worker or the scheduler does to a job (:meth:`~JobStore.transition`,
:meth:`~JobStore.record`, :meth:`~JobStore.heartbeat`) stays on the metadata
store: they move jobs by compare-and-set inside the store's transactions, so
they are refused here with a clear error; ``keel jobs worker`` and ``keel jobs
schedule`` run where the store is reachable.

Two reads are more than a store's rows, and have a function each that works on
either transport, one request through a server: :func:`why` (the scheduler's
:meth:`~keel.jobs.Scheduler.why`) and :func:`report` (the jobs report). A job's
output is read by :func:`keel.jobs.worker.job_log`, from the worker's file on its
own machine, else from the artifact store (``logs_digest``), which a client of
the server reaches through its blob routes.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from keel.errors import InvalidInput
from keel.jobs.entities import STATES, Job, JobEvent, Pool, Queue
from keel.jobs.store import JobStore, Step, load_queue
from keel.transport.http import HttpTransport

if TYPE_CHECKING:
    from keel.client import Client
    from keel.jobs.report import Report
    from keel.jobs.resources import Inventory
    from keel.jobs.scheduler import Explanation

__all__ = ["RemoteJobStore", "report", "require_store", "why"]


def _local_only(what: str) -> InvalidInput:
    return InvalidInput(
        f"{what} changes a job inside the metadata store's own transactions, which are the "
        "server's when the client talks to keel server; run `keel jobs worker` and `keel jobs "
        "schedule` where the store is reachable (KEEL_STORE_URL), not through a server"
    )


def require_store(client: Client, what: str) -> None:
    """Refuse, before it starts, work that moves jobs (a worker, a scheduler) through a server.

    Raises:
        InvalidInput: ``client`` talks to ``keel server``.
    """
    if isinstance(client.jobs, RemoteJobStore):
        raise _local_only(what)


class RemoteJobStore(JobStore):
    """:class:`JobStore` whose reads and writes are requests to ``keel server``."""

    @property
    def http(self) -> HttpTransport:
        """The http transport (``jobs_for`` chose this class for it)."""
        transport = self.transport
        assert isinstance(transport, HttpTransport)
        return transport

    @staticmethod
    def _job_path(job_id: int, tail: str = "") -> str:
        return f"/jobs/{_job_id(job_id)}{tail}"

    # -- queues ----------------------------------------------------------------------

    def apply_queue(self, source: Any, *, expected_revision: int | None = None) -> Queue:
        queue = load_queue(source)  # a file is read here, and checked before it is sent
        # the server checks it again as the caller, and ignores revision and updated_*
        body = {"queue": queue.to_dict(), "expected_revision": expected_revision}
        path = f"/jobs/queues/{quote(queue.name, safe='')}"
        return self.http.call("PUT", path, Queue, json=body)

    def get_queue(self, name: str) -> Queue:
        return self.http.call("GET", f"/jobs/queues/{quote(str(name), safe='')}", Queue)

    def list_queues(self) -> builtins.list[Queue]:
        return self.http.call("GET", "/jobs/queues", builtins.list[Queue])

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
        if params is not None and not isinstance(params, Mapping):
            raise InvalidInput(f"params must be a mapping of name to value, got {params!r}")
        body = {
            "target": target if isinstance(target, str) else builtins.list(target),
            "queue": queue,
            # the store keeps params as JSON text with str() for what JSON lacks; so here
            "params": None if params is None else json.loads(json.dumps(dict(params), default=str)),
            "name": name,
            "priority": priority,
            "gpus": gpus,
            "gpu_type": gpu_type,
            "cpus": cpus,
            "memory": memory,
            "timeout": timeout,
            "retries": retries,
            "policy": policy,
        }
        return Job.from_dict(self.http.request("POST", "/jobs", json=body))

    def get(self, job_id: int) -> Job:
        return Job.from_dict(self.http.request("GET", self._job_path(job_id)))

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
        for state in states or ():
            if state not in STATES:
                raise InvalidInput(f"unknown job state {state!r}; expected {', '.join(STATES)}")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidInput(f"limit must be a positive whole number or None, got {limit!r}")
        params: dict[str, Any] = {"limit": 0 if limit is None else limit}
        if queue is not None:
            params["queue"] = queue
        if states:
            params["state"] = builtins.list(states)
        if policy is not None:
            params["policy"] = policy
        if pool is not None:
            params["pool"] = pool
        if model is not None:
            params["model_name"], params["model_version"] = model[0], int(model[1])
        rows = self.http.request("GET", "/jobs", params=params)
        return [Job.from_dict(row) for row in rows]

    def events(self, job_id: int) -> builtins.list[JobEvent]:
        return self.http.call("GET", self._job_path(job_id, "/events"), builtins.list[JobEvent])

    def cancel(self, job_id: int, reason: str | None = None) -> Job:
        path = self._job_path(job_id, "/cancel")
        return Job.from_dict(self.http.request("POST", path, json={"reason": reason}))

    def transition(self, job: Job, *steps: Step) -> Job:
        raise _local_only("a transition")

    def record(self, job: Job, **facts: Any) -> Job:
        raise _local_only("recording facts")

    # -- pools -----------------------------------------------------------------------

    def heartbeat(self, name: str, executor: str, inventory: Inventory, owner: str) -> Pool:
        raise _local_only("a pool's heartbeat")

    def pools(self, *, live_only: bool = False) -> builtins.list[Pool]:
        params = {"live_only": "true"} if live_only else {}
        rows = self.http.request("GET", "/jobs/pools", params=params)
        return [Pool.from_dict(row) for row in rows]

    # -- reads beyond rows -----------------------------------------------------------

    def why(self, job_id: int) -> Explanation:
        """What the job waits for, as the server's scheduler sees it (see :func:`why`)."""
        from keel.jobs.scheduler import Explanation

        return self.http.call("GET", self._job_path(job_id, "/why"), Explanation)

    def report(self, *, by: str = "queue", since: Any = None, until: Any = None) -> Report:
        """The jobs report, computed on the server in one request (see :func:`report`)."""
        from keel.jobs.report import Report
        from keel.predictions import to_ms

        params: dict[str, Any] = {"by": by}
        for key, value in (("since", since), ("until", until)):
            ms = to_ms(value, key)
            if ms is not None:
                params[key] = ms
        return self.http.call("GET", "/jobs/report", Report, params=params)


def _job_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
        raise InvalidInput(f"a job id is a positive whole number, got {job_id!r}")
    return job_id


def why(client: Client, job_id: int) -> Explanation:
    """What ``job_id`` waits for, or why it is where it is (``keel jobs why``).

    Locally the scheduler's fit runs here on a fresh snapshot; through ``keel
    server`` it runs on the server's store.
    """
    jobs = client.jobs
    if isinstance(jobs, RemoteJobStore):
        return jobs.why(job_id)
    from keel.jobs.scheduler import Scheduler

    return Scheduler(client).why(_job_id(job_id))


def report(client: Client, *, by: str = "queue", since: Any = None, until: Any = None) -> Report:
    """:func:`keel.jobs.report.jobs_report` on either transport (``keel jobs report``).

    Locally it reads the store here; through ``keel server`` the server computes it,
    in one request rather than one per job.
    """
    jobs = client.jobs
    if isinstance(jobs, RemoteJobStore):
        return jobs.report(by=by, since=since, until=until)
    from keel.jobs.report import jobs_report

    return jobs_report(client, by=by, since=since, until=until)
