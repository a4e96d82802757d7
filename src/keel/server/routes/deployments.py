"""The deployments routes: specs, revisions and rollback.

Each route checks its permissions, then calls :class:`~keel.serving.Deployments`
over the caller's client, which acts as the token's user. What each needs:

===========================================  =======================================
listing deployments, reading one, its         ``read`` somewhere (any grant)
revisions
creating a deployment                         ``write`` on every model its spec
                                              routes to (shadow included)
changing a spec, rolling back                 ``write`` on every model the new spec
                                              routes to, and on every model the
                                              current one does (traffic moves away
                                              from those)
===========================================  =======================================

A route names a model version or an alias; either way the grant checked is the
model's, so an editor scoped to model ``fraud`` can deploy ``fraud`` and not
take over a deployment that serves another model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from keel.server.context import Caller, CallerDep
from keel.serving.deployments import Deployments, DeploymentSpec
from keel.transport.wire import to_wire
from keel.validation import MAX_NAME_CHARS

router = APIRouter(tags=["deployments"])

_COMMENT_CHARS = 5_000
_MAX_ROUTES = 100

DeploymentName = Annotated[str, Path(max_length=MAX_NAME_CHARS, description="a deployment")]
_MAX_REVISION = 2**31 - 1  # beyond any stored revision, and inside every database's integer
Revision = Annotated[int, Path(ge=1, le=_MAX_REVISION, description="a revision number")]


class RouteBody(BaseModel):
    """A model version (``ref`` a number) or an alias to follow (``ref`` a name), with a weight."""

    model: str = Field(max_length=MAX_NAME_CHARS)
    ref: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    weight: int = Field(default=100, ge=1, le=100)


class BatchingBody(BaseModel):
    """Collect up to ``max_size`` rows or wait at most ``max_latency_ms`` before predicting."""

    max_size: int = Field(default=32, ge=1, le=1_000_000)
    max_latency_ms: float = Field(default=5.0, ge=0, le=60_000)


class SpecBody(BaseModel):
    """Routes (the first is the primary; weights add up to 100), an optional shadow, batching."""

    routes: list[RouteBody] = Field(min_length=1, max_length=_MAX_ROUTES)
    shadow: RouteBody | None = None
    batching: BatchingBody | None = None
    kind: Literal["model", "prompt"] = "model"
    features: list[Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=1_000
    )

    def spec(self) -> DeploymentSpec:
        """The library's spec (it checks the weights)."""
        return DeploymentSpec.from_dict(self.model_dump())


class NewDeployment(BaseModel):
    """A deployment to create at revision 1."""

    name: str = Field(max_length=MAX_NAME_CHARS)
    spec: SpecBody
    comment: str | None = Field(default=None, max_length=_COMMENT_CHARS)


class SpecChange(BaseModel):
    """A new revision with exactly ``spec``; ``expected_revision`` makes it a compare-and-set."""

    spec: SpecBody
    comment: str | None = Field(default=None, max_length=_COMMENT_CHARS)
    expected_revision: int | None = Field(default=None, ge=1, le=_MAX_REVISION)


class RollbackBody(BaseModel):
    """Put back the spec before the current one, or revision ``to``'s."""

    to: int | None = Field(default=None, ge=1, le=_MAX_REVISION)
    comment: str | None = Field(default=None, max_length=_COMMENT_CHARS)


def _deployments(caller: Caller) -> Deployments:
    return Deployments(caller.client)


def _require_models(caller: Caller, spec: DeploymentSpec) -> None:
    # first "write anywhere": a viewer hears which permission it lacks, not whether a name exists
    caller.require_somewhere("write", "changing deployments")
    for model in spec.models:
        caller.require("write", "model", model)


def require_read(caller: Caller) -> None:
    """Go on only if ``caller`` may read deployments (read on some resource)."""
    caller.require_somewhere("read", "reading deployments")


@router.post("/deployments", status_code=201)
def create_deployment(body: NewDeployment, caller: CallerDep) -> Any:
    """Create a deployment at revision 1 (409 if the name is taken)."""
    spec = body.spec.spec()
    _require_models(caller, spec)
    return to_wire(_deployments(caller).create(body.name, spec, body.comment))


@router.get("/deployments")
def list_deployments(caller: CallerDep) -> Any:
    """Every deployment at its current revision, by name."""
    require_read(caller)
    return to_wire(_deployments(caller).all())


@router.get("/deployments/{name}")
def get_deployment(name: DeploymentName, caller: CallerDep) -> Any:
    """The deployment at its current revision."""
    require_read(caller)
    return to_wire(_deployments(caller).get(name))


@router.get("/deployments/{name}/revisions")
def list_revisions(name: DeploymentName, caller: CallerDep) -> Any:
    """Every revision of the deployment, oldest first."""
    require_read(caller)
    return to_wire(_deployments(caller).history(name))


@router.get("/deployments/{name}/revisions/{revision}")
def get_revision(name: DeploymentName, revision: Revision, caller: CallerDep) -> Any:
    """One revision of the deployment."""
    require_read(caller)
    return to_wire(_deployments(caller).get(name, revision))


@router.put("/deployments/{name}/spec")
def set_spec(name: DeploymentName, body: SpecChange, caller: CallerDep) -> Any:
    """Write a new revision with exactly this spec (409 if it moved past ``expected_revision``)."""
    spec = body.spec.spec()
    _require_models(caller, spec)
    deployments = _deployments(caller)
    _require_models(caller, deployments.get(name).spec)
    return to_wire(deployments.set_spec(name, spec, body.comment, body.expected_revision))


@router.post("/deployments/{name}/rollback")
def rollback(name: DeploymentName, body: RollbackBody, caller: CallerDep) -> Any:
    """Put back an earlier spec as a new revision (undo without ``to``)."""
    deployments = _deployments(caller)
    require_rollback(caller, deployments, name, body.to)
    return to_wire(deployments.rollback(name, body.to, body.comment))


def require_rollback(caller: Caller, deployments: Deployments, name: str, to: int | None) -> None:
    """Go on only if ``caller`` may roll ``name`` back to revision ``to`` (the UI checks the same).

    Write somewhere first, before the target is looked up, then write on every model of
    the target's spec and of the current one.

    Raises:
        PermissionDenied: the caller lacks one of them.
    """
    caller.require_somewhere("write", "changing deployments")
    _require_models(caller, deployments.rollback_target(name, to).spec)
    _require_models(caller, deployments.get(name).spec)
