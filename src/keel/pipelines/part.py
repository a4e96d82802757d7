"""The pipeline-records part: where a pipeline run's rows, step runs, cache and edges are kept.

:func:`pipeline_records_for` picks it for a tracking client's transport:
:class:`PipelineRecords` runs :mod:`keel.pipelines.records` and
:mod:`keel.pipelines.cache` on the client's own metadata store; over
``keel server`` it is a :class:`keel.pipelines.remote.RemotePipelineRecords`,
whose methods are REST calls to routes that run this same class on the
server. The runner, ``keel runs reproduce`` and the module functions
(:func:`keel.pipelines.get_pipeline_run`, :func:`keel.pipelines.list_pipeline_runs`)
reach the records only through it, so a pipeline whose steps run here keeps
its metadata wherever the client's transport points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.pipelines import cache as step_cache
from keel.pipelines import records
from keel.transport.base import TransportBound

if TYPE_CHECKING:
    from keel.pipelines.cache import CacheHit
    from keel.pipelines.lineage import Edge
    from keel.pipelines.materialize import Materialized
    from keel.pipelines.records import PipelineRecord, PipelineRun
    from keel.tracking.client import TrackingClient

__all__ = ["PipelineRecords", "pipeline_records_for"]


class PipelineRecords(TransportBound):
    """Pipeline runs, step runs, the step cache and their lineage edges on the client's store.

    Args:
        tracking: the tracking client whose transport (and whose runs) the records use;
            step runs are tracked runs it creates.
    """

    def __init__(self, tracking: TrackingClient) -> None:
        self.tracking = tracking
        self.transport = tracking.transport

    def insert_pipeline_run(
        self,
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
        """Store the row of the pipeline run tracked as ``run_id`` (see :mod:`keel.pipelines.records`)."""
        records.insert_pipeline_run(
            self.store,
            run_id=run_id,
            pipeline=pipeline,
            target=target,
            code_digest=code_digest,
            code_snapshot=code_snapshot,
            params=params,
            executor=executor,
            seed=seed,
            use_cache=use_cache,
            reproduces=reproduces,
            edges=edges,
        )

    def set_pipeline_outputs(self, run_id: str, outputs: Any) -> None:
        """Store what the pipeline returned, with step outputs as references."""
        records.set_pipeline_outputs(self.store, run_id, outputs)

    def create_step_run(
        self,
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
        """Create a step's tracked run (RUNNING) and its step row; return the run id."""
        return records.create_step_run(
            self.tracking,
            experiment_id=experiment_id,
            pipeline_run_id=pipeline_run_id,
            node=node,
            step=step,
            code_digest=code_digest,
            cache_key=cache_key,
            inputs=inputs,
            cached=cached,
            source_run_id=source_run_id,
        )

    def finish_step(
        self,
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
        records.finish_step(
            self.tracking,
            run_id=run_id,
            step=step,
            outputs=outputs,
            attempts=attempts,
            seconds=seconds,
            cache_key=cache_key,
            remember=remember,
            edges=edges,
            error=error,
            list_artifacts=list_artifacts,
        )

    def lookup_cache(self, key: str) -> CacheHit | None:
        """The cached outputs for ``key`` if every one of them is still stored."""
        return step_cache.lookup(self.store, self.artifacts, key)

    def get_pipeline_record(self, run_id: str) -> PipelineRecord:
        """The stored row of a pipeline run (what reproducing it needs)."""
        return records.get_pipeline_record(self.store, run_id)

    def get_pipeline_run(self, run_id: str) -> PipelineRun:
        """A stored pipeline run with its steps; ``outputs`` holds references, not values."""
        return records.get_pipeline_run(self.store, run_id)

    def list_pipeline_runs(
        self, pipeline: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The newest pipeline runs (optionally of one pipeline), without their steps."""
        return records.list_pipeline_runs(self.store, pipeline, limit)


def pipeline_records_for(tracking: TrackingClient) -> PipelineRecords:
    """The pipeline-records part for ``tracking``'s transport: SQL locally, REST calls over http."""
    from keel.transport.http import HttpTransport

    if isinstance(tracking.transport, HttpTransport):
        from keel.pipelines.remote import RemotePipelineRecords

        return RemotePipelineRecords(tracking)
    return PipelineRecords(tracking)
