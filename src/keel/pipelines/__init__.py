"""Pipelines: ``@keel.step`` functions composed by a ``@keel.pipeline``, cached, tracked, traced.

::

    @keel.step
    def load(ref: str):
        return keel.load_dataset(ref)

    @keel.step(retries=2, cpus=2)
    def fit(df, depth: int = 8):
        ...
        return model

    @keel.pipeline
    def churn(data: str = "datasets:/churn", depth: int = 8):
        return {"model": fit(load(data), depth=depth)}

    run = keel.pipelines.run_pipeline(churn, params={"depth": 6}, executor="ray")
    run.steps[0].cached, run.outputs["model"]
    keel.pipelines.upstream(f"runs:/{run.steps[-1].run_id}")

Names are loaded on first use, so ``import keel.pipelines`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.lazy import lazy_exports

__all__ = [
    "LineageGraph",
    "Pipeline",
    "PipelineRun",
    "Reproduction",
    "Step",
    "StepEvent",
    "StepFailed",
    "StepRun",
    "downstream",
    "get_pipeline_run",
    "list_pipeline_runs",
    "pipeline",
    "reproduce",
    "run_pipeline",
    "step",
    "upstream",
]

_EXPORTS = {
    "LineageGraph": "keel.pipelines.lineage",
    "Pipeline": "keel.pipelines.definition",
    "PipelineRun": "keel.pipelines.records",
    "Reproduction": "keel.pipelines.reproduction",
    "Step": "keel.pipelines.steps",
    "StepEvent": "keel.pipelines.runner",
    "StepFailed": "keel.pipelines.runner",
    "StepRun": "keel.pipelines.records",
    "downstream": "keel.pipelines.lineage",
    "pipeline": "keel.pipelines.definition",
    "reproduce": "keel.pipelines.reproduction",
    "run_pipeline": "keel.pipelines.runner",
    "step": "keel.pipelines.steps",
    "upstream": "keel.pipelines.lineage",
}

if TYPE_CHECKING:
    from keel.pipelines.definition import Pipeline, pipeline
    from keel.pipelines.lineage import LineageGraph, downstream, upstream
    from keel.pipelines.records import PipelineRun, StepRun
    from keel.pipelines.reproduction import Reproduction, reproduce
    from keel.pipelines.runner import StepEvent, StepFailed, run_pipeline
    from keel.pipelines.steps import Step, step


def get_pipeline_run(run_id: str) -> PipelineRun:
    """A stored pipeline run and its steps (a unique run id prefix of 6+ characters is enough).

    Read from the process settings' store, or through the ``keel server`` they name.
    """
    from keel.pipelines.part import pipeline_records_for
    from keel.tracking.remote import tracking_for

    tracking = tracking_for()
    return pipeline_records_for(tracking).get_pipeline_run(tracking.resolve_run_id(run_id))


def list_pipeline_runs(pipeline: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest pipeline runs, optionally of one pipeline (through ``keel server`` if set)."""
    from keel.pipelines.part import pipeline_records_for
    from keel.tracking.remote import tracking_for

    return pipeline_records_for(tracking_for()).list_pipeline_runs(pipeline, limit)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
