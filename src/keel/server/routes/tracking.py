"""The tracking routes: experiments, runs, params, tags, metrics, artifact rows and search.

Each route parses its request, checks the caller's permission and calls the
same :class:`~keel.tracking.client.TrackingClient` method the local client
runs (``caller.client.tracking``); the answer is :func:`~keel.transport.wire.to_wire`
of what the method returns, which :class:`keel.tracking.remote.RemoteTracking`
decodes.

Permissions, all on the resource kind ``experiment`` named by the experiment's
name (a run is checked on its experiment; :mod:`keel.server.permissions` holds
the rule):

- reads (get, list, history, search, artifact listings) need ``read``;
- writes (runs, params, tags, metrics, status, artifact rows) need ``write``;
- creating an experiment needs ``write`` on the name it will have: a global
  editor may create any experiment, and an admin can hand out one name ahead
  of time with a grant scoped to it (``keel roles grant ... --experiment NAME``).

Listings (experiments, run counts, a search without experiment ids) show only
the experiments the caller may read, so a scoped viewer sees their own and
nothing else. Artifact bytes never pass here: they travel through the blob
routes (:mod:`keel.server.routes.blobs`), and the rows recorded here must name
objects the server already holds.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from keel.artifacts import ArtifactStore
from keel.errors import InvalidInput
from keel.server.context import Caller, CallerDep
from keel.server.permissions import (
    EXPERIMENT,
    check_experiment,
    check_run,
    on_experiment,
    readable_experiments,
)
from keel.tracking.client import MetricRow, TrackingClient
from keel.tracking.entities import ArtifactEntry, Metric
from keel.tracking.environment import Capture
from keel.tracking.validation import check_key, check_metric_value, check_step
from keel.transport.wire import from_wire, to_wire

router = APIRouter(tags=["tracking"])

#: Points one metrics request may carry; the client splits bigger batches.
MAX_POINTS = 100_000
_NAME = 256
_KEY = 250
_TEXT = 8_000
_FILTER = 100_000

_SPECIAL = ("NaN", "Infinity", "-Infinity")
#: What a BIGINT column holds: anything wider would fail in the database, not here.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
WireFloat = float | str  # a number, or "NaN" / "Infinity" / "-Infinity" (see keel.transport.wire)


# -- request bodies --------------------------------------------------------------------


class NewExperiment(BaseModel):
    name: str = Field(max_length=_NAME)


class NewRun(BaseModel):
    experiment_id: int = Field(ge=0, le=2**31 - 1)
    name: str | None = Field(default=None, max_length=_NAME)
    parent_id: str | None = Field(default=None, max_length=64)
    tags: dict[str, str] | None = Field(default=None, max_length=1_000)
    seeds: dict[str, int] | None = Field(default=None, max_length=100)
    captured: dict[str, Any] | None = Field(
        default=None, description="the client's interpreter, packages, git state and command"
    )
    start_time: int | None = Field(
        default=None, ge=0, le=2**63 - 1, description="ms since the epoch; default: now"
    )
    user: str | None = Field(
        default=None, max_length=_NAME, description="whose run it was; default: the caller"
    )


class RunEnd(BaseModel):
    status: str = Field(default="FINISHED", max_length=16)
    end_time: int | None = Field(default=None, ge=0, le=2**63 - 1)


class Seeds(BaseModel):
    seeds: dict[str, int] = Field(max_length=100)


class Params(BaseModel):
    params: dict[str, str] = Field(max_length=1_000)


class Tags(BaseModel):
    tags: dict[str, str] = Field(max_length=1_000)


class MetricColumns(BaseModel):
    """Metric points of one run as columns: the n-th point is the n-th item of each list."""

    keys: list[str] = Field(default_factory=list, max_length=MAX_POINTS)
    values: list[WireFloat] = Field(default_factory=list, max_length=MAX_POINTS)
    steps: list[Int64] = Field(default_factory=list, max_length=MAX_POINTS)
    timestamps: list[Int64] = Field(default_factory=list, max_length=MAX_POINTS)


class Batch(BaseModel):
    """Metric points, params and tags of one run, written in one call."""

    metrics: MetricColumns = Field(default_factory=MetricColumns)
    params: dict[str, str] | None = Field(default=None, max_length=1_000)
    tags: dict[str, str] | None = Field(default=None, max_length=1_000)


class MetricRows(MetricColumns):
    """Metric points of any runs as columns (the client's buffer flushes these)."""

    run_ids: list[str] = Field(default_factory=list, max_length=MAX_POINTS)


class ArtifactRow(BaseModel):
    path: str = Field(max_length=1_024)
    digest: str = Field(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class ArtifactRows(BaseModel):
    entries: list[ArtifactRow] = Field(max_length=100_000)


class Search(BaseModel):
    experiment_ids: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] | None = Field(
        default=None, max_length=10_000
    )
    filter_string: str | None = Field(default=None, max_length=_FILTER)
    order_by: list[str] | str | None = Field(default=None, max_length=100)
    # Any, not int: the library checks it in its one place, with its own message, rather
    # than pydantic turning true or "10" into numbers first.
    max_results: Any = Field(default=1000, description="an integer from 1 to 100000")
    page_token: str | None = Field(default=None, max_length=1_000)


# -- permissions -----------------------------------------------------------------------


def _tracking(caller: Caller) -> TrackingClient:
    return caller.client.tracking


def _on_run(caller: Caller, permission: str, run_id: str) -> TrackingClient:
    """The caller's tracking client, once ``permission`` on the run's experiment is checked."""
    check_run(caller, permission, run_id)
    return _tracking(caller)


def _floats(values: list[WireFloat]) -> list[float]:
    try:
        return [from_wire(v, float) for v in values]
    except InvalidInput:
        bad = next(v for v in values if isinstance(v, str) and v not in _SPECIAL)
        raise InvalidInput(
            f"metric values must be numbers or 'NaN', 'Infinity', '-Infinity'; got {bad!r}"
        ) from None


def _columns(body: MetricColumns, extra: int | None = None) -> list[float]:
    """The body's values, once every column is as long as ``keys``."""
    n = len(body.keys)
    lengths = {len(body.values), len(body.steps), len(body.timestamps)}
    if extra is not None:
        lengths.add(extra)
    if lengths != {n}:
        raise InvalidInput(
            "metric columns must have one item per point: keys, values, steps and timestamps "
            f"(and run_ids) of the same length; got {n} keys and lengths {sorted(lengths)}"
        )
    return _floats(body.values)


# -- experiments -------------------------------------------------------------------------


@router.post("/experiments", status_code=201)
def create_experiment(body: NewExperiment, caller: CallerDep) -> int:
    """Create an experiment; 409 if the name is taken. Needs ``write`` on the name."""
    caller.require("write", EXPERIMENT, body.name)
    return _tracking(caller).create_experiment(body.name)


@router.put("/experiments")
def get_or_create_experiment(body: NewExperiment, caller: CallerDep) -> Any:
    """The experiment of that name, created if absent. Needs ``write`` on the name."""
    caller.require("write", EXPERIMENT, body.name)
    return to_wire(_tracking(caller).get_or_create_experiment(body.name))


@router.get("/experiments")
def list_experiments(caller: CallerDep) -> Any:
    """Every experiment the caller may read, by id."""
    readable = readable_experiments(caller, refuse_none=True)
    found = _tracking(caller).list_experiments() if readable is None else readable
    return to_wire(found)


@router.get("/experiments/run-counts")
def experiment_run_counts(caller: CallerDep) -> dict[str, int]:
    """Runs per experiment id, for the experiments the caller may read."""
    readable = readable_experiments(caller, refuse_none=True)
    counts = _tracking(caller).experiment_run_counts()
    if readable is not None:
        ids = {e.id for e in readable}
        counts = {k: v for k, v in counts.items() if k in ids}
    return {str(k): v for k, v in counts.items()}


@router.get("/experiments/by-name")
def get_experiment_by_name(caller: CallerDep, name: str = Query(max_length=_NAME)) -> Any:
    """The experiment named ``name``, or null."""
    caller.require("read", EXPERIMENT, name)
    return to_wire(_tracking(caller).get_experiment_by_name(name))


@router.get("/experiments/resolve")
def resolve_experiment(caller: CallerDep, ref: str = Query(max_length=_NAME)) -> Any:
    """The experiment named ``ref``, or with that id; 404 names the closest names."""
    caller.require_somewhere("read")
    experiment = _tracking(caller).resolve_experiment(ref)
    caller.require("read", EXPERIMENT, experiment.name)
    return to_wire(experiment)


@router.get("/experiments/{experiment_id}")
def get_experiment(
    experiment_id: Annotated[int, Path(ge=0, le=2**31 - 1)], caller: CallerDep
) -> Any:
    """One experiment by id."""
    tracking = _tracking(caller)
    experiment = tracking.get_experiment(experiment_id)
    caller.require("read", EXPERIMENT, experiment.name)
    return to_wire(experiment)


# -- runs ------------------------------------------------------------------------------


@router.post("/runs", status_code=201)
def create_run(body: NewRun, caller: CallerDep) -> Any:
    """Start a run in RUNNING state. Needs ``write`` on the experiment.

    The environment recorded is the one the client sent (``captured``): the
    server's interpreter is not the run's. ``start_time`` and ``user`` record a
    run that happened elsewhere (an import); a ``user`` other than the caller
    needs ``admin``, since a run's user is who others see ran it.
    """
    check_experiment(caller, "write", body.experiment_id)
    if body.parent_id is not None:
        check_run(caller, "read", body.parent_id)
    if body.user is not None and body.user != caller.user:
        caller.require("admin")
    info = _tracking(caller).create_run(
        body.experiment_id,
        body.name,
        parent_id=body.parent_id,
        tags=body.tags,
        capture=False,
        seeds=body.seeds,
        captured=None if body.captured is None else from_wire(body.captured, Capture),
        start_time=body.start_time,
        user=body.user,
    )
    return to_wire(info)


@router.get("/runs/resolve")
def resolve_run_id(caller: CallerDep, prefix: str = Query(max_length=64)) -> str:
    """The full id of the one run whose id starts with ``prefix`` (6+ characters)."""
    caller.require_somewhere("read")
    run_id = _tracking(caller).resolve_run_id(prefix)
    check_run(caller, "read", run_id)
    return run_id


@router.post("/runs/search")
def search_runs(body: Search, caller: CallerDep) -> Any:
    """One page of runs matching a filter, in order (see ``keel.tracking.search``)."""
    experiment_ids = body.experiment_ids
    readable = readable_experiments(caller, refuse_none=True)
    if readable is not None:
        allowed = {e.id for e in readable}
        if experiment_ids is None:
            experiment_ids = sorted(allowed)
        else:
            for experiment_id in experiment_ids:
                if experiment_id not in allowed:
                    on_experiment(caller, "read", experiment_id)  # 404 or the 403
    page = _tracking(caller).search_runs(
        experiment_ids, body.filter_string, body.order_by, body.max_results, body.page_token
    )
    return to_wire(page)


@router.get("/runs/{run_id}")
def get_run(run_id: str, caller: CallerDep) -> Any:
    """The run with its params, tags and latest metric values."""
    return to_wire(_on_run(caller, "read", run_id).get_run(run_id))


@router.get("/runs/{run_id}/info")
def get_run_info(run_id: str, caller: CallerDep) -> Any:
    """The run's id, experiment, name, status, times, parent and user."""
    return to_wire(_on_run(caller, "read", run_id).get_run_info(run_id))


@router.post("/runs/{run_id}/end")
def set_terminated(run_id: str, body: RunEnd, caller: CallerDep) -> None:
    """Mark the run ended (FINISHED, FAILED or KILLED)."""
    _on_run(caller, "write", run_id).set_terminated(run_id, body.status, body.end_time)


@router.post("/runs/{run_id}/reopen")
def set_running(run_id: str, caller: CallerDep) -> Any:
    """Reopen an ended run so more can be logged to it."""
    return to_wire(_on_run(caller, "write", run_id).set_running(run_id))


@router.post("/runs/{run_id}/seeds")
def record_seeds(run_id: str, body: Seeds, caller: CallerDep) -> None:
    """Merge seeds into the run's recorded seeds."""
    _on_run(caller, "write", run_id).record_seeds(run_id, body.seeds)


@router.get("/runs/{run_id}/environment")
def get_environment(run_id: str, caller: CallerDep) -> Any:
    """Interpreter, platform, distributions, git state, command and seeds of the run."""
    return to_wire(_on_run(caller, "read", run_id).get_environment(run_id))


@router.post("/runs/{run_id}/params")
def log_params(run_id: str, body: Params, caller: CallerDep) -> None:
    """Record params (write-once: 409 if a key holds another value)."""
    _on_run(caller, "write", run_id).log_params(run_id, body.params)


@router.post("/runs/{run_id}/tags")
def set_tags(run_id: str, body: Tags, caller: CallerDep) -> None:
    """Set tags (a new value replaces the old one)."""
    _on_run(caller, "write", run_id).set_tags(run_id, body.tags)


@router.delete("/runs/{run_id}/tags")
def delete_tag(run_id: str, caller: CallerDep, key: str = Query(max_length=_KEY)) -> None:
    """Delete one tag; 404 if the run has no such tag."""
    _on_run(caller, "write", run_id).delete_tag(run_id, key)


@router.post("/runs/{run_id}/batch")
def log_batch(run_id: str, body: Batch, caller: CallerDep) -> dict[str, int]:
    """Metric points (as columns), params and tags of one run."""
    tracking = _on_run(caller, "write", run_id)
    values = _columns(body.metrics)
    metrics = [
        Metric(k, v, st, ts)
        for k, v, st, ts in zip(
            body.metrics.keys, values, body.metrics.steps, body.metrics.timestamps, strict=True
        )
    ]
    tracking.log_batch(run_id, metrics, body.params, body.tags)
    return {"points": len(metrics)}


@router.post("/metrics")
def write_metric_rows(body: MetricRows, caller: CallerDep) -> dict[str, int]:
    """Metric points of any runs (the client's buffered flush), checked and written at once."""
    values = _columns(body, len(body.run_ids))
    for run_id in dict.fromkeys(body.run_ids):
        check_run(caller, "write", run_id)
    # The client checked these points already; the server checks them again, as it
    # trusts no caller to have done so.
    rows: list[MetricRow] = [
        (r, check_key(k, "metric key"), check_step(st), check_step(ts), check_metric_value(k, v))
        for r, k, st, ts, v in zip(
            body.run_ids, body.keys, body.steps, body.timestamps, values, strict=True
        )
    ]
    _tracking(caller).write_metric_rows(rows)
    return {"points": len(rows)}


@router.get("/metrics/count")
def count_metric_points(
    caller: CallerDep, run_id: str | None = Query(default=None, max_length=64)
) -> int:
    """Stored metric points of one run, or of every run (needs global ``read``)."""
    if run_id is None:
        caller.require("read")
        return _tracking(caller).count_metric_points()
    return _on_run(caller, "read", run_id).count_metric_points(run_id)


@router.get("/runs/{run_id}/metrics/next-steps")
def next_steps(run_id: str, caller: CallerDep) -> dict[str, int]:
    """Per metric key, the step after its highest (where a resumed run goes on)."""
    return _on_run(caller, "read", run_id).next_steps(run_id)


@router.get("/runs/{run_id}/metrics/history")
def get_metric_history(
    run_id: str, caller: CallerDep, key: str = Query(max_length=_KEY)
) -> dict[str, Any]:
    """Every point of one metric as columns (steps, timestamps, values), by step then time."""
    points = _on_run(caller, "read", run_id).get_metric_history(run_id, key)
    return {
        "key": key,
        "steps": [p.step for p in points],
        "timestamps": [p.timestamp for p in points],
        "values": to_wire([p.value for p in points]),
    }


# -- artifacts -------------------------------------------------------------------------


@router.post("/runs/{run_id}/artifacts")
def record_artifacts(run_id: str, body: ArtifactRows, caller: CallerDep) -> Any:
    """List already uploaded objects under the run's artifact paths.

    Every digest must name an object the server holds (uploaded through the blob
    routes first); a row naming a missing object is refused and nothing is listed.
    """
    tracking = _on_run(caller, "write", run_id)
    tracking.get_run_info(run_id)  # 404 before anything else for an unknown run
    backend = caller.state.artifacts.backend
    for row in body.entries:
        if not backend.exists(ArtifactStore.key(row.digest)):
            raise InvalidInput(
                f"artifact {row.path!r} names object {row.digest}, which this server does not "
                "hold; upload it first (PUT /api/v1/blobs/objects/...), then list it"
            )
    entries = [ArtifactEntry(r.path, r.digest, r.size) for r in body.entries]
    # The one recording path of TrackingClient, which checks every path; it is the
    # library's own step after the upload the client already made through the blob routes.
    tracking._record_artifacts(run_id, entries)
    return to_wire(entries)


@router.get("/runs/{run_id}/artifacts")
def list_artifacts(
    run_id: str, caller: CallerDep, path: str | None = Query(default=None, max_length=1_024)
) -> Any:
    """Artifacts of the run, optionally only those at or under ``path``."""
    return to_wire(_on_run(caller, "read", run_id).list_artifacts(run_id, path))
