"""Plain records of the feature store: stored definitions, apply results, watermarks.

Each record has ``to_dict`` (JSON for ``--json`` and the REST API) and ``from_dict``
(its inverse, for a client reading the REST API), so a definition read through a
server is the same object as one read from SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["ApplyResult", "FeatureDefinition", "Watermark"]


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _ms(value: Any) -> int:
    """Milliseconds since the epoch from an ISO time (as ``to_dict`` writes) or a number."""
    if isinstance(value, int | float):
        return int(value)
    stamp = datetime.fromisoformat(str(value))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return round(stamp.timestamp() * 1000)


@dataclass(frozen=True)
class FeatureDefinition:
    """One immutable version of an entity, a feature view or an on-demand feature view.

    Attributes:
        kind: ``entity``, ``feature_view`` or ``on_demand_feature_view``.
        name: the definition's name.
        version: its number, from 1, per (kind, name).
        digest: the SHA-256 of ``spec``'s canonical JSON.
        spec: the stored JSON (see :mod:`keel.features.definitions`).
        source_file: the definitions file it was applied from.
        created_at: when this version was applied (ms since the epoch).
        created_by: who applied it.
    """

    kind: str
    name: str
    version: int
    digest: str
    spec: dict[str, Any]
    source_file: str | None
    created_at: int
    created_by: str

    @property
    def uri(self) -> str:
        """``features:/name@version`` (entities have no URI of their own, but get one alike)."""
        return f"features:/{self.name}@{self.version}"

    @property
    def join_keys(self) -> list[str]:
        """The join keys of an entity or a feature view (none for an on-demand view)."""
        return list(self.spec.get("join_keys") or [])

    @property
    def feature_names(self) -> list[str]:
        """A view's features, or an on-demand view's output columns (none for an entity)."""
        fields = self.spec.get("schema") if self.kind == "on_demand_feature_view" else None
        if fields is None:
            fields = self.spec.get("features") or []
        return [f["name"] for f in fields]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "digest": self.digest,
            "spec": self.spec,
            "source_file": self.source_file,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureDefinition:
        """The inverse of :meth:`to_dict`."""
        return cls(
            kind=data["kind"],
            name=data["name"],
            version=int(data["version"]),
            digest=data["digest"],
            spec=dict(data["spec"]),
            source_file=data.get("source_file"),
            created_at=_ms(data["created_at"]),
            created_by=data["created_by"],
        )


@dataclass(frozen=True)
class ApplyResult:
    """What one apply did: the versions it created or updated, and what it left alone.

    ``created`` holds first versions, ``updated`` new versions of known definitions,
    ``unchanged`` the latest stored version of each definition whose spec is the same.
    """

    created: list[FeatureDefinition] = field(default_factory=list)
    updated: list[FeatureDefinition] = field(default_factory=list)
    unchanged: list[FeatureDefinition] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changed(self) -> list[FeatureDefinition]:
        """Created and updated versions, in the order they were written."""
        return [*self.created, *self.updated]

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": [d.to_dict() for d in self.created],
            "updated": [d.to_dict() for d in self.updated],
            "unchanged": [d.to_dict() for d in self.unchanged],
            "counts": {
                "created": len(self.created),
                "updated": len(self.updated),
                "unchanged": len(self.unchanged),
            },
            "seconds": round(self.seconds, 4),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApplyResult:
        """The inverse of :meth:`to_dict`."""

        def defs(key: str) -> list[FeatureDefinition]:
            return [FeatureDefinition.from_dict(d) for d in data.get(key) or []]

        return cls(
            defs("created"), defs("updated"), defs("unchanged"), float(data.get("seconds") or 0)
        )


@dataclass(frozen=True)
class Watermark:
    """How far one view has been materialized into one online store.

    Attributes:
        view: the feature view.
        store: the online store's URL.
        view_version: the view version the last run materialized.
        last_event_ms: the newest event time written (ms), ``None`` before any row.
        last_created_ms: the newest created time written (ms), ``None`` when none.
        rows_written: rows written over all runs.
        runs: how many runs recorded themselves.
        updated_at: when the last run recorded itself (ms).
    """

    view: str
    store: str
    view_version: int
    last_event_ms: int | None
    last_created_ms: int | None
    rows_written: int
    runs: int
    updated_at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "store": self.store,
            "view_version": self.view_version,
            "last_event_ms": self.last_event_ms,
            "last_event_time": _iso(self.last_event_ms),
            "last_created_ms": self.last_created_ms,
            "rows_written": self.rows_written,
            "runs": self.runs,
            "updated_at": _iso(self.updated_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Watermark:
        """The inverse of :meth:`to_dict`."""

        def opt(value: Any) -> int | None:
            return None if value is None else int(value)

        return cls(
            view=data["view"],
            store=data["store"],
            view_version=int(data["view_version"]),
            last_event_ms=opt(data.get("last_event_ms")),
            last_created_ms=opt(data.get("last_created_ms")),
            rows_written=int(data["rows_written"]),
            runs=int(data["runs"]),
            updated_at=_ms(data["updated_at"]),
        )
