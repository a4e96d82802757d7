"""Executors: where step attempts run. ``local`` (default) or ``ray``."""

from __future__ import annotations

from keel.errors import InvalidInput
from keel.pipelines.executors.base import Executor, Handle

__all__ = ["EXECUTORS", "Executor", "Handle", "get_executor"]

EXECUTORS = ("local", "ray")


def get_executor(executor: str | Executor, *, ray_address: str | None = None) -> Executor:
    """An executor by name (``local`` or ``ray``), or the one given."""
    if isinstance(executor, Executor):
        return executor
    if executor == "local":
        from keel.pipelines.executors.local import LocalExecutor

        return LocalExecutor()
    if executor == "ray":
        from keel.pipelines.executors.ray import RayExecutor

        return RayExecutor(ray_address)
    raise InvalidInput(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
