"""The pipeline-records part over ``keel server``: :class:`PipelineRecords`' methods as REST calls.

Each method is one request to a route of :mod:`keel.server.routes.pipelines`,
which checks the caller's permission on the run's experiment and runs the
same :class:`~keel.pipelines.part.PipelineRecords` on the server's store. Step
outputs never pass here: the steps upload them through the blob routes
(the client's artifact store), and only their digests travel with a step's
outcome; the server refuses an outcome naming an object it does not hold.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from keel.pipelines.cache import CacheHit
from keel.pipelines.lineage import Edge
from keel.pipelines.materialize import Materialized
from keel.pipelines.part import PipelineRecords
from keel.pipelines.records import PipelineRecord, PipelineRun
from keel.tracking.client import TrackingClient
from keel.transport.http import HttpTransport
from keel.transport.wire import to_wire

__all__ = ["RemotePipelineRecords"]


def _run(run_id: str) -> str:
    """The path of a pipeline run: the id quoted, so no id can address another route."""
    return f"/pipeline-runs/{quote(str(run_id), safe='')}"


class RemotePipelineRecords(PipelineRecords):
    """Pipeline runs, step runs, the step cache and lineage edges through ``keel server``."""

    transport: HttpTransport

    def __init__(self, tracking: TrackingClient) -> None:
        super().__init__(tracking)
        assert isinstance(self.transport, HttpTransport)  # pipeline_records_for chose this class

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
        body = {
            "run_id": run_id,
            "pipeline": pipeline,
            "target": target,
            "code_digest": code_digest,
            "code_snapshot": code_snapshot,
            "params": to_wire(params),
            "executor": executor,
            "seed": seed,
            "use_cache": use_cache,
            "reproduces": reproduces,
            "edges": to_wire(edges),
        }
        self.transport.request("POST", "/pipeline-runs", json=body)

    def set_pipeline_outputs(self, run_id: str, outputs: Any) -> None:
        body = {"outputs": to_wire(outputs)}
        self.transport.request("PUT", f"{_run(run_id)}/outputs", json=body)

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
        # The server takes the experiment from the pipeline run, so it is not sent.
        body = {
            "node": node,
            "step": step,
            "code_digest": code_digest,
            "cache_key": cache_key,
            "inputs": to_wire(inputs),
            "cached": cached,
            "source_run_id": source_run_id,
        }
        path = f"{_run(pipeline_run_id)}/steps"
        return str(self.transport.call("POST", path, str, json=body))

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
        body = {
            "step": step,
            "outputs": to_wire(outputs),
            "attempts": attempts,
            "seconds": to_wire(seconds),
            "cache_key": cache_key,
            "remember": remember,
            "edges": to_wire(edges),
            "error": error,
            "list_artifacts": list_artifacts,
        }
        path = f"/step-runs/{quote(str(run_id), safe='')}/finish"
        self.transport.request("POST", path, json=body)

    def lookup_cache(self, key: str) -> CacheHit | None:
        path = f"/step-cache/{quote(str(key), safe='')}"
        return self.transport.call("GET", path, CacheHit | None)

    def get_pipeline_record(self, run_id: str) -> PipelineRecord:
        return self.transport.call("GET", f"{_run(run_id)}/record", PipelineRecord)

    def get_pipeline_run(self, run_id: str) -> PipelineRun:
        return self.transport.call("GET", _run(run_id), PipelineRun)

    def list_pipeline_runs(
        self, pipeline: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if pipeline:
            params["pipeline"] = pipeline
        return self.transport.call("GET", "/pipeline-runs", list[dict[str, Any]], params=params)
