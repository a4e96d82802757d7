"""The model registry: named models, immutable versions, aliases, approvals, policies."""

from __future__ import annotations

from keel.registry.client import UNSET, RegistryClient
from keel.registry.entities import (
    AliasChange,
    AliasPolicy,
    Approval,
    ModelCheck,
    ModelCompilation,
    ModelVersion,
    RegisteredModel,
    ResolvedModel,
)

__all__ = [
    "UNSET",
    "AliasChange",
    "AliasPolicy",
    "Approval",
    "ModelCheck",
    "ModelCompilation",
    "ModelVersion",
    "RegisteredModel",
    "RegistryClient",
    "ResolvedModel",
    "register_model",
    "resolve_model",
    "resolve_model_uri",
]


def resolve_model(uri: str) -> ResolvedModel:
    """Where a model URI's package lives, with the manifest a registered version pinned."""
    from keel.client import Client

    return Client().resolve_model(uri)


def resolve_model_uri(uri: str) -> str:
    """The ``runs:/<run_id>/<path>`` URI behind any model URI."""
    return resolve_model(uri).runs_uri


def register_model(
    model_uri: str,
    name: str,
    *,
    description: str | None = None,
    tags: dict[str, str] | None = None,
) -> int:
    """Register the model at ``model_uri`` (``runs:/<run_id>/<path>``) under ``name``.

    Returns:
        The new version number, assigned by the store (1, 2, … with no gaps).
    """
    from keel.client import Client
    from keel.tracking import fluent

    fluent.flush()
    return (
        Client().create_model_version(name, model_uri, description=description, tags=tags).version
    )
