"""The data routes: dataset versions, their lookup, and the inputs runs record.

Each route checks one permission, then calls the same
:class:`~keel.data.client.DataClient` a local client runs, over the server's
store and acting as the token's user. File bytes never cross here: clients put
them through the blob routes (:mod:`keel.server.routes.blobs`, digest-checked
on both ends) and register the version afterwards; the server refuses a
version whose manifest, profile or pack index it does not hold.

Datasets have no scope kind of their own (a grant names an experiment, a model
or an alias), so what each route needs is either "somewhere" or global:

===========================================  =======================================
looking versions up, listing datasets and     ``read`` on any resource
versions, asking which objects are missing
listing the dataset inputs of a run           ``read`` on the run's experiment
registering a version (with or without a      ``write``, granted globally
run input), recording a run's input
===========================================  =======================================

A user whose only write grant is scoped (an editor of one experiment) can
therefore upload bytes but not register a dataset version: versions are
shared by every experiment, so numbering one is a global write.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, StringConstraints

from keel.data.client import DataClient, NewVersion, data_part
from keel.server.context import Caller, CallerDep
from keel.transport.wire import to_wire
from keel.validation import MAX_NAME_CHARS

router = APIRouter(tags=["data"])

_DIGEST = r"^[0-9a-f]{64}$"
_REF_CHARS = 1_024
_PATH_CHARS = 4_096
_MAX_COLUMNS = 10_000
#: digests one "which are missing?" request may ask about
MAX_DIGESTS = 10_000

Digest = Annotated[str, StringConstraints(pattern=_DIGEST)]
DatasetName = Annotated[str, Path(max_length=MAX_NAME_CHARS, description="a dataset's name")]
RunId = Annotated[str, Path(max_length=64, description="a run's id")]


class ColumnBody(BaseModel):
    """One column of a table version's schema."""

    name: str = Field(max_length=1_024)
    type: str = Field(max_length=1_024)


class NewVersionBody(BaseModel):
    """A dataset version to record; its manifest (and profile, pack index) are stored already."""

    name: str = Field(max_length=MAX_NAME_CHARS)
    digest: Digest = Field(description="BLAKE3 of the version's folder manifest")
    kind: Literal["file", "folder", "table"]
    files: int = Field(ge=0)
    nbytes: int = Field(ge=0)
    source: str | None = Field(default=None, max_length=_PATH_CHARS)
    schema_: list[ColumnBody] | None = Field(default=None, alias="schema", max_length=_MAX_COLUMNS)
    num_rows: int | None = Field(default=None, ge=0)
    profile_digest: Digest | None = None
    packs_digest: Digest | None = None
    run_id: str | None = Field(default=None, max_length=32)
    input_context: str | None = Field(default=None, max_length=32)


class InputBody(BaseModel):
    """A dataset version a run read."""

    ref: str = Field(max_length=_REF_CHARS, description="name@N, name, a digest or datasets:/…")
    context: str = Field(max_length=32, description="how the run used it, e.g. load_dataset")


class DigestsBody(BaseModel):
    """Object digests to look up."""

    digests: list[Digest] = Field(max_length=MAX_DIGESTS)


def _data(caller: Caller) -> DataClient:
    return data_part(caller.client.transport)


def _readable(caller: Caller) -> DataClient:
    caller.require_somewhere("read", "reading datasets needs it")
    return _data(caller)


@router.get("/datasets")
def list_datasets(caller: CallerDep) -> Any:
    """The latest version of every dataset, by name."""
    return to_wire(_readable(caller).list_datasets())


@router.get("/datasets/resolve")
def get_version(
    caller: CallerDep,
    ref: Annotated[str, Query(max_length=_REF_CHARS, description="name@N, name or a digest")],
) -> Any:
    """The version a reference names (for a digest: its newest version under any name)."""
    return to_wire(_readable(caller).get_version(ref))


@router.get("/datasets/{name}/versions")
def list_versions(name: DatasetName, caller: CallerDep) -> Any:
    """Every version of dataset ``name``, oldest first."""
    return to_wire(_readable(caller).list_versions(name))


@router.post("/datasets/objects/missing")
def missing_objects(body: DigestsBody, caller: CallerDep) -> Any:
    """Which of the digests the server's artifact store lacks (a read: nothing changes)."""
    return {"missing": sorted(_readable(caller).missing_objects(body.digests))}


@router.post("/datasets/versions")
def register_version(body: NewVersionBody, caller: CallerDep) -> Any:
    """Record the next version of a dataset, or answer the latest when its content is the same.

    Answers ``{"version": ..., "created": true|false}``; 404 when the manifest, profile
    or pack index is not in the server's artifact store, or the run named is unknown.
    """
    caller.require("write")
    schema = None if body.schema_ is None else [c.model_dump() for c in body.schema_]
    fields = body.model_dump(exclude={"schema_"})
    version, created = _data(caller).register_version(NewVersion(**fields, schema=schema))
    return {"version": to_wire(version), "created": created}


@router.post("/runs/{run_id}/dataset-inputs")
def record_input(run_id: RunId, body: InputBody, caller: CallerDep) -> Any:
    """Record that run ``run_id`` read a dataset version (idempotent); answer the version.

    404 for an unknown run or version.
    """
    caller.require("write")
    return to_wire(_data(caller).record_input(run_id, body.ref, body.context))


@router.get("/runs/{run_id}/dataset-inputs")
def run_inputs(run_id: RunId, caller: CallerDep) -> Any:
    """The dataset versions a run read or logged."""
    tracking = caller.client.tracking
    info = tracking.get_run_info(tracking.resolve_run_id(run_id))
    caller.require("read", "experiment", tracking.get_experiment(info.experiment_id).name)
    return to_wire(_data(caller).run_inputs(info.id))
