"""The tracking part over ``keel server``: the same methods as :class:`TrackingClient`, as REST calls.

:class:`RemoteTracking` is what :class:`keel.Client` holds when its transport is
the http one. It subclasses :class:`~keel.tracking.client.TrackingClient` so the
two share one interface; each method it overrides is one request to a route of
:mod:`keel.server.routes.tracking`. A method it does not override would need
the metadata store, which the http transport refuses with a clear error.

Metric points travel as columns (keys, values, steps, timestamps), so a batch
of thousands is one small JSON document and one transaction on the server.
Params and tags are checked and turned into their stored text here, exactly as
the local client does, so both transports store the same text; the server
checks them again. Artifacts are uploaded through the transport's artifact
store (the server's blob routes, digests checked on both ends) by the methods
inherited from :class:`TrackingClient`; only their rows (path, digest, size)
go through the tracking routes, and downloads verify every byte against its
digest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from keel.tracking.client import MetricRow, TrackingClient
from keel.tracking.entities import ArtifactEntry, Experiment, Metric, Run, RunInfo, RunsPage
from keel.tracking.environment import Capture
from keel.tracking.environment import capture as capture_here
from keel.tracking.validation import (
    check_key,
    check_metric_value,
    check_param_value,
    check_step,
    check_tag_value,
)
from keel.transport import Transport, local_or
from keel.transport.http import HttpTransport
from keel.transport.wire import from_wire, to_wire

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RemoteTracking", "tracking_for"]

#: Points per metrics request; the server accepts up to 100,000.
_POINTS_PER_REQUEST = 50_000


def _run(run_id: str) -> str:
    """The path of a run: the id quoted, so no id can address another route."""
    return f"/runs/{quote(str(run_id), safe='')}"


def _texts(kind: str, values: Mapping[str, Any] | None) -> dict[str, str]:
    """Params or tags as the text the store keeps, checked as the local client checks them."""
    check = check_param_value if kind == "param" else check_tag_value
    return {check_key(k, f"{kind} key"): check(k, v) for k, v in (values or {}).items()}


class RemoteTracking(TrackingClient):
    """Experiments, runs, metrics, artifacts and search through ``keel server``."""

    transport: HttpTransport

    def __init__(self, transport: HttpTransport) -> None:
        super().__init__(transport=transport)

    # -- experiments ---------------------------------------------------------

    def create_experiment(self, name: str) -> int:
        """Create an experiment and return its id; ``Conflict`` if the name is taken."""
        return int(self.transport.call("POST", "/experiments", int, json={"name": name}))

    def get_or_create_experiment(self, name: str) -> Experiment:
        """The experiment named ``name``, created if absent (safe under concurrent callers)."""
        return self.transport.call("PUT", "/experiments", Experiment, json={"name": name})

    def get_experiment(self, experiment_id: int) -> Experiment:
        return self.transport.call("GET", f"/experiments/{int(experiment_id)}", Experiment)

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        return self.transport.call(
            "GET", "/experiments/by-name", Experiment | None, params={"name": name}
        )

    def resolve_experiment(self, name_or_id: str | int) -> Experiment:
        """The experiment named ``name_or_id``, or with that id; ``NotFound`` otherwise."""
        if not isinstance(name_or_id, str):
            return self.get_experiment(name_or_id)
        return self.transport.call(
            "GET", "/experiments/resolve", Experiment, params={"ref": name_or_id}
        )

    def list_experiments(self) -> list[Experiment]:
        return self.transport.call("GET", "/experiments", list[Experiment])

    def experiment_run_counts(self) -> dict[int, int]:
        counts = self.transport.call("GET", "/experiments/run-counts", dict[str, int])
        return {int(k): v for k, v in counts.items()}

    # -- runs ----------------------------------------------------------------

    def create_run(
        self,
        experiment_id: int,
        name: str | None = None,
        *,
        parent_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        capture: bool = True,
        seeds: Mapping[str, int] | None = None,
        captured: Capture | None = None,
        start_time: int | None = None,
        user: str | None = None,
    ) -> RunInfo:
        """Start a run in ``RUNNING`` state on the server.

        The environment (interpreter, packages, git state, command) is this
        process's, captured here and sent with the run unless ``capture=False``.
        ``start_time`` and ``user`` record a run that happened elsewhere (an
        import); naming a user other than the token's needs ``admin`` on the server.
        """
        if captured is None and capture:
            captured = capture_here()
        body = {
            "experiment_id": experiment_id,
            "name": name,
            "parent_id": parent_id,
            "tags": _texts("tag", tags) or None,
            "seeds": dict(seeds) if seeds else None,
            "captured": to_wire(captured),
            "start_time": None if start_time is None else check_step(start_time),
            "user": user,
        }
        return self.transport.call("POST", "/runs", RunInfo, json=body)

    def get_run_info(self, run_id: str) -> RunInfo:
        return self.transport.call("GET", f"{_run(run_id)}/info", RunInfo)

    def get_run(self, run_id: str) -> Run:
        """The run with its params, tags and latest metric values."""
        return self.transport.call("GET", _run(run_id), Run)

    def resolve_run_id(self, prefix: str) -> str:
        """A full run id from an unambiguous prefix of at least 6 characters."""
        if len(prefix) == 32:
            return prefix
        return str(self.transport.call("GET", "/runs/resolve", str, params={"prefix": prefix}))

    def set_terminated(
        self, run_id: str, status: str = "FINISHED", end_time: int | None = None
    ) -> None:
        """Mark a run ended with ``status`` (FINISHED, FAILED or KILLED)."""
        # the server's clock, like the run's start time, unless the caller gives one
        body = {"status": status, "end_time": end_time}
        self.transport.request("POST", f"{_run(run_id)}/end", json=body)

    def set_running(self, run_id: str) -> RunInfo:
        """Reopen an ended run so more can be logged to it."""
        return self.transport.call("POST", f"{_run(run_id)}/reopen", RunInfo)

    def record_seeds(self, run_id: str, seeds: Mapping[str, int]) -> None:
        self.transport.request("POST", f"{_run(run_id)}/seeds", json={"seeds": dict(seeds)})

    def get_environment(self, run_id: str) -> dict[str, Any]:
        """Interpreter, platform, distributions, git state, command and seeds of a run."""
        return self.transport.call("GET", f"{_run(run_id)}/environment", dict[str, Any])

    # -- params and tags -----------------------------------------------------

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Record params; each key is write-once (the same value again is fine)."""
        texts = _texts("param", params)
        if texts:
            self.transport.request("POST", f"{_run(run_id)}/params", json={"params": texts})

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags (mutable: a new value replaces the old one)."""
        texts = _texts("tag", tags)
        if texts:
            self.transport.request("POST", f"{_run(run_id)}/tags", json={"tags": texts})

    def delete_tag(self, run_id: str, key: str) -> None:
        self.transport.request("DELETE", f"{_run(run_id)}/tags", params={"key": key})

    # -- metrics ---------------------------------------------------------------

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[Metric] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """Write metric points, params and tags of one run: one request per 50,000 points."""
        points = [
            (
                check_key(m.key, "metric key"),
                check_metric_value(m.key, m.value),
                check_step(m.step),
                check_step(m.timestamp),
            )
            for m in metrics
        ]
        param_texts = _texts("param", params) or None
        tag_texts = _texts("tag", tags) or None
        if not points and param_texts is None and tag_texts is None:
            return
        start = 0
        while True:
            chunk = points[start : start + _POINTS_PER_REQUEST]
            body: dict[str, Any] = {"metrics": _columns(chunk)}
            if start == 0:
                body["params"] = param_texts
                body["tags"] = tag_texts
            self.transport.request("POST", f"{_run(run_id)}/batch", json=body)
            start += _POINTS_PER_REQUEST
            if start >= len(points):
                return

    def write_metric_rows(self, rows: Sequence[MetricRow]) -> None:
        """Bulk-write points of any runs (the buffer's flush path); the server checks them."""
        for start in range(0, len(rows), _POINTS_PER_REQUEST):
            chunk = rows[start : start + _POINTS_PER_REQUEST]
            body = _columns([(k, v, st, ts) for _, k, st, ts, v in chunk])
            body["run_ids"] = [r[0] for r in chunk]
            self.transport.request("POST", "/metrics", json=body)

    def next_steps(self, run_id: str) -> dict[str, int]:
        """Per metric key of the run, the step after its highest."""
        return dict(
            self.transport.call("GET", f"{_run(run_id)}/metrics/next-steps", dict[str, int])
        )

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every point of one metric, by step then time."""
        answer = self.transport.request(
            "GET", f"{_run(run_id)}/metrics/history", params={"key": key}
        )
        values = from_wire(answer["values"], list[float])
        return [
            Metric(key, v, st, ts)
            for v, st, ts in zip(values, answer["steps"], answer["timestamps"], strict=True)
        ]

    def count_metric_points(self, run_id: str | None = None) -> int:
        params = {} if run_id is None else {"run_id": run_id}
        return int(self.transport.call("GET", "/metrics/count", int, params=params))

    # -- artifacts ---------------------------------------------------------------

    def _record_artifacts(self, run_id: str, entries: Sequence[ArtifactEntry]) -> None:
        # The inherited log_artifact(s) and log_dict upload the bytes through the blob
        # routes first; this lists them under the run, on the server.
        if entries:
            body = {"entries": to_wire(list(entries))}
            self.transport.request("POST", f"{_run(run_id)}/artifacts", json=body)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[ArtifactEntry]:
        """Artifacts of a run, optionally only those at or under ``path``."""
        params = {} if path is None else {"path": path}
        return self.transport.call(
            "GET", f"{_run(run_id)}/artifacts", list[ArtifactEntry], params=params
        )

    # -- search ------------------------------------------------------------------

    def search_runs(
        self,
        experiment_ids: Sequence[int] | None = None,
        filter_string: str | None = None,
        order_by: Sequence[str] | str | None = None,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> RunsPage:
        """Runs matching a filter, in order, one page at a time (see ``keel.tracking.search``)."""
        body = {
            "experiment_ids": None if experiment_ids is None else list(experiment_ids),
            "filter_string": filter_string,
            "order_by": order_by
            if order_by is None or isinstance(order_by, str)
            else list(order_by),
            "max_results": max_results,
            "page_token": page_token,
        }
        return self.transport.call("POST", "/runs/search", RunsPage, json=body, keyed=False)

    def search_runs_frame(
        self,
        experiment_ids: Sequence[int] | None = None,
        filter_string: str | None = None,
        order_by: Sequence[str] | str | None = None,
        max_results: int = 100_000,
        page_token: str | None = None,
    ) -> pd.DataFrame:
        """Like :meth:`search_runs`, as a DataFrame with ``metrics.*``, ``params.*``, ``tags.*`` columns."""
        page = self.search_runs(experiment_ids, filter_string, order_by, max_results, page_token)
        return _frame(page.runs)


def _columns(points: Sequence[tuple[str, float, int, int]]) -> dict[str, Any]:
    return {
        "keys": [p[0] for p in points],
        "values": to_wire([p[1] for p in points]),
        "steps": [p[2] for p in points],
        "timestamps": [p[3] for p in points],
    }


def _frame(runs: Sequence[Run]) -> pd.DataFrame:
    """The frame :meth:`TrackingClient.search_runs_frame` builds, from runs already fetched."""
    import numpy as np
    import pandas as pd

    def stamps(values: list[int | None]) -> Any:
        return pd.to_datetime(pd.array(values, dtype="Int64"), unit="ms", utc=True).as_unit("ms")

    infos = [r.info for r in runs]
    base = pd.DataFrame(
        {
            "run_id": [r.id for r in infos],
            "experiment_id": [r.experiment_id for r in infos],
            "name": [r.name for r in infos],
            "status": [r.status for r in infos],
            "start_time": stamps([r.start_time for r in infos]),
            "end_time": stamps([r.end_time for r in infos]),
            "parent_id": [r.parent_id for r in infos],
            "user": [r.user for r in infos],
        }
    )
    columns: dict[str, Any] = {}
    for prefix in ("metrics", "params", "tags"):
        maps = [getattr(r, prefix) for r in runs]
        for key in sorted({k for m in maps for k in m}):
            if prefix == "metrics":
                columns[f"{prefix}.{key}"] = np.array([m.get(key, np.nan) for m in maps], float)
            else:
                columns[f"{prefix}.{key}"] = np.array([m.get(key) for m in maps], dtype=object)
    if columns:
        base = pd.concat([base, pd.DataFrame(columns)], axis=1)
    return base


def tracking_for(transport: Transport | None = None) -> TrackingClient:
    """The tracking part for ``transport`` (default: the one the process's settings name).

    SQL on the store locally; REST calls to ``keel server`` over the http transport.
    """
    transport = local_or(transport)
    if isinstance(transport, HttpTransport):
        return RemoteTracking(transport)
    return TrackingClient(transport=transport)
