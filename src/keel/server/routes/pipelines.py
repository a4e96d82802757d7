"""The pipeline routes: pipeline runs, their step runs, the step cache and their lineage edges.

A pipeline's steps run where its client runs them (that process, a child, a
Ray worker); what they record comes here. Each route parses its request,
checks the caller's permission and calls the same
:class:`~keel.pipelines.part.PipelineRecords` the local client runs, over the
server's store and acting as the token's user; the answer is
:func:`~keel.transport.wire.to_wire` of what it returns, which
:class:`keel.pipelines.remote.RemotePipelineRecords` decodes.

A pipeline run is a tracked run, and its steps are runs nested under it in
the same experiment, so permissions are the tracking routes' own
(:mod:`keel.server.permissions`), on the resource kind ``experiment`` named by
the run's experiment:

=============================================  ==========================================
reading a pipeline run, its record             ``read`` on the run's experiment
listing pipeline runs                          the runs in experiments the caller may read
recording a pipeline run, its outputs, a       ``write`` on the run's experiment
step run, a step's outcome
looking a cache key up                         ``read`` somewhere; a hit made in an
                                               experiment the caller may not read is a miss
=============================================  ==========================================

Step outputs never pass here: the client uploads them through the blob routes
(:mod:`keel.server.routes.blobs`) and a step's outcome names them by digest; an
outcome naming an object the server does not hold is refused. Every lineage
edge must start or end at the run being recorded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, StringConstraints

from keel.errors import InvalidInput
from keel.pipelines.lineage import Edge
from keel.pipelines.materialize import Materialized
from keel.pipelines.part import PipelineRecords
from keel.server.context import Caller, CallerDep
from keel.server.permissions import EXPERIMENT, on_run, readable_experiments
from keel.transport.wire import to_wire

router = APIRouter(tags=["pipelines"])

_DIGEST = r"^[0-9a-f]{64}$"
_NAME = 256
_TEXT = 1_000_000  # a failed step's error carries its traceback
#: edges one request may record: a step's inputs, outputs and code
MAX_EDGES = 10_000

Digest = Annotated[str, StringConstraints(pattern=_DIGEST)]
RunId = Annotated[str, Path(max_length=64, description="a run's id")]


class EdgeBody(BaseModel):
    """A lineage hop; one end must be the run being recorded."""

    src: str = Field(min_length=1, max_length=512)
    dst: str = Field(min_length=1, max_length=512)
    relation: str = Field(min_length=1, max_length=32)
    label: str = Field(default="", max_length=_NAME)


class OutputBody(BaseModel):
    """A stored step output: its type, content digest and the object that holds it."""

    name: str = Field(min_length=1, max_length=_NAME)
    type: Literal["dataframe", "series", "arrow", "ndarray", "json", "model"]
    digest: Digest
    object: Digest
    size: int = Field(ge=0, le=2**63 - 1)


class NewPipelineRun(BaseModel):
    """The row of a pipeline run whose tracked run exists already."""

    run_id: str = Field(min_length=1, max_length=64)
    pipeline: str = Field(min_length=1, max_length=_NAME)
    target: str = Field(min_length=1, max_length=4_096)
    code_digest: Digest
    code_snapshot: Digest | None = None
    params: dict[str, Any] = Field(max_length=1_000)
    executor: str = Field(min_length=1, max_length=32)
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    use_cache: bool
    reproduces: str | None = Field(default=None, max_length=64)
    edges: list[EdgeBody] = Field(default_factory=list, max_length=MAX_EDGES)


class PipelineOutputs(BaseModel):
    """What the pipeline returned: step outputs as references, other values as JSON."""

    outputs: Any = None


class NewStepRun(BaseModel):
    """A step run to create under a pipeline run (in the pipeline run's experiment)."""

    node: str = Field(min_length=1, max_length=_NAME)
    step: str = Field(min_length=1, max_length=512)
    code_digest: Digest
    cache_key: Digest | None = None
    inputs: Any = None
    cached: bool
    source_run_id: str | None = Field(default=None, max_length=64)


class StepOutcome(BaseModel):
    """How a step ended: its outputs, attempts, cache row and lineage edges."""

    step: str = Field(min_length=1, max_length=512)
    outputs: list[OutputBody] = Field(default_factory=list, max_length=1_000)
    attempts: int = Field(ge=0, le=1_000_000)
    seconds: float | None = Field(default=None, ge=0)
    cache_key: Digest | None = None
    remember: bool = False
    edges: list[EdgeBody] = Field(default_factory=list, max_length=MAX_EDGES)
    error: str | None = Field(default=None, max_length=_TEXT)
    list_artifacts: bool = False


# -- permissions -----------------------------------------------------------------------


def _records(caller: Caller) -> PipelineRecords:
    return PipelineRecords(caller.client.tracking)


def _may_read_run(caller: Caller, run_id: str) -> bool:
    if caller.can("read"):
        return True
    tracking = caller.client.tracking
    experiment = tracking.get_experiment(tracking.get_run_info(run_id).experiment_id)
    return caller.can("read", EXPERIMENT, experiment.name)


def _edges(body: list[EdgeBody]) -> list[Edge]:
    return [Edge(e.src, e.dst, e.relation, e.label) for e in body]


# -- pipeline runs ---------------------------------------------------------------------


@router.post("/pipeline-runs", status_code=201)
def insert_pipeline_run(body: NewPipelineRun, caller: CallerDep) -> None:
    """Record the row of a pipeline run (its tracked run exists). Needs ``write`` on its experiment."""
    on_run(caller, "write", body.run_id)
    _records(caller).insert_pipeline_run(
        run_id=body.run_id,
        pipeline=body.pipeline,
        target=body.target,
        code_digest=body.code_digest,
        code_snapshot=body.code_snapshot,
        params=body.params,
        executor=body.executor,
        seed=body.seed,
        use_cache=body.use_cache,
        reproduces=body.reproduces,
        edges=_edges(body.edges),
    )


@router.get("/pipeline-runs")
def list_pipeline_runs(
    caller: CallerDep,
    pipeline: str | None = Query(default=None, max_length=_NAME),
    limit: int = Query(default=20, ge=1, le=10_000),
) -> Any:
    """The newest pipeline runs the caller may read (optionally of one pipeline)."""
    from keel.pipelines import records

    readable = readable_experiments(caller)
    experiment_ids = None if readable is None else [e.id for e in readable]
    store = caller.client.tracking.store
    return to_wire(records.list_pipeline_runs(store, pipeline, limit, experiment_ids))


@router.get("/pipeline-runs/{run_id}")
def get_pipeline_run(run_id: RunId, caller: CallerDep) -> Any:
    """The pipeline run with its steps; ``outputs`` holds references, not values."""
    on_run(caller, "read", run_id)
    return to_wire(_records(caller).get_pipeline_run(run_id))


@router.get("/pipeline-runs/{run_id}/record")
def get_pipeline_record(run_id: RunId, caller: CallerDep) -> Any:
    """The stored row of a pipeline run (target, params, seed: what reproducing it needs)."""
    on_run(caller, "read", run_id)
    return to_wire(_records(caller).get_pipeline_record(run_id))


@router.put("/pipeline-runs/{run_id}/outputs")
def set_pipeline_outputs(run_id: RunId, body: PipelineOutputs, caller: CallerDep) -> None:
    """Store what the pipeline returned. Needs ``write`` on the run's experiment."""
    on_run(caller, "write", run_id)
    _records(caller).set_pipeline_outputs(run_id, body.outputs)


# -- step runs -------------------------------------------------------------------------


@router.post("/pipeline-runs/{run_id}/steps", status_code=201)
def create_step_run(run_id: RunId, body: NewStepRun, caller: CallerDep) -> str:
    """Create a step run (RUNNING) under the pipeline run, in its experiment; answer its id."""
    info = on_run(caller, "write", run_id)
    return _records(caller).create_step_run(
        experiment_id=info.experiment_id,
        pipeline_run_id=run_id,
        node=body.node,
        step=body.step,
        code_digest=body.code_digest,
        cache_key=body.cache_key,
        inputs=body.inputs,
        cached=body.cached,
        source_run_id=body.source_run_id,
    )


@router.post("/step-runs/{run_id}/finish")
def finish_step(run_id: RunId, body: StepOutcome, caller: CallerDep) -> None:
    """Record a step's outcome: outputs, cache row and lineage edges in one transaction.

    Every output must name objects the server holds (uploaded through the blob
    routes first); an outcome naming a missing one is refused and nothing is recorded.
    """
    on_run(caller, "write", run_id)
    artifacts = caller.client.artifacts
    for output in body.outputs:
        if not artifacts.exists(output.object):
            raise InvalidInput(
                f"step output {output.name!r} names object {output.object}, which this server "
                "does not hold; upload it first (PUT /api/v1/blobs/objects/...), then record it"
            )
    _records(caller).finish_step(
        run_id=run_id,
        step=body.step,
        outputs=[Materialized(o.name, o.type, o.digest, o.object, o.size) for o in body.outputs],
        attempts=body.attempts,
        seconds=body.seconds,
        cache_key=body.cache_key,
        remember=body.remember,
        edges=_edges(body.edges),
        error=body.error,
        list_artifacts=body.list_artifacts,
    )


# -- the step cache --------------------------------------------------------------------


@router.get("/step-cache/{key}")
def lookup_cache(
    key: Annotated[str, Path(pattern=_DIGEST, description="a step's cache key")],
    caller: CallerDep,
) -> Any:
    """The outputs cached under ``key`` if all are still stored, or null.

    A hit made by a run the caller may not read answers null: the caller runs
    the step itself rather than see another experiment's outputs.
    """
    caller.require_somewhere("read", "looking up the step cache")
    hit = _records(caller).lookup_cache(key)
    if hit is None or not _may_read_run(caller, hit.run_id):
        return None
    return to_wire(hit)
