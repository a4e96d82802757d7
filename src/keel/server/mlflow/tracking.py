"""MLflow's tracking endpoints over Keel's tracking: experiments, runs, metrics, search.

An MLflow experiment is a Keel experiment (its id is Keel's integer id, as a
string) and an MLflow run is a Keel run (its id is Keel's 32-hex id): what the
mlflow client logs here is what ``keel runs search``, lineage and the UI show.
Each route checks the caller's permission as the native tracking routes do
(``read`` or ``write`` on the run's experiment) and calls the same
:class:`~keel.tracking.client.TrackingClient` method the local client runs.

How MLflow's notions land in Keel:

- experiment ``"0"`` (MLflow's "Default", which the client uses when no
  experiment is set) is Keel's experiment named ``Default``, created on first use;
- the run's ``artifact_uri`` is ``mlflow-artifacts:/<experiment>/<run>/artifacts``,
  so the client uploads through the artifact proxy (:mod:`.artifacts`);
- ``tags.mlflow.runName`` is the run's name; ``tags.mlflow.parentRunId`` on
  create is the run's parent; the user is the token's, never the one the
  client claims in ``user_id``;
- ``runs/log-inputs``: a dataset whose source names a Keel dataset version
  (``datasets:/name@3``) becomes a Keel run input; any other dataset is kept as
  the run tag ``mlflow.dataset.<name>`` (its digest, context and source, as JSON),
  and a model input as ``mlflow.model_input.<model id>``;
- ``runs/outputs`` of a logged model from another run is the tag
  ``mlflow.model_output.<model id>``; a run's own models are found by their
  source run and need nothing more;
- a run's metrics in ``runs/get`` carry their latest value; their step and
  time are in ``metrics/get-history``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

import keel.server.mlflow.filters as filters
from keel.errors import Conflict, InvalidInput, NotFound
from keel.server.context import Caller, CallerDep
from keel.server.permissions import EXPERIMENT, on_experiment, on_run, readable_experiments
from keel.tracking.client import TrackingClient
from keel.tracking.entities import Experiment, Metric, Run, RunInfo
from keel.tracking.logged_models import LoggedModels
from keel.tracking.search import decode_page_token, encode_page_token
from keel.tracking.validation import check_key

__all__ = [
    "DEFAULT_EXPERIMENT",
    "experiment_id_of",
    "router",
    "run_artifact_uri",
    "searched_experiments",
    "v3_router",
]

router = APIRouter()
#: ``/api/3.0/mlflow``: only what the 2.0 API does not have.
v3_router = APIRouter()

#: The Keel experiment MLflow's experiment ``"0"`` stands for.
DEFAULT_EXPERIMENT = "Default"
_STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
_ID = 64
_TEXT = 8_000
_MAX_RESULTS = 50_000  # MLflow's own ceiling for a page of runs
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


# -- request bodies ----------------------------------------------------------------------
# Field names and shapes are MLflow's (mlflow/protos/service.proto); unknown fields are
# ignored as MLflow's own server ignores them, so newer clients keep working.


class KeyValue(BaseModel):
    key: str = Field(max_length=250)
    value: str = Field(default="", max_length=_TEXT)


class CreateExperiment(BaseModel):
    name: str = Field(max_length=256)
    artifact_location: str | None = Field(default=None, max_length=1_024)
    tags: list[KeyValue] = Field(default_factory=list, max_length=100)


class SearchExperiments(BaseModel):
    max_results: int = Field(default=1000, ge=1, le=_MAX_RESULTS)
    page_token: str | None = Field(default=None, max_length=1_000)
    filter: str | None = Field(default=None, max_length=10_000)
    order_by: list[str] = Field(default_factory=list, max_length=10)
    view_type: str | None = Field(default=None, max_length=32)


class RunRef(BaseModel):
    run_id: str | None = Field(default=None, max_length=_ID)
    run_uuid: str | None = Field(default=None, max_length=_ID)  # MLflow's old spelling

    def id(self) -> str:
        run_id = self.run_id or self.run_uuid
        if not run_id:
            raise InvalidInput("the request needs run_id: the id of the run it is about")
        return run_id


class CreateRun(BaseModel):
    experiment_id: str | None = Field(default=None, max_length=_ID)
    user_id: str | None = Field(default=None, max_length=256)
    run_name: str | None = Field(default=None, max_length=256)
    start_time: Int64 | None = None
    tags: list[KeyValue] = Field(default_factory=list, max_length=1_000)


class UpdateRun(RunRef):
    status: str | None = Field(default=None, max_length=16)
    end_time: Int64 | None = None
    run_name: str | None = Field(default=None, max_length=256)


class LogParam(RunRef):
    key: str = Field(max_length=250)
    value: str = Field(max_length=_TEXT)


class MetricIn(BaseModel):
    key: str = Field(max_length=250)
    value: float
    timestamp: Int64 = 0
    step: Int64 = 0


class LogMetric(RunRef, MetricIn):
    pass


class SetTag(RunRef):
    key: str = Field(max_length=250)
    value: str = Field(default="", max_length=_TEXT)


class DeleteTag(RunRef):
    key: str = Field(max_length=250)


class LogBatch(RunRef):
    metrics: list[MetricIn] = Field(default_factory=list, max_length=1_000)
    params: list[KeyValue] = Field(default_factory=list, max_length=100)
    tags: list[KeyValue] = Field(default_factory=list, max_length=100)


class DatasetIn(BaseModel):
    name: str = Field(max_length=500)
    digest: str = Field(default="", max_length=64)
    source_type: str = Field(default="", max_length=64)
    source: str = Field(default="", max_length=_TEXT)


class DatasetInput(BaseModel):
    tags: list[KeyValue] = Field(default_factory=list, max_length=100)
    dataset: DatasetIn


class ModelRef(BaseModel):
    model_id: str = Field(max_length=_ID)
    step: Int64 = 0


class LogInputs(RunRef):
    datasets: list[DatasetInput] = Field(default_factory=list, max_length=1_000)
    models: list[ModelRef] = Field(default_factory=list, max_length=1_000)


class LogOutputs(RunRef):
    models: list[ModelRef] = Field(default_factory=list, max_length=1_000)


class SearchRuns(BaseModel):
    experiment_ids: list[str] = Field(default_factory=list, max_length=10_000)
    filter: str | None = Field(default=None, max_length=100_000)
    run_view_type: str | None = Field(default=None, max_length=32)
    max_results: int = Field(default=1000, ge=1, le=_MAX_RESULTS)
    order_by: list[str] = Field(default_factory=list, max_length=100)
    page_token: str | None = Field(default=None, max_length=1_000)


# -- permissions (the native routes' own: keel.server.permissions) ------------------------


def _tracking(caller: Caller) -> TrackingClient:
    return caller.client.tracking


def searched_experiments(caller: Caller, texts: list[str]) -> list[int] | None:
    """The ids of the experiments a search covers, once ``read`` on each is checked.

    ``texts`` are the ids the request names (none: every experiment the caller may
    read); None stands for every experiment, for a caller who may read them all.

    Raises:
        NotFound: a named experiment does not exist.
        PermissionDenied: the caller may not read a named experiment.
    """
    readable = readable_experiments(caller)
    ids = [experiment_id_of(caller, text, "read") for text in texts]
    allowed = None if readable is None else {e.id for e in readable}
    for experiment_id in ids:
        if allowed is None or experiment_id not in allowed:
            on_experiment(caller, "read", experiment_id)  # the 404 or the 403
    if ids:
        return ids
    return None if allowed is None else sorted(allowed)


def experiment_id_of(caller: Caller, text: str | None, permission: str) -> int:
    """Keel's id of the experiment MLflow names by ``text`` ("0": Keel's ``Default``)."""
    if text is None or not re.fullmatch(r"\d{1,10}", text) or int(text) > 2**31 - 1:
        raise InvalidInput(f"experiment_id must be an experiment's integer id, got {text!r:.40}")
    if int(text) == 0:
        caller.require(permission, EXPERIMENT, DEFAULT_EXPERIMENT)
        return _tracking(caller).get_or_create_experiment(DEFAULT_EXPERIMENT).id
    return int(text)


# -- answers -------------------------------------------------------------------------------


def _number(value: float) -> float | str:
    """A double as MLflow's JSON spells it: NaN and infinities as strings."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def run_artifact_uri(experiment_id: int, run_id: str) -> str:
    """Where the mlflow client puts a run's artifacts: through this server's proxy."""
    return f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"


def experiment_json(experiment: Experiment) -> dict[str, Any]:
    return {
        "experiment_id": str(experiment.id),
        "name": experiment.name,
        "artifact_location": f"mlflow-artifacts:/{experiment.id}",
        "lifecycle_stage": "deleted" if experiment.lifecycle == "deleted" else "active",
        "creation_time": experiment.created_at,
        "last_update_time": experiment.created_at,
        "tags": [],
    }


def run_info_json(info: RunInfo) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "run_id": info.id,
        "run_uuid": info.id,
        "run_name": info.name,
        "experiment_id": str(info.experiment_id),
        "user_id": info.user,
        "status": info.status,
        "start_time": info.start_time,
        "artifact_uri": run_artifact_uri(info.experiment_id, info.id),
        "lifecycle_stage": "active",
    }
    if info.end_time is not None:
        answer["end_time"] = info.end_time
    return answer


def run_json(run: Run, outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    tags = {"mlflow.runName": run.info.name, **run.tags}
    return {
        "info": run_info_json(run.info),
        "data": {
            "metrics": [
                {"key": k, "value": _number(v), "timestamp": 0, "step": 0}
                for k, v in run.metrics.items()
            ],
            "params": [{"key": k, "value": v} for k, v in run.params.items()],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        },
        "inputs": {},
        "outputs": {"model_outputs": outputs or []},
    }


def _metric_json(metric: Metric) -> dict[str, Any]:
    return {
        "key": metric.key,
        "value": _number(metric.value),
        "timestamp": metric.timestamp,
        "step": metric.step,
    }


def _pairs(items: list[KeyValue]) -> dict[str, str]:
    return {item.key: item.value for item in items}


def _write_once(action: Any) -> None:
    """Run ``action``; a param that would change is MLflow's INVALID_PARAMETER_VALUE."""
    try:
        action()
    except Conflict as exc:
        raise InvalidInput(str(exc)) from None


# -- experiments ---------------------------------------------------------------------------


@router.get("/experiments/get-by-name")
def get_experiment_by_name(
    caller: CallerDep, experiment_name: str = Query(max_length=256)
) -> dict[str, Any]:
    """The experiment named ``experiment_name``; RESOURCE_DOES_NOT_EXIST if there is none."""
    caller.require("read", EXPERIMENT, experiment_name)
    found = _tracking(caller).get_experiment_by_name(experiment_name)
    if found is None:
        raise NotFound(f"no experiment named {experiment_name!r}")
    return {"experiment": experiment_json(found)}


@router.post("/experiments/create")
def create_experiment(body: CreateExperiment, caller: CallerDep) -> dict[str, Any]:
    """A new experiment; RESOURCE_ALREADY_EXISTS when the name is taken."""
    if body.artifact_location:
        raise InvalidInput(
            "Keel keeps every experiment's artifacts in the server's artifact store; "
            f"create the experiment without artifact_location (got {body.artifact_location!r})"
        )
    caller.require("write", EXPERIMENT, body.name)
    return {"experiment_id": str(_tracking(caller).create_experiment(body.name))}


@router.get("/experiments/get")
def get_experiment(caller: CallerDep, experiment_id: str = Query(max_length=_ID)) -> dict[str, Any]:
    """One experiment by id."""
    experiment = on_experiment(caller, "read", experiment_id_of(caller, experiment_id, "read"))
    return {"experiment": experiment_json(experiment)}


@router.post("/experiments/search")
def search_experiments(body: SearchExperiments, caller: CallerDep) -> dict[str, Any]:
    """The experiments the caller may read that match the filter (by ``name``), newest first."""
    if body.order_by:
        raise InvalidInput(
            "Keel lists experiments newest first and cannot order them otherwise; "
            f"drop order_by (got {body.order_by!r})"
        )
    matches = filters.record_matcher(body.filter, {"name": "name"}, "experiments")
    readable = readable_experiments(caller)
    experiments = _tracking(caller).list_experiments() if readable is None else readable
    found = [
        e
        for e in reversed(experiments)
        if matches({"name": e.name})
        and (body.view_type != "DELETED_ONLY") == (e.lifecycle != "deleted")
    ]
    offset = decode_page_token(body.page_token)
    page = found[offset : offset + body.max_results]
    answer: dict[str, Any] = {"experiments": [experiment_json(e) for e in page]}
    if offset + body.max_results < len(found):
        answer["next_page_token"] = encode_page_token(offset + body.max_results)
    return answer


# -- runs ----------------------------------------------------------------------------------


def _outputs(caller: Caller, run_id: str) -> list[dict[str, Any]]:
    models = LoggedModels(caller.state.store, caller.user).search(source_run_id=run_id)
    return [{"model_id": m.id, "step": 0} for m in models]


@router.post("/runs/create")
def create_run(body: CreateRun, caller: CallerDep) -> dict[str, Any]:
    """Start a run; the user is the token's, whatever ``user_id`` says."""
    experiment_id = experiment_id_of(caller, body.experiment_id, "write")
    on_experiment(caller, "write", experiment_id)
    tags = _pairs(body.tags)
    name = body.run_name or tags.get("mlflow.runName") or None
    parent_id = tags.pop("mlflow.parentRunId", None) or None
    if parent_id is not None:
        on_run(caller, "read", parent_id)
        tags["mlflow.parentRunId"] = parent_id  # kept too: MLflow's UI and search read it
    tags.pop("mlflow.runName", None)  # the run's name is its own column
    info = _tracking(caller).create_run(
        experiment_id, name, parent_id=parent_id, tags=tags, capture=False
    )
    return {"run": run_json(Run(info, tags=tags))}


@router.get("/runs/get")
def get_run(
    caller: CallerDep,
    run_id: str | None = Query(default=None, max_length=_ID),
    run_uuid: str | None = Query(default=None, max_length=_ID),
) -> dict[str, Any]:
    """The run with its params, tags and latest metric values."""
    rid = RunRef(run_id=run_id, run_uuid=run_uuid).id()
    on_run(caller, "read", rid)
    return {"run": run_json(_tracking(caller).get_run(rid), _outputs(caller, rid))}


@router.post("/runs/update")
def update_run(body: UpdateRun, caller: CallerDep) -> dict[str, Any]:
    """End the run (FINISHED, FAILED, KILLED) or reopen it (RUNNING)."""
    run_id = body.id()
    info = on_run(caller, "write", run_id)
    tracking = _tracking(caller)
    if body.status is not None and body.status not in _STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(_STATUSES)}, got {body.status!r}")
    if body.run_name and body.run_name != info.name:
        raise InvalidInput(
            f"Keel does not rename runs; run {run_id} keeps its name {info.name!r} "
            f"(asked for {body.run_name!r})"
        )
    if body.status == "RUNNING" and info.status != "RUNNING":
        tracking.set_running(run_id)
    elif body.status not in (None, "RUNNING"):
        tracking.set_terminated(run_id, body.status, body.end_time)
    return {"run_info": run_info_json(tracking.get_run_info(run_id))}


@router.post("/runs/log-parameter")
def log_param(body: LogParam, caller: CallerDep) -> dict[str, Any]:
    """Record one param (write-once: another value is INVALID_PARAMETER_VALUE)."""
    run_id = body.id()
    on_run(caller, "write", run_id)
    _write_once(lambda: _tracking(caller).log_params(run_id, {body.key: body.value}))
    return {}


@router.post("/runs/log-metric")
def log_metric(body: LogMetric, caller: CallerDep) -> dict[str, Any]:
    """Record one metric point."""
    run_id = body.id()
    on_run(caller, "write", run_id)
    _tracking(caller).log_batch(run_id, [Metric(body.key, body.value, body.step, body.timestamp)])
    return {}


@router.post("/runs/set-tag")
def set_tag(body: SetTag, caller: CallerDep) -> dict[str, Any]:
    """Set one tag (a new value replaces the old one)."""
    run_id = body.id()
    on_run(caller, "write", run_id)
    _tracking(caller).set_tags(run_id, {body.key: body.value})
    return {}


@router.post("/runs/delete-tag")
def delete_tag(body: DeleteTag, caller: CallerDep) -> dict[str, Any]:
    """Delete one tag; RESOURCE_DOES_NOT_EXIST if the run has no such tag."""
    run_id = body.id()
    on_run(caller, "write", run_id)
    _tracking(caller).delete_tag(run_id, body.key)
    return {}


@router.post("/runs/log-batch")
def log_batch(body: LogBatch, caller: CallerDep) -> dict[str, Any]:
    """Metric points, params and tags of one run, in one call."""
    run_id = body.id()
    on_run(caller, "write", run_id)
    metrics = [Metric(m.key, m.value, m.step, m.timestamp) for m in body.metrics]
    _write_once(
        lambda: _tracking(caller).log_batch(run_id, metrics, _pairs(body.params), _pairs(body.tags))
    )
    return {}


def _tag_key(prefix: str, name: str) -> str:
    """A run tag key for ``name``: characters Keel's keys refuse become ``_``."""
    return check_key(prefix + re.sub(r"[^A-Za-z0-9_\-. ]", "_", name)[:200], "tag key")


def _keel_dataset(caller: Caller, run_id: str, item: DatasetInput) -> bool:
    """Record the input as a Keel run input if its source names a Keel dataset version."""
    try:
        uri = json.loads(item.dataset.source).get("uri") if item.dataset.source else None
    except (ValueError, AttributeError):
        uri = None
    if not isinstance(uri, str) or not caller.can("write"):  # as the native route asks
        return False
    context = _pairs(item.tags).get("mlflow.data.context") or "training"
    try:
        caller.client.data.record_input(run_id, uri, context[:32])
    except (InvalidInput, NotFound):
        return False  # not a Keel dataset: kept as a tag instead
    return True


@router.post("/runs/log-inputs")
def log_inputs(body: LogInputs, caller: CallerDep) -> dict[str, Any]:
    """Datasets and models the run used (see the module's docstring for where they go)."""
    run_id = body.id()
    on_run(caller, "write", run_id)
    tags: dict[str, str] = {}
    for item in body.datasets:
        if _keel_dataset(caller, run_id, item):
            continue
        described = {
            "digest": item.dataset.digest,
            "context": _pairs(item.tags).get("mlflow.data.context", ""),
            "source_type": item.dataset.source_type,
            "source": item.dataset.source,
        }
        text = json.dumps(described, sort_keys=True)
        if len(text) > _TEXT:  # a long source is what gives way
            text = json.dumps({**described, "source": ""}, sort_keys=True)
        tags[_tag_key("mlflow.dataset.", item.dataset.name)] = text
    models = LoggedModels(caller.state.store, caller.user)
    for ref in body.models:
        models.get(ref.model_id)
        tags[_tag_key("mlflow.model_input.", ref.model_id)] = str(ref.step)
    _tracking(caller).set_tags(run_id, tags)
    return {}


@router.post("/runs/outputs")
def log_outputs(body: LogOutputs, caller: CallerDep) -> dict[str, Any]:
    """Logged models the run produced (its own are found by their source run)."""
    run_id = body.id()
    on_run(caller, "write", run_id)
    models = LoggedModels(caller.state.store, caller.user)
    tags = {}
    for ref in body.models:
        if models.get(ref.model_id).source_run_id != run_id:
            tags[_tag_key("mlflow.model_output.", ref.model_id)] = str(ref.step)
    _tracking(caller).set_tags(run_id, tags)
    return {}


@router.post("/runs/search")
def search_runs(body: SearchRuns, caller: CallerDep) -> dict[str, Any]:
    """A page of runs matching MLflow's filter, translated to Keel's search."""
    ids = searched_experiments(caller, body.experiment_ids)
    if body.run_view_type == "DELETED_ONLY":
        return {"runs": []}  # Keel keeps no deleted runs
    page = _tracking(caller).search_runs(
        ids,
        filters.run_filter(body.filter),
        filters.run_order_by(body.order_by),
        body.max_results,
        body.page_token,
    )
    answer: dict[str, Any] = {"runs": [run_json(run) for run in page.runs]}
    if page.next_page_token:
        answer["next_page_token"] = page.next_page_token
    return answer


@router.get("/metrics/get-history")
def get_metric_history(
    caller: CallerDep,
    metric_key: str = Query(max_length=250),
    run_id: str | None = Query(default=None, max_length=_ID),
    run_uuid: str | None = Query(default=None, max_length=_ID),
    max_results: int = Query(default=25_000, ge=1, le=1_000_000),
    page_token: str | None = Query(default=None, max_length=1_000),
) -> dict[str, Any]:
    """Every point of one metric, by step then time, a page at a time."""
    rid = RunRef(run_id=run_id, run_uuid=run_uuid).id()
    on_run(caller, "read", rid)
    points = _tracking(caller).get_metric_history(rid, metric_key)
    offset = decode_page_token(page_token)
    answer: dict[str, Any] = {
        "metrics": [_metric_json(p) for p in points[offset : offset + max_results]]
    }
    if offset + max_results < len(points):
        answer["next_page_token"] = encode_page_token(offset + max_results)
    return answer


# -- server info (3.0) ---------------------------------------------------------------------


@v3_router.get("/server-info")
def server_info() -> dict[str, Any]:
    """What the client asks before it uploads: no multipart, no presigned URLs, no workspaces.

    Like MLflow's, it needs no token and says nothing about the deployment.
    """
    return {
        "store_type": "SqlStore",
        "workspaces_enabled": False,
        "trace_archival_enabled": False,
        "multipart_uploads_enabled": False,
        "multipart_downloads_enabled": False,
        "presigned_upload_run_id_supported": False,
        "presigned_upload_model_id_supported": False,
        "features_enabled": {"gateway": False},
    }
