"""MLflow's model registry API, answered by Keel's registry.

The unmodified ``mlflow`` client registers, finds and loads models through these
routes; what it creates is ordinary Keel data:

- a registered MLflow model is a Keel registered model, and an MLflow model version
  is a Keel version, numbered by Keel's registry (registering the same bytes from
  the same source again answers the version that holds them, as natively);
- an alias is a Keel alias: a protected one moves only with the approvals its
  policy asks for, so the client gets ``PERMISSION_DENIED`` without them;
- a version's package is MLflow's own format (``MLmodel`` plus a pickle) and is
  stored as is: nothing of it is loaded here.

Where a version's files are, in each vocabulary:

===================================================  =======================================
what the client sends as ``source``                  the Keel version's source
===================================================  =======================================
``models:/<model_id>`` (a logged model)              ``runs:/<source run>/models/<model_id>``
``runs:/<run_id>/<path>``                            ``runs:/<run_id>/<path>``
``mlflow-artifacts:/<exp>/<run_id>/artifacts/<p>``   ``runs:/<run_id>/<p>``
``models:/<name>/<version>`` (a copy)                that version's source
===================================================  =======================================

``model-versions/get-download-uri`` answers the ``mlflow-artifacts:/`` URI of those
files, which the client downloads through the MLflow artifact routes.

Permissions are the native registry routes' (:mod:`keel.server.routes.registry`):
``read`` on the model to see it, ``write`` on it (and ``read`` on the source run's
experiment) to register, ``write`` on ``NAME@ALIAS`` to move an alias. Routes raise
Keel errors; the MLflow error mapping turns them into MLflow's error codes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

import keel.server.mlflow.filters as filters
from keel.errors import InvalidInput, NotFound
from keel.registry.entities import ModelVersion, RegisteredModel
from keel.server.context import Caller, CallerDep
from keel.server.mlflow.artifacts import target_of
from keel.server.mlflow.filters import Comparison
from keel.server.mlflow.models import logged_model, model_artifact_uri
from keel.server.mlflow.tracking import run_artifact_uri
from keel.server.permissions import on_run
from keel.tracking.logged_models import LoggedModels
from keel.tracking.search import decode_page_token, encode_page_token
from keel.uris import ModelURI, RunURI, parse_model_uri, parse_run_uri
from keel.validation import MAX_NAME_CHARS

__all__ = ["router"]

router = APIRouter(tags=["mlflow registry"])

_TEXT_CHARS = 100_000
_URI_CHARS = 2_048
_FILTER_CHARS = 10_000
#: MLflow's own page size defaults and limits for the two searches.
_MODELS_PAGE, _MODELS_MAX = 100, 1_000
_VERSIONS_PAGE, _VERSIONS_MAX = 10_000, 200_000
#: Keel has no stages: every version is in MLflow's stage "None".
_STAGE = "None"
#: The tag by which MLflow's registry tells its prompts from its models.
_PROMPT_TAG = "mlflow.prompt.is_prompt"

_LOGGED_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
_LOGGED_MODEL_URI = re.compile(r"^models:/(?P<model>m-[0-9a-f]{32})/?$")
_ARTIFACTS_SCHEME = "mlflow-artifacts:"
_SOURCES = (
    "models:/<model_id>, runs:/<run_id>/<path>, "
    "mlflow-artifacts:/<experiment_id>/<run_id>/artifacts/<path> or models:/<name>/<version>"
)


# -- request bodies -------------------------------------------------------------------------


class _Tag(BaseModel):
    key: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    value: str = Field(default="", max_length=_TEXT_CHARS)


class NewRegisteredModel(BaseModel):
    """MLflow's ``CreateRegisteredModel``."""

    name: str = Field(max_length=MAX_NAME_CHARS)
    description: str | None = Field(default=None, max_length=_TEXT_CHARS)
    tags: list[_Tag] = Field(default_factory=list, max_length=1_000)


class NewModelVersion(BaseModel):
    """MLflow's ``CreateModelVersion``."""

    name: str = Field(max_length=MAX_NAME_CHARS)
    source: str = Field(min_length=1, max_length=_URI_CHARS)
    run_id: str | None = Field(default=None, max_length=64)
    model_id: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=_TEXT_CHARS)
    tags: list[_Tag] = Field(default_factory=list, max_length=1_000)


class VersionUpdate(BaseModel):
    """MLflow's ``UpdateModelVersion``."""

    name: str = Field(max_length=MAX_NAME_CHARS)
    version: str = Field(max_length=12)
    description: str = Field(default="", max_length=_TEXT_CHARS)


class VersionTag(BaseModel):
    """MLflow's ``SetModelVersionTag``."""

    name: str = Field(max_length=MAX_NAME_CHARS)
    version: str = Field(max_length=12)
    key: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    value: str = Field(default="", max_length=_TEXT_CHARS)


class AliasMove(BaseModel):
    """MLflow's ``SetRegisteredModelAlias``."""

    name: str = Field(max_length=MAX_NAME_CHARS)
    alias: str = Field(max_length=MAX_NAME_CHARS)
    version: str = Field(max_length=12)


class AliasRef(BaseModel):
    """MLflow's ``DeleteRegisteredModelAlias``."""

    name: str = Field(max_length=MAX_NAME_CHARS)
    alias: str = Field(max_length=MAX_NAME_CHARS)


class LatestVersionsQuery(BaseModel):
    """MLflow's ``GetLatestVersions`` (sent as a POST body or as query parameters)."""

    name: str = Field(max_length=MAX_NAME_CHARS)
    stages: list[str] = Field(default_factory=list, max_length=10)


Name = Annotated[str, Query(max_length=MAX_NAME_CHARS, description="a registered model")]
VersionText = Annotated[str, Query(max_length=12, description="a version number")]
Filter = Annotated[str | None, Query(max_length=_FILTER_CHARS)]
OrderBy = Annotated[list[str] | None, Query(max_length=10)]
PageToken = Annotated[str | None, Query(max_length=200)]


# -- MLflow's URIs <-> Keel's ------------------------------------------------------------------


def _logged_model_files(caller: Caller, model_id: str) -> RunURI:
    """Where a logged model's files are in Keel: its source run's ``models/<model_id>``."""
    model = logged_model(caller, "read", model_id)
    if model.source_run_id is None:
        raise InvalidInput(
            f"logged model {model_id} has no source run, and Keel keeps a model's files with "
            "the run that logged it: log the model inside a run (mlflow.start_run()) and "
            "register that one"
        )
    return RunURI(model.source_run_id, model.artifact_prefix)


def _keel_source(caller: Caller, source: str) -> RunURI:
    """The run artifact folder an MLflow ``source`` names (see the module's table).

    Raises:
        InvalidInput: a source of another kind (a local path, a cloud bucket), with the
            shapes accepted.
    """
    if found := _LOGGED_MODEL_URI.match(source):
        # MLflow's models:/<model_id>, which Keel's model URIs do not have
        return _logged_model_files(caller, found["model"])
    if source.startswith(_ARTIFACTS_SCHEME):
        target = target_of(caller, "read", source[len(_ARTIFACTS_SCHEME) :])
        if target.path:  # the root of a run's artifacts is no model
            return RunURI(target.run_id, target.path)
    else:
        try:
            parsed = parse_model_uri(source)
        except InvalidInput:
            parsed = None
        if isinstance(parsed, RunURI):
            return parsed
        if isinstance(parsed, ModelURI):
            caller.require("read", "model", parsed.name)
            resolved = caller.client.registry.resolve_model(source)
            return RunURI(resolved.run_id, resolved.artifact_path)
    raise InvalidInput(
        f"model version source must be one of {_SOURCES}; got {source!r}. "
        "Log the model to this server first (mlflow.<flavor>.log_model) and register what it "
        "returns"
    )


def _run_path(mv: ModelVersion) -> RunURI | None:
    try:
        return parse_run_uri(mv.source, path=True)
    except InvalidInput:
        return None


def _logged_model_id(where: RunURI | None) -> str | None:
    """The logged model a version's files are, when they are one (``models/<model_id>``)."""
    if where is None:
        return None
    head, _, model_id = where.path.partition("/")
    return model_id if head == "models" and _LOGGED_MODEL_ID.match(model_id) else None


def _download_uri(caller: Caller, mv: ModelVersion) -> str:
    """The ``mlflow-artifacts:/`` URI of a version's files (the artifact routes check reads)."""
    where = _run_path(mv)
    if where is None:
        raise NotFound(
            f"{mv.name} version {mv.version} has no run artifacts to download (source "
            f"{mv.source!r}); load it with keel.load_model('models:/{mv.name}/{mv.version}')"
        )
    model_id = _logged_model_id(where)
    if model_id is not None:
        return model_artifact_uri(LoggedModels(caller.state.store, caller.user).get(model_id))
    info = caller.client.tracking.get_run_info(where.run_id)
    return f"{run_artifact_uri(info.experiment_id, where.run_id)}/{where.path}"


# -- Keel's records as MLflow's messages --------------------------------------------------------


def _version_message(mv: ModelVersion) -> dict[str, Any]:
    where = _run_path(mv)
    model_id = _logged_model_id(where)
    message: dict[str, Any] = {
        "name": mv.name,
        "version": str(mv.version),
        "creation_timestamp": mv.created_at,
        # a version's bytes never change; its tags and description have no time of their own
        "last_updated_timestamp": mv.created_at,
        "user_id": mv.created_by,
        "current_stage": _STAGE,
        "source": f"models:/{model_id}" if model_id else mv.source,
        # Keel pins a version's bytes when it registers it: it is ready at once
        "status": "READY",
        "tags": [{"key": k, "value": v} for k, v in mv.tags.items()],
        "aliases": list(mv.aliases),
    }
    # absent, not empty, as MLflow's server answers: the client tells the two apart
    optional = {"description": mv.description, "run_id": mv.run_id, "model_id": model_id}
    message.update({key: value for key, value in optional.items() if value})
    return message


def _model_message(model: RegisteredModel, latest: ModelVersion | None) -> dict[str, Any]:
    return {
        "name": model.name,
        "creation_timestamp": model.created_at,
        "last_updated_timestamp": _last_updated(model, latest),
        "user_id": model.created_by,
        "description": model.description or "",
        "latest_versions": [] if latest is None else [_version_message(latest)],
        "tags": [],
        "aliases": [{"alias": a, "version": str(v)} for a, v in model.aliases.items()],
    }


def _last_updated(model: RegisteredModel, latest: ModelVersion | None) -> int:
    return model.created_at if latest is None else max(model.created_at, latest.created_at)


def _latest(caller: Caller, model: RegisteredModel) -> ModelVersion | None:
    if model.latest_version == 0:
        return None
    return caller.client.registry.get_model_version(model.name, model.latest_version)


def _version_number(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise InvalidInput(f"version must be a positive integer such as '3', got {text!r}")
    return int(text)


# -- search: MLflow's filter, order and page token over Keel's records ------------------------


def _asks_for_prompts(term: Comparison) -> bool:
    wanted = str(term.value).lower()
    return (term.op == "=" and wanted == "true") or (term.op == "!=" and wanted == "false")


def _matcher(
    text: str | None, fields: dict[str, Callable[[Any], Any]], what: str
) -> Callable[[Any], bool]:
    """A test of one record against MLflow's filter, reading the fields it names and its tags.

    Raises:
        InvalidInput: the filter does not parse, or names a field ``what`` lacks.
    """
    terms = []
    for term in filters.parse(text):
        if term.entity == "tags" and term.key == _PROMPT_TAG:
            # MLflow's switch between its prompts and its models, not a tag to compare:
            # the client adds it to every search. Keel keeps prompts apart (keel.llm), so
            # asking for prompts here finds none and asking for models drops the term.
            if _asks_for_prompts(term):
                return lambda record: False
            continue
        terms.append(term)
    return filters.record_matcher(terms, fields, what, tags=lambda record: record["tags"])


def _sorter(
    order_by: list[str] | None, fields: dict[str, Callable[[Any], Any]], default: list[str]
) -> Callable[[list[Any]], list[Any]]:
    """Sort records by MLflow's ``order_by`` (``key [ASC|DESC]``), stable, last key first."""
    orders = []
    for text in order_by or default:
        key, _, direction = text.strip().partition(" ")
        direction = direction.strip().upper() or "ASC"
        key = key.removeprefix("attributes.").strip("`")
        if key not in fields or direction not in ("ASC", "DESC"):
            raise InvalidInput(
                f"order_by takes '<key> [ASC|DESC]' with a key among {', '.join(sorted(fields))}"
                f"; got {text!r}"
            )
        orders.append((fields[key], direction == "DESC"))

    def sort(records: list[Any]) -> list[Any]:
        for read, descending in reversed(orders):
            records = sorted(records, key=read, reverse=descending)
        return records

    return sort


def _page(
    records: list[Any], max_results: int, token: str | None, limit: int
) -> tuple[list[Any], str]:
    """One page of ``records`` and the token of the next (``""`` after the last)."""
    if not 1 <= max_results <= limit:
        raise InvalidInput(f"max_results must be between 1 and {limit}, got {max_results}")
    offset = decode_page_token(token)
    end = offset + max_results
    return records[offset:end], encode_page_token(end) if end < len(records) else ""


# -- registered models ------------------------------------------------------------------------


@router.post("/registered-models/create")
def create_registered_model(body: NewRegisteredModel, caller: CallerDep) -> Any:
    """Create an empty registered model (``RESOURCE_ALREADY_EXISTS`` if the name exists)."""
    caller.require("write", "model", body.name)
    if body.tags:
        raise InvalidInput(
            "Keel's registered models carry no tags (Keel tags versions); create the model "
            "without tags and tag its versions (MlflowClient().set_model_version_tag)"
        )
    model = caller.client.registry.create_registered_model(body.name, body.description or None)
    return {"registered_model": _model_message(model, None)}


@router.get("/registered-models/get")
def get_registered_model(name: Name, caller: CallerDep) -> Any:
    """A registered model, with its latest version and its aliases."""
    caller.require("read", "model", name)
    model = caller.client.registry.get_registered_model(name)
    return {"registered_model": _model_message(model, _latest(caller, model))}


_MODEL_FIELDS: dict[str, Callable[[Any], Any]] = {
    "name": lambda r: r["model"].name,
    "creation_timestamp": lambda r: r["model"].created_at,
    "timestamp": lambda r: r["model"].created_at,
    "last_updated_timestamp": lambda r: r["last_updated"],
}


@router.get("/registered-models/search")
def search_registered_models(
    caller: CallerDep,
    filter: Filter = None,
    max_results: Annotated[int, Query()] = _MODELS_PAGE,
    order_by: OrderBy = None,
    page_token: PageToken = None,
) -> Any:
    """The registered models the caller may read that match MLflow's filter, a page at a time.

    The filter compares ``name`` (``=``, ``!=``, ``LIKE``, ``ILIKE``, ``IN``); Keel's
    registered models have no tags, so a ``tags.`` clause matches none.
    """
    if "api" not in caller.principal.scopes:
        caller.require("read")  # refused with the scope it lacks
    matches = _matcher(filter, _MODEL_FIELDS, "registered models")
    sort = _sorter(order_by, _MODEL_FIELDS, ["name ASC"])
    registry = caller.client.registry
    records = []
    for model in registry.list_registered_models():
        if not caller.can("read", "model", model.name):
            continue  # a model-scoped viewer sees the models granted to it
        latest = _latest(caller, model)
        record: dict[str, Any] = {
            "model": model,
            "latest": latest,
            "tags": {},
            "last_updated": _last_updated(model, latest),
        }
        if matches(record):
            records.append(record)
    page, following = _page(sort(records), max_results, page_token, _MODELS_MAX)
    return {
        "registered_models": [_model_message(r["model"], r["latest"]) for r in page],
        "next_page_token": following,
    }


def _latest_versions(caller: Caller, query: LatestVersionsQuery) -> Any:
    caller.require("read", "model", query.name)
    model = caller.client.registry.get_registered_model(query.name)
    latest = _latest(caller, model)
    wanted = {stage.lower() for stage in query.stages}
    if latest is None or (wanted and _STAGE.lower() not in wanted):
        return {"model_versions": []}  # every Keel version is in stage "None"
    return {"model_versions": [_version_message(latest)]}


@router.post("/registered-models/get-latest-versions")
def get_latest_versions(body: LatestVersionsQuery, caller: CallerDep) -> Any:
    """The model's latest version (Keel has no stages: all versions are in stage "None")."""
    return _latest_versions(caller, body)


@router.get("/registered-models/get-latest-versions")
def get_latest_versions_by_query(
    name: Name,
    caller: CallerDep,
    stages: Annotated[list[str] | None, Query(max_length=10)] = None,
) -> Any:
    """The model's latest version, asked with query parameters."""
    return _latest_versions(caller, LatestVersionsQuery(name=name, stages=stages or []))


# -- aliases --------------------------------------------------------------------------------------


@router.post("/registered-models/alias")
def set_registered_model_alias(body: AliasMove, caller: CallerDep) -> Any:
    """Point an alias at a version (a protected alias needs its approvals first)."""
    caller.require("write", "alias", f"{body.name}@{body.alias}")
    caller.client.registry.set_alias(
        body.name, body.alias, _version_number(body.version), comment="set through MLflow's API"
    )
    return {}


@router.get("/registered-models/alias")
def get_model_version_by_alias(
    name: Name,
    alias: Annotated[str, Query(max_length=MAX_NAME_CHARS)],
    caller: CallerDep,
) -> Any:
    """The version an alias points at (``RESOURCE_DOES_NOT_EXIST`` when it is not set)."""
    caller.require("read", "model", name)
    return {
        "model_version": _version_message(
            caller.client.registry.get_model_version_by_alias(name, alias)
        )
    }


@router.delete("/registered-models/alias")
def delete_registered_model_alias(body: AliasRef, caller: CallerDep) -> Any:
    """Remove an alias (protected or not, removing needs ``write`` on it)."""
    caller.require("write", "alias", f"{body.name}@{body.alias}")
    caller.client.registry.delete_alias(
        body.name, body.alias, comment="deleted through MLflow's API"
    )
    return {}


# -- versions -----------------------------------------------------------------------------------


@router.post("/model-versions/create")
def create_model_version(body: NewModelVersion, caller: CallerDep) -> Any:
    """Register the model at ``source`` as the registered model's next Keel version."""
    caller.require("write", "model", body.name)
    where = _keel_source(caller, body.source)
    # the version's bytes come from a run: registering them needs read on its experiment
    run_id = on_run(caller, "read", where.run_id).id
    if body.run_id and body.run_id != run_id:
        raise InvalidInput(
            f"run_id {body.run_id!r} is not the run of source {body.source!r} ({run_id}); "
            "send the source's own run, or leave run_id out"
        )
    logged = _logged_model_id(where)
    if body.model_id and body.model_id != logged:
        raise InvalidInput(
            f"model_id {body.model_id!r} is not the logged model of source {body.source!r}; "
            f"register models:/{body.model_id}, or leave model_id out"
        )
    mv = caller.client.registry.create_model_version(
        body.name,
        str(RunURI(run_id, where.path)),
        description=body.description or None,
        tags={t.key: t.value for t in body.tags} or None,
    )
    return {"model_version": _version_message(mv)}


@router.get("/model-versions/get")
def get_model_version(name: Name, version: VersionText, caller: CallerDep) -> Any:
    """One version: its source, run, tags and aliases."""
    caller.require("read", "model", name)
    mv = caller.client.registry.get_model_version(name, _version_number(version))
    return {"model_version": _version_message(mv)}


@router.get("/model-versions/get-download-uri")
def get_model_version_download_uri(name: Name, version: VersionText, caller: CallerDep) -> Any:
    """The ``mlflow-artifacts:/`` URI the client downloads the version's files from."""
    caller.require("read", "model", name)
    mv = caller.client.registry.get_model_version(name, _version_number(version))
    return {"artifact_uri": _download_uri(caller, mv)}


_VERSION_FIELDS: dict[str, Callable[[Any], Any]] = {
    "name": lambda r: r["message"]["name"],
    "version_number": lambda r: r["version"].version,
    "run_id": lambda r: r["version"].run_id,
    "source_path": lambda r: r["message"]["source"],
    "creation_timestamp": lambda r: r["version"].created_at,
    "last_updated_timestamp": lambda r: r["version"].created_at,
}
#: What versions sort by, as MLflow allows (never a field that may be missing).
_VERSION_ORDERS = {
    key: _VERSION_FIELDS[key]
    for key in ("name", "version_number", "creation_timestamp", "last_updated_timestamp")
}


def _names_wanted(text: str | None) -> set[str] | None:
    """The model names an ``AND``-only filter pins with ``name =`` or ``name IN``, if it does."""
    for term in filters.parse(text):
        if term.entity == "attributes" and term.key == "name" and term.op in ("=", "IN"):
            values = term.value if isinstance(term.value, tuple) else (term.value,)
            return {str(v) for v in values}
    return None


@router.get("/model-versions/search")
def search_model_versions(
    caller: CallerDep,
    filter: Filter = None,
    max_results: Annotated[int, Query()] = _VERSIONS_PAGE,
    order_by: OrderBy = None,
    page_token: PageToken = None,
) -> Any:
    """The versions the caller may read that match MLflow's filter, a page at a time.

    The filter compares ``name``, ``run_id``, ``source_path``, ``version_number`` and
    ``tags.<key>``.
    """
    if "api" not in caller.principal.scopes:
        caller.require("read")
    matches = _matcher(filter, _VERSION_FIELDS, "model versions")
    sort = _sorter(order_by, _VERSION_ORDERS, ["name ASC", "version_number DESC"])
    registry = caller.client.registry
    names: Iterable[str] | None = _names_wanted(filter)
    if names is None:
        names = [m.name for m in registry.list_registered_models()]
    records = []
    for name in sorted(names):
        if not caller.can("read", "model", name):
            continue
        try:
            versions = registry.list_model_versions(name)
        except NotFound:
            continue  # a name the filter pins but no model has: no versions match
        for mv in versions:
            record: dict[str, Any] = {
                "version": mv,
                "message": _version_message(mv),
                "tags": mv.tags,
            }
            if matches(record):
                records.append(record)
    page, following = _page(sort(records), max_results, page_token, _VERSIONS_MAX)
    return {"model_versions": [r["message"] for r in page], "next_page_token": following}


@router.patch("/model-versions/update")
def update_model_version(body: VersionUpdate, caller: CallerDep) -> Any:
    """Replace a version's description."""
    caller.require("write", "model", body.name)
    mv = caller.client.registry.update_model_version(
        body.name, _version_number(body.version), description=body.description
    )
    return {"model_version": _version_message(mv)}


@router.post("/model-versions/set-tag")
def set_model_version_tag(body: VersionTag, caller: CallerDep) -> Any:
    """Set one tag of a version."""
    caller.require("write", "model", body.name)
    caller.client.registry.set_model_version_tag(
        body.name, _version_number(body.version), body.key, body.value
    )
    return {}
