"""The feature store routes: definitions, materialization watermarks, online reads.

A client applies a definitions file by loading it itself (the file's code runs on the
client, never here) and sending its specs; the server checks them, versions them and
audits each new version as the token's user, in one transaction
(:class:`keel.features.registry.FeatureRegistry`). Training sets and materialization
run on the client; it reads specs here and records its watermarks here. The online
read answers from the server's own online store (``KEEL_ONLINE_STORE`` of the server),
through :class:`keel.features.server.OnlineReaders`, with the answer
``keel features serve`` gives (see :mod:`keel.features.server`).

Feature definitions have no scope kind of their own (a grant names an experiment, a
model or an alias), so what each route needs is either "somewhere" or global, as for
datasets:

===========================================  =======================================
listing and reading definitions, their        ``read`` on any resource
history, watermarks; reading online values
applying definitions, recording a             ``write``, granted globally
materialization's watermark
===========================================  =======================================
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from keel.features.server import (
    MAX_ROWS,
    OnlineReaders,
    entity_rows_of,
    json_bytes,
    online_answer,
)
from keel.server.context import Caller, CallerDep
from keel.transport.wire import to_wire
from keel.validation import MAX_NAME_CHARS

router = APIRouter(tags=["features"])

#: Definitions one apply may carry.
MAX_SPECS = 10_000
#: Features one online read may ask for.
MAX_FEATURES = 1_000
_PATH_CHARS = 4_096
_URL_CHARS = 4_096
_REF_CHARS = 2 * MAX_NAME_CHARS + 1
_readers_lock = threading.Lock()

RunId = Annotated[str, Path(max_length=64, description="a run's id")]
Kind = Annotated[
    str, Path(max_length=64, description="entity, feature_view or on_demand_feature_view")
]
Name = Annotated[str, Path(max_length=MAX_NAME_CHARS, description="a definition's name")]


class ApplyBody(BaseModel):
    """Definitions to version: the specs a client made from its file, entities first."""

    specs: list[dict[str, Any]] = Field(
        max_length=MAX_SPECS, description="Definitions.specs() of the applied file"
    )
    source_file: str | None = Field(
        default=None, max_length=_PATH_CHARS, description="the definitions file's path"
    )
    sites: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_SPECS,
        description="file:line of each view by name, for error messages",
    )


class WatermarkBody(BaseModel):
    """A materialization run of one view into one online store."""

    view: str = Field(max_length=MAX_NAME_CHARS)
    store: str = Field(max_length=_URL_CHARS, description="the online store's URL")
    view_version: int = Field(ge=1, le=2**31 - 1)
    # Stored as 64-bit integers (rows are summed across runs): larger values get 422, not 500.
    last_event_ms: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    last_created_ms: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    rows: int = Field(ge=0, le=2**53, description="rows the run wrote")


class ViewVersionBody(BaseModel):
    """One applied definition version, by kind, name and number."""

    kind: Kind
    name: str = Field(max_length=MAX_NAME_CHARS)
    version: int = Field(ge=1, le=2**31 - 1)


class InputsBody(BaseModel):
    """The definition versions a training set of a run read."""

    views: list[ViewVersionBody] = Field(min_length=1, max_length=MAX_FEATURES)


class OnlineBody(BaseModel):
    """An online read: ``entity_rows`` (or column-wise ``entities``) and features."""

    features: list[str] = Field(min_length=1, max_length=MAX_FEATURES)
    entity_rows: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_ROWS)
    entities: dict[str, list[Any]] | None = None
    full_feature_names: bool = False


def _readable(caller: Caller) -> None:
    caller.require_somewhere("read", "reading feature definitions needs it")


@router.get("/features/definitions")
def list_definitions(
    caller: CallerDep,
    kind: Annotated[str | None, Query(max_length=64, description="only this kind")] = None,
) -> Any:
    """The latest version of every definition (of ``kind``), by kind then name."""
    _readable(caller)
    return to_wire(caller.client.features.list(kind))


@router.post("/features/definitions")
def apply_definitions(body: ApplyBody, caller: CallerDep) -> Any:
    """Version and audit each spec that changed; answer what was created, updated, unchanged.

    The specs are checked here (a malformed one, or a view naming an entity neither sent
    nor stored, is a 400 naming the definition's file and line).
    """
    caller.require("write")
    features = caller.client.features
    return to_wire(features.apply_specs(body.specs, body.source_file, body.sites))


@router.get("/features/definitions/{kind}/{name}")
def get_definition(
    kind: Kind,
    name: Name,
    caller: CallerDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Any:
    """A definition's latest version, or its version ``version``."""
    _readable(caller)
    return to_wire(caller.client.features.get(name, version, kind=kind))


@router.get("/features/definitions/{kind}/{name}/history")
def definition_history(kind: Kind, name: Name, caller: CallerDep) -> Any:
    """Every version of a definition, oldest first."""
    _readable(caller)
    return to_wire(caller.client.features.history(name, kind=kind))


@router.get("/features/resolve")
def resolve_view(
    caller: CallerDep,
    uri: Annotated[str, Query(max_length=_REF_CHARS + 32, description="features:/view[@N]")],
) -> Any:
    """The feature view or on-demand view a ``features:/`` URI names."""
    _readable(caller)
    return to_wire(caller.client.features.resolve(uri))


@router.get("/features/views-for")
def views_for(
    caller: CallerDep,
    features: Annotated[
        list[str], Query(max_length=MAX_FEATURES, description="view:feature, repeated")
    ],
) -> Any:
    """The latest version of each view the features name, checked to have each feature."""
    from keel.features.definitions import parse_feature_refs

    _readable(caller)
    return to_wire(caller.client.features.views_for(parse_feature_refs(features)))


@router.get("/features/watermarks")
def list_watermarks(
    caller: CallerDep,
    view: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
    store: Annotated[str | None, Query(max_length=_URL_CHARS)] = None,
) -> Any:
    """Materialization watermarks, by view then store; ``view`` and ``store`` filter them."""
    _readable(caller)
    features = caller.client.features
    if view is not None and store is not None:
        one = features.watermark(view, store)
        return to_wire([] if one is None else [one])
    return to_wire(
        [
            w
            for w in features.watermarks()
            if (view is None or w.view == view) and (store is None or w.store == store)
        ]
    )


@router.post("/features/watermarks")
def set_watermark(body: WatermarkBody, caller: CallerDep) -> Any:
    """Record a materialization run: times never move back; rows and runs add up.

    A ``POST``, so the client's ``Idempotency-Key`` makes a retried run count once.
    """
    caller.require("write")
    return to_wire(
        caller.client.features.set_watermark(
            body.view,
            body.store,
            view_version=body.view_version,
            last_event_ms=body.last_event_ms,
            last_created_ms=body.last_created_ms,
            rows=body.rows,
        )
    )


@router.post("/runs/{run_id}/feature-inputs")
def record_inputs(run_id: RunId, body: InputsBody, caller: CallerDep) -> Any:
    """Record that run ``run_id`` read these feature view versions (lineage; idempotent).

    404 for an unknown run or a version never applied.
    """
    caller.require("write")
    features = caller.client.features
    definitions = [features.get(v.name, v.version, kind=v.kind) for v in body.views]
    features.record_inputs(run_id, definitions)
    return {"recorded": len(definitions)}


def _readers(request: Request, caller: Caller) -> OnlineReaders:
    """The app's readers over the server's online store, opened on the first read."""
    state = request.app.state
    readers: OnlineReaders | None = getattr(state, "feature_readers", None)
    if readers is None:
        with _readers_lock:
            readers = getattr(state, "feature_readers", None)
            if readers is None:
                readers = OnlineReaders(caller.client.features.online_store())
                state.feature_readers = readers
    return readers


@router.post("/features/online")
def online_features(body: OnlineBody, request: Request, caller: CallerDep) -> Response:
    """The server's online store's current values of ``features`` for the entity rows.

    Answers ``{"features": {column: [values]}, "event_ms": {view: [ms]},
    "feature_columns": [...], "timestamp_columns": [...]}``: join keys first, ``null``
    where a value is missing or past its view's TTL (a read: nothing changes).
    """
    _readable(caller)
    rows = entity_rows_of(body.entity_rows, body.entities)
    result = _readers(request, caller).read(
        caller.client, rows, body.features, full_feature_names=body.full_feature_names
    )
    return Response(json_bytes(online_answer(result)), media_type="application/json")
