"""What a policy's queued retrain asks of its job queue (``retrain.resources``).

Parsed with the policy (:mod:`keel.automation.policy`), submitted by the controller
(:mod:`keel.automation.retrain_jobs`); the values are those ``keel jobs submit``
takes, checked with the job store's own rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.automation.durations import human_duration, parse_duration
from keel.errors import InvalidInput
from keel.jobs.resources import PRIORITIES, Request, check_gpu_type, parse_memory
from keel.suggest import closest

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["RetrainResources", "check_job_target", "queue_problem"]

_FIELDS = ("gpus", "gpu_type", "cpus", "memory", "priority", "timeout", "retries")


@dataclass(frozen=True)
class RetrainResources:
    """What a queued retrain's job asks for (``retrain.resources`` of a policy).

    Attributes:
        gpus: whole GPUs; ``gpu_type`` their type (any type the queue has, by default).
        cpus: CPUs (fractions allowed).
        memory: bytes of memory (given as ``32Gi``, ``512Mi`` or a number of bytes).
        priority: ``low``, ``normal`` or ``high``: admitted first, and may preempt
            lower-priority jobs running on borrowed quota.
        timeout: seconds one attempt may run before it is stopped and fails.
        retries: how many times a failed attempt is queued again before the cycle fails.
    """

    gpus: int = 0
    gpu_type: str | None = None
    cpus: float = 1.0
    memory: int = 0
    priority: str = "normal"
    timeout: float | None = None
    retries: int = 0

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> RetrainResources:
        """Checked resources from a mapping; every message names the field and what it takes.

        Raises:
            InvalidInput: an unknown field, a negative or non-numeric amount, a GPU type
                without GPUs, an unknown priority or a timeout that is not a duration.
        """
        if not isinstance(doc, Mapping):
            raise InvalidInput(
                f"{where}: expected a mapping such as {{gpus: 1, gpu_type: a100, cpus: 8, "
                f"memory: 32Gi, priority: high}}, got {type(doc).__name__} {doc!r}"
            )
        unknown = sorted(str(k) for k in set(doc) - set(_FIELDS))
        if unknown:
            raise InvalidInput(
                f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(_FIELDS)}"
            )
        gpus = doc.get("gpus", 0)
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
            raise InvalidInput(
                f"{where}.gpus: expected a whole number of GPUs, 0 or more, got {gpus!r}"
            )
        gpu_type = doc.get("gpu_type")
        if gpu_type is not None:
            try:
                gpu_type = check_gpu_type(gpu_type)
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.gpu_type: {exc}") from None
            if gpus == 0:
                raise InvalidInput(
                    f"{where}.gpu_type: {gpu_type!r} was given without gpus; add gpus: N"
                )
        cpus = doc.get("cpus", 1.0)
        if (
            isinstance(cpus, bool)
            or not isinstance(cpus, int | float)
            or not math.isfinite(cpus)
            or cpus < 0
        ):
            raise InvalidInput(f"{where}.cpus: expected a number of CPUs, 0 or more, got {cpus!r}")
        if cpus == 0 and gpus == 0:
            raise InvalidInput(
                f"{where}: a job must ask for some CPU or a GPU; cpus and gpus are 0"
            )
        memory = parse_memory(doc.get("memory", 0), f"{where}.memory")
        priority = doc.get("priority", "normal")
        if not isinstance(priority, str) or priority not in PRIORITIES:
            raise InvalidInput(
                f"{where}.priority: expected one of {', '.join(PRIORITIES)}, got {priority!r}"
            )
        timeout = doc.get("timeout")
        retries = doc.get("retries", 0)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInput(
                f"{where}.retries: expected a whole number, 0 or more, got {retries!r}"
            )
        return cls(
            gpus=gpus,
            gpu_type=gpu_type,
            cpus=float(cpus),
            memory=memory,
            priority=priority,
            timeout=None if timeout is None else parse_duration(timeout, f"{where}.timeout"),
            retries=retries,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "cpus": self.cpus,
            "memory": self.memory,
            "priority": self.priority,
            "timeout": self.timeout,
            "retries": self.retries,
        }

    def request(self) -> Request:
        """The job's resource request (the same check ``keel jobs submit`` makes)."""
        return Request.check(
            gpus=self.gpus, gpu_type=self.gpu_type, cpus=self.cpus, memory=self.memory
        )

    def submit_arguments(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`keel.jobs.JobStore.submit`."""
        return {
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "cpus": self.cpus,
            "memory": self.memory,
            "priority": self.priority,
            "timeout": self.timeout,
            "retries": self.retries,
        }

    def describe(self) -> str:
        """``1xa100, 8 cpus, 32Gi, high priority, timeout 2h, 1 retry`` for messages."""
        parts = [self.request().describe(), f"{self.priority} priority"]
        if self.timeout is not None:
            parts.append(f"timeout {human_duration(self.timeout)}")
        if self.retries:
            parts.append(f"{self.retries} retr{'y' if self.retries == 1 else 'ies'}")
        return ", ".join(parts)


def check_job_target(pipeline: str, where: str) -> str:
    """``pipeline`` if a job can run it: ``module:attr``, each part a Python name.

    A job's worker imports the pipeline in its own process, as ``keel jobs submit``
    takes it; a file path would only mean something on the controller's machine.

    Raises:
        InvalidInput: a file path or a malformed name, with what to do instead.
    """
    module, _, attr = pipeline.partition(":")
    parts = [*module.split("."), *attr.split(".")]
    if not module or not attr or not all(part.isidentifier() for part in parts):
        raise InvalidInput(
            f"{where}: a queued retrain runs as a job, which imports its pipeline as "
            f"module:attr (such as pipelines.train:train), got {pipeline!r}; put the file's "
            "folder on the workers' PYTHONPATH and name its module"
        )
    return pipeline


def queue_problem(
    queue: str | None, resources: RetrainResources | None, client: Client
) -> tuple[str, bool] | None:
    """Why a retrain's job ``queue`` cannot take its job, or None (also when it has no queue).

    Returns:
        ``(text, missing)``: ``missing`` is True when the queue does not exist, False
        when it exists but the job could never fit in it (its quota with what it may
        borrow, or every known pool's inventory).
    """
    from keel.jobs.admission import never_fits

    if queue is None:
        return None
    jobs = client.jobs
    queues = jobs.list_queues()
    found = next((q for q in queues if q.name == queue), None)
    if found is None:
        names = sorted(q.name for q in queues)
        close = closest(queue, names)
        if close:
            hint = f" (closest: {', '.join(close)})"
        elif names:
            hint = f" (there are: {', '.join(names[:5])}{', …' if len(names) > 5 else ''})"
        else:
            hint = " (there are no job queues yet)"
        return (
            f"no job queue {queue!r}{hint}; create it with `keel jobs queues apply FILE`",
            True,
        )
    resources = resources or RetrainResources()
    inventories = [pool.inventory for pool in jobs.pools()]
    why = never_fits(resources.request(), found, queues, inventories)
    if why:
        return f"the retrain's job could never run in queue {found.name}: {why}", False
    return None
