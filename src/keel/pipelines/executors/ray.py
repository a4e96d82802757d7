"""The Ray executor: each step attempt is a Ray task with the step's declared resources.

``ray.init(address=...)`` uses the ``ray_address`` setting (``auto``,
``ray://host:10001`` …); unset, a local Ray starts. If this process already
called ``ray.init``, that cluster is used as it is. Step functions from the
project's own modules travel by value (cloudpickle), so workers need Keel
and the libraries the steps import, not the project's source tree; a
step's outputs go to the content store from the worker that made them.

A step asking for more CPUs, GPUs or memory than the cluster has is refused
before anything runs (Ray would otherwise wait for it forever). An attempt
that exceeds its timeout is cancelled with ``ray.cancel(force=True)``.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

from keel.cluster import import_ray
from keel.errors import InvalidInput
from keel.pipelines.executors.base import Executor, Handle
from keel.pipelines.task import StepResult, StepTask, execute_task

__all__ = ["RayExecutor"]


class RayExecutor(Executor):
    """Steps as Ray tasks.

    Args:
        address: the cluster to join; ``None`` starts a local Ray unless one is running.
    """

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self._remote: Any = None
        self._capacity: dict[str, float] = {}

    def start(self, modules: list[ModuleType]) -> None:
        from keel.cluster import join_ray

        ray = join_ray(self.address)
        for module in modules:
            # The workers may not have the project's files: send its functions by value.
            ray.cloudpickle.register_pickle_by_value(module)
        self._remote = ray.remote(max_retries=0)(execute_task)
        self._capacity = {k: float(v) for k, v in ray.cluster_resources().items()}

    def check_resources(self, node: str, where: str, resources: dict[str, Any]) -> None:
        wanted = {
            "CPU": resources.get("cpus", 1),
            "GPU": resources.get("gpus", 0),
            "memory": resources.get("memory", 0),
        }
        for key, amount in wanted.items():
            if amount and amount > self._capacity.get(key, 0):
                have = self._capacity.get(key, 0)
                raise InvalidInput(
                    f"{where}: step {node!r} asks for {amount:g} {key} but the Ray cluster has "
                    f"{have:g}; lower the step's request or add capacity"
                )

    def submit(self, task: StepTask) -> Handle:
        options: dict[str, Any] = {
            "num_cpus": task.resources.get("cpus", 1),
            "num_gpus": task.resources.get("gpus", 0),
        }
        if task.resources.get("memory"):
            options["memory"] = task.resources["memory"]
        ref = self._remote.options(**options).remote(task)
        return Handle(task, (ref, time.monotonic()))

    def wait(self, handles: list[Handle]) -> list[tuple[Handle, StepResult]]:
        ray = import_ray()
        while True:
            now = time.monotonic()
            deadlines = [h.state[1] + h.task.timeout for h in handles if h.task.timeout is not None]
            wait_for = max(0.0, min(deadlines) - now) if deadlines else None
            ready, _ = ray.wait([h.state[0] for h in handles], num_returns=1, timeout=wait_for)
            done: list[tuple[Handle, StepResult]] = []
            now = time.monotonic()
            for handle in handles:
                ref, started = handle.state
                if ref in ready:
                    done.append((handle, self._result(handle)))
                elif handle.task.timeout is not None and now - started >= handle.task.timeout:
                    ray.cancel(ref, force=True)
                    task = handle.task
                    done.append(
                        (
                            handle,
                            StepResult(
                                task.node,
                                task.run_id,
                                task.attempt,
                                False,
                                seconds=now - started,
                                error=f"TimeoutError: the attempt ran longer than its "
                                f"{task.timeout:g}s timeout and was cancelled",
                                timed_out=True,
                            ),
                        )
                    )
            if done:
                return done

    def _result(self, handle: Handle) -> StepResult:
        ray = import_ray()
        ref, started = handle.state
        try:
            result: StepResult = ray.get(ref)
            return result
        except Exception as exc:  # the worker died or the task could not be deserialized
            task = handle.task
            return StepResult(
                task.node,
                task.run_id,
                task.attempt,
                False,
                seconds=time.monotonic() - started,
                error=f"Ray could not run the step: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                traceback=str(exc),
            )
