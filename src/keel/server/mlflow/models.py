"""MLflow 3.x logged models: ``/logged-models`` over :class:`keel.tracking.logged_models.LoggedModels`.

A logged model belongs to an experiment and usually to a source run; the
client uploads its files to the model's ``artifact_uri``
(``mlflow-artifacts:/<experiment>/models/<id>/artifacts``), which the
artifact routes store as its source run's artifacts under ``models/<id>/``.
Permissions are the experiment's: ``write`` to create or change a model,
``read`` to get or search.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

import keel.server.mlflow.filters as filters
from keel.errors import Conflict, InvalidInput
from keel.server.context import Caller, CallerDep
from keel.server.mlflow.tracking import KeyValue, experiment_id_of, searched_experiments
from keel.server.permissions import on_experiment, on_run
from keel.tracking.logged_models import LoggedModel, LoggedModels
from keel.tracking.search import decode_page_token, encode_page_token

__all__ = ["model_artifact_uri", "router"]

router = APIRouter()

_ID = 64
#: MLflow's status names and Keel's.
_STATUSES = {
    "LOGGED_MODEL_PENDING": "PENDING",
    "LOGGED_MODEL_READY": "READY",
    "LOGGED_MODEL_UPLOAD_FAILED": "FAILED",
}
_MLFLOW_STATUS = {keel: mlflow for mlflow, keel in _STATUSES.items()}
_ORDER_FIELDS = {
    "name": "name",
    "creation_timestamp": "created_at",
    "creation_time": "created_at",
    "last_updated_timestamp": "updated_at",
}


class CreateModel(BaseModel):
    experiment_id: str = Field(max_length=_ID)
    name: str | None = Field(default=None, max_length=256)
    model_type: str | None = Field(default=None, max_length=256)
    source_run_id: str | None = Field(default=None, max_length=_ID)
    params: list[KeyValue] = Field(default_factory=list, max_length=1_000)
    tags: list[KeyValue] = Field(default_factory=list, max_length=1_000)


class Finalize(BaseModel):
    status: str = Field(max_length=64)


class ModelTags(BaseModel):
    tags: list[KeyValue] = Field(default_factory=list, max_length=1_000)


class ModelParams(BaseModel):
    params: list[KeyValue] = Field(default_factory=list, max_length=1_000)


class OrderBy(BaseModel):
    field_name: str = Field(max_length=256)
    ascending: bool = True


class SearchModels(BaseModel):
    experiment_ids: list[str] = Field(default_factory=list, max_length=10_000)
    filter: str | None = Field(default=None, max_length=10_000)
    max_results: int = Field(default=100, ge=1, le=50_000)
    order_by: list[OrderBy] = Field(default_factory=list, max_length=10)
    page_token: str | None = Field(default=None, max_length=1_000)


def model_artifact_uri(model: LoggedModel) -> str:
    """Where the mlflow client puts a logged model's files: through this server's proxy."""
    return f"mlflow-artifacts:/{model.experiment_id}/models/{model.id}/artifacts"


def _model_json(model: LoggedModel) -> dict[str, Any]:
    info: dict[str, Any] = {
        "model_id": model.id,
        "experiment_id": str(model.experiment_id),
        "name": model.name,
        "creation_timestamp_ms": model.created_at,
        "last_updated_timestamp_ms": model.updated_at,
        "artifact_uri": model_artifact_uri(model),
        "status": _MLFLOW_STATUS[model.status],
        "tags": [{"key": k, "value": v} for k, v in model.tags.items()],
    }
    if model.model_type:
        info["model_type"] = model.model_type
    if model.source_run_id:
        info["source_run_id"] = model.source_run_id
    return {
        "info": info,
        "data": {"params": [{"key": k, "value": v} for k, v in model.params.items()]},
    }


def _models(caller: Caller) -> LoggedModels:
    return LoggedModels(caller.state.store, caller.user)


def logged_model(caller: Caller, permission: str, model_id: str) -> LoggedModel:
    """The model, once ``permission`` on its experiment is checked."""
    model = _models(caller).get(model_id)
    on_experiment(caller, permission, model.experiment_id)
    return model


@router.post("/logged-models")
def create_logged_model(body: CreateModel, caller: CallerDep) -> dict[str, Any]:
    """A new model in PENDING state, in the experiment (and the run) it names."""
    experiment_id = experiment_id_of(caller, body.experiment_id, "write")
    on_experiment(caller, "write", experiment_id)
    if body.source_run_id:
        on_run(caller, "write", body.source_run_id)
    model = _models(caller).create(
        experiment_id,
        body.name or "model",
        source_run_id=body.source_run_id or None,
        model_type=body.model_type,
        tags={t.key: t.value for t in body.tags},
        params={p.key: p.value for p in body.params},
    )
    return {"model": _model_json(model)}


@router.get("/logged-models/{model_id}")
def get_logged_model(model_id: str, caller: CallerDep) -> dict[str, Any]:
    """One logged model."""
    return {"model": _model_json(logged_model(caller, "read", model_id))}


@router.patch("/logged-models/{model_id}")
def finalize_logged_model(model_id: str, body: Finalize, caller: CallerDep) -> dict[str, Any]:
    """Set the model READY (its files are uploaded) or UPLOAD_FAILED."""
    status = _STATUSES.get(body.status)
    if status is None:
        raise InvalidInput(f"status must be one of {', '.join(_STATUSES)}, got {body.status!r:.60}")
    logged_model(caller, "write", model_id)
    return {"model": _model_json(_models(caller).finalize(model_id, status))}


@router.patch("/logged-models/{model_id}/tags")
def set_logged_model_tags(model_id: str, body: ModelTags, caller: CallerDep) -> dict[str, Any]:
    """Set tags of the model (a new value replaces the old one)."""
    logged_model(caller, "write", model_id)
    _models(caller).set_tags(model_id, {t.key: t.value for t in body.tags})
    return {}


@router.delete("/logged-models/{model_id}/tags/{tag_key:path}")
def delete_logged_model_tag(model_id: str, tag_key: str, caller: CallerDep) -> dict[str, Any]:
    """Delete one tag of the model."""
    logged_model(caller, "write", model_id)
    _models(caller).delete_tag(model_id, tag_key)
    return {}


@router.post("/logged-models/{model_id}/params")
def log_logged_model_params(model_id: str, body: ModelParams, caller: CallerDep) -> dict[str, Any]:
    """Record params of the model (write-once, like a run's)."""
    logged_model(caller, "write", model_id)
    try:
        _models(caller).log_params(model_id, {p.key: p.value for p in body.params})
    except Conflict as exc:
        raise InvalidInput(str(exc)) from None
    return {}


@router.post("/logged-models/search")
def search_logged_models(body: SearchModels, caller: CallerDep) -> dict[str, Any]:
    """Models of the experiments, filtered by name, status, type or source run."""
    ids = searched_experiments(caller, body.experiment_ids)
    matches = filters.record_matcher(
        body.filter,
        {
            "name": "name",
            "status": "status",
            "model_type": "model_type",
            "source_run_id": "source_run_id",
            "model_id": "id",
        },
        "logged models",
    )
    found = [
        m
        for m in _models(caller).search(ids)
        if matches({**m.__dict__, "status": _MLFLOW_STATUS[m.status]})
    ]
    for order in reversed(body.order_by):  # stable sorts: the first key sorts last
        attribute = _ORDER_FIELDS.get(order.field_name)
        if attribute is None:
            raise InvalidInput(
                f"Keel orders logged models by {', '.join(_ORDER_FIELDS)}; got {order.field_name!r}"
            )
        found.sort(key=attrgetter(attribute), reverse=not order.ascending)
    offset = decode_page_token(body.page_token)
    answer: dict[str, Any] = {
        "models": [_model_json(m) for m in found[offset : offset + body.max_results]]
    }
    if offset + body.max_results < len(found):
        answer["next_page_token"] = encode_page_token(offset + body.max_results)
    return answer
