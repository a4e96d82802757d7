"""One attempt of one step, as an executor runs it (in this process, a child, or a Ray worker).

The driver creates the step's tracked run and sends a :class:`StepTask`;
:func:`execute_task` points Keel at the driver's settings if this is
another process, resumes that run (so ``keel.log_metric`` and
``keel.log_model`` inside the step land on it), seeds, loads the inputs
from the content store, calls the function, stores what it returned, lists
the outputs among the run's artifacts (``outputs/<name>…``) and ends the
run. A failure comes back as a :class:`StepResult` with the error; the
driver decides whether to retry.
"""

from __future__ import annotations

import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keel.errors import InvalidInput
from keel.pipelines.graph import map_leaves
from keel.pipelines.materialize import Materialized, load, save

__all__ = ["InputRef", "StepResult", "StepTask", "execute_task"]

#: Settings a worker needs to reach the same stores as the driver: through the same
#: ``keel server`` with the same token when the driver talks to one.
SETTINGS_FIELDS = (
    "home",
    "store_url",
    "artifacts_url",
    "s3_endpoint_url",
    "user",
    "server_url",
    "token",
)


@dataclass(frozen=True)
class InputRef:
    """An argument that is (a key path into) another step's stored output."""

    output: Materialized
    path: tuple[Any, ...] = ()

    def key(self) -> dict[str, Any]:
        """What the cache key sees: the content digest and the selected keys."""
        return {"$keel": "output", "digest": self.output.digest, "path": list(self.path)}


@dataclass
class StepTask:
    """Everything one attempt needs; picklable (the function travels by value to Ray)."""

    node: str
    where: str
    fn: Callable[..., Any]
    arguments: dict[str, Any]
    outputs: tuple[str, ...] | None
    run_id: str
    attempt: int
    settings: dict[str, Any]
    seed: int | None = None
    timeout: float | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    #: The driver's working directory and import paths, for workers in other processes.
    cwd: str | None = None
    paths: tuple[str, ...] = ()


@dataclass
class StepResult:
    """How an attempt ended."""

    node: str
    run_id: str
    attempt: int
    ok: bool
    outputs: list[Materialized] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    traceback: str | None = None
    timed_out: bool = False


def _ensure_settings(wanted: dict[str, Any]) -> None:
    from keel.config import get_settings

    current = get_settings()
    if all(str(getattr(current, k)) == str(wanted.get(k)) for k in SETTINGS_FIELDS):
        return
    import keel

    keel.init(**{k: v for k, v in wanted.items() if v is not None})


def _call(fn: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    positional = []
    keywords = dict(arguments)
    for name, parameter in inspect.signature(fn).parameters.items():
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY and name in keywords:
            positional.append(keywords.pop(name))
    return fn(*positional, **keywords)


def _outputs(value: Any, task: StepTask, store: Any) -> list[Materialized]:
    where = f"{task.where}: step {task.node!r}"
    if task.outputs is None:
        return [save(value, "return", store, where)]
    if not isinstance(value, tuple | list) or len(value) != len(task.outputs):
        got = f"{len(value)} values" if isinstance(value, tuple | list) else type(value).__name__
        raise InvalidInput(
            f"{where} declares outputs {', '.join(task.outputs)} but returned {got}; return a "
            f"tuple of {len(task.outputs)}"
        )
    return [save(v, n, store, where) for n, v in zip(task.outputs, value, strict=True)]


def execute_task(task: StepTask) -> StepResult:
    """Run one attempt of a step in this process and report how it ended."""
    started = time.perf_counter()
    if task.cwd and os.getcwd() != task.cwd and os.path.isdir(task.cwd):
        os.chdir(task.cwd)  # relative paths in the step mean what they meant to the driver
    for path in reversed(task.paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    _ensure_settings(task.settings)
    from keel.config import get_settings
    from keel.tracking import fluent
    from keel.tracking.entities import ArtifactEntry
    from keel.tracking.remote import tracking_for
    from keel.transport import local_or

    settings = get_settings()
    # As the fluent API does: the server's routes and blob store when settings name one.
    transport = local_or(None, settings)
    client = tracking_for(transport)
    store = client.artifacts
    cache_dir = settings.home / "cache" / "outputs"
    cache_dir.mkdir(parents=True, exist_ok=True)

    def resolve(leaf: Any) -> Any:
        if not isinstance(leaf, InputRef):
            return leaf
        value = load(leaf.output, store, cache_dir)
        for key in leaf.path:
            value = value[key]
        return value

    try:
        with fluent.start_run(run_id=task.run_id, nested=True):
            if task.seed is not None:
                fluent.seed_everything(task.seed)
            arguments = {k: map_leaves(v, resolve) for k, v in task.arguments.items()}
            value = _call(task.fn, arguments)
            outputs = _outputs(value, task, store)
            entries = [
                ArtifactEntry(p, d, s) for o in outputs for p, d, s in o.artifact_entries(store)
            ]
            client._record_artifacts(task.run_id, entries)
    except Exception as exc:
        return StepResult(
            task.node,
            task.run_id,
            task.attempt,
            False,
            seconds=time.perf_counter() - started,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )
    finally:
        transport.close()
    return StepResult(
        task.node,
        task.run_id,
        task.attempt,
        True,
        outputs,
        seconds=time.perf_counter() - started,
    )
