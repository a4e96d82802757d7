"""The module-level tracking API: ``keel.start_run``, ``keel.log_metric`` …

State is the settings, the current experiment, the stack of active runs
and the metric buffer — nothing else (plus the ids of the experiments runs
went to, since experiments are never renamed: a sweep of short runs would
otherwise look its experiment up once per run). Metric points are buffered (see
``keel.tracking.buffer``); params and tags are written at once because
write-once conflicts must raise where the user logged them.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from keel.config import (
    Settings,
    get_settings,
    load_settings,
    make_home,
    reset_settings,
    set_settings,
)
from keel.errors import InvalidInput, NotFound
from keel.store import reset_stores
from keel.tracking.buffer import MetricBuffer
from keel.tracking.client import TrackingClient
from keel.tracking.entities import ArtifactEntry, Run, RunInfo
from keel.tracking.environment import seed_everything as _seed
from keel.tracking.remote import tracking_for
from keel.tracking.validation import check_key, check_metric_value, check_step
from keel.transport import local_or

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ActiveRun",
    "active_run",
    "end_run",
    "flush",
    "get_run",
    "init",
    "log_artifact",
    "log_artifacts",
    "log_dict",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "search_runs",
    "seed_everything",
    "set_experiment",
    "set_tag",
    "set_tags",
    "start_run",
]

_lock = threading.RLock()
_client: TrackingClient | None = None
_buffer: MetricBuffer | None = None
_experiment_name: str | None = None
_experiment_ids: dict[str, int] = {}  # name -> id, for the current client only
_stack: list[ActiveRun] = []
_seeds: dict[str, int] = {}


def _get_client() -> TrackingClient:
    global _client, _buffer
    with _lock:
        if _client is None:
            settings = get_settings()
            # over KEEL_SERVER_URL this is the remote part: the same calls, as REST requests
            _client = tracking_for(local_or(None, settings))
            _buffer = MetricBuffer(_client.write_metric_rows, interval=settings.flush_interval)
        return _client


def _get_buffer() -> MetricBuffer:
    _get_client()
    assert _buffer is not None
    return _buffer


def init(home: str | os.PathLike[str] | None = None, **settings: Any) -> Settings:
    """Point Keel at a home folder and settings, ending any active runs first.

    Args:
        home: the Keel home (default: ``KEEL_HOME``, else the nearest ``.keel``).
        **settings: overrides for :class:`keel.config.Settings` fields,
            e.g. ``store_url="postgresql://…"``, ``artifacts_url="s3://bucket/keel"``;
            ``server="http://host:5005"`` (with ``token=``) works through a ``keel server``.

    Returns:
        The resolved settings, now the process's settings.
    """
    global _client, _buffer, _experiment_name
    if "server" in settings:  # keel.init(server="http://host:5005", token=...)
        settings["server_url"] = settings.pop("server")
    with _lock:
        _shutdown(status="FINISHED")
        reset_settings()
        reset_stores()
        resolved = load_settings(home, **settings)
        make_home(resolved.home)  # with its .gitignore, as `keel init` makes it
        set_settings(resolved)
        _client = None
        _buffer = None
        _experiment_name = None
        _experiment_ids.clear()
    return resolved


def set_experiment(name: str) -> int:
    """Make ``name`` the experiment new runs go to, creating it if needed; return its id."""
    global _experiment_name
    experiment = _get_client().get_or_create_experiment(name)
    with _lock:
        _experiment_name = experiment.name
        _experiment_ids[experiment.name] = experiment.id
    return experiment.id


def _experiment_id(client: TrackingClient, name: str) -> int:
    found = _experiment_ids.get(name)
    if found is None:
        found = _experiment_ids[name] = client.get_or_create_experiment(name).id
    return found


class ActiveRun:
    """A run this process is logging to. Use it as a context manager.

    Leaving the ``with`` block normally marks the run FINISHED; an exception
    marks it FAILED and a ``KeyboardInterrupt`` KILLED, and the exception
    propagates.
    """

    def __init__(self, info: RunInfo) -> None:
        self.info = info
        self._steps: dict[str, int] = {}

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def name(self) -> str:
        return self.info.name

    def next_step(self, key: str, step: int | None) -> int:
        if step is None:
            step = self._steps.get(key, 0)
        self._steps[key] = max(self._steps.get(key, 0), step + 1)
        return step

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        with _lock:
            if self in _stack:
                # Runs nested inside this one and left open end with it.
                while _stack and _stack[-1] is not self:
                    end_run(status)
                end_run(status)

    def __repr__(self) -> str:
        return f"<ActiveRun id={self.id} name={self.name!r}>"


def start_run(
    name: str | None = None,
    nested: bool = False,
    *,
    run_id: str | None = None,
    experiment: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> ActiveRun:
    """Start a run (or resume one with ``run_id``) and make it the active run.

    Args:
        name: a display name; default ``run-<first 8 hex of the id>``.
        nested: start a child of the active run instead of refusing.
        run_id: resume this run (its status goes back to RUNNING).
        experiment: experiment name for this run; default the one set with
            :func:`set_experiment`, else ``Default``.
        tags: initial tags.

    Raises:
        InvalidInput: a run is already active and ``nested`` is False.
    """
    client = _get_client()
    with _lock:
        if _stack and not nested:
            raise InvalidInput(
                f"run {_stack[-1].id} is already active; call keel.end_run() first, "
                "or pass nested=True to start a child run"
            )
        parent = _stack[-1].id if _stack and nested else None
        if run_id is not None:
            client.get_run_info(run_id)
            info = client.set_running(run_id)
            active = ActiveRun(info)
            if tags:
                client.set_tags(run_id, tags)
            if _seeds:
                client.record_seeds(run_id, _seeds)
            _resume_steps(client, active)
        else:
            experiment_name = experiment or _experiment_name or client.settings.default_experiment
            info = _create_run(client, experiment_name, name, parent, tags)
            active = ActiveRun(info)
        _stack.append(active)
        _register_atexit()
    return active


def _create_run(
    client: TrackingClient,
    experiment_name: str,
    name: str | None,
    parent: str | None,
    tags: Mapping[str, Any] | None,
) -> RunInfo:
    """A new run in the named experiment, whose id is remembered from earlier runs."""
    known = experiment_name in _experiment_ids
    try:
        return client.create_run(
            _experiment_id(client, experiment_name),
            name,
            parent_id=parent,
            tags=tags,
            seeds=_seeds or None,
        )
    except NotFound:
        if not known:
            raise
    # The remembered id is gone (the database was emptied or replaced under this process):
    # look the experiment up again, creating it if need be, and try once more.
    _experiment_ids.pop(experiment_name, None)
    return client.create_run(
        _experiment_id(client, experiment_name),
        name,
        parent_id=parent,
        tags=tags,
        seeds=_seeds or None,
    )


def _resume_steps(client: TrackingClient, active: ActiveRun) -> None:
    active._steps = client.next_steps(active.id)


def active_run() -> ActiveRun | None:
    """The innermost active run, if any."""
    with _lock:
        return _stack[-1] if _stack else None


def _require_run() -> ActiveRun:
    with _lock:
        if _stack:
            return _stack[-1]
    # MLflow starts a run implicitly; so do we, so one-liners work.
    return start_run()


def end_run(status: str = "FINISHED") -> None:
    """End the active run: flush its metrics and record ``status`` and the end time."""
    with _lock:
        if not _stack:
            return
        run = _stack[-1]
        _get_buffer().flush()
        _get_client().set_terminated(run.id, status)
        _stack.pop()


def flush() -> int:
    """Write buffered metric points now; return how many were written."""
    with _lock:
        if _buffer is None:
            return 0
        return _buffer.flush()


def log_param(key: str, value: Any) -> Any:
    """Record a param of the active run. Params are write-once.

    Raises:
        Conflict: the key already holds a different value.
    """
    _get_client().log_param(_require_run().id, key, value)
    return value


def log_params(params: Mapping[str, Any]) -> None:
    """Record several params at once (all or none)."""
    _get_client().log_params(_require_run().id, params)


def set_tag(key: str, value: Any) -> None:
    _get_client().set_tag(_require_run().id, key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    _get_client().set_tags(_require_run().id, tags)


def log_metric(key: str, value: Any, step: int | None = None) -> None:
    """Log one metric point (buffered; written within ``flush_interval`` seconds).

    When points come faster than the store writes them, this call waits for
    the next flush (back-pressure, see ``keel.tracking.buffer``), so a killed
    process still loses at most its last interval and the flush under way.

    Args:
        key: metric name (letters, digits, ``_ - . / : space``; ≤ 250 characters).
        value: a number; NaN and ±inf are stored as they are.
        step: the x-axis value; default one past the last step logged for this key.
    """
    run = _stack[-1] if _stack else _require_run()
    check_key(key, "metric key")
    number = check_metric_value(key, value)
    stamp = time.time_ns() // 1_000_000
    step_value = run.next_step(key, None if step is None else check_step(step))
    buffer = _buffer if _buffer is not None else _get_buffer()
    buffer.add((run.id, key, step_value, stamp, number))


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log several metric points with one timestamp (all validated before any is buffered)."""
    run = _stack[-1] if _stack else _require_run()
    checked = [(check_key(k, "metric key"), check_metric_value(k, v)) for k, v in metrics.items()]
    explicit = None if step is None else check_step(step)
    stamp = time.time_ns() // 1_000_000
    _get_buffer().extend([(run.id, k, run.next_step(k, explicit), stamp, v) for k, v in checked])


def log_artifact(
    local_path: str | os.PathLike[str], artifact_path: str | None = None
) -> ArtifactEntry:
    """Store a file with the active run (content-addressed, deduplicated)."""
    return _get_client().log_artifact(_require_run().id, local_path, artifact_path)


def log_artifacts(
    local_dir: str | os.PathLike[str], artifact_path: str | None = None
) -> list[ArtifactEntry]:
    """Store every file under a folder with the active run."""
    return _get_client().log_artifacts(_require_run().id, local_dir, artifact_path)


def log_dict(obj: Any, artifact_file: str) -> ArtifactEntry:
    """Store a JSON-serializable object as a JSON artifact of the active run."""
    return _get_client().log_dict(_require_run().id, obj, artifact_file)


def seed_everything(seed: int) -> dict[str, int]:
    """Seed random, NumPy and PyTorch (if installed) and record the seeds on runs.

    The seeds are recorded on the active run, and on every run started later
    in this process.
    """
    seeded = _seed(seed)
    with _lock:
        _seeds.update(seeded)
        if _stack:
            _get_client().record_seeds(_stack[-1].id, seeded)
    return seeded


def get_run(run_id: str) -> Run:
    flush()
    return _get_client().get_run(run_id)


def search_runs(
    filter_string: str | None = None,
    order_by: list[str] | str | None = None,
    max_results: int = 100_000,
    *,
    experiment_names: list[str] | None = None,
    search_all_experiments: bool = False,
    page_token: str | None = None,
) -> pd.DataFrame:
    """Search runs and return a DataFrame, one row a run.

    Columns: ``run_id, experiment_id, name, status, start_time, end_time,
    parent_id, user`` then ``metrics.<key>`` (latest value), ``params.<key>``
    and ``tags.<key>``.

    Args:
        filter_string: e.g. ``"metrics.acc > 0.9 AND (params.model = 'rf' OR params.model = 'gb')"``.
        order_by: e.g. ``["metrics.acc DESC"]``; default newest first.
        max_results: at most this many rows.
        experiment_names: search these experiments (names or ids); default the current one.
        search_all_experiments: search every experiment.
        page_token: continue a paged search (see ``keel.Client().search_runs``).
    """
    flush()
    client = _get_client()
    experiment_ids: list[int] | None
    if search_all_experiments:
        experiment_ids = None
    else:
        names = experiment_names or [_experiment_name or client.settings.default_experiment]
        if experiment_names:
            # Names the caller typed: a typo is an error naming the closest, as on the CLI.
            experiment_ids = [client.resolve_experiment(name).id for name in names]
        else:
            # The current experiment may not exist yet (nothing logged): no runs, no error.
            current = client.get_experiment_by_name(names[0])
            experiment_ids = [] if current is None else [current.id]
    return client.search_runs_frame(
        experiment_ids, filter_string, order_by, max_results, page_token
    )


def _shutdown(status: str = "FINISHED") -> None:
    with _lock:
        while _stack:
            try:
                end_run(status)
            except Exception:
                _stack.pop()
        if _buffer is not None:
            try:
                _buffer.close()
            except Exception as exc:
                import logging

                logging.getLogger("keel.tracking").warning("keel: metrics lost at exit: %s", exc)


_atexit_registered = False


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_shutdown)
        _atexit_registered = True


def _reset_after_fork() -> None:
    global _lock, _client, _buffer
    # The child must not end or flush the parent's runs, nor reuse its connections.
    _lock = threading.RLock()
    _stack.clear()
    _client = None
    _buffer = None
    _experiment_ids.clear()
    reset_stores(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
