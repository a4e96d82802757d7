"""The registry routes: models, versions, aliases, approvals, checks and alias policies.

Each route checks one permission, then calls :class:`~keel.registry.RegistryClient`
through the caller's client, which acts as the token's user. What each needs:

===========================================  =======================================
reading a model, its versions, aliases,       ``read`` on model NAME
approvals, checks and history
creating a model, registering a version,      ``write`` on model NAME (and ``read``
tagging or describing one                     on the source run's experiment)
recording a check of a version (its report    ``write`` on model NAME
uploaded through the blob routes first)
moving or deleting an alias                   ``write`` on alias NAME@ALIAS (a model
                                              grant covers its aliases), plus the
                                              approvals the alias's policy asks for
approving a version                           ``approve`` on model NAME
listing alias policies                        ``read``
protecting or unprotecting an alias           ``admin``
===========================================  =======================================

Four-eyes holds with real identities because the registry records the caller's
authenticated user as registrant, approver and mover: no field of a request
names the acting user.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, StringConstraints

from keel.server.context import Caller, CallerDep
from keel.server.routes.aliases import add_alias_routes
from keel.tracking.validation import MAX_KEY_LENGTH, MAX_TAG_LENGTH
from keel.transport.wire import to_wire
from keel.uris import RunURI, parse_model_uri
from keel.validation import MAX_NAME_CHARS

router = APIRouter(tags=["registry"])

_TEXT_CHARS = 100_000

ModelName = Annotated[str, Path(max_length=MAX_NAME_CHARS, description="a registered model")]
AliasName = Annotated[str, Path(max_length=MAX_NAME_CHARS, description="an alias of the model")]
Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="a version number")]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY_LENGTH)]
TagValue = Annotated[str, StringConstraints(max_length=MAX_TAG_LENGTH)]
Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class NewModel(BaseModel):
    """A registered model to create."""

    name: str = Field(max_length=MAX_NAME_CHARS)
    description: str | None = Field(default=None, max_length=_TEXT_CHARS)


class NewVersion(BaseModel):
    """A model package to register as the model's next version."""

    source: str = Field(max_length=1_024, description="runs:/<run_id>/<path> of a logged model")
    description: str | None = Field(default=None, max_length=_TEXT_CHARS)
    tags: dict[TagKey, TagValue] | None = Field(default=None, max_length=1_000)


class VersionUpdate(BaseModel):
    """A version's new description."""

    description: str = Field(max_length=_TEXT_CHARS)


class VersionTag(BaseModel):
    """One tag of a version."""

    key: TagKey
    value: TagValue


class NewCompilation(BaseModel):
    """A compilation whose parity report (and compiled package) the server holds already."""

    target: Literal["onnx", "treelite"]
    passed: bool
    package_digest: Digest | None = Field(
        default=None, description="the compiled package's folder manifest"
    )
    report_digest: Digest = Field(description="the stored JSON parity report")


class NewCheck(BaseModel):
    """A check of the version whose report the server holds already (uploaded as a blob)."""

    against_version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    passed: bool
    data_digest: Digest = Field(description="BLAKE3 of the rows the check measured")
    report_digest: Digest = Field(description="the stored JSON report of the check")


class PolicyBody(BaseModel):
    """How a protected alias moves: approvals from a role, and whether the registrant counts."""

    approvals: int = Field(default=1, ge=1, le=100)
    role: str = Field(default="approver", max_length=128)
    allow_registrant: bool = False


def _require_run_read(caller: Caller, run_ref: str) -> None:
    """A version's bytes come from a run: registering or resolving it needs read on its experiment."""
    tracking = caller.client.tracking
    info = tracking.get_run_info(tracking.resolve_run_id(run_ref))
    experiment = tracking.get_experiment(info.experiment_id)
    caller.require("read", "experiment", experiment.name)


# -- registered models -----------------------------------------------------------------


@router.post("/models", status_code=201)
def create_registered_model(body: NewModel, caller: CallerDep) -> Any:
    """Create an empty registered model (409 if the name exists)."""
    caller.require("write", "model", body.name)
    return to_wire(caller.client.registry.create_registered_model(body.name, body.description))


@router.get("/models")
def list_registered_models(caller: CallerDep) -> Any:
    """The registered models the caller may read, by name."""
    if "api" not in caller.principal.scopes:
        caller.require("read")  # refused with the scope it lacks
    # a model-scoped viewer sees the models granted to it, not a 403
    models = caller.client.registry.list_registered_models()
    return to_wire([m for m in models if caller.can("read", "model", m.name)])


@router.get("/registry/resolve")
def resolve_model(
    caller: CallerDep, uri: Annotated[str, Query(max_length=2_000, description="a model URI")]
) -> Any:
    """Where ``models:/NAME/3``, ``models:/NAME@alias``, ``models:/NAME`` or ``runs:/…`` lives."""
    parsed = parse_model_uri(uri)
    if isinstance(parsed, RunURI):
        _require_run_read(caller, parsed.run_id)
    else:
        caller.require("read", "model", parsed.name)
    return to_wire(caller.client.registry.resolve_model(uri))


@router.get("/models/{name}")
def get_registered_model(name: ModelName, caller: CallerDep) -> Any:
    """A registered model, with its latest version number and its aliases."""
    caller.require("read", "model", name)
    return to_wire(caller.client.registry.get_registered_model(name))


# -- versions ------------------------------------------------------------------------------


@router.post("/models/{name}/versions", status_code=201)
def create_model_version(name: ModelName, body: NewVersion, caller: CallerDep) -> Any:
    """Register a run's model package as the model's next version (the model is created too).

    Registering the same bytes from the same source again answers the existing version.
    """
    caller.require("write", "model", name)
    parsed = parse_model_uri(body.source)
    if isinstance(parsed, RunURI):
        _require_run_read(caller, parsed.run_id)
    return to_wire(
        caller.client.create_model_version(  # the client's, which may also compile it
            name, body.source, description=body.description, tags=body.tags
        )
    )


@router.get("/models/{name}/versions")
def list_model_versions(name: ModelName, caller: CallerDep) -> Any:
    """Every version of the model, oldest first."""
    caller.require("read", "model", name)
    return to_wire(caller.client.registry.list_model_versions(name))


@router.get("/models/{name}/versions/{version}")
def get_model_version(name: ModelName, version: Version, caller: CallerDep) -> Any:
    """One version: its source, run, pinned manifest, tags and aliases."""
    caller.require("read", "model", name)
    return to_wire(caller.client.registry.get_model_version(name, version))


@router.patch("/models/{name}/versions/{version}")
def update_model_version(
    name: ModelName, version: Version, body: VersionUpdate, caller: CallerDep
) -> Any:
    """Replace a version's description."""
    caller.require("write", "model", name)
    return to_wire(
        caller.client.registry.update_model_version(name, version, description=body.description)
    )


@router.post("/models/{name}/versions/{version}/tags", status_code=204)
def set_model_version_tag(
    name: ModelName, version: Version, body: VersionTag, caller: CallerDep
) -> None:
    """Set one tag of a version."""
    caller.require("write", "model", name)
    caller.client.registry.set_model_version_tag(name, version, body.key, body.value)


@router.post("/models/{name}/versions/{version}/checks", status_code=201)
def record_check(name: ModelName, version: Version, body: NewCheck, caller: CallerDep) -> Any:
    """Record a check of the version; 404 when the server does not hold its report."""
    caller.require("write", "model", name)
    return to_wire(
        caller.client.registry.record_check(
            name,
            version,
            against_version=body.against_version,
            passed=body.passed,
            data_digest=body.data_digest,
            report_digest=body.report_digest,
        )
    )


@router.get("/models/{name}/versions/{version}/checks")
def list_checks(name: ModelName, version: Version, caller: CallerDep) -> Any:
    """The recorded checks of the version, oldest first."""
    caller.require("read", "model", name)
    return to_wire(caller.client.registry.list_checks(name, version))


@router.post("/models/{name}/versions/{version}/compilations", status_code=201)
def record_compilation(
    name: ModelName, version: Version, body: NewCompilation, caller: CallerDep
) -> Any:
    """Record a compilation of the version; 404 when the server lacks its report or package."""
    caller.require("write", "model", name)
    return to_wire(
        caller.client.registry.record_compilation(
            name,
            version,
            target=body.target,
            passed=body.passed,
            package_digest=body.package_digest,
            report_digest=body.report_digest,
        )
    )


@router.get("/models/{name}/versions/{version}/compilations")
def list_compilations(name: ModelName, version: Version, caller: CallerDep) -> Any:
    """The recorded compilations of the version, oldest first."""
    caller.require("read", "model", name)
    return to_wire(caller.client.registry.list_compilations(name, version))


# -- aliases ---------------------------------------------------------------------------------


add_alias_routes(
    router,
    "models",
    "model",
    part=lambda caller: caller.client.registry,
    by_alias=lambda caller, name, alias: caller.client.registry.get_model_version_by_alias(
        name, alias
    ),
)


@router.get("/alias-policies")
def list_alias_policies(caller: CallerDep) -> Any:
    """Every protected alias and its rule."""
    caller.require("read")
    return to_wire(caller.client.registry.list_alias_policies())


@router.put("/alias-policies/{alias}")
def set_alias_policy(alias: AliasName, body: PolicyBody, caller: CallerDep) -> Any:
    """Protect an alias for every model (admins only)."""
    caller.require("admin")
    return to_wire(
        caller.client.registry.set_alias_policy(
            alias,
            approvals=body.approvals,
            role=body.role,
            allow_registrant=body.allow_registrant,
        )
    )


@router.delete("/alias-policies/{alias}", status_code=204)
def delete_alias_policy(alias: AliasName, caller: CallerDep) -> None:
    """Unprotect an alias (admins only; 404 if it was not protected)."""
    caller.require("admin")
    caller.client.registry.delete_alias_policy(alias)
