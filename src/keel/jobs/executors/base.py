"""The one interface between a worker and where its jobs' processes run.

A worker (:mod:`keel.jobs.worker`) owns the loop: it heartbeats its pool, runs
the scheduler when it holds the lease, starts the jobs admitted to its pool,
samples them, stops them when asked (cancel, preemption, timeout) and records
how they ended. An executor only knows how to run one attempt and report on it:

- :meth:`Executor.inventory`: what this executor has (the pool's inventory);
- :meth:`Executor.start`: run one attempt of a job with its environment and log file;
- the returned :class:`Handle` polls, terminates (SIGTERM, or its equivalent) and
  kills it, and names the processes to sample (none where they are remote).

The local executor runs a subprocess per attempt on this machine; the Ray
executor runs each attempt as a Ray task with the job's resources.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from keel.jobs.entities import Job
    from keel.jobs.resources import Inventory

__all__ = ["Executor", "Handle"]


class Handle(ABC):
    """One running attempt of a job."""

    @abstractmethod
    def poll(self) -> int | None:
        """Its exit code once it has ended (0 is success), else ``None``."""

    @abstractmethod
    def terminate(self) -> None:
        """Ask it to stop (SIGTERM): it may checkpoint and exit within the grace period."""

    @abstractmethod
    def kill(self) -> None:
        """Stop it now (SIGKILL), after the grace period."""

    def pids(self) -> list[int]:
        """Local processes to sample (the attempt's root process); none by default."""
        return []


class Executor(ABC):
    """Runs attempts of admitted jobs (see the module docstring).

    Attributes:
        name: ``local`` or ``ray``, stored on the pool.
    """

    name: str

    @abstractmethod
    def inventory(self) -> Inventory:
        """What this executor has to run jobs on."""

    @abstractmethod
    def start(self, job: Job, argv: list[str], env: Mapping[str, str], log_path: Path) -> Handle:
        """Start one attempt of ``job``: run ``argv`` with ``env`` added, output to ``log_path``.

        ``env`` holds ``CUDA_VISIBLE_DEVICES`` for exactly the job's devices,
        ``KEEL_JOB_ID`` and the store's settings.
        """

    def close(self) -> None:  # noqa: B027 — optional: an executor may hold nothing
        """Release what the executor holds (a Ray connection)."""
