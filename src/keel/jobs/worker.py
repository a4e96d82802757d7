"""The worker loop: heartbeat, schedule, start admitted jobs, sample them, stop them, record them.

One :meth:`Worker.run_once` turn:

1. **Heartbeat** its pool with the executor's inventory (a pool whose heartbeat
   goes stale is lost: the scheduler requeues its jobs).
2. **Schedule**: one :class:`~keel.jobs.scheduler.Scheduler` pass, which does
   nothing unless this worker holds the scheduler lease.
3. **Start** the jobs admitted to its pool: a command runs as given, a pipeline as
   ``python -m keel.jobs.entry <id>``; ``CUDA_VISIBLE_DEVICES`` names exactly the
   job's devices, and the store's settings travel in ``KEEL_*`` variables so the
   job writes to the same store. ``admitted`` → ``running``.
4. **Tend** the running ones: sample CPU, RSS and GPUs every ``sample_seconds``;
   a cancel or preempt request, or the timeout, sends SIGTERM, and SIGKILL after
   ``grace_seconds``. When an attempt ends the job moves in one transition:
   ``succeeded``; ``failed`` (then ``queued`` again as ``retry 2 of 3`` while
   retries remain); ``cancelled``; or ``preempted`` → ``queued`` with the same
   attempt number (a preemption is not the job's fault). Its usage is added to
   the job's, its log uploaded to the artifact store, its usage written on its
   run (``job.*`` metrics, ``keel.job.*`` tags), and its cost recorded.

A job's output goes to ``<home>/jobs/<id>/output.log`` on the worker, one file
for all its attempts (each begins with a ``== keel: ... ==`` line), uploaded
after each attempt (``logs_digest``); :func:`job_log` and
:func:`follow_job_log` read it.

A worker that is killed leaves its jobs ``running`` on a pool that stops
beating: the scheduler requeues them (see :mod:`keel.jobs.scheduler`). A worker
that stops normally (:meth:`Worker.shutdown`) stops its jobs and requeues them.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import BackendUnavailable, Conflict, KeelError, StorageError
from keel.jobs.entities import (
    ACTIVE,
    ADMITTED,
    CANCELLED,
    ENDED,
    FAILED,
    PREEMPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Job,
)
from keel.jobs.sampling import (
    GpuReader,
    ProcessSampler,
    UsageMeter,
    import_psutil,
    merge_usage,
)
from keel.jobs.store import Step
from keel.store.lease import new_owner
from keel.store.sql import now_ms

if TYPE_CHECKING:
    from keel.client import Client
    from keel.config import Settings
    from keel.jobs.executors.base import Executor, Handle
    from keel.jobs.scheduler import Scheduler
    from keel.jobs.store import JobStore

__all__ = ["Worker", "follow_job_log", "job_argv", "job_env", "job_log", "job_log_path"]

log = logging.getLogger(__name__)

#: What a requeued job gives back: its place on a pool and any pending stop request.
_RELEASE: dict[str, Any] = {
    "pool": None,
    "devices": [],
    "assigned_gpu_type": None,
    "borrowed": False,
    "preempt_requested_at": None,
    "cancel_requested_at": None,
    "pid": None,
}


def job_argv(job: Job) -> list[str]:
    """What an attempt runs: a command's arguments, or the pipeline entry point."""
    if job.kind == "pipeline":
        return [sys.executable, "-m", "keel.jobs.entry", str(job.id)]
    return job.command


def job_env(settings: Settings, job: Job) -> dict[str, str]:
    """The variables an attempt gets on top of the worker's environment.

    ``CUDA_VISIBLE_DEVICES`` is exactly the job's devices (empty: no GPU), numbered
    as NVML numbers them (``CUDA_DEVICE_ORDER=PCI_BUS_ID``); ``KEEL_JOB_ID`` and
    ``KEEL_JOB_ATTEMPT`` say which job this is; the store settings (``KEEL_HOME``,
    ``KEEL_STORE_URL``, ``KEEL_ARTIFACTS_URL`` …) are the worker's, and a setting the
    worker does not have is blanked so the job cannot pick up another from the
    environment.
    """
    from keel.pipelines.task import SETTINGS_FIELDS

    env = {}
    for name in SETTINGS_FIELDS:
        value = getattr(settings, name)
        env[f"KEEL_{name.upper()}"] = "" if value is None else str(value)
    env["KEEL_JOB_ID"] = str(job.id)
    env["KEEL_JOB_ATTEMPT"] = str(job.attempt)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in job.devices)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


def job_log_path(home: str | Path, job_id: int) -> Path:
    """Where a worker writes a job's output: ``<home>/jobs/<id>/output.log``."""
    return Path(home) / "jobs" / str(int(job_id)) / "output.log"


def job_log(client: Client, job: Job | int) -> str:
    """A job's output: the worker's live file while it runs here, else the uploaded log.

    Args:
        client: the client whose home and artifact store hold the logs.
        job: the job or its id.

    Returns:
        All its attempts' output so far (``""`` when it has none yet).
    """
    if not isinstance(job, Job):
        job = client.jobs.get(job)
    path = job_log_path(client.settings.home, job.id)
    if job.state in ACTIVE and path.is_file():
        return path.read_bytes().decode(errors="replace")
    if job.logs_digest:
        return client.artifacts.get_bytes(job.logs_digest).decode(errors="replace")
    return path.read_bytes().decode(errors="replace") if path.is_file() else ""


def follow_job_log(client: Client, job: Job | int, *, poll_seconds: float = 0.5) -> Iterator[str]:
    """A job's output as it grows, until the job has ended (``keel jobs logs --follow``).

    Yields what is there, then each new piece of the worker's live file (when the job
    runs on this machine); once the job has ended, the rest of its log.
    """
    import codecs

    job_id = job.id if isinstance(job, Job) else int(job)
    path = job_log_path(client.settings.home, job_id)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    sent = 0
    while True:
        current = client.jobs.get(job_id)
        if current.state in ENDED:
            if path.is_file():
                rest = path.read_bytes()[sent:]
            elif current.logs_digest:
                rest = client.artifacts.get_bytes(current.logs_digest)
            else:
                rest = b""
            text = decoder.decode(rest, final=True)
            if text:
                yield text
            return
        if path.is_file():
            with open(path, "rb") as f:
                f.seek(sent)
                chunk = f.read()
            sent += len(chunk)
            text = decoder.decode(chunk)
            if text:
                yield text
        time.sleep(poll_seconds)


def _append(path: Path, text: str) -> None:
    """Add a ``== keel: text, time ==`` line to a job's log."""
    try:
        with open(path, "a") as f:
            f.write(f"== keel: {text}, {datetime.now(UTC).isoformat(timespec='seconds')} ==\n")
    except OSError:  # the log is a convenience; the job's record is the store
        pass


def _how(code: int, killed: bool, grace: float) -> str:
    if killed:
        return f"killed after the {grace:g} s grace period"
    if code < 0:
        try:
            return f"stopped by {signal.Signals(-code).name}"
        except ValueError:
            return f"stopped by signal {-code}"
    return f"exited with code {code}"


@dataclass
class _Attempt:
    """One running attempt this worker tends."""

    job: Job
    handle: Handle
    log_path: Path
    started: float
    meter: UsageMeter
    sampler: ProcessSampler | None
    next_sample: float
    stop: str | None = None
    term_at: float | None = None
    killed: bool = False
    gpu_failed: bool = False


class Worker:
    """Runs the jobs admitted to one pool (see the module docstring).

    Args:
        client: a ``keel.Client``.
        executor: where attempts run (:class:`~keel.jobs.executors.LocalExecutor`, Ray).
        pool: this worker's pool name (one live worker per name).
        grace_seconds: between SIGTERM and SIGKILL when a job is stopped.
        poll_seconds: between two turns of :meth:`run`.
        sample_seconds: between two samples of a running attempt.
        gpu_reader: reads the jobs' GPUs (:class:`~keel.jobs.sampling.NvmlReader`, or a
            recorded file); ``None`` samples no GPU, and neither does a Ray executor.
        schedule: also run scheduler passes (only the lease holder's do anything).
        scheduler: the scheduler to run (default: ``Scheduler(client)``).
        owner: this worker's id on its pool (default ``host:pid:random``).

    Example:
        >>> from keel.jobs.executors import LocalExecutor
        >>> Worker(keel.Client(), LocalExecutor(), pool="gpu-1").run()
    """

    def __init__(
        self,
        client: Client,
        executor: Executor,
        *,
        pool: str,
        grace_seconds: float = 10.0,
        poll_seconds: float = 1.0,
        sample_seconds: float = 2.0,
        gpu_reader: GpuReader | None = None,
        schedule: bool = True,
        scheduler: Scheduler | None = None,
        owner: str | None = None,
    ) -> None:
        self.client = client
        self.executor = executor
        self.pool = pool
        self.grace_seconds = grace_seconds
        self.poll_seconds = poll_seconds
        self.sample_seconds = sample_seconds
        # A Ray pool's device indices are not the GPUs Ray assigns a task, so reading
        # them would sample the wrong devices: Ray jobs get no GPU samples.
        self.gpu_reader = None if executor.name == "ray" else gpu_reader
        self.schedule = schedule
        self.scheduler = scheduler
        self.owner = owner or new_owner()
        self._attempts: dict[int, _Attempt] = {}
        self._reaping: list[Handle] = []

    @property
    def jobs(self) -> JobStore:
        return self.client.jobs

    @property
    def running(self) -> list[int]:
        """Ids of the jobs this worker has a process for."""
        return sorted(self._attempts)

    # -- the loop -----------------------------------------------------------------------

    def run_once(self) -> list[Job]:
        """One turn (see the module docstring).

        Returns:
            The jobs this turn started or ended, as stored after their transition.

        Raises:
            Conflict: another live worker holds this pool's name.
        """
        self.jobs.heartbeat(self.pool, self.executor.name, self.executor.inventory(), self.owner)
        if self.schedule:
            if self.scheduler is None:
                from keel.jobs.scheduler import Scheduler

                self.scheduler = Scheduler(self.client)
            self.scheduler.schedule()
        return self._tend_all()

    def run(
        self, stop_event: threading.Event | None = None, max_seconds: float | None = None
    ) -> None:
        """Turn until ``stop_event`` is set or ``max_seconds`` pass, then :meth:`shutdown`.

        A store that cannot be reached for a turn is logged and tried again next turn.
        """
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not (stop_event is not None and stop_event.is_set()):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                began = time.monotonic()
                try:
                    self.run_once()
                except (StorageError, BackendUnavailable) as exc:
                    log.warning("keel: worker %s: %s; trying again", self.pool, exc)
                pause = max(0.0, self.poll_seconds - (time.monotonic() - began))
                if stop_event is not None:
                    stop_event.wait(pause)
                else:
                    time.sleep(pause)
        finally:
            self.shutdown()

    def shutdown(self, reason: str = "its worker stopped") -> list[Job]:
        """Stop this worker's jobs (SIGTERM, grace, SIGKILL), requeue them, give up the lease.

        Jobs admitted here and not started yet are requeued too.
        """
        moved: list[Job] = []
        for job in self.jobs.list(pool=self.pool, states=[ADMITTED], limit=None):
            if job.id not in self._attempts:
                try:
                    moved.append(self.jobs.transition(job, Step(QUEUED, reason, _RELEASE)))
                except Conflict:
                    pass
        for attempt in self._attempts.values():
            if attempt.stop is None:
                self._stop(attempt, "shutdown", reason)
        while self._attempts:
            for job_id in list(self._attempts):
                attempt = self._attempts[job_id]
                try:
                    attempt.job = self.jobs.get(job_id)
                except KeelError:
                    pass
                ended = self._tend(attempt)
                if ended is not None:
                    moved.append(ended)
            if self._attempts:
                time.sleep(min(self.poll_seconds, 0.2))
        self._reap()
        if self.scheduler is not None:
            try:
                self.scheduler.release()
            except KeelError as exc:
                log.warning(
                    "keel: worker %s could not release the scheduler lease: %s", self.pool, exc
                )
        return moved

    # -- one turn -------------------------------------------------------------------------

    def _tend_all(self) -> list[Job]:
        moved: list[Job] = []
        mine = {j.id: j for j in self.jobs.list(pool=self.pool, states=list(ACTIVE), limit=None)}
        for job_id in [i for i in self._attempts if i not in mine]:
            self._lose(self._attempts.pop(job_id))
        for job in mine.values():
            attempt = self._attempts.get(job.id)
            if attempt is not None:
                attempt.job = job
                ended = self._tend(attempt)
            elif job.state == ADMITTED:
                ended = self._start(job)
            else:
                ended = self._orphan(job)
            if ended is not None:
                moved.append(ended)
        self._reap()
        return moved

    def _reap(self) -> None:
        self._reaping = [h for h in self._reaping if h.poll() is None]

    def _lose(self, attempt: _Attempt) -> None:
        """The job left this pool while running here (its pool was declared lost): stop it."""
        log.warning(
            "keel: job %s was taken off pool %s while it ran here; killing its process",
            attempt.job.id,
            self.pool,
        )
        attempt.handle.kill()
        self._reaping.append(attempt.handle)

    def _orphan(self, job: Job) -> Job | None:
        """A job running on this pool under an earlier worker of its name: requeue it."""
        steps = [
            Step(PREEMPTED, f"its worker on pool {self.pool} restarted", {"ended_at": now_ms()}),
            Step(QUEUED, "requeued after its worker restarted", _RELEASE),
        ]
        return self._move(job, *steps)

    def _start(self, job: Job) -> Job | None:
        if job.cancel_requested_at is not None:
            step = Step(CANCELLED, "cancelled before it started", {"ended_at": now_ms()})
            return self._move(job, step)
        if job.preempt_requested_at is not None:
            return self._move(job, Step(QUEUED, "preempted before it started; requeued", _RELEASE))
        settings = self.client.settings
        path = job_log_path(settings.home, job.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() and job.logs_digest:  # earlier attempts ran on another machine
            self.client.artifacts.get_file(job.logs_digest, path)
        devices = f" devices {job.devices}" if job.devices else ""
        _append(path, f"job {job.id} attempt {job.attempt} on pool {self.pool}{devices}")
        try:
            import_psutil()
            handle = self.executor.start(job, job_argv(job), job_env(settings, job), path)
        except KeelError as exc:
            _append(path, f"could not start: {exc}")
            failed = Step(FAILED, f"could not start: {exc}", {"ended_at": now_ms()})
            return self._move(job, failed, *self._retry(job))
        pids = handle.pids()
        pid = pids[0] if pids else None
        began = time.monotonic()
        reason = f"started on pool {self.pool}" + (f" (pid {pid})" if pid else "")
        # The GPU type held goes on the event: costing reads it after a requeue cleared it.
        detail: dict[str, Any] = {"pool": self.pool, "gpu_type": job.assigned_gpu_type}
        detail.update(pid=pid, devices=list(job.devices), attempt=job.attempt)
        changes = {"started_at": now_ms(), "pid": pid, "ended_at": None, "exit_code": None}
        try:
            moved = self.jobs.transition(job, Step(RUNNING, reason, changes, detail))
        except Conflict:  # cancelled or requeued while it started: it is not ours to run
            handle.kill()
            self._reaping.append(handle)
            return None
        sampler = None
        if pids:
            try:
                sampler = ProcessSampler(pids)
            except KeelError as exc:
                log.warning("keel: job %s will not be sampled: %s", job.id, exc)
        # The first turn after the start samples (next_sample=began): short jobs get a reading.
        meter = UsageMeter(job.request.gpus)
        self._attempts[job.id] = _Attempt(moved, handle, path, began, meter, sampler, began)
        log.info("keel: job %s %s", job.id, reason)
        return moved

    def _move(self, job: Job, *steps: Step) -> Job | None:
        try:
            return self.jobs.transition(job, *steps)
        except Conflict:
            return None

    def _retry(self, job: Job) -> list[Step]:
        if job.attempt > job.max_retries:
            return []
        nxt = job.attempt + 1
        return [Step(QUEUED, f"retry {nxt} of {job.max_retries + 1}", {**_RELEASE, "attempt": nxt})]

    # -- a running attempt ------------------------------------------------------------------

    def _tend(self, attempt: _Attempt) -> Job | None:
        code = attempt.handle.poll()
        now = time.monotonic()
        if code is not None:
            return self._finish(attempt, code)
        if now >= attempt.next_sample:
            self._sample(attempt)
            attempt.next_sample = now + self.sample_seconds
        job = attempt.job
        if job.cancel_requested_at is not None and attempt.stop != "cancel":
            self._stop(attempt, "cancel", "cancelled")
        elif job.preempt_requested_at is not None and attempt.stop is None:
            self._stop(attempt, "preempt", "preempted")
        elif (
            job.timeout_s is not None
            and attempt.stop is None
            and now - attempt.started >= job.timeout_s
        ):
            self._stop(attempt, "timeout", f"timed out after {job.timeout_s:g} s")
        if (
            attempt.term_at is not None
            and not attempt.killed
            and now - attempt.term_at >= self.grace_seconds
        ):
            _append(attempt.log_path, f"SIGKILL after the {self.grace_seconds:g} s grace period")
            attempt.handle.kill()
            attempt.killed = True
        return None

    def _stop(self, attempt: _Attempt, kind: str, why: str) -> None:
        attempt.stop = kind
        if attempt.term_at is None:
            _append(attempt.log_path, f"SIGTERM: {why}")
            attempt.handle.terminate()
            attempt.term_at = time.monotonic()

    def _sample(self, attempt: _Attempt) -> None:
        process = None
        if attempt.sampler is not None:
            process = attempt.sampler.sample()
        gpus = None
        if self.gpu_reader is not None and attempt.job.devices:
            try:
                gpus = self.gpu_reader.read(list(attempt.job.devices))
            except Exception as exc:  # a GPU reader's failure must not stop the job
                if not attempt.gpu_failed:
                    log.warning("keel: cannot read GPUs of job %s: %s", attempt.job.id, exc)
                attempt.gpu_failed = True
        attempt.meter.add(process, gpus)

    def _finish(self, attempt: _Attempt, code: int) -> Job | None:
        seconds = time.monotonic() - attempt.started
        how = _how(code, attempt.killed, self.grace_seconds)
        _append(attempt.log_path, f"{how} after {seconds:.1f} s")
        used = attempt.meter.usage(seconds)
        digest = None
        try:
            digest = self.client.artifacts.put_file(attempt.log_path).digest
        except KeelError as exc:
            log.warning("keel: could not upload the log of job %s: %s", attempt.job.id, exc)
        job = attempt.job
        moved = None
        for _ in range(5):
            if job.state != RUNNING or job.pool != self.pool:
                log.warning("keel: job %s moved to %s while it ran here", job.id, job.state)
                break
            changes: dict[str, Any] = {
                "ended_at": now_ms(),
                "exit_code": code,
                "usage": merge_usage(job.usage, used),
                "seconds_run": job.seconds_run + seconds,
            }
            if digest is not None:
                changes["logs_digest"] = digest
            detail = {"exit_code": code, "seconds": round(seconds, 3), "usage": used}
            try:
                moved = self.jobs.transition(
                    job, *self._outcome(job, attempt, code, how, changes, detail)
                )
                break
            except Conflict:  # a request (cancel, preempt) landed meanwhile: read and decide again
                job = self.jobs.get(job.id)
        self._attempts.pop(attempt.job.id, None)
        if moved is None:
            return None
        log.info("keel: job %s %s (%s)", moved.id, moved.state, moved.reason)
        self._record_run(moved)
        try:
            from keel.jobs.costing import record_cost

            moved = record_cost(self.client, moved)
        except Exception as exc:  # the job has ended; a costing failure must not stop the worker
            log.warning("keel: could not record the cost of job %s: %s", moved.id, exc)
        return moved

    def _outcome(
        self,
        job: Job,
        attempt: _Attempt,
        code: int,
        how: str,
        changes: dict[str, Any],
        detail: dict[str, Any],
    ) -> list[Step]:
        stop = attempt.stop
        if stop == "cancel" or (job.cancel_requested_at is not None and code != 0):
            return [Step(CANCELLED, f"cancelled; {how}", changes, detail)]
        if stop in ("preempt", "shutdown"):
            why = "preempted" if stop == "preempt" else "its worker stopped"
            return [
                Step(PREEMPTED, f"{why}; {how}", changes, detail),
                Step(QUEUED, f"requeued ({why}); attempt {job.attempt} continues", _RELEASE),
            ]
        if stop == "timeout":
            failed = Step(
                FAILED, f"timed out after {job.timeout_s:g} s", changes, {**detail, "how": how}
            )
            return [failed, *self._retry(job)]
        if code == 0:
            return [Step(SUCCEEDED, f"succeeded; {how}", changes, detail)]
        return [Step(FAILED, f"failed; {how}", changes, detail), *self._retry(job)]

    def _record_run(self, job: Job) -> None:
        """The job's usage on its run: ``keel.job.*`` tags and ``job.*`` metrics."""
        if not job.run_id:
            return
        from keel.tracking.entities import Metric

        at = now_ms()
        metrics = [
            Metric(f"job.{key}", float(value), job.attempt, at)
            for key, value in sorted(job.usage.items())
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        tags = {
            "keel.job.id": str(job.id),
            "keel.job.queue": job.queue,
            "keel.job.attempt": str(job.attempt),
            "keel.job.state": job.state,
        }
        try:
            self.client.log_batch(job.run_id, metrics, tags=tags)
        except KeelError as exc:
            log.warning(
                "keel: could not write job %s's usage on run %s: %s", job.id, job.run_id, exc
            )
