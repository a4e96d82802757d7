"""The local executor: each attempt is a subprocess of the worker, in its own session.

An attempt runs in a new session (``setsid``), so its process group holds the
command and everything it starts: SIGTERM and SIGKILL go to the whole group,
and when the command's own process ends, whatever it left behind in the group
is killed with it (the job's GPUs are then free for the next one). On Linux the
attempt also gets SIGTERM when the worker dies (``PR_SET_PDEATHSIG``), so a
job whose worker was killed does not keep running beside its requeued self.

Its output (stdout and stderr) is appended to the attempt's log file.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from keel.errors import InvalidInput
from keel.jobs.executors.base import Executor, Handle

if TYPE_CHECKING:
    from keel.jobs.entities import Job
    from keel.jobs.resources import Inventory

__all__ = ["LocalExecutor", "LocalHandle"]

_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when the worker dies."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    term = int(signal.SIGTERM)

    def preexec() -> None:  # runs in the child between fork and exec: keep it to one call
        prctl(_PR_SET_PDEATHSIG, term)

    return preexec


class LocalHandle(Handle):
    """One attempt running as a local process group.

    Args:
        process: the attempt's root process (the leader of its process group).
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._code: int | None = None

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def poll(self) -> int | None:
        if self._code is not None:
            return self._code
        if hasattr(os, "waitid"):
            # Look without reaping: while the root is a zombie its pid (the group's id)
            # cannot be reused, so the leftovers of the group can be killed safely.
            try:
                info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # reaped already: its group id may be reused, leave it
                pass
            else:
                if info is None:
                    return None
                self._signal_group(signal.SIGKILL)
        elif self.process.poll() is None:
            return None
        self._code = self.process.wait()
        return self._code

    def terminate(self) -> None:
        if self._code is None:
            self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        if self._code is None:
            self._signal_group(signal.SIGKILL)

    def pids(self) -> list[int]:
        return [self.process.pid] if self._code is None else []


class LocalExecutor(Executor):
    """Runs attempts as subprocesses of this machine.

    Args:
        inventory: what this machine offers (a virtual inventory in tests).
        inventory_file: a declared inventory (YAML or JSON) when ``inventory`` is not given;
            without either, the machine is discovered (CPUs, memory, NVML's GPUs).
        cwd: the folder attempts run in (default: the worker's working directory, from
            which a pipeline's ``module:attr`` is imported).
    """

    name = "local"

    def __init__(
        self,
        inventory: Inventory | None = None,
        inventory_file: str | os.PathLike[str] | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self._inventory = inventory
        self.inventory_file = inventory_file
        self.cwd = cwd

    def inventory(self) -> Inventory:
        if self._inventory is None:
            from keel.jobs.hardware import discover_inventory

            self._inventory = discover_inventory(self.inventory_file)
        return self._inventory

    def start(self, job: Job, argv: list[str], env: Mapping[str, str], log_path: Path) -> Handle:
        """Start ``argv`` in a new session with ``env`` over this process's environment.

        Raises:
            InvalidInput: the command cannot be started (not found, not executable).
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            try:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env},
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_parent_death_signal(),
                )
            except OSError as exc:
                raise InvalidInput(
                    f"job {job.id}: cannot start {argv[0]!r}: {exc.strerror or exc}; "
                    "check the command and that it is installed on the worker"
                ) from None
        return LocalHandle(process)
