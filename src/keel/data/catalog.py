"""Dataset versions in the metadata store: numbering, lookup by reference, run inputs.

Versions are numbered by the store exactly as model versions are: the
registering transaction runs ``UPDATE datasets SET last_version =
last_version + 1 … RETURNING``, which takes the dataset's row lock, so
concurrent adds get consecutive numbers with no gap and no duplicate.
Adding content identical to the latest version returns that version
instead of numbering a copy. Each new version appends an audit entry in
the same transaction.

References: ``name@3``, ``name`` or ``name@latest`` (the newest version), or
a 64-hex manifest digest, each optionally prefixed with ``datasets:/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update

from keel.errors import InvalidInput, NotFound
from keel.governance import audit
from keel.store import Store
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms
from keel.suggest import hint
from keel.uris import DatasetURI, parse_dataset_ref
from keel.validation import check_name

__all__ = [
    "DATASET_KINDS",
    "DatasetVersion",
    "check_dataset_name",
    "get_version",
    "list_datasets",
    "list_versions",
    "record_input",
    "register_version",
    "run_inputs",
]

DATASET_KINDS = ("file", "folder", "table")


def check_dataset_name(name: Any) -> str:
    return check_name(name, "dataset name")


@dataclass(frozen=True)
class DatasetVersion:
    """One immutable version of a dataset.

    Attributes:
        name: the dataset's name.
        version: the number the store assigned (1, 2, …).
        digest: BLAKE3 of the version's folder manifest; it names the bytes.
        kind: ``file`` (one file was added), ``folder`` or ``table`` (``log_dataset``).
        files: how many files the version holds.
        bytes: their total size.
        source: the path it was added from, if any.
        created_at: milliseconds since the epoch.
        created_by: who added it.
        run_id: the run that logged it, if one was active.
        schema: tables only: ``[{"name", "type"}]``.
        num_rows: tables only.
        profile_digest: tables only: the per-column statistics object in the content store.
        packs_digest: the pack index of files stored in packs (``keel.data.packs``), if any.
    """

    name: str
    version: int
    digest: str
    kind: str
    files: int
    bytes: int
    source: str | None
    created_at: int
    created_by: str
    run_id: str | None = None
    schema: list[dict[str, Any]] | None = None
    num_rows: int | None = None
    profile_digest: str | None = None
    packs_digest: str | None = None
    id: int = 0

    @property
    def uri(self) -> str:
        return str(DatasetURI(self.name, self.version))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "digest": self.digest,
            "kind": self.kind,
            "files": self.files,
            "bytes": self.bytes,
            "source": self.source,
            "created_at": datetime.fromtimestamp(self.created_at / 1000, UTC).isoformat(),
            "created_by": self.created_by,
            "run_id": self.run_id,
            "schema": self.schema,
            "num_rows": self.num_rows,
            "profile_digest": self.profile_digest,
            "packs_digest": self.packs_digest,
        }


_COLUMNS = (
    s.datasets.c.name,
    s.dataset_versions.c.version,
    s.dataset_versions.c.digest,
    s.dataset_versions.c.kind,
    s.dataset_versions.c.files,
    s.dataset_versions.c.bytes,
    s.dataset_versions.c.source,
    s.dataset_versions.c.created_at,
    s.dataset_versions.c.created_by,
    s.dataset_versions.c.run_id,
    s.dataset_versions.c.table_schema,
    s.dataset_versions.c.num_rows,
    s.dataset_versions.c.profile_digest,
    s.dataset_versions.c.packs_digest,
    s.dataset_versions.c.id,
)


def _version(row: Any) -> DatasetVersion:
    values = list(row)
    values[10] = None if values[10] is None else json.loads(values[10])
    return DatasetVersion(*values)


def _select() -> Any:
    return select(*_COLUMNS).select_from(s.dataset_versions.join(s.datasets))


def register_version(
    store: Store,
    *,
    name: str,
    digest: str,
    kind: str,
    files: int,
    nbytes: int,
    actor: str,
    source: str | None = None,
    schema: list[dict[str, Any]] | None = None,
    num_rows: int | None = None,
    profile_digest: str | None = None,
    packs_digest: str | None = None,
    run_id: str | None = None,
    input_context: str | None = None,
) -> tuple[DatasetVersion, bool]:
    """Record ``digest`` as the next version of ``name`` unless it is the latest already.

    With ``run_id`` and ``input_context``, the version is also recorded as an
    input of that run, in the same transaction.

    Returns:
        The version, and whether a new one was numbered.
    """
    check_dataset_name(name)
    if kind not in DATASET_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(DATASET_KINDS)}, got {kind!r}")
    with store.write() as conn:
        conn.execute(
            insert_on_conflict(conn, s.datasets)
            .values(name=name, created_at=now_ms(), created_by=actor)
            .on_conflict_do_nothing(index_elements=[s.datasets.c.name])
        )
        # The row lock (SQLite: the write lock BEGIN IMMEDIATE took) serializes adds of a name.
        dataset_id, last = conn.execute(
            select(s.datasets.c.id, s.datasets.c.last_version)
            .where(s.datasets.c.name == name)
            .with_for_update()
        ).one()
        latest = conn.execute(
            _select().where(s.datasets.c.id == dataset_id, s.dataset_versions.c.version == last)
        ).first()
        if latest is not None and latest.digest == digest and latest.kind == kind:
            found = _version(latest)
            if run_id and input_context:
                _insert_input(conn, run_id, found.id, input_context)
            return found, False
        version = conn.execute(
            update(s.datasets)
            .where(s.datasets.c.id == dataset_id)
            .values(last_version=s.datasets.c.last_version + 1)
            .returning(s.datasets.c.last_version)
        ).scalar_one()
        created = now_ms()
        version_id = conn.execute(
            s.dataset_versions.insert()
            .values(
                dataset_id=dataset_id,
                version=version,
                digest=digest,
                kind=kind,
                files=files,
                bytes=nbytes,
                source=source,
                table_schema=None if schema is None else json.dumps(schema),
                num_rows=num_rows,
                profile_digest=profile_digest,
                packs_digest=packs_digest,
                run_id=run_id,
                created_at=created,
                created_by=actor,
            )
            .returning(s.dataset_versions.c.id)
        ).scalar_one()
        audit.record(
            conn,
            actor=actor,
            action="dataset_version.create",
            object_type="dataset_version",
            object_id=f"{name}@{version}",
            after={"digest": digest, "kind": kind, "files": files, "bytes": nbytes},
        )
        if run_id and input_context:
            _insert_input(conn, run_id, version_id, input_context)
    return (
        DatasetVersion(
            name,
            version,
            digest,
            kind,
            files,
            nbytes,
            source,
            created,
            actor,
            run_id,
            schema,
            num_rows,
            profile_digest,
            packs_digest,
            version_id,
        ),
        True,
    )


def get_version(store: Store, ref: str | DatasetURI) -> DatasetVersion:
    """The version a reference names (for a digest: its newest version under any name).

    Raises:
        NotFound: no such dataset, version or digest.
    """
    parsed = ref if isinstance(ref, DatasetURI) else parse_dataset_ref(ref)
    with store.read() as conn:
        if parsed.digest is not None:
            row = conn.execute(
                _select()
                .where(s.dataset_versions.c.digest == parsed.digest)
                .order_by(s.dataset_versions.c.id.desc())
                .limit(1)
            ).first()
            if row is None:
                raise NotFound(
                    f"no dataset version has digest {parsed.digest}; see `keel data list`"
                )
            return _version(row)
        query = _select().where(s.datasets.c.name == parsed.name)
        if parsed.version is None:
            query = query.where(s.dataset_versions.c.version == s.datasets.c.last_version)
        else:
            query = query.where(s.dataset_versions.c.version == parsed.version)
        row = conn.execute(query).first()
        if row is None:
            exists = conn.execute(
                select(s.datasets.c.last_version).where(s.datasets.c.name == parsed.name)
            ).first()
            if exists is None:
                raise _no_dataset(conn, str(parsed.name))
            raise NotFound(
                f"dataset {parsed.name!r} has no version {parsed.version} (latest is "
                f"{exists[0]}); see `keel data list {parsed.name}`"
            )
        return _version(row)


def list_versions(store: Store, name: str) -> list[DatasetVersion]:
    """Every version of ``name``, oldest first."""
    with store.read() as conn:
        rows = conn.execute(
            _select().where(s.datasets.c.name == name).order_by(s.dataset_versions.c.version)
        ).all()
        if not rows and (
            conn.execute(select(s.datasets.c.id).where(s.datasets.c.name == name)).first() is None
        ):
            raise _no_dataset(conn, name)
    return [_version(r) for r in rows]


def _no_dataset(conn: Connection, name: str) -> NotFound:
    """``NotFound`` for a dataset name, with the closest existing names."""
    names = conn.execute(select(s.datasets.c.name)).scalars()
    create = (
        f"add one with `keel data add PATH --name {name}` or keel.log_dataset(df, name={name!r})"
    )
    return NotFound(
        f"no dataset named {name!r}; " + hint(name, names, kind="datasets", create=create)
    )


def list_datasets(store: Store) -> list[DatasetVersion]:
    """The latest version of every dataset, by name."""
    with store.read() as conn:
        rows = conn.execute(
            _select()
            .where(s.dataset_versions.c.version == s.datasets.c.last_version)
            .order_by(s.datasets.c.name)
        ).all()
    return [_version(r) for r in rows]


def _insert_input(conn: Connection, run_id: str, version_id: int, context: str) -> None:
    conn.execute(
        insert_on_conflict(conn, s.run_inputs)
        .values(run_id=run_id, dataset_version_id=version_id, context=context, created_at=now_ms())
        .on_conflict_do_nothing(
            index_elements=[s.run_inputs.c.run_id, s.run_inputs.c.dataset_version_id]
        )
    )


def record_input(store: Store, run_id: str, version: DatasetVersion, context: str) -> None:
    """Record that run ``run_id`` read ``version`` (idempotent)."""
    with store.write() as conn:
        _insert_input(conn, run_id, version.id, context)


def run_inputs(store: Store, run_id: str) -> list[DatasetVersion]:
    """The dataset versions a run read or logged, by name and version."""
    with store.read() as conn:
        rows = conn.execute(
            _select()
            .join(s.run_inputs, s.run_inputs.c.dataset_version_id == s.dataset_versions.c.id)
            .where(s.run_inputs.c.run_id == run_id)
            .order_by(s.datasets.c.name, s.dataset_versions.c.version)
        ).all()
    return [_version(r) for r in rows]
