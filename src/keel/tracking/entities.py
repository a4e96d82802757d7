"""Plain records returned by the tracking API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["RUN_STATUSES", "ArtifactEntry", "Experiment", "Metric", "Run", "RunInfo", "RunsPage"]

#: Every status a run can have; ``RUNNING`` until it ends.
RUN_STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    created_at: int
    lifecycle: str = "active"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": _iso(self.created_at),
            "lifecycle": self.lifecycle,
        }


@dataclass(frozen=True)
class Metric:
    key: str
    value: float
    step: int
    timestamp: int


@dataclass(frozen=True)
class RunInfo:
    id: str
    experiment_id: int
    name: str
    status: str
    start_time: int
    end_time: int | None
    parent_id: str | None
    user: str

    @property
    def run_id(self) -> str:  # MLflow's spelling
        return self.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.id,
            "experiment_id": self.experiment_id,
            "name": self.name,
            "status": self.status,
            "start_time": _iso(self.start_time),
            "end_time": _iso(self.end_time),
            "parent_id": self.parent_id,
            "user": self.user,
        }


@dataclass(frozen=True)
class Run:
    """A run with its latest metric values, params and tags."""

    info: RunInfo
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.info.id

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.info.to_dict(),
            "params": self.params,
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "tags": self.tags,
        }


@dataclass(frozen=True)
class ArtifactEntry:
    path: str
    digest: str
    size: int


@dataclass(frozen=True)
class RunsPage:
    """One page of a search; pass ``next_page_token`` back for the next one."""

    runs: list[Run]
    next_page_token: str | None

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)


def _json_float(value: float) -> float | str:
    """JSON has no NaN or infinity; spell them out rather than lose them."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value
