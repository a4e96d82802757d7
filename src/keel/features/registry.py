"""The feature registry in SQL: versioned, audited definitions and materialization watermarks.

A definition's versions are rows of ``feature_definitions``, one per (kind, name,
version), each holding its spec's JSON and digest. How the database settles each
race:

- **Apply.** One write transaction reads the latest digest of every name applied
  (one ``SELECT``), inserts the changed specs as ``latest + 1`` (one bulk
  ``INSERT``, in name order) and writes their audit entries. Two appliers that read
  the same latest version collide on the unique (kind, name, version) constraint;
  the loser's transaction rolls back whole and it applies again, now finding the
  winner's versions (usually unchanged). So a number is never taken twice and no
  applied spec is lost; after a few collisions in a row the apply gives up with
  :class:`~keel.errors.Conflict`. On SQLite the write lock serializes appliers
  before they read, so they never collide.
- **Watermarks.** ``feature_materializations`` has one row per (view, store),
  written by an upsert whose ``CASE`` keeps the greater of the stored and the new
  event and created times, and which adds to the row and run counters in SQL: two
  runs finishing in either order leave the newer times and both counts.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, and_, case, func, select
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from keel.errors import Conflict, InvalidInput, NotFound
from keel.features.definitions import (
    ENTITY,
    ON_DEMAND,
    VIEW,
    FeatureRef,
    spec_digest,
)
from keel.features.entities import ApplyResult, FeatureDefinition, Watermark
from keel.governance import audit
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms
from keel.suggest import hint
from keel.validation import check_name, check_version

if TYPE_CHECKING:
    from keel.transport import Transport

__all__ = ["INPUT_LABEL", "KINDS", "FeatureRegistry"]

#: The label of the lineage edges a training set records (view version -> run).
INPUT_LABEL = "get_historical_features"

#: Every kind of definition, in the order listings show them.
KINDS = (ENTITY, VIEW, ON_DEMAND)
#: What each kind is called in messages.
_LABEL = {ENTITY: "entity", VIEW: "feature view", ON_DEMAND: "on-demand feature view"}
#: How to make a definition that is missing.
_FIX = "apply the definitions file: keel features apply defs.py"
#: Times an apply starts over after losing a race for a version number.
_ATTEMPTS = 5

_fd = s.feature_definitions
_fm = s.feature_materializations


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`, else :class:`InvalidInput` listing them."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def _to_definition(row: Any) -> FeatureDefinition:
    return FeatureDefinition(
        kind=row.kind,
        name=row.name,
        version=int(row.version),
        digest=row.digest,
        spec=json.loads(row.spec),
        source_file=row.source_file,
        created_at=int(row.created_at),
        created_by=row.created_by,
    )


def _to_watermark(row: Any) -> Watermark:
    return Watermark(
        view=row.view,
        store=row.store,
        view_version=int(row.view_version),
        last_event_ms=None if row.last_event_ms is None else int(row.last_event_ms),
        last_created_ms=None if row.last_created_ms is None else int(row.last_created_ms),
        rows_written=int(row.rows_written),
        runs=int(row.runs),
        updated_at=int(row.updated_at),
    )


def _latest(
    conn: Connection, *, kinds: Iterable[str] = KINDS, names: Iterable[str] | None = None
) -> dict[tuple[str, str], FeatureDefinition]:
    """The latest version of each (kind, name) among ``kinds`` (and ``names``), in one query."""
    newest = select(_fd.c.kind, _fd.c.name, func.max(_fd.c.version).label("version")).where(
        _fd.c.kind.in_(list(kinds))
    )
    if names is not None:
        wanted = sorted(set(names))
        if not wanted:
            return {}
        newest = newest.where(_fd.c.name.in_(wanted))
    sub = newest.group_by(_fd.c.kind, _fd.c.name).subquery()
    rows = conn.execute(
        select(_fd).join(
            sub,
            and_(
                _fd.c.kind == sub.c.kind, _fd.c.name == sub.c.name, _fd.c.version == sub.c.version
            ),
        )
    ).all()
    return {(row.kind, row.name): _to_definition(row) for row in rows}


def _names(conn: Connection, kinds: Sequence[str]) -> builtins.list[str]:
    return list(
        conn.execute(select(_fd.c.name).where(_fd.c.kind.in_(list(kinds))).distinct()).scalars()
    )


def _site(sites: Mapping[str, str], name: str) -> str:
    """``file:line: `` of a definition, for the start of a message ('' when unknown)."""
    where = sites.get(name)
    return f"{where}: " if where else ""


#: The keys every spec of each kind has (see :mod:`keel.features.definitions`).
_SPEC_KEYS = {
    ENTITY: ("join_keys", "dtype"),
    VIEW: ("entities", "join_keys", "source", "timestamp_field", "features", "ttl_seconds"),
    ON_DEMAND: ("views", "request", "schema", "function"),
}


def _check_spec(spec: Any) -> dict[str, Any]:
    """``spec`` if it has the shape of a stored spec (a server takes specs from the wire)."""
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        kind = spec.get("kind") if isinstance(spec, dict) else type(spec).__name__
        raise InvalidInput(f"a definition's spec has kind one of {', '.join(KINDS)}, got {kind!r}")
    check_name(spec.get("name"), f"{_LABEL[spec['kind']]} name")
    lacking = [key for key in _SPEC_KEYS[spec["kind"]] if key not in spec]
    if lacking:
        raise InvalidInput(
            f"the spec of {_LABEL[spec['kind']]} {spec['name']!r} lacks {lacking}; "
            "make specs with keel.features.definitions (Definitions.specs)"
        )
    return spec


def _later(column: str, new: Any, new_version: Any) -> ColumnElement[Any]:
    """The greater of the stored and the new value of ``column``; ``NULL`` counts as oldest.

    A run for another view version rebuilt the view from scratch, so its value stands
    as given: keeping the old version's later time would skip the rebuilt source's rows.
    """
    old = _fm.c[column]
    return case(
        (_fm.c.view_version != new_version, new),
        (new.is_(None), old),
        (old.is_(None), new),
        (new > old, new),
        else_=old,
    )


class FeatureRegistry:
    """Definitions and watermarks in the metadata store a transport opens.

    Args:
        transport: a local transport: its store holds the rows, its user is recorded
            as who applied each version.
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    # -- apply --------------------------------------------------------------------------------

    def apply(
        self,
        specs: Sequence[dict[str, Any]],
        file: str | None,
        sites: Mapping[str, str] | None = None,
    ) -> ApplyResult:
        """Store a new version of each spec that changed, and audit it.

        Args:
            specs: the definitions' specs (:meth:`Definitions.specs`), entities first.
            file: the definitions file they come from.
            sites: ``file:line`` of each view and on-demand view by name, for messages.

        Raises:
            InvalidInput: a spec is malformed, a view names an entity, or an on-demand view
                a view, that is neither among ``specs`` nor stored; or a name is taken by
                the other kind of view. The message starts with the definition's file and line.
            Conflict: other appliers kept winning the race for the version numbers.
        """
        checked = [_check_spec(spec) for spec in specs]
        keys = [(spec["kind"], spec["name"]) for spec in checked]
        twice = sorted({f"{kind} {name}" for kind, name in keys if keys.count((kind, name)) > 1})
        if twice:
            raise InvalidInput(f"the specs name {twice} more than once; give each definition once")
        for attempt in range(_ATTEMPTS):
            try:
                return self._apply_once(checked, file, dict(sites or {}))
            except SQLIntegrityError:
                if attempt + 1 == _ATTEMPTS:
                    raise Conflict(
                        f"other applies of these definitions kept committing first; run "
                        f"keel features apply {file or 'defs.py'} again"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _apply_once(
        self, specs: Sequence[dict[str, Any]], file: str | None, sites: dict[str, str]
    ) -> ApplyResult:
        actor = self.transport.user
        with self.transport.store.write() as conn:
            keys = [(spec["kind"], spec["name"]) for spec in specs]
            latest = _latest(conn, names={name for _, name in keys})
            self._check_references(conn, specs, sites)
            self._check_namespace(specs, latest, sites)
            created: list[FeatureDefinition] = []
            updated: list[FeatureDefinition] = []
            unchanged: list[FeatureDefinition] = []
            at = now_ms()
            for spec in specs:
                digest = spec_digest(spec)
                before = latest.get((spec["kind"], spec["name"]))
                if before is not None and before.digest == digest:
                    unchanged.append(before)
                    continue
                made = FeatureDefinition(
                    kind=spec["kind"],
                    name=spec["name"],
                    version=1 if before is None else before.version + 1,
                    digest=digest,
                    spec=spec,
                    source_file=file,
                    created_at=at,
                    created_by=actor,
                )
                (created if before is None else updated).append(made)
            # Name order for the insert: two appliers on PostgreSQL take the unique index's
            # entries in one order, so they collide instead of deadlocking.
            changed = sorted([*created, *updated], key=lambda d: (d.kind, d.name))
            if changed:
                conn.execute(
                    _fd.insert(),
                    [
                        {
                            "kind": d.kind,
                            "name": d.name,
                            "version": d.version,
                            "digest": d.digest,
                            "spec": json.dumps(d.spec, sort_keys=True),
                            "source_file": d.source_file,
                            "created_at": d.created_at,
                            "created_by": d.created_by,
                        }
                        for d in changed
                    ],
                )
            for d in changed:
                before = latest.get((d.kind, d.name))
                audit.record(
                    conn,
                    actor=actor,
                    action=f"{d.kind}.apply",
                    object_type=d.kind,
                    object_id=f"{d.name}/{d.version}",
                    before=None
                    if before is None
                    else {"version": before.version, "digest": before.digest},
                    after={"digest": d.digest, "source_file": d.source_file},
                )
        return ApplyResult(created, updated, unchanged)

    @staticmethod
    def _check_references(
        conn: Connection, specs: Sequence[dict[str, Any]], sites: Mapping[str, str]
    ) -> None:
        """Every entity a view names, and every view an on-demand view reads, exists somewhere."""
        applied = {(spec["kind"], spec["name"]) for spec in specs}
        wanted = {
            (ENTITY, entity)
            for spec in specs
            if spec["kind"] == VIEW
            for entity in spec["entities"]
        } | {(VIEW, view) for spec in specs if spec["kind"] == ON_DEMAND for view in spec["views"]}
        missing = wanted - applied
        if not missing:
            return
        stored = _latest(conn, kinds=[ENTITY, VIEW], names={name for _, name in missing})
        for spec in specs:
            if spec["kind"] == VIEW:
                kind, refs, verb = ENTITY, spec["entities"], "names unknown entity"
            elif spec["kind"] == ON_DEMAND:
                kind, refs, verb = VIEW, spec["views"], "reads unknown feature view"
            else:
                continue
            for ref in refs:
                if (kind, ref) in applied or (kind, ref) in stored:
                    continue
                known = {n for k, n in applied if k == kind} | set(_names(conn, [kind]))
                plural = "entities" if kind == ENTITY else "feature views"
                fix = (
                    "define it in the file or apply a file that does"
                    if kind == ENTITY
                    else "define it in the file"
                )
                raise InvalidInput(
                    f"{_site(sites, spec['name'])}{_LABEL[spec['kind']]} "
                    f"{spec['name']!r} {verb} {ref!r} ({hint(ref, known, kind=plural)}); {fix}"
                )

    @staticmethod
    def _check_namespace(
        specs: Sequence[dict[str, Any]],
        latest: dict[tuple[str, str], FeatureDefinition],
        sites: Mapping[str, str],
    ) -> None:
        """Views and on-demand views share one namespace, in the store as in a file."""
        for spec in specs:
            kind, name = spec["kind"], spec["name"]
            other = {VIEW: ON_DEMAND, ON_DEMAND: VIEW}.get(kind)
            if other is not None and (other, name) in latest:
                raise InvalidInput(
                    f"{_site(sites, name)}{name!r} is already an "
                    f"{_LABEL[other]}, and views and on-demand views share one namespace; "
                    f"give the {_LABEL[kind]} another name"
                )

    # -- reading definitions ------------------------------------------------------------------

    def _missing(self, conn: Connection, name: str, kinds: Sequence[str]) -> NotFound:
        label = " or ".join(_LABEL[k] for k in kinds)
        plural = " and ".join(f"{_LABEL[k]}s" for k in kinds)
        return NotFound(
            f"no {label} {name!r} ({hint(name, _names(conn, kinds), kind=plural)}); {_FIX}"
        )

    def get(self, name: str, version: int | None = None, *, kind: str = VIEW) -> FeatureDefinition:
        """A definition's latest version, or version ``version``.

        Raises:
            InvalidInput: an unknown kind or a version that is not a positive integer.
            NotFound: no such definition (with the closest names) or version.
        """
        check_kind(kind)
        check_name(name, f"{_LABEL[kind]} name")
        number = None if version is None else check_version(version)
        with self.transport.store.read() as conn:
            return self._get(conn, name, number, [kind])

    def _get(
        self, conn: Connection, name: str, version: int | None, kinds: Sequence[str]
    ) -> FeatureDefinition:
        if version is None:
            found = _latest(conn, kinds=kinds, names=[name])
            for kind in kinds:
                if (kind, name) in found:
                    return found[(kind, name)]
            raise self._missing(conn, name, kinds)
        row = conn.execute(
            select(_fd)
            .where(_fd.c.kind.in_(list(kinds)), _fd.c.name == name, _fd.c.version == version)
            .order_by(_fd.c.kind)
        ).first()
        if row is not None:
            return _to_definition(row)
        last = conn.execute(
            select(_fd.c.kind, func.max(_fd.c.version))
            .where(_fd.c.kind.in_(list(kinds)), _fd.c.name == name)
            .group_by(_fd.c.kind)
        ).first()
        if last is None:
            raise self._missing(conn, name, kinds)
        raise NotFound(
            f"{_LABEL[last[0]]} {name!r} has no version {version}; its versions are 1 to "
            f"{last[1]} (keel features history {name})"
        )

    def list(self, kind: str | None = None) -> builtins.list[FeatureDefinition]:
        """The latest version of every definition (of ``kind``), by kind then name."""
        kinds = KINDS if kind is None else (check_kind(kind),)
        with self.transport.store.read() as conn:
            latest = _latest(conn, kinds=kinds)
        return sorted(latest.values(), key=lambda d: (KINDS.index(d.kind), d.name))

    def history(self, name: str, *, kind: str = VIEW) -> builtins.list[FeatureDefinition]:
        """Every version of a definition, oldest first.

        Raises:
            NotFound: no such definition (with the closest names).
        """
        check_kind(kind)
        with self.transport.store.read() as conn:
            rows = conn.execute(
                select(_fd).where(_fd.c.kind == kind, _fd.c.name == name).order_by(_fd.c.version)
            ).all()
            if not rows:
                raise self._missing(conn, name, [kind])
        return [_to_definition(row) for row in rows]

    def resolve(self, view: str, version: int | None) -> FeatureDefinition:
        """A feature view or on-demand view by name, at ``version`` or its latest."""
        with self.transport.store.read() as conn:
            return self._get(conn, view, version, [VIEW, ON_DEMAND])

    def views_for(self, refs: Sequence[FeatureRef]) -> dict[str, FeatureDefinition]:
        """The latest version of each view ``refs`` name, checked to have each feature named.

        Raises:
            NotFound: a view is neither a feature view nor an on-demand view.
            InvalidInput: a view lacks a feature named.
        """
        names = list(dict.fromkeys(ref.view for ref in refs))
        with self.transport.store.read() as conn:
            found = _latest(conn, kinds=[VIEW, ON_DEMAND], names=names)
            by_name = {name: d for (_, name), d in found.items()}
            out: dict[str, FeatureDefinition] = {}
            for name in names:
                if name not in by_name:
                    known = _names(conn, [VIEW, ON_DEMAND])
                    raise NotFound(
                        f"unknown feature view {name!r} "
                        f"({hint(name, known, kind='feature views')}); {_FIX}"
                    )
                out[name] = by_name[name]
        for ref in refs:
            definition = out[ref.view]
            features = definition.feature_names
            if ref.feature not in features:
                raise InvalidInput(
                    f"{_LABEL[definition.kind]} {ref.view!r} has no feature {ref.feature!r}; "
                    f"it has {features}"
                )
        return out

    # -- watermarks ---------------------------------------------------------------------------

    def watermark(self, view: str, store: str) -> Watermark | None:
        """How far ``view`` has been materialized into ``store``, or ``None`` before any run."""
        with self.transport.store.read() as conn:
            row = conn.execute(select(_fm).where(_fm.c.view == view, _fm.c.store == store)).first()
        return None if row is None else _to_watermark(row)

    def record_inputs(self, run_id: str, definitions: Sequence[FeatureDefinition]) -> None:
        """Record ``features:/<view>@<version> -> runs:/<run_id>`` for each definition.

        The edges are lineage's (relation ``input``, label :data:`INPUT_LABEL`); an edge
        recorded twice is stored once.

        Raises:
            NotFound: no run ``run_id``, or a definition's version was never applied.
        """
        from keel.pipelines.lineage import Edge, add_edges
        from keel.uris import FeatureURI, RunURI

        with self.transport.store.write() as conn:
            if conn.execute(select(s.runs.c.id).where(s.runs.c.id == run_id)).first() is None:
                raise NotFound(f"no run {run_id!r}; record feature inputs of an existing run")
            for d in definitions:
                self._version_exists(conn, d.kind, d.name, d.version)
            add_edges(
                conn,
                [
                    Edge(
                        str(FeatureURI(d.name, d.version)),
                        str(RunURI(run_id)),
                        "input",
                        INPUT_LABEL,
                    )
                    for d in definitions
                ],
            )

    def _version_exists(self, conn: Connection, kind: str, name: str, version: int) -> None:
        found = conn.execute(
            select(_fd.c.id).where(_fd.c.kind == kind, _fd.c.name == name, _fd.c.version == version)
        ).first()
        if found is None:
            raise NotFound(f"no {kind.replace('_', ' ')} {name!r} at version {version}")

    def watermarks(self) -> builtins.list[Watermark]:
        """Every view's watermark in every store, by view then store."""
        with self.transport.store.read() as conn:
            rows = conn.execute(select(_fm).order_by(_fm.c.view, _fm.c.store)).all()
        return [_to_watermark(row) for row in rows]

    def set_watermark(
        self,
        view: str,
        store: str,
        *,
        view_version: int,
        last_event_ms: int | None,
        last_created_ms: int | None,
        rows: int,
    ) -> Watermark:
        """Record a materialization run: times move only forward, counters add up.

        A run for another ``view_version`` (a rebuild) sets the times as given.

        Raises:
            InvalidInput: a version below 1 or a negative row count.
        """
        version = check_version(view_version)
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise InvalidInput(f"rows must be a non-negative integer, got {rows!r}")
        event = None if last_event_ms is None else int(last_event_ms)
        created = None if last_created_ms is None else int(last_created_ms)
        with self.transport.store.write() as conn:
            stmt = insert_on_conflict(conn, _fm).values(
                view=view,
                store=store,
                view_version=version,
                last_event_ms=event,
                last_created_ms=created,
                rows_written=rows,
                runs=1,
                updated_at=now_ms(),
            )
            new = stmt.excluded
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[_fm.c.view, _fm.c.store],
                    set_={
                        "view_version": new.view_version,
                        "last_event_ms": _later(
                            "last_event_ms", new.last_event_ms, new.view_version
                        ),
                        "last_created_ms": _later(
                            "last_created_ms", new.last_created_ms, new.view_version
                        ),
                        "rows_written": _fm.c.rows_written + new.rows_written,
                        "runs": _fm.c.runs + 1,
                        "updated_at": new.updated_at,
                    },
                )
            )
            row = conn.execute(select(_fm).where(_fm.c.view == view, _fm.c.store == store)).one()
        return _to_watermark(row)
