"""What a pipeline run stores: its row, its step runs, their cache rows and lineage edges.

Runs themselves (status, params, metrics, tags, audit entries) go through the
tracking client like any run; this module adds the pipeline-specific rows.
Each step's outcome — its ``step_runs`` row, its cache row and its lineage
edges — is written in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from keel.errors import InvalidInput, NotFound
from keel.pipelines import cache as step_cache
from keel.pipelines.lineage import Edge, add_edges
from keel.pipelines.materialize import Materialized
from keel.store import Store
from keel.store import schema as s
from keel.store.sql import now_ms
from keel.tracking.client import TrackingClient
from keel.tracking.entities import ArtifactEntry

__all__ = [
    "PipelineRecord",
    "PipelineRun",
    "StepRun",
    "check_edges",
    "create_step_run",
    "finish_step",
    "get_pipeline_record",
    "get_pipeline_run",
    "insert_pipeline_run",
    "list_pipeline_runs",
    "set_pipeline_outputs",
]

_INHERITED = ("environment_digest", "git_commit", "git_dirty", "git_diff_digest", "command")


@dataclass
class StepRun:
    """One step of a pipeline run.

    Attributes:
        node: the step's name in the graph (``fit``, or ``fit#2`` for a second call).
        step: the function's qualified name.
        run_id: the step's tracked run (nested under the pipeline run).
        status: FINISHED, FAILED, or RUNNING while it runs.
        cached: True when its outputs were reused instead of running it.
        outputs: output name → content digest.
        source_run_id: for a cached step, the step run that produced the outputs.
        attempts: how many times it ran (0 when cached).
        seconds: wall time of the last attempt.
        error: the last attempt's error and traceback, if it failed.
        code_digest: the digest of the step's code.
        cache_key: the key its outputs are cached under.
        materialized: the stored outputs in full (type, object, size).
    """

    node: str
    step: str
    run_id: str
    status: str
    cached: bool
    outputs: dict[str, str]
    source_run_id: str | None
    attempts: int
    seconds: float | None
    error: str | None
    code_digest: str
    cache_key: str | None
    materialized: list[Materialized] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "step": self.step,
            "run_id": self.run_id,
            "status": self.status,
            "cached": self.cached,
            "outputs": self.outputs,
            "source_run_id": self.source_run_id,
            "attempts": self.attempts,
            "seconds": self.seconds,
            "error": self.error,
            "code_digest": self.code_digest,
            "cache_key": self.cache_key,
        }


@dataclass
class PipelineRun:
    """A pipeline run: its tracked run, its steps and what it returned.

    Attributes:
        run_id: the pipeline's tracked run.
        pipeline: the pipeline's name.
        status: FINISHED or FAILED.
        outputs: what the pipeline function returned, with step outputs loaded back
            (a DataFrame, an array, the native model, a JSON value). Read back from
            the store with ``load_outputs=False`` it holds references instead.
        steps: the step runs in the order they were called.
        params: the parameters, with dataset references pinned to versions.
        code_digest: the digest over the pipeline function and every step's code.
        target: how the pipeline was loaded (``module:attr`` or ``file.py:attr``).
        executor: ``local`` or ``ray``.
        seed: the seed every step started from, if any.
        reproduces: the run this one re-executed, if it was a reproduction.
    """

    run_id: str
    pipeline: str
    status: str
    outputs: Any
    steps: list[StepRun]
    params: dict[str, Any]
    code_digest: str
    target: str
    executor: str
    seed: int | None = None
    reproduces: str | None = None
    created_at: int = 0

    def step(self, node: str) -> StepRun:
        """The step run called ``node``."""
        for candidate in self.steps:
            if candidate.node == node:
                return candidate
        raise NotFound(
            f"pipeline run {self.run_id} has no step {node!r}; its steps are "
            f"{', '.join(x.node for x in self.steps)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "status": self.status,
            "params": self.params,
            "code_digest": self.code_digest,
            "target": self.target,
            "executor": self.executor,
            "seed": self.seed,
            "reproduces": self.reproduces,
            "created_at": datetime.fromtimestamp(self.created_at / 1000, UTC).isoformat()
            if self.created_at
            else None,
            "steps": [x.to_dict() for x in self.steps],
            "outputs": _json_outputs(self.outputs),
        }


def _json_outputs(value: Any) -> Any:
    from keel.pipelines.graph import map_leaves
    from keel.pipelines.materialize import NOT_JSON, to_jsonable

    def leaf(v: Any) -> Any:
        plain = to_jsonable(v)
        return f"<{type(v).__name__}>" if plain is NOT_JSON else plain

    return map_leaves(value, leaf)


@dataclass(frozen=True)
class PipelineRecord:
    """The stored row of a pipeline run (what reproducing it needs)."""

    run_id: str
    pipeline: str
    target: str
    code_digest: str
    code_snapshot: str | None
    params: dict[str, Any]
    executor: str
    seed: int | None
    use_cache: bool
    outputs: Any
    reproduces: str | None
    created_at: int


def check_edges(run_id: str, edges: list[Edge]) -> None:
    """Refuse an edge that does not start or end at ``runs:/<run_id>``.

    A run records only its own hops (its inputs, outputs, code, the run it reused),
    so whoever may write to one run cannot draw edges between others.

    Raises:
        InvalidInput: an edge touches neither side of the run.
    """
    node = f"runs:/{run_id}"
    for edge in edges:
        if node not in (edge.src, edge.dst):
            raise InvalidInput(
                f"lineage edge {edge.src} -> {edge.dst} ({edge.relation}) does not touch {node}; "
                "a run records only edges to or from itself"
            )


def insert_pipeline_run(
    store: Store,
    *,
    run_id: str,
    pipeline: str,
    target: str,
    code_digest: str,
    code_snapshot: str | None,
    params: dict[str, Any],
    executor: str,
    seed: int | None,
    use_cache: bool,
    reproduces: str | None,
    edges: list[Edge],
) -> None:
    """Store the row of a pipeline run whose tracked run ``run_id`` exists, and its edges."""
    check_edges(run_id, edges)
    with store.write() as conn:
        conn.execute(
            s.pipeline_runs.insert().values(
                run_id=run_id,
                pipeline=pipeline,
                target=target,
                code_digest=code_digest,
                code_snapshot=code_snapshot,
                params=json.dumps(params, sort_keys=True),
                executor=executor,
                seed=seed,
                use_cache=use_cache,
                reproduces=reproduces,
                created_at=now_ms(),
            )
        )
        add_edges(conn, edges)


def set_pipeline_outputs(store: Store, run_id: str, outputs: Any) -> None:
    """Store what the pipeline returned (step outputs as references, other values as JSON)."""
    with store.write() as conn:
        conn.execute(
            update(s.pipeline_runs)
            .where(s.pipeline_runs.c.run_id == run_id)
            .values(outputs=json.dumps(outputs, sort_keys=True))
        )


def create_step_run(
    client: TrackingClient,
    *,
    experiment_id: int,
    pipeline_run_id: str,
    node: str,
    step: str,
    code_digest: str,
    cache_key: str | None,
    inputs: Any,
    cached: bool,
    source_run_id: str | None = None,
) -> str:
    """Create a step's tracked run (RUNNING) and its ``step_runs`` row; return the run id.

    The step shares the pipeline run's environment and code state, copied here
    instead of captured again for every step.
    """
    info = client.create_run(
        experiment_id,
        node,
        parent_id=pipeline_run_id,
        tags={"keel.kind": "step", "keel.step": node, "keel.cached": str(cached).lower()},
        capture=False,
    )
    with client.store.write() as conn:
        parent = conn.execute(
            select(*(s.runs.c[c] for c in _INHERITED)).where(s.runs.c.id == pipeline_run_id)
        ).one()
        conn.execute(update(s.runs).where(s.runs.c.id == info.id).values(**parent._mapping))
        conn.execute(
            s.step_runs.insert().values(
                run_id=info.id,
                pipeline_run_id=pipeline_run_id,
                node=node,
                step=step,
                code_digest=code_digest,
                cache_key=cache_key,
                cached=cached,
                source_run_id=source_run_id,
                inputs=json.dumps(inputs, sort_keys=True),
                attempts=0,
            )
        )
    return info.id


def finish_step(
    client: TrackingClient,
    *,
    run_id: str,
    step: str,
    outputs: list[Materialized],
    attempts: int,
    seconds: float | None,
    cache_key: str | None,
    remember: bool,
    edges: list[Edge],
    error: str | None = None,
    list_artifacts: bool = False,
) -> None:
    """Record a step's outcome: outputs, cache row and lineage edges in one transaction."""
    check_edges(run_id, edges)
    if list_artifacts and outputs:  # a cached step lists the outputs it reused
        client._record_artifacts(
            run_id,
            [
                ArtifactEntry(p, d, n)
                for o in outputs
                for p, d, n in o.artifact_entries(client.artifacts)
            ],
        )
    with client.store.write() as conn:
        conn.execute(
            update(s.step_runs)
            .where(s.step_runs.c.run_id == run_id)
            .values(
                outputs=json.dumps([o.to_dict() for o in outputs]),
                attempts=attempts,
                seconds=seconds,
                error=error,
            )
        )
        if remember and cache_key is not None and error is None:
            step_cache.remember(conn, cache_key, step, run_id, outputs)
        add_edges(conn, edges)


def get_pipeline_record(store: Store, run_id: str) -> PipelineRecord:
    """The stored row of a pipeline run.

    Raises:
        NotFound: no such run.
        InvalidInput: the run is not a pipeline run (a step run names its pipeline run).
    """
    with store.read() as conn:
        row = conn.execute(
            select(s.pipeline_runs).where(s.pipeline_runs.c.run_id == run_id)
        ).first()
        if row is None:
            step = conn.execute(
                select(s.step_runs.c.pipeline_run_id, s.step_runs.c.node).where(
                    s.step_runs.c.run_id == run_id
                )
            ).first()
            exists = conn.execute(select(s.runs.c.id).where(s.runs.c.id == run_id)).first()
    if row is not None:
        return PipelineRecord(
            row.run_id,
            row.pipeline,
            row.target,
            row.code_digest,
            row.code_snapshot,
            json.loads(row.params),
            row.executor,
            row.seed,
            bool(row.use_cache),
            None if row.outputs is None else json.loads(row.outputs),
            row.reproduces,
            row.created_at,
        )
    if step is not None:
        raise InvalidInput(
            f"run {run_id} is step {step.node!r} of pipeline run {step.pipeline_run_id}; "
            f"use the pipeline run's id"
        )
    if exists is None:
        raise NotFound(f"no run with id {run_id!r}; list runs with `keel runs list`")
    raise InvalidInput(
        f"run {run_id} is not a pipeline run, so Keel has no record of how to re-execute it; "
        "run training as a pipeline (keel pipeline run module:pipeline) to make it reproducible"
    )


def _steps(store: Store, run_id: str) -> list[StepRun]:
    with store.read() as conn:
        rows = conn.execute(
            select(s.step_runs, s.runs.c.status, s.runs.c.start_time)
            .join(s.runs, s.runs.c.id == s.step_runs.c.run_id)
            .where(s.step_runs.c.pipeline_run_id == run_id)
            .order_by(s.runs.c.start_time, s.step_runs.c.node)
        ).all()
    steps = []
    for r in rows:
        materialized = [Materialized.from_dict(d) for d in json.loads(r.outputs or "[]")]
        steps.append(
            StepRun(
                r.node,
                r.step,
                r.run_id,
                r.status,
                bool(r.cached),
                {m.name: m.digest for m in materialized},
                r.source_run_id,
                r.attempts,
                r.seconds,
                r.error,
                r.code_digest,
                r.cache_key,
                materialized,
            )
        )
    return steps


def get_pipeline_run(store: Store, run_id: str) -> PipelineRun:
    """A stored pipeline run with its steps; ``outputs`` holds references, not values."""
    record = get_pipeline_record(store, run_id)
    with store.read() as conn:
        status = conn.execute(select(s.runs.c.status).where(s.runs.c.id == run_id)).scalar_one()
    return PipelineRun(
        record.run_id,
        record.pipeline,
        status,
        record.outputs,
        _steps(store, run_id),
        record.params,
        record.code_digest,
        record.target,
        record.executor,
        record.seed,
        record.reproduces,
        record.created_at,
    )


def list_pipeline_runs(
    store: Store,
    pipeline: str | None = None,
    limit: int = 20,
    experiment_ids: list[int] | None = None,
) -> list[dict[str, Any]]:
    """The newest pipeline runs (optionally of one pipeline), without their steps.

    Args:
        store: the metadata store.
        pipeline: only runs of this pipeline.
        limit: at most this many.
        experiment_ids: only runs in these experiments (``keel server`` passes the ones
            its caller may read); ``None`` means every experiment.
    """
    query = (
        select(
            s.pipeline_runs.c.run_id,
            s.pipeline_runs.c.pipeline,
            s.pipeline_runs.c.executor,
            s.pipeline_runs.c.created_at,
            s.pipeline_runs.c.reproduces,
            s.runs.c.status,
        )
        .join(s.runs, s.runs.c.id == s.pipeline_runs.c.run_id)
        .order_by(s.pipeline_runs.c.created_at.desc())
        .limit(limit)
    )
    if pipeline:
        query = query.where(s.pipeline_runs.c.pipeline == pipeline)
    if experiment_ids is not None:
        query = query.where(s.runs.c.experiment_id.in_(experiment_ids))
    with store.read() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "run_id": r.run_id,
            "pipeline": r.pipeline,
            "status": r.status,
            "executor": r.executor,
            "created_at": datetime.fromtimestamp(r.created_at / 1000, UTC).isoformat(),
            "reproduces": r.reproduces,
        }
        for r in rows
    ]
