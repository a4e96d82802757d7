"""Plain records returned by the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "AliasChange",
    "AliasPolicy",
    "Approval",
    "ModelCheck",
    "ModelCompilation",
    "ModelVersion",
    "RegisteredModel",
    "ResolvedModel",
]


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str | None
    latest_version: int
    created_at: int
    created_by: str
    aliases: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "latest_version": self.latest_version,
            "aliases": self.aliases,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class ModelVersion:
    """One immutable version: its source, the run it came from and its pinned bytes."""

    name: str
    version: int
    source: str
    run_id: str | None
    manifest_digest: str | None
    description: str | None
    created_at: int
    created_by: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "source": self.source,
            "run_id": self.run_id,
            "manifest_digest": self.manifest_digest,
            "description": self.description,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "tags": self.tags,
            "aliases": self.aliases,
        }


@dataclass(frozen=True)
class AliasChange:
    alias: str
    from_version: int | None
    to_version: int | None
    at: int
    actor: str
    comment: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "time": _iso(self.at),
            "actor": self.actor,
            "comment": self.comment,
        }


@dataclass(frozen=True)
class Approval:
    name: str
    version: int
    alias: str
    approver: str
    comment: str | None
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "approver": self.approver,
            "comment": self.comment,
            "time": _iso(self.created_at),
        }


@dataclass(frozen=True)
class AliasPolicy:
    """Moving ``alias`` needs ``approvals`` approvals from users holding ``role``."""

    alias: str
    approvals: int
    role: str
    allow_registrant: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "approvals": self.approvals,
            "role": self.role,
            "allow_registrant": self.allow_registrant,
        }


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model URI's package lives: a run's artifact folder, pinned by manifest."""

    run_id: str
    artifact_path: str
    manifest_digest: str | None = None
    name: str | None = None
    version: int | None = None

    @property
    def runs_uri(self) -> str:
        return f"runs:/{self.run_id}/{self.artifact_path}"


@dataclass(frozen=True)
class ModelCheck:
    """One recorded ``keel models check`` of a version: its verdict and where its report is.

    The report itself (metrics, gates, slices) is a JSON object in the artifact
    store under ``report_digest``; ``data_digest`` names the rows it was measured on.
    """

    name: str
    version: int
    against_version: int | None
    passed: bool
    data_digest: str
    report_digest: str
    created_at: int
    created_by: str


@dataclass(frozen=True)
class ModelCompilation:
    """One ``keel models compile`` of a version: the target, the parity verdict, and where
    the compiled package and its parity report are.

    ``package_digest`` is the folder manifest of the compiled package in the artifact
    store (``None`` when the conversion itself was refused); ``report_digest`` the parity
    report, a JSON object.
    """

    name: str
    version: int
    target: str
    passed: bool
    package_digest: str | None
    report_digest: str
    created_at: int
    created_by: str
