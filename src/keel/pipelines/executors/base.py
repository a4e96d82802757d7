"""The executor interface: start, submit an attempt, wait for attempts to end, close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import ModuleType
from typing import Any, ClassVar

from keel.pipelines.task import StepResult, StepTask

__all__ = ["Executor", "Handle"]


class Handle:
    """A submitted attempt (executors keep their own state on it)."""

    def __init__(self, task: StepTask, state: Any = None) -> None:
        self.task = task
        self.state = state


class Executor(ABC):
    """Runs step attempts. The driver schedules; an executor only runs what it is given.

    The driver calls :meth:`start` once, then :meth:`submit` for every attempt
    whose inputs are ready and :meth:`wait` while any is running, and
    :meth:`close` at the end (also after a failure).
    """

    #: The name ``--executor`` takes.
    name: ClassVar[str]

    def start(self, modules: list[ModuleType]) -> None:  # noqa: B027 - optional hook
        """Prepare to run steps; ``modules`` are the project's modules the steps use."""

    def check_resources(self, node: str, where: str, resources: dict[str, Any]) -> None:  # noqa: B027
        """Refuse, before anything runs, a step asking for more than this executor has."""

    @abstractmethod
    def submit(self, task: StepTask) -> Handle:
        """Start one attempt."""

    @abstractmethod
    def wait(self, handles: list[Handle]) -> list[tuple[Handle, StepResult]]:
        """Block until at least one of ``handles`` ended; return those that did."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`start` acquired."""
