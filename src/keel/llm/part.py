"""The prompt registry part of :class:`keel.Client`: prompts on the model registry's machinery.

A prompt is a row of ``registered_models`` whose ``kind`` is ``'prompt'``; its
versions are ``model_versions`` rows whose content is a canonical JSON document
in the artifact store, named by the version's ``manifest_digest`` and verified
on every read. So a prompt's versions are numbered by the same ``UPDATE …
RETURNING`` as a model's, and its aliases move, keep history, obey alias
policies and approvals and write audit entries through the very code that
moves a model's (:mod:`keel.registry.aliases`, :mod:`keel.registry.approvals`):
there is one alias system. Names are shared: a name is a model or a prompt,
never both, and ``models:/`` never resolves a prompt (nor ``prompts:/`` a model).
"""

from __future__ import annotations

import builtins
from typing import Any, ClassVar

from sqlalchemy import Connection, select, update

import keel.registry.aliases as _aliases
from keel.errors import Conflict, IntegrityError, NotFound
from keel.governance import audit
from keel.llm.entities import (
    DOCUMENT_FORMAT,
    PromptVersion,
    RegisteredPrompt,
    diff_versions,
    prompt_document,
)
from keel.registry.client import RegistryClient
from keel.registry.kinds import AliasesOnRows
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms
from keel.transport import Transport
from keel.uris import parse_prompt_uri
from keel.validation import check_alias, check_name, check_version

__all__ = ["Prompts", "prompts_part"]

#: What a prompt version's ``source`` says: its content is the document ``manifest_digest`` names.
PROMPT_SOURCE = "prompt-document"


class PromptRows(RegistryClient):
    """The registry's records and alias machinery, on the rows whose kind is 'prompt'.

    :class:`Prompts` reads and writes through it; automation uses it directly where an
    alias must move inside a transaction it already holds (a promotion).
    """

    kind: ClassVar[str] = "prompt"


class Prompts(AliasesOnRows):
    """Versioned prompts: register, load, alias, approve and compare.

    Args:
        transport: how to reach the stores (the client's transport).

    Example:
        >>> client = keel.Client()
        >>> client.prompts.register("support", template=[...], model="gpt-4o-mini")
        >>> client.prompts.set_alias("support", "production", 1)
        >>> client.prompts.load("prompts:/support@production").render(question="…")
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._rows = PromptRows(transport=transport)

    @property
    def user(self) -> str:
        return self.transport.user

    # -- versions ------------------------------------------------------------------------

    def register(
        self,
        name: str,
        *,
        template: str | builtins.list[dict[str, str]],
        model: str,
        parameters: dict[str, Any] | None = None,
        tools: builtins.list[dict[str, Any]] | None = None,
        response_schema: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> PromptVersion:
        """Register a new, immutable version of prompt ``name`` (created on first use).

        Registering the document the prompt's latest version holds again returns that
        version, so re-running a deploy script does not bump the number.

        Raises:
            InvalidInput: a field has the wrong shape (the message says which).
            Conflict: ``name`` is a registered model, or the latest version holds this
                document with another description.
        """
        check_name(name, "prompt name")
        document = prompt_document(template, model, parameters, tools, response_schema)
        blob = self.transport.artifacts.put_json(document)
        actor = self.user
        with self.transport.store.write() as conn:
            conn.execute(
                insert_on_conflict(conn, s.registered_models)
                .values(name=name, kind="prompt", created_at=now_ms(), created_by=actor)
                .on_conflict_do_nothing(index_elements=[s.registered_models.c.name])
            )
            # the row lock makes a concurrent registration of the same document wait, then
            # find this one's version instead of adding a twin (as the model registry does)
            row = conn.execute(
                select(s.registered_models)
                .where(s.registered_models.c.name == name)
                .with_for_update()
            ).one()
            if row.kind != "prompt":
                raise Conflict(
                    f"{name!r} is a registered {row.kind}, not a prompt; a name is either a "
                    "model or a prompt, so register the prompt under another name"
                )
            if row.last_version:
                latest = self._rows.version_row(conn, name, row.last_version)
                if latest.manifest_digest == blob.digest:
                    if description is not None and description != latest.description:
                        raise Conflict(
                            f"prompt {name!r} version {latest.version} already holds this "
                            "document with another description; register a changed prompt, "
                            "or keep the description"
                        )
                    return self._to_version(conn, latest, document)
            model_id, version = conn.execute(
                update(s.registered_models)
                .where(s.registered_models.c.id == row.id)
                .values(last_version=s.registered_models.c.last_version + 1)
                .returning(s.registered_models.c.id, s.registered_models.c.last_version)
            ).one()
            created = now_ms()
            conn.execute(
                s.model_versions.insert().values(
                    model_id=model_id,
                    version=version,
                    source=PROMPT_SOURCE,
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
                action="prompt_version.create",
                object_type="prompt_version",
                object_id=f"{name}/{version}",
                after={"digest": blob.digest, "model": document["model"]},
            )
        return self._from_document(
            name, version, document, blob.digest, description, created, actor
        )

    def _from_document(
        self,
        name: str,
        version: int,
        document: dict[str, Any],
        digest: str,
        description: str | None,
        created_at: int,
        created_by: str,
        aliases: builtins.list[str] | None = None,
    ) -> PromptVersion:
        return PromptVersion(
            name,
            version,
            document["template"],
            document["model"],
            document["parameters"],
            document["tools"],
            document["response_schema"],
            digest,
            description,
            created_at,
            created_by,
            aliases or [],
        )

    def _to_version(
        self, conn: Connection, row: Any, document: dict[str, Any] | None = None
    ) -> PromptVersion:
        if document is None:
            document = self._read_document(row.name, row.version, row.manifest_digest)
        aliases = _aliases.version_aliases(conn, row.model_id, row.version)
        return self._from_document(
            row.name,
            row.version,
            document,
            row.manifest_digest,
            row.description,
            row.created_at,
            row.created_by,
            aliases,
        )

    def _read_document(self, name: str, version: int, digest: str) -> dict[str, Any]:
        """The stored document of a version; the artifact store verifies its digest."""
        try:
            document = self.transport.artifacts.get_json(digest)
        except NotFound:
            raise IntegrityError(
                f"prompt {name!r} version {version} names document {digest}, which the "
                "artifact store does not hold; restore the artifact store from a backup"
            ) from None
        if not isinstance(document, dict) or document.get("format") != DOCUMENT_FORMAT:
            raise IntegrityError(
                f"prompt {name!r} version {version}'s document is not a {DOCUMENT_FORMAT} document"
            )
        return document

    def get(self, name: str, version: int) -> PromptVersion:
        """One version of a prompt.

        Raises:
            NotFound: no such prompt or version (with the closest names).
        """
        number = check_version(version, "a positive integer or @alias")
        with self.transport.store.read() as conn:
            return self._to_version(conn, self._rows.version_row(conn, name, number))

    def get_by_alias(self, name: str, alias: str) -> PromptVersion:
        """The version ``alias`` of prompt ``name`` points at.

        Raises:
            NotFound: no such prompt, or the alias is not set.
        """
        check_alias(alias)
        with self.transport.store.read() as conn:
            prompt = self._rows.model_row(conn, name)
            number = _aliases.current(conn, prompt.id, alias)
            if number is None:
                raise _aliases.alias_missing(conn, prompt, alias)
            return self._to_version(conn, self._rows.version_row(conn, name, number))

    def load(self, uri: str) -> PromptVersion:
        """The version a ``prompts:/NAME/VERSION`` or ``prompts:/NAME@ALIAS`` URI names.

        Raises:
            InvalidInput: not a prompt URI.
            NotFound: no such prompt, version or alias.
        """
        parsed = parse_prompt_uri(uri)
        if parsed.alias is not None:
            return self.get_by_alias(parsed.name, parsed.alias)
        assert parsed.version is not None  # the parser gives one or the other
        return self.get(parsed.name, parsed.version)

    def versions(self, name: str) -> builtins.list[PromptVersion]:
        """Every version of prompt ``name``, oldest first."""
        with self.transport.store.read() as conn:
            prompt = self._rows.model_row(conn, name)
            rows = conn.execute(
                select(s.model_versions, s.registered_models.c.name)
                .join(s.registered_models)
                .where(s.model_versions.c.model_id == prompt.id)
                .order_by(s.model_versions.c.version)
            ).all()
            return [self._to_version(conn, row) for row in rows]

    def get_prompt(self, name: str) -> RegisteredPrompt:
        """A prompt's latest version number and aliases."""
        model = self._rows.get_registered_model(name)
        return RegisteredPrompt(
            model.name,
            model.description,
            model.latest_version,
            model.created_at,
            model.created_by,
            model.aliases,
        )

    def list(self) -> builtins.list[RegisteredPrompt]:
        """Every prompt, by name (registered models are not listed)."""
        return [
            RegisteredPrompt(
                m.name, m.description, m.latest_version, m.created_at, m.created_by, m.aliases
            )
            for m in self._rows.list_registered_models()
        ]

    def diff(self, name: str, a: int | str, b: int | str) -> str:
        """A unified diff of versions ``a`` and ``b``: templates, then model and parameters.

        Each of ``a`` and ``b`` is a version number or ``@alias``.
        """
        return diff_versions(self._find(name, a), self._find(name, b))

    def _find(self, name: str, ref: int | str) -> PromptVersion:
        if isinstance(ref, str) and ref.startswith("@"):
            return self.get_by_alias(name, ref[1:])
        return self.get(name, check_version(ref, "a positive integer or @alias"))


def prompts_part(transport: Transport) -> Prompts:
    """The prompts part for ``transport``: SQL locally, REST calls through ``keel server``."""
    from keel.transport.http import HttpTransport

    if isinstance(transport, HttpTransport):
        from keel.llm.remote import RemotePrompts

        return RemotePrompts(transport)
    return Prompts(transport)
