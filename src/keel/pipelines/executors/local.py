"""The local executor: steps run one after another in this process.

A step with a ``timeout`` runs in a forked child process instead, so that
an attempt that overruns can be killed (a thread cannot be); the child
shares the parent's imported code and talks to the stores over its own
connections. Resources (cpus, gpus, memory) are not enforced locally.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from typing import Any

from keel.errors import InvalidInput
from keel.pipelines.executors.base import Executor, Handle
from keel.pipelines.task import StepResult, StepTask, execute_task

__all__ = ["LocalExecutor"]


def _child(task: StepTask, conn: Any) -> None:
    try:
        conn.send(execute_task(task))
    finally:
        conn.close()


def _run_with_timeout(task: StepTask, timeout: float) -> StepResult:
    if sys.platform == "win32":  # pragma: no cover - no fork
        raise InvalidInput("step timeouts in the local executor need fork (Linux or macOS)")
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(task, sender), daemon=True)
    started = time.perf_counter()
    process.start()
    sender.close()
    try:
        if receiver.poll(timeout):
            try:
                result: StepResult = receiver.recv()
                return result
            except EOFError:
                pass  # the child died without answering; reported below
        else:
            process.kill()
            return StepResult(
                task.node,
                task.run_id,
                task.attempt,
                False,
                seconds=time.perf_counter() - started,
                error=f"TimeoutError: the attempt ran longer than its {timeout:g}s timeout and "
                "was killed",
                timed_out=True,
            )
    finally:
        process.join(5)
        receiver.close()
    return StepResult(
        task.node,
        task.run_id,
        task.attempt,
        False,
        seconds=time.perf_counter() - started,
        error=f"the process running the step died (exit code {process.exitcode})",
    )


class LocalExecutor(Executor):
    """Runs each attempt to completion as it is submitted."""

    name = "local"

    def submit(self, task: StepTask) -> Handle:
        if task.timeout is not None:
            result = _run_with_timeout(task, task.timeout)
        else:
            result = execute_task(task)
        return Handle(task, result)

    def wait(self, handles: list[Handle]) -> list[tuple[Handle, StepResult]]:
        return [(h, h.state) for h in handles]
