"""The model registry: named models, immutable numbered versions, aliases, approvals.

:class:`RegistryClient` holds the model and version records and composes the
rest: alias moves and their history (:mod:`keel.registry.aliases`), alias
protection and approvals (:mod:`keel.registry.approvals`) and roles
(:mod:`keel.governance.roles`). Each of those works in one transaction the
client opens, or in the caller's when it passes ``conn=``.

Every write is one transaction that also appends its audit entry. The
races the registry must win are settled by the database, never by a
read-modify-write in Python:

- version numbers: ``UPDATE registered_models SET last_version = last_version + 1
  … RETURNING`` takes the model's row lock, so concurrent registrations get
  consecutive numbers with no gap and no duplicate;
- aliases: an alias moves with ``UPDATE … WHERE version = <the version the
  caller saw>`` (compare-and-set); a caller that lost the race gets
  :class:`~keel.errors.Conflict` instead of silently overwriting;
- approvals: one per approver, version and alias (a unique constraint);
- registering a package twice: the second call locks the model's row
  (``SELECT … FOR UPDATE``) before looking for a version with the same source
  and bytes, so it finds the first one's version instead of adding a twin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

import keel.registry.aliases as _aliases
import keel.registry.approvals as _approvals
import keel.registry.checks as _checks
import keel.registry.compilations as _compilations
from keel.artifacts import ArtifactStore, ManifestEntry
from keel.config import Settings
from keel.errors import Conflict, InvalidInput, NotFound
from keel.governance import audit, roles
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
from keel.store import Store
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms
from keel.suggest import hint
from keel.tracking.client import TrackingClient
from keel.transport import Transport, TransportBound, local_or
from keel.uris import RunURI, parse_model_ref, parse_model_uri, parse_run_uri
from keel.validation import check_alias, check_name

__all__ = ["UNSET", "RegistryClient"]


class Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: "The caller did not say which version it expects the alias to hold."
UNSET: Final = Unset()

_REGISTER_HINT = "register one with `keel models register runs:/<run_id>/model NAME`"
#: Per kind of registry row: what a message calls one, its plural, and how to make one.
_KINDS = {
    "model": ("registered model", "registered models", "models", _REGISTER_HINT),
    "prompt": (
        "prompt",
        "prompts",
        "prompts",
        "register one with `keel prompts register NAME --file prompt.yaml`",
    ),
    "rag-index": ("RAG index", "RAG indexes", "rag", "build one with `keel rag build --name NAME`"),
}


def _check_model_name(name: Any) -> str:
    return check_name(name, "model name")


def _check_alias(alias: Any) -> str:
    return check_alias(alias)


def _is_alias(text: str) -> bool:
    try:
        check_alias(text)
    except InvalidInput:
        return False
    return True


def _check_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        try:
            number = int(str(version))
        except ValueError:
            number = 0
        if number < 1 or isinstance(version, bool):
            raise InvalidInput(f"version must be a positive integer, got {version!r}")
        return number
    return version


def _check_same_registration(
    twin: ModelVersion, description: str | None, tags: Mapping[str, str]
) -> None:
    """Registering a version's own bytes again returns it, unless the call asks for more.

    Raises:
        Conflict: ``description`` or ``tags`` differ from the existing version's: a second
            version of the same bytes would hide the change, so say how to make it.
    """
    changed = []
    if description is not None and description != twin.description:
        changed.append("description")
    if any(twin.tags.get(key) != value for key, value in tags.items()):
        changed.append("tags")
    if changed:
        raise Conflict(
            f"{twin.name} version {twin.version} already holds this model ({twin.source}) "
            f"with another {' and '.join(changed)}; change that version instead "
            f"(`keel models describe {twin.name} {twin.version} --description ...`, "
            "Client.set_model_version_tag) rather than registering the same bytes twice"
        )


class RegistryClient(TransportBound):
    """Registered models, versions, aliases and approvals: the registry part of :class:`keel.Client`.

    Args:
        settings: defaults to the process's settings (``keel.config.get_settings()``).
        store: a metadata store to use instead of the one ``settings`` names.
        artifacts: an artifact store to use instead of the one ``settings`` names.
        transport: how to reach the stores; defaults to a
            :class:`~keel.transport.LocalTransport` over the three arguments above,
            which must then be left out.
        tracking: the tracking part to read runs and their artifacts through (a
            version's source is a run's model); defaults to one over the same transport.
    """

    #: Which rows of ``registered_models`` this client reads and writes: models here;
    #: :mod:`keel.llm` reuses the records, aliases and approvals with ``"prompt"``.
    kind: ClassVar[str] = "model"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        artifacts: ArtifactStore | None = None,
        transport: Transport | None = None,
        tracking: TrackingClient | None = None,
    ) -> None:
        self.transport = local_or(transport, settings, store, artifacts)
        self.tracking = (
            tracking if tracking is not None else TrackingClient(transport=self.transport)
        )

    @property
    def _actor(self) -> str:
        return self.user

    # -- registered models ----------------------------------------------------

    def create_registered_model(self, name: str, description: str | None = None) -> RegisteredModel:
        """Create an empty registered model; ``Conflict`` if the name exists."""
        _check_model_name(name)
        try:
            with self.store.write() as conn:
                self._insert_model(conn, name, description)
        except SQLIntegrityError:
            with self.store.read() as conn:
                raise self._name_taken(conn, name) from None
        return self.get_registered_model(name)

    def _name_taken(self, conn: Connection, name: str) -> Conflict:
        """``Conflict`` for a name that exists: as this kind, or as the other one."""
        kind = conn.execute(
            select(s.registered_models.c.kind).where(s.registered_models.c.name == name)
        ).scalar()
        if kind is not None and kind != self.kind:
            return Conflict(
                f"{name!r} is a {_KINDS[kind][0]}, not a {_KINDS[self.kind][0]}: a name is "
                f"either a model or a prompt, so choose another name (`keel {_KINDS[kind][2]} "
                "list` shows the taken ones)"
            )
        return Conflict(f"a {_KINDS[self.kind][0]} named {name!r} already exists")

    def _insert_model(self, conn: Connection, name: str, description: str | None) -> None:
        conn.execute(
            s.registered_models.insert().values(
                name=name,
                kind=self.kind,
                description=description,
                created_at=now_ms(),
                created_by=self._actor,
            )
        )
        audit.record(
            conn,
            actor=self._actor,
            action="model.create",
            object_type="model",
            object_id=name,
            after={"description": description},
        )

    def model_row(self, conn: Connection, name: str) -> Any:
        """The ``registered_models`` row of ``name`` (of this client's kind), in ``conn``.

        For the registry's own modules and :mod:`keel.llm`, which keep their records in
        the same tables and pass the row to the alias and approval functions.

        Raises:
            NotFound: no such row; the message names the closest names, or the other
                kind when the name is taken by it.
        """
        row = conn.execute(
            select(s.registered_models).where(
                s.registered_models.c.name == name, s.registered_models.c.kind == self.kind
            )
        ).first()
        if row is None:
            noun, plural, _, create = _KINDS[self.kind]
            other = conn.execute(
                select(s.registered_models.c.kind).where(s.registered_models.c.name == name)
            ).scalar()
            if other is not None:  # the name is taken by the other kind: say which
                raise NotFound(
                    f"no {noun} named {name!r}: {name!r} is a {_KINDS[other][0]}; see "
                    f"`keel {_KINDS[other][2]} versions {name}`"
                )
            names = conn.execute(
                select(s.registered_models.c.name).where(s.registered_models.c.kind == self.kind)
            ).scalars()
            raise NotFound(
                f"no {noun} named {name!r}; " + hint(name, names, kind=plural, create=create)
            )
        return row

    def get_registered_model(self, name: str) -> RegisteredModel:
        with self.store.read() as conn:
            row = self.model_row(conn, name)
            aliases = _aliases.model_aliases(conn, row.id)
        return RegisteredModel(
            row.name, row.description, row.last_version, row.created_at, row.created_by, aliases
        )

    def list_registered_models(self) -> list[RegisteredModel]:
        with self.store.read() as conn:
            rows = conn.execute(
                select(s.registered_models)
                .where(s.registered_models.c.kind == self.kind)
                .order_by(s.registered_models.c.name)
            ).all()
            by_model = _aliases.all_aliases(conn)
        return [
            RegisteredModel(
                r.name,
                r.description,
                r.last_version,
                r.created_at,
                r.created_by,
                by_model.get(r.id, {}),
            )
            for r in rows
        ]

    # -- versions ----------------------------------------------------------------

    def create_model_version(
        self,
        name: str,
        source: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Register the model package at ``source`` (``runs:/<run_id>/<path>``) as a new version.

        The model is created on first registration. The version's bytes are
        pinned: the manifest of the package's files at this moment is stored
        with the version, so re-logging the run's artifacts later cannot
        change what the version loads. A package without a drift reference
        gets one from its run's training dataset when there is one (see
        :func:`keel.models.reference.registration_reference`).

        Registering the same bytes from the same source again returns the
        version that holds them, so a retried call never makes a twin.

        Raises:
            Conflict: that version exists but ``description`` or ``tags`` differ from it.
        """
        _check_model_name(name)
        parsed = parse_model_uri(source)
        if not isinstance(parsed, RunURI):
            raise InvalidInput(f"register a run's model (runs:/<run_id>/<path>), got {source!r}")
        run_id, path = parsed.run_id, parsed.path
        run_id = self.tracking.resolve_run_id(run_id)
        entries = self.tracking.list_artifacts(run_id, path)
        if not entries:
            raise NotFound(
                f"run {run_id} has no artifacts at {path!r}; log a model there first "
                "(keel.log_model(model, name=...))"
            )
        prefix = path.strip("/") + "/"
        manifest = self.artifacts.put_manifest(
            [
                ManifestEntry(
                    e.path[len(prefix) :] if e.path.startswith(prefix) else e.path, e.digest, e.size
                )
                for e in entries
            ]
        )
        tag_values = {str(k): str(v) for k, v in (tags or {}).items()}
        source = f"runs:/{run_id}/{path.strip('/')}"
        from keel.models.reference import registration_reference

        # Without a reference in the package, the run's training data gives one: drift
        # monitoring must not silently skip a version because nobody passed reference_data.
        reference = registration_reference(self.store, self.artifacts, run_id, manifest.digest)
        with self.store.write() as conn:
            conn.execute(
                insert_on_conflict(conn, s.registered_models)
                .values(name=name, kind=self.kind, created_at=now_ms(), created_by=self._actor)
                .on_conflict_do_nothing(index_elements=[s.registered_models.c.name])
            )
            twin = self._same_version(conn, name, source, manifest.digest)
            if twin is not None:
                _check_same_registration(twin, description, tag_values)
                return twin
            model_id, version = conn.execute(
                update(s.registered_models)
                .where(s.registered_models.c.name == name)
                .values(last_version=s.registered_models.c.last_version + 1)
                .returning(s.registered_models.c.id, s.registered_models.c.last_version)
            ).one()
            created = now_ms()
            version_id = conn.execute(
                s.model_versions.insert()
                .values(
                    model_id=model_id,
                    version=version,
                    source=source,
                    run_id=run_id,
                    manifest_digest=manifest.digest,
                    description=description,
                    created_at=created,
                    created_by=self._actor,
                )
                .returning(s.model_versions.c.id)
            ).scalar_one()
            if reference is not None:
                conn.execute(
                    s.reference_profiles.insert().values(
                        model_id=model_id,
                        version=version,
                        profile_digest=reference[0],
                        rows=reference[1],
                        created_at=created,
                        created_by=self._actor,
                    )
                )
            if tag_values:
                conn.execute(
                    s.model_version_tags.insert(),
                    [
                        {"version_id": version_id, "key": k, "value": v}
                        for k, v in tag_values.items()
                    ],
                )
            audit.record(
                conn,
                actor=self._actor,
                action="model_version.create",
                object_type="model_version",
                object_id=f"{name}/{version}",
                after={
                    "source": source,
                    "run_id": run_id,
                    "manifest_digest": manifest.digest,
                    **({} if reference is None else {"reference": reference[2]}),
                },
            )
        registered = ModelVersion(
            name,
            version,
            source,
            run_id,
            manifest.digest,
            description,
            created,
            self._actor,
            tag_values,
        )
        return registered

    def _same_version(
        self, conn: Connection, name: str, source: str, manifest_digest: str
    ) -> ModelVersion | None:
        """The version of ``name`` already holding these bytes from this source, if any.

        The model's row is locked first (``FOR UPDATE``; SQLite's write lock is already
        held), so a concurrent registration of the same package waits and then finds
        this one's version instead of adding a twin.
        """
        model_id, kind = conn.execute(
            select(s.registered_models.c.id, s.registered_models.c.kind)
            .where(s.registered_models.c.name == name)
            .with_for_update()
        ).one()
        if kind != self.kind:  # the name is the other kind's: never add a version to it
            raise self._name_taken(conn, name)
        version = conn.execute(
            select(s.model_versions.c.version)
            .where(
                s.model_versions.c.model_id == model_id,
                s.model_versions.c.source == source,
                s.model_versions.c.manifest_digest == manifest_digest,
            )
            .order_by(s.model_versions.c.version)
            .limit(1)
        ).scalar()
        return (
            None
            if version is None
            else self._to_version(conn, self.version_row(conn, name, version))
        )

    def version_row(self, conn: Connection, name: str, version: int) -> Any:
        """The ``model_versions`` row of ``name``'s ``version`` (with the name), in ``conn``.

        Raises:
            NotFound: the model or the version does not exist.
        """
        row = conn.execute(
            select(s.model_versions, s.registered_models.c.name)
            .join(s.registered_models)
            .where(
                s.registered_models.c.name == name,
                s.registered_models.c.kind == self.kind,
                s.model_versions.c.version == version,
            )
        ).first()
        if row is None:
            model = self.model_row(conn, name)  # NotFound for the model itself first
            latest = f"its latest is {model.last_version}" if model.last_version else "none yet"
            noun, group = _aliases.kind_words(model)
            raise NotFound(
                f"{noun} {name!r} has no version {version} ({latest}); "
                f"see `keel {group} versions {name}`"
            )
        return row

    def _to_version(self, conn: Connection, row: Any) -> ModelVersion:
        tags = dict(
            conn.execute(
                select(s.model_version_tags.c.key, s.model_version_tags.c.value).where(
                    s.model_version_tags.c.version_id == row.id
                )
            ).all()
        )
        aliases = _aliases.version_aliases(conn, row.model_id, row.version)
        return ModelVersion(
            row.name,
            row.version,
            row.source,
            row.run_id,
            row.manifest_digest,
            row.description,
            row.created_at,
            row.created_by,
            dict(sorted(tags.items())),
            aliases,
        )

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        version = _check_version(version)
        with self.store.read() as conn:
            return self._to_version(conn, self.version_row(conn, name, version))

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        with self.store.read() as conn:
            model = self.model_row(conn, name)
            rows = conn.execute(
                select(s.model_versions, s.registered_models.c.name)
                .join(s.registered_models)
                .where(s.model_versions.c.model_id == model.id)
                .order_by(s.model_versions.c.version)
            ).all()
            return [self._to_version(conn, row) for row in rows]

    def set_model_version_tag(self, name: str, version: int, key: str, value: Any) -> None:
        """Tag a version (tags are metadata; the version's bytes never change)."""
        from keel.tracking.validation import check_key, check_tag_value

        check_key(key, "tag key")
        text = check_tag_value(key, value)
        with self.store.write() as conn:
            row = self.version_row(conn, name, _check_version(version))
            before = conn.execute(
                select(s.model_version_tags.c.value).where(
                    s.model_version_tags.c.version_id == row.id, s.model_version_tags.c.key == key
                )
            ).scalar()
            stmt = insert_on_conflict(conn, s.model_version_tags)
            conn.execute(
                stmt.values(version_id=row.id, key=key, value=text).on_conflict_do_update(
                    index_elements=[s.model_version_tags.c.version_id, s.model_version_tags.c.key],
                    set_={"value": stmt.excluded.value},
                )
            )
            audit.record(
                conn,
                actor=self._actor,
                action="model_version.tag",
                object_type="model_version",
                object_id=f"{name}/{row.version}",
                before=None if before is None else {key: before},
                after={key: text},
            )

    def update_model_version(self, name: str, version: int, *, description: str) -> ModelVersion:
        """Replace a version's description (its intended use and limitations, for the card)."""
        with self.store.write() as conn:
            row = self.version_row(conn, name, _check_version(version))
            conn.execute(
                update(s.model_versions)
                .where(s.model_versions.c.id == row.id)
                .values(description=description)
            )
            audit.record(
                conn,
                actor=self._actor,
                action="model_version.describe",
                object_type="model_version",
                object_id=f"{name}/{row.version}",
                before={"description": row.description},
                after={"description": description},
            )
        return self.get_model_version(name, version)

    # -- checks (keel.checks records them) ----------------------------------------------

    def record_check(
        self,
        name: str,
        version: int,
        *,
        against_version: int | None,
        passed: bool,
        data_digest: str,
        report_digest: str,
    ) -> ModelCheck:
        """Record a check of ``version`` whose report is stored already, with its audit entry.

        The report must be in this client's artifact store (on a server: uploaded through
        the blob routes first) and must be this version's: a row never names bytes that
        are not there, nor a report that says something else than the row.

        Raises:
            NotFound: no such version (or ``against_version``), or the store lacks the report.
            InvalidInput: a digest is malformed, or the report is not this check's.
        """
        version = _check_version(version)
        against = None if against_version is None else _check_version(against_version)
        check = ModelCheck(
            name, version, against, passed, data_digest, report_digest, now_ms(), self._actor
        )
        report = _checks.stored_report(self.artifacts, check)
        with self.store.write() as conn:
            row = self.version_row(conn, name, version)
            if against is not None:
                self.version_row(conn, name, against)
            _checks.insert(conn, row.model_id, check, report)
        return check

    def list_checks(self, name: str, version: int) -> list[ModelCheck]:
        """The recorded checks of a version, oldest first."""
        version = _check_version(version)
        with self.store.read() as conn:
            row = self.version_row(conn, name, version)
            return _checks.of_version(conn, name, row.model_id, version)

    # -- compilations (keel.models.compile records them) -----------------------------------

    def record_compilation(
        self,
        name: str,
        version: int,
        *,
        target: str,
        passed: bool,
        package_digest: str | None,
        report_digest: str,
    ) -> ModelCompilation:
        """Record a compilation of ``version`` whose report (and package) are stored already.

        Also records the lineage edge from the version to the compiled package, and an
        audit entry.

        Raises:
            NotFound: no such version, or the store lacks the report or the package.
            InvalidInput: an unknown target, a malformed digest, or a report that is
                not this compilation's.
        """
        version = _check_version(version)
        compilation = ModelCompilation(
            name,
            version,
            _compilations.check_target(target),
            bool(passed),
            package_digest,
            report_digest,
            now_ms(),
            self._actor,
        )
        report = _compilations.stored_report(self.artifacts, compilation)
        with self.store.write() as conn:
            row = self.version_row(conn, name, version)
            _compilations.insert(conn, row.model_id, compilation, report)
        return compilation

    def list_compilations(self, name: str, version: int) -> list[ModelCompilation]:
        """The recorded compilations of a version, oldest first."""
        version = _check_version(version)
        with self.store.read() as conn:
            row = self.version_row(conn, name, version)
            return _compilations.of_version(conn, name, row.model_id, version)

    def compiled(self, name: str, version: int, target: str) -> ModelCompilation | None:
        """The newest compilation of ``version`` to ``target`` that passed parity, or ``None``."""
        target = _compilations.check_target(target)
        for compilation in reversed(self.list_compilations(name, version)):
            if compilation.target == target and compilation.passed:
                return compilation
        return None

    # -- aliases (keel.registry.aliases) -------------------------------------------------

    def get_alias(self, name: str, alias: str) -> int | None:
        """The version ``alias`` points at, or ``None``."""
        with self.store.read() as conn:
            return _aliases.current(conn, self.model_row(conn, name).id, alias)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        _check_alias(alias)
        with self.store.read() as conn:
            model = self.model_row(conn, name)
            version = _aliases.current(conn, model.id, alias)
            if version is None:
                raise _aliases.alias_missing(conn, model, alias)
            return self._to_version(conn, self.version_row(conn, name, version))

    def find_model_version(self, name: str, ref: int | str | None = None) -> ModelVersion:
        """The version a person names: a number or an alias, after the name or joined to it.

        Accepts ``("wine", 3)``, ``("wine", "3")``, ``("wine", "@champion")``,
        ``("wine@champion", None)`` and ``("wine/3", None)``.

        Raises:
            InvalidInput: ``ref`` is neither a version number nor ``@alias``; the message
                says how to write each.
            NotFound: no such model, version or alias (with the closest existing names).
        """
        if ref is None:
            if "@" not in name and "/" not in name:
                raise InvalidInput(
                    f"expected a version of model {name!r}: write {name} 3, {name} @champion "
                    f"or {name}@champion"
                )
            parsed_ref = parse_model_ref(name)
            if parsed_ref.alias is not None:
                return self.get_model_version_by_alias(parsed_ref.name, parsed_ref.alias)
            # "wine/latest" is not a version a person pins: refused below, saying how to write one
            name = parsed_ref.name
            ref = "latest" if parsed_ref.version is None else parsed_ref.version
        if isinstance(ref, str) and not ref.strip().isdigit():
            text = ref.strip()
            if text.startswith("@"):
                return self.get_model_version_by_alias(name, text[1:])
            how = (
                f"; for the alias write {name} @{text} or {name}@{text}" if _is_alias(text) else ""
            )
            raise InvalidInput(
                f"expected a version number or @alias after model {name!r}, got {ref!r}{how}"
            )
        return self.get_model_version(name, _check_version(ref))

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
        conn: Connection | None = None,
    ) -> AliasChange:
        """Point ``alias`` at ``version``, as a compare-and-set.

        Args:
            expected: the version the caller believes the alias holds now
                (``None``: not set). Default: whatever it holds when the call
                starts. If another client moved it meanwhile, nothing changes and
                ``Conflict`` is raised.
            comment: recorded in the alias history.
            conn: an open write transaction (``store.write()``) to move the alias in,
                so the caller's other changes commit or roll back with the move; by
                default the move is a transaction of its own.

        Raises:
            ApprovalRequired: the alias is protected and ``version`` lacks approvals.
            Conflict: the alias moved since ``expected``.
        """
        _check_alias(alias)
        version = _check_version(version)
        with self.store.write(conn) as conn:
            model = self.model_row(conn, name)
            target = self.version_row(conn, name, version)
            _approvals.check_approvals(conn, model, target, alias)
            if isinstance(expected, Unset):
                expected = _aliases.current(conn, model.id, alias)
            return _aliases.move(
                conn, model, alias, version, expected=expected, actor=self._actor, comment=comment
            )

    def delete_alias(
        self,
        name: str,
        alias: str,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
        conn: Connection | None = None,
    ) -> AliasChange:
        """Remove an alias (compare-and-set like :meth:`set_alias`, ``conn`` likewise)."""
        _check_alias(alias)
        with self.store.write(conn) as conn:
            model = self.model_row(conn, name)
            if isinstance(expected, Unset):
                expected = _aliases.current(conn, model.id, alias)
            if expected is None:
                raise _aliases.alias_missing(conn, model, alias)
            return _aliases.remove(
                conn, model, alias, expected=expected, actor=self._actor, comment=comment
            )

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasChange]:
        """Every move of the model's aliases (or of one alias), oldest first."""
        with self.store.read() as conn:
            return _aliases.history(conn, self.model_row(conn, name), alias)

    # -- approvals and protection (keel.registry.approvals) ----------------------------

    def approve(self, name: str, version: int, alias: str, comment: str | None = None) -> Approval:
        """Record the current user's approval of ``version`` for the protected ``alias``.

        Raises:
            InvalidInput: the alias is not protected (nothing to approve).
            PermissionDenied: the user lacks the policy's role, or registered the version.
            Conflict: the user already approved it.
        """
        _check_alias(alias)
        version = _check_version(version)
        with self.store.write() as conn:
            model = self.model_row(conn, name)
            target = self.version_row(conn, name, version)
            return _approvals.approve(conn, model, target, alias, self._actor, comment)

    def approval_count(self, name: str, version: int, alias: str) -> tuple[int, int]:
        """How many approvals of ``version`` count towards moving ``alias``, and how many it needs.

        The count is the one an alias move checks (current holders of the policy's
        role, the registrant's own only if allowed); an unprotected alias needs none.
        """
        _check_alias(alias)
        version = _check_version(version)
        with self.store.read() as conn:
            policy = _approvals.get_policy(conn, alias)
            if policy is None or policy.approvals <= 0:
                return 0, 0
            model = self.model_row(conn, name)
            target = self.version_row(conn, name, version)
            return _approvals.count_approvals(conn, model, target, policy), policy.approvals

    def list_approvals(self, name: str, version: int | None = None) -> list[Approval]:
        """Approvals of the model's versions (or of one version), oldest first."""
        number = None if version is None else _check_version(version)
        with self.store.read() as conn:
            return _approvals.list_approvals(conn, self.model_row(conn, name), number)

    def set_alias_policy(
        self,
        alias: str,
        *,
        approvals: int = 1,
        role: str = "approver",
        allow_registrant: bool = False,
    ) -> AliasPolicy:
        """Protect ``alias`` for every model: moving it needs approvals from ``role``."""
        _check_alias(alias)
        if isinstance(approvals, bool) or not isinstance(approvals, int) or approvals < 1:
            raise InvalidInput(f"approvals must be a positive integer, got {approvals!r}")
        policy = AliasPolicy(alias, approvals, roles.check_role(role), allow_registrant)
        with self.store.write() as conn:
            _approvals.set_policy(conn, self._actor, policy)
        return policy

    def delete_alias_policy(self, alias: str) -> None:
        """Unprotect ``alias``: it moves without approvals again."""
        with self.store.write() as conn:
            _approvals.delete_policy(conn, self._actor, alias)

    def list_alias_policies(self) -> list[AliasPolicy]:
        with self.store.read() as conn:
            return _approvals.list_policies(conn)

    # -- roles (keel.governance.roles) --------------------------------------------------

    def grant_role(self, user: str, role: str) -> None:
        """Give ``user`` a role. Once anyone is an admin, only admins may grant."""
        with self.store.write() as conn:
            roles.grant(conn, self._actor, user, role)

    def revoke_role(self, user: str, role: str) -> None:
        """Take a role from ``user`` (admins only, once anyone is an admin)."""
        with self.store.write() as conn:
            roles.revoke(conn, self._actor, user, role)

    def list_roles(self) -> dict[str, list[str]]:
        """Every user with a role, and their roles."""
        with self.store.read() as conn:
            return roles.list_roles(conn)

    # -- URIs -------------------------------------------------------------------------

    def resolve_model(self, uri: str) -> ResolvedModel:
        """Where ``uri``'s package lives (``runs:/``, ``models:/name/3``, ``models:/name@alias``)."""
        parsed = parse_model_uri(uri)
        if isinstance(parsed, RunURI):
            return ResolvedModel(self.tracking.resolve_run_id(parsed.run_id), parsed.path)
        if parsed.alias is not None:
            mv = self.get_model_version_by_alias(parsed.name, parsed.alias)
        elif parsed.version is None:
            model = self.get_registered_model(parsed.name)
            if model.latest_version == 0:
                raise NotFound(f"model {parsed.name!r} has no versions yet")
            mv = self.get_model_version(parsed.name, model.latest_version)
        else:
            mv = self.get_model_version(parsed.name, parsed.version)
        source = parse_run_uri(mv.source, path=True)
        return ResolvedModel(source.run_id, source.path, mv.manifest_digest, mv.name, mv.version)
