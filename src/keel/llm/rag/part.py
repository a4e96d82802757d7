"""The RAG index part of :class:`keel.Client`: indexes on the model registry's machinery.

An index is a row of ``registered_models`` whose ``kind`` is ``'rag-index'``;
its versions are ``model_versions`` rows whose content is an index document in
the artifact store, named by the version's ``manifest_digest`` and verified on
every read, and whose ``source`` is ``rag-index:<key>``. So an index's versions
are numbered by the same ``UPDATE … RETURNING`` as a model's, and its aliases
(``kb@production``) move by compare-and-set, keep history, obey alias policies and
approvals and write audit entries through the code that moves a model's
(:mod:`keel.registry.aliases`, :mod:`keel.registry.approvals`). Names are shared
with models and prompts: a name is one of them, never two.

Registering a document whose key a version of the index already has returns
that version: the row lock taken before the lookup makes a concurrent build of
the same key wait, then find the first one's version.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Connection, select, update

import keel.registry.aliases as _aliases
from keel.errors import Conflict, NotFound
from keel.governance import audit
from keel.llm.rag.backends import get_backend
from keel.llm.rag.build import BuildResult, Progress, build_index
from keel.llm.rag.documents import (
    KIND,
    IndexVersion,
    RegisteredIndex,
    check_document,
    read_document,
)
from keel.llm.rag.index import (
    Hit,
    RagIndex,
    Tracer,
    log_tracer,
    mirror_location,
    table_location,
)
from keel.registry.client import RegistryClient
from keel.registry.kinds import AliasesOnRows
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms
from keel.uris import parse_rag_uri
from keel.validation import check_alias, check_name, check_version

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["RagIndexes", "RagRows", "rag_part"]


class RagRows(RegistryClient):
    """The registry's records and alias machinery, on the rows whose kind is 'rag-index'."""

    kind: ClassVar[str] = KIND


def _source(key: str) -> str:
    return f"{KIND}:{key}"


class RagIndexes(AliasesOnRows):
    """Versioned RAG indexes: build, load and query, alias, approve.

    Args:
        client: the client whose transport holds the indexes and whose data part
            reads their sources.

    Example:
        >>> client = keel.Client()
        >>> built = client.rag.build("kb", source="datasets:/docs@3",
        ...                          chunker="tokens:200,overlap:20", embedder="local-minilm")
        >>> client.rag.set_alias("kb", "production", built.version.version)
        >>> client.rag.load("rag:/kb@production").query("How do I roll back?", k=5)
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport = client.transport
        self._rows = RagRows(transport=client.transport)

    @property
    def user(self) -> str:
        return self.transport.user

    # -- building and registering ----------------------------------------------------------

    def build(
        self,
        name: str,
        *,
        source: str,
        chunker: str,
        embedder: str,
        backend: str | None = None,
        progress: Progress | None = None,
        description: str | None = None,
    ) -> BuildResult:
        """Build (or find) an index version; see :func:`keel.llm.rag.build.build_index`."""
        return build_index(
            self.client,
            name,
            source=source,
            chunker=chunker,
            embedder=embedder,
            backend=backend,
            progress=progress,
            description=description,
        )

    def register(
        self, name: str, document: dict[str, Any], *, description: str | None = None
    ) -> IndexVersion:
        """Register an index document (its blobs stored already) as ``name``'s next version.

        A document whose key a version of ``name`` has already returns that version.

        Raises:
            InvalidInput: not an index document, or its key does not match its fields.
            NotFound: the artifact store lacks a blob the document names.
            Conflict: ``name`` is a registered model or prompt.
        """
        check_name(name, "index name")
        check_document(document)
        artifacts = self.transport.artifacts
        for part in ("chunks", "vectors"):
            if not artifacts.exists(document[part]["digest"]):
                raise NotFound(
                    f"the artifact store {artifacts.url} does not hold the {part} blob "
                    f"{document[part]['digest']} the index document names; build the index "
                    "again (keel rag build stores it)"
                )
        blob = artifacts.put_json(document)
        key = document["key"]
        actor = self.user
        with self.transport.store.write() as conn:
            conn.execute(
                insert_on_conflict(conn, s.registered_models)
                .values(name=name, kind=KIND, created_at=now_ms(), created_by=actor)
                .on_conflict_do_nothing(index_elements=[s.registered_models.c.name])
            )
            row = conn.execute(
                select(s.registered_models)
                .where(s.registered_models.c.name == name)
                .with_for_update()
            ).one()
            if row.kind != KIND:
                raise Conflict(
                    f"{name!r} is a registered {row.kind}, not a RAG index; a name is one kind "
                    "only, so build the index under another name"
                )
            twin = self._key_row(conn, row.id, key)
            if twin is not None:
                return self._to_version(conn, twin)
            model_id, number = conn.execute(
                update(s.registered_models)
                .where(s.registered_models.c.id == row.id)
                .values(last_version=s.registered_models.c.last_version + 1)
                .returning(s.registered_models.c.id, s.registered_models.c.last_version)
            ).one()
            created = now_ms()
            conn.execute(
                s.model_versions.insert().values(
                    model_id=model_id,
                    version=number,
                    source=_source(key),
                    run_id=None,
                    manifest_digest=blob.digest,
                    description=description,
                    created_at=created,
                    created_by=actor,
                )
            )
            audit.record(
                conn,
                actor=actor,
                action="rag_index_version.create",
                object_type="rag_index_version",
                object_id=f"{name}/{number}",
                after={
                    "digest": blob.digest,
                    "key": key,
                    "source": document["source"],
                    "embedder": document["embedder"]["name"],
                },
            )
        return IndexVersion(name, number, blob.digest, document, description, created, actor, [])

    def _key_row(self, conn: Connection, model_id: int, key: str) -> Any:
        return conn.execute(
            select(s.model_versions, s.registered_models.c.name)
            .join(s.registered_models)
            .where(
                s.model_versions.c.model_id == model_id,
                s.model_versions.c.source == _source(key),
            )
            .order_by(s.model_versions.c.version)
            .limit(1)
        ).first()

    def find_key(self, name: str, key: str) -> IndexVersion | None:
        """The version of index ``name`` whose key is ``key``, or ``None`` (also for no index)."""
        check_name(name, "index name")
        with self.transport.store.read() as conn:
            model_id = conn.execute(
                select(s.registered_models.c.id).where(
                    s.registered_models.c.name == name, s.registered_models.c.kind == KIND
                )
            ).scalar()
            if model_id is None:
                return None
            row = self._key_row(conn, model_id, key)
            return None if row is None else self._to_version(conn, row)

    # -- reading ---------------------------------------------------------------------------

    def _to_version(self, conn: Connection, row: Any) -> IndexVersion:
        where = f"RAG index {row.name!r} version {row.version}"
        document = read_document(self.transport.artifacts, row.manifest_digest, where)
        return IndexVersion(
            row.name,
            row.version,
            row.manifest_digest,
            document,
            row.description,
            row.created_at,
            row.created_by,
            _aliases.version_aliases(conn, row.model_id, row.version),
        )

    def get(self, name: str, version: int) -> IndexVersion:
        """One version of an index.

        Raises:
            NotFound: no such index or version (with the closest names).
        """
        number = check_version(version)
        with self.transport.store.read() as conn:
            return self._to_version(conn, self._rows.version_row(conn, name, number))

    def get_by_alias(self, name: str, alias: str) -> IndexVersion:
        """The version ``alias`` of index ``name`` points at.

        Raises:
            NotFound: no such index, or the alias is not set.
        """
        check_alias(alias)
        with self.transport.store.read() as conn:
            index = self._rows.model_row(conn, name)
            number = _aliases.current(conn, index.id, alias)
            if number is None:
                raise _aliases.alias_missing(conn, index, alias)
            return self._to_version(conn, self._rows.version_row(conn, name, number))

    def resolve(self, uri: str) -> IndexVersion:
        """The version ``rag:/NAME/VERSION``, ``rag:/NAME@ALIAS`` or ``NAME@ALIAS`` names."""
        parsed = parse_rag_uri(uri)
        if parsed.alias is not None:
            return self.get_by_alias(parsed.name, parsed.alias)
        assert parsed.version is not None  # the parser gives one or the other
        return self.get(parsed.name, parsed.version)

    def versions(self, name: str) -> builtins.list[IndexVersion]:
        """Every version of index ``name``, oldest first."""
        with self.transport.store.read() as conn:
            index = self._rows.model_row(conn, name)
            rows = conn.execute(
                select(s.model_versions, s.registered_models.c.name)
                .join(s.registered_models)
                .where(s.model_versions.c.model_id == index.id)
                .order_by(s.model_versions.c.version)
            ).all()
            return [self._to_version(conn, row) for row in rows]

    def get_index(self, name: str) -> RegisteredIndex:
        """An index's latest version number and aliases."""
        m = self._rows.get_registered_model(name)
        return RegisteredIndex(
            m.name, m.description, m.latest_version, m.created_at, m.created_by, m.aliases
        )

    def list(self) -> builtins.list[RegisteredIndex]:
        """Every RAG index, by name."""
        return [
            RegisteredIndex(
                m.name, m.description, m.latest_version, m.created_at, m.created_by, m.aliases
            )
            for m in self._rows.list_registered_models()
        ]

    # -- loading and querying ----------------------------------------------------------------

    def _tracer(self, backend: str) -> Tracer | None:
        return log_tracer(self.transport.settings, self.user, backend)

    def load(self, uri: str, *, backend: str | None = None) -> RagIndex:
        """The index version ``uri`` names, ready to query.

        Args:
            uri: ``rag:/NAME@ALIAS``, ``rag:/NAME/VERSION`` or ``NAME@ALIAS``.
            backend: the backend to query (default ``lance``); its table is written on
                the first query if the build did not write it.

        Raises:
            InvalidInput: not a RAG index URI, or an unknown backend.
            NotFound: no such index, version or alias.
        """
        parsed = parse_rag_uri(uri)
        store = get_backend(backend)
        version = self.resolve(uri)
        location, options = table_location(self.transport, store, version.key)
        return RagIndex(
            version,
            backend=store,
            location=location,
            options=options,
            artifacts=self.transport.artifacts,
            route="version" if parsed.alias is None else f"@{parsed.alias}",
            tracer=self._tracer(store.name),
            mirror=mirror_location(self.transport, store, version.key),
        )

    def query(self, uri: str, text: str, k: int = 10) -> builtins.list[Hit]:
        """Load ``uri`` and query it once (load it yourself to query it many times)."""
        return self.load(uri).query(text, k)


def rag_part(client: Client) -> RagIndexes:
    """The RAG part of ``client``: SQL locally, REST calls through ``keel server``."""
    from keel.transport.http import HttpTransport

    if isinstance(client.transport, HttpTransport):
        from keel.llm.rag.remote import RemoteRagIndexes

        return RemoteRagIndexes(client)
    return RagIndexes(client)
