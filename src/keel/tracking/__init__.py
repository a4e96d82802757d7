"""Experiment tracking: runs, params, metrics, tags, artifacts, environments, search."""

from keel.tracking.client import TrackingClient
from keel.tracking.compare import compare_runs
from keel.tracking.entities import (
    RUN_STATUSES,
    ArtifactEntry,
    Experiment,
    Metric,
    Run,
    RunInfo,
    RunsPage,
)
from keel.tracking.fluent import ActiveRun

__all__ = [
    "RUN_STATUSES",
    "ActiveRun",
    "ArtifactEntry",
    "Experiment",
    "Metric",
    "Run",
    "RunInfo",
    "RunsPage",
    "TrackingClient",
    "compare_runs",
]
