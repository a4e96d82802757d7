"""The Ray executor: each attempt of a job is a Ray task holding the job's resources.

The executor joins the cluster the way every part of Keel does
(:func:`keel.cluster.join_ray`: the ``address`` given, else the ``ray_address``
setting, else a local Ray; a process that already called ``ray.init`` keeps its
cluster). Its inventory is the cluster's: CPUs, memory and GPUs by type.

How a job's request becomes Ray resources:

- ``cpus`` → ``num_cpus``, ``gpus`` → ``num_gpus``, ``memory`` → ``memory``
  (when above 0): Ray holds the task until a node has all of them, so a job the
  cluster cannot fit stays pending (its handle polls ``None``);
- the job's assigned GPU type → Ray's ``accelerator_type:<X>`` resource (the
  same 0.001 share Ray's own ``accelerator_type=`` option asks for), when the
  cluster has exactly one such resource for that type.

GPU types come from Ray's ``accelerator_type:<X>`` node resources, named with
:func:`keel.jobs.resources.gpu_type_name` (``accelerator_type:A100`` → ``a100``);
a node whose GPUs carry no accelerator type reports them as ``gpu_types`` (or
``gpu``). Device indices in the inventory are the pool's numbering
(``0..n-1``, on from one type to the next, as :meth:`Inventory.from_dict`
numbers counts); they let admission count devices, but Ray picks the real ones.

**Unlike the local executor**, the attempt does not see the pool's device
indices: Ray assigns GPUs to the task and the task's ``CUDA_VISIBLE_DEVICES``
is Ray's assignment (empty for a job without GPUs), whatever the worker put
in ``env``. The job's recorded ``devices`` are therefore the pool's numbering,
not the node's GPU indices, and GPU sampling on the worker's machine does not
see the attempt's GPUs.

Output: when the task runs on the worker's own node it writes to ``log_path``
as it goes (so ``keel jobs logs`` can follow it); on another node (or through
a Ray Client ``ray://`` connection) it spools the output and returns its last
:data:`MAX_RETURNED_OUTPUT` bytes, which the handle appends to ``log_path``
when the attempt ends.

Stopping: :meth:`RayHandle.terminate` is ``ray.cancel(force=False)``, which
Ray delivers as ``KeyboardInterrupt`` in the task; the task passes it on as
SIGTERM to the attempt's process group and waits ``grace_seconds`` before
SIGKILL. :meth:`RayHandle.kill` is ``ray.cancel(force=True)``: Ray kills the
task's worker process and, with it, the processes that worker started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from keel.jobs.executors.base import Executor, Handle
from keel.jobs.resources import Inventory, check_gpu_type, gpu_type_name

if TYPE_CHECKING:
    from types import ModuleType

    from keel.jobs.entities import Job

__all__ = ["MAX_RETURNED_OUTPUT", "RayExecutor", "RayHandle", "gpus_by_type"]

#: The most output (its last bytes) a task on another node sends back for the log.
MAX_RETURNED_OUTPUT = 64 * 1024**2
#: Ray's name prefix for a node's GPU model (``accelerator_type:A100``).
ACCELERATOR_PREFIX = "accelerator_type:"
#: The share of ``accelerator_type:<X>`` a task asks for, as Ray's own ``accelerator_type=`` does.
_ACCELERATOR_SHARE = 0.001
_POLL_SECONDS = 0.1


def gpus_by_type(
    nodes: Iterable[Mapping[str, Any]], untyped: str = "gpu"
) -> tuple[dict[str, tuple[int, ...]], dict[str, list[str]]]:
    """The GPUs of a Ray cluster by type, from ``ray.nodes()``.

    Each alive node's ``GPU`` count takes the type of its ``accelerator_type:<X>``
    resource (Ray sets one per node); a node that declares several takes each
    one's amount of GPUs in turn. GPUs left without a type are ``untyped``.

    Args:
        nodes: what ``ray.nodes()`` returns (``Alive`` and ``Resources`` are read).
        untyped: the type of GPUs that carry no accelerator type.

    Returns:
        Device indices by type (``0..n-1`` numbered on from type to type, types in
        the order first met) and the Ray resource names behind each type.
    """
    counts: dict[str, int] = {}
    resources: dict[str, list[str]] = {}
    for node in nodes:
        if not node.get("Alive", True):
            continue
        have = dict(node.get("Resources") or {})
        left = int(have.get("GPU", 0))
        names = sorted(k for k in have if k.startswith(ACCELERATOR_PREFIX))
        for name in names:
            kind = gpu_type_name(name.removeprefix(ACCELERATOR_PREFIX))
            if name not in resources.setdefault(kind, []):
                resources[kind].append(name)
            take = left if len(names) == 1 else min(left, int(have[name]))
            if take:
                counts[kind] = counts.get(kind, 0) + take
                left -= take
        if left:
            counts[untyped] = counts.get(untyped, 0) + left
    devices: dict[str, tuple[int, ...]] = {}
    start = 0
    for kind, count in counts.items():
        devices[kind] = tuple(range(start, start + count))
        start += count
    return devices, resources


class RayExecutor(Executor):
    """Runs each attempt as a Ray task with the job's CPUs, GPUs, memory and GPU type.

    Args:
        address: the cluster to join (``auto``, ``ray://host:10001``); ``None``: the
            ``ray_address`` setting, else a local Ray (see :func:`keel.cluster.join_ray`).
        gpu_types: the GPU type of GPUs for which Ray knows no accelerator type
            (``None``: ``gpu``).
        grace_seconds: after :meth:`RayHandle.terminate`, how long the task waits
            for the attempt to exit on SIGTERM before it sends SIGKILL.

    Attributes:
        node_id_: the Ray node of this process once joined; ``None`` through a Ray
            Client connection (then no task shares this machine's files).
        accelerators_: Ray's ``accelerator_type:<X>`` resource names by GPU type,
            as of the last :meth:`inventory`.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        gpu_types: str | None = None,
        grace_seconds: float = 10.0,
    ) -> None:
        self.address = address
        self.gpu_types = gpu_types
        self.grace_seconds = grace_seconds
        self.node_id_: str | None = None
        self.accelerators_: dict[str, list[str]] = {}
        self._ray: ModuleType | None = None
        self._owns_ray = False
        self._remote: Any = None

    def _join(self) -> ModuleType:
        if self._ray is None:
            from keel.cluster import import_ray, join_ray

            self._owns_ray = not import_ray().is_initialized()
            ray = join_ray(self.address)
            from ray.util.client import ray as client

            # Through Ray Client the driver's "node" is the cluster's, not this machine.
            self.node_id_ = (
                None if client.is_connected() else ray.get_runtime_context().get_node_id()
            )
            # A killed attempt must not come back by itself: the worker decides on retries.
            self._remote = ray.remote(max_retries=0)(run_attempt)
            self._ray = ray
        return self._ray

    def inventory(self) -> Inventory:
        """The cluster's CPUs and memory (``ray.cluster_resources()``) and its GPUs by type."""
        ray = self._join()
        untyped = check_gpu_type(self.gpu_types) if self.gpu_types is not None else "gpu"
        totals = ray.cluster_resources()
        gpus, self.accelerators_ = gpus_by_type(ray.nodes(), untyped)
        return Inventory(
            cpus=float(totals.get("CPU", 0.0)), memory=int(totals.get("memory", 0)), gpus=gpus
        )

    def resources(self, job: Job) -> dict[str, Any]:
        """The Ray task options that hold ``job``'s request (see the module docstring)."""
        request = job.request
        options: dict[str, Any] = {"num_cpus": request.cpus, "num_gpus": request.gpus}
        if request.memory > 0:
            options["memory"] = request.memory
        kind = job.assigned_gpu_type or request.gpu_type
        if request.gpus and kind is not None:
            if kind not in self.accelerators_:
                self.inventory()  # the cluster may have grown a node of that type
            names = self.accelerators_.get(kind, [])
            # Several Ray names for one type (A100-40G, A100-80G) cannot be asked for as
            # "either"; Ray's GPU count alone then places the task.
            if len(names) == 1:
                options["resources"] = {names[0]: _ACCELERATOR_SHARE}
        return options

    def start(self, job: Job, argv: list[str], env: Mapping[str, str], log_path: Path) -> RayHandle:
        """Submit one attempt of ``job`` as a Ray task (see the module docstring)."""
        ray = self._join()
        log_path = Path(log_path).absolute()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        options = self.resources(job)
        ref = self._remote.options(name=f"keel-job-{job.id}", **options).remote(
            list(argv), dict(env), str(log_path), self.node_id_, self.grace_seconds
        )
        return RayHandle(ray, ref, log_path)

    def close(self) -> None:
        """Leave Ray if this executor started it (a cluster joined from outside stays up)."""
        if self._ray is not None and self._owns_ray:
            self._ray.shutdown()
        self._ray = None
        self._remote = None


class RayHandle(Handle):
    """One attempt running as a Ray task.

    Args:
        ray: the joined ``ray`` module.
        ref: the task's object reference; its value is ``(exit code, output or None)``.
        log_path: the attempt's log on this machine.
    """

    def __init__(self, ray: ModuleType, ref: Any, log_path: Path) -> None:
        self.ray = ray
        self.ref = ref
        self.log_path = log_path
        self._exit_code: int | None = None
        self._stop_signal: int | None = None

    def poll(self) -> int | None:
        """The attempt's exit code once the task has ended (``ray.wait`` with no wait)."""
        if self._exit_code is not None:
            return self._exit_code
        ready, _ = self.ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        from ray.exceptions import RayError, TaskCancelledError

        output: bytes | None = None
        try:
            code, output = self.ray.get(self.ref)
        except TaskCancelledError:
            # Cancelled before it ran, or killed with its worker: no exit code came back.
            code = -(self._stop_signal or signal.SIGKILL)
        except RayError as exc:  # the worker died (out of memory) or the task could not run
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            output = (
                f"keel: Ray could not run the attempt: {type(exc).__name__}: {first}\n".encode()
            )
            code = 1
        if output:
            with open(self.log_path, "ab") as log:
                log.write(output)
        self._exit_code = int(code)
        return self._exit_code

    def terminate(self) -> None:
        """``ray.cancel(force=False)``: the task sends SIGTERM and waits its grace period."""
        if self._exit_code is None:
            self._stop_signal = self._stop_signal or signal.SIGTERM
            self.ray.cancel(self.ref, force=False)

    def kill(self) -> None:
        """``ray.cancel(force=True)``: Ray kills the task's worker and the attempt with it."""
        if self._exit_code is None:
            self._stop_signal = signal.SIGKILL
            self.ray.cancel(self.ref, force=True)


# -- inside the Ray task --------------------------------------------------------


def run_attempt(
    argv: list[str],
    env: Mapping[str, str],
    log_path: str,
    driver_node: str | None,
    grace_seconds: float,
) -> tuple[int, bytes | None]:
    """Run ``argv`` in a Ray task; the task's body (public so Ray workers import it by name).

    Returns:
        The exit code, and the output when ``log_path`` is not on this node (else ``None``).
    """
    import ray

    context = ray.get_runtime_context()
    full = dict(os.environ)
    full.update(env)
    # Ray chose this task's GPUs; the pool's indices in ``env`` name devices of another view.
    full["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in context.get_accelerator_ids()["GPU"])
    local = driver_node is not None and context.get_node_id() == driver_node
    out: IO[bytes] = open(log_path, "ab") if local else tempfile.TemporaryFile()  # noqa: SIM115
    with out:
        try:
            proc = subprocess.Popen(
                argv,
                env=full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # one process group to signal, like the local executor
            )
        except OSError as exc:
            host = socket.gethostname()
            out.write(f"keel: cannot start {argv[0]!r} on {host}: {exc}\n".encode())
            code = 127
        else:
            code = _wait(proc, grace_seconds)
        if local:
            return code, None
        out.flush()
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - MAX_RETURNED_OUTPUT))
        head = b"" if size <= MAX_RETURNED_OUTPUT else b"keel: earlier output dropped\n"
        return code, head + out.read()


def _wait(proc: subprocess.Popen[bytes], grace_seconds: float) -> int:
    try:
        # Ray cancels by raising KeyboardInterrupt between bytecodes, which a blocking
        # wait() would never reach: poll in short sleeps instead.
        while (code := proc.poll()) is None:
            time.sleep(_POLL_SECONDS)
        return code
    except KeyboardInterrupt:
        _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while (code := proc.poll()) is None and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
        if code is None:
            _signal(proc, signal.SIGKILL)
            code = proc.wait()
        return code


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # it ended on its own meanwhile
        pass
