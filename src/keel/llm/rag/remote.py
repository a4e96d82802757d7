"""The RAG part over ``keel server``: the registry calls as REST, the work on this machine.

A build reads the source, chunks and embeds here, and stores its blobs and index
document through the server's blob routes; only registering the document is a
request to :mod:`keel.server.routes.rag`, where the server checks the caller's
permissions, reads the document from its own store, checks it and registers it.
A loaded index's table is written once into ``<home>/cache/rag/`` from the two
blobs fetched by digest (the client cannot reach the server's artifact folder),
and queried here; queries are not traced, since the trace log is the server's.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from keel.errors import InvalidInput, NotFound
from keel.llm.rag.documents import IndexVersion, RegisteredIndex, check_document
from keel.llm.rag.index import Tracer
from keel.llm.rag.part import RagIndexes
from keel.registry.client import UNSET, Unset
from keel.registry.entities import AliasChange, Approval
from keel.registry.remote import AliasCalls
from keel.transport.http import HttpTransport
from keel.validation import check_alias, check_name

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["RemoteRagIndexes"]


def _seg(text: Any) -> str:
    return quote(str(text), safe="")


class RemoteRagIndexes(RagIndexes):
    """Versioned RAG indexes through ``keel server``."""

    transport: HttpTransport

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        assert isinstance(client.transport, HttpTransport)
        self._aliases = AliasCalls(client.transport, "RAG index", self._index)

    def _index(self, name: str) -> str:
        # a name that is not one (``a/b``) would change the route: refuse it as locally
        try:
            check_name(name, "index name")
        except InvalidInput:
            raise NotFound(f"no RAG index named {name!r}") from None
        return f"/rag/{_seg(name)}"

    def register(
        self, name: str, document: dict[str, Any], *, description: str | None = None
    ) -> IndexVersion:
        check_name(name, "index name")
        check_document(document)  # here too, so a bad document says the same in both modes
        blob = self.transport.artifacts.put_json(document)
        body = {"digest": blob.digest, "description": description}
        return self.transport.call("POST", f"{self._index(name)}/versions", IndexVersion, json=body)

    def find_key(self, name: str, key: str) -> IndexVersion | None:
        check_name(name, "index name")
        try:
            versions = self.versions(name)
        except NotFound:
            return None
        return next((v for v in versions if v.key == key), None)

    def get(self, name: str, version: int) -> IndexVersion:
        path = f"{self._index(name)}/versions/{_seg(version)}"
        return self.transport.call("GET", path, IndexVersion)

    def get_by_alias(self, name: str, alias: str) -> IndexVersion:
        check_alias(alias)
        path = f"{self._index(name)}/aliases/{_seg(alias)}"
        return self.transport.call("GET", path, IndexVersion)

    def versions(self, name: str) -> builtins.list[IndexVersion]:
        path = f"{self._index(name)}/versions"
        return self.transport.call("GET", path, builtins.list[IndexVersion])

    def get_index(self, name: str) -> RegisteredIndex:
        return self.transport.call("GET", self._index(name), RegisteredIndex)

    def list(self) -> builtins.list[RegisteredIndex]:
        return self.transport.call("GET", "/rag", builtins.list[RegisteredIndex])

    def _tracer(self, backend: str) -> Tracer | None:
        return None  # the trace log is the server's artifact root, out of this client's reach

    def get_alias(self, name: str, alias: str) -> int | None:
        return self.get_index(name).aliases.get(alias)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
    ) -> AliasChange:
        return self._aliases.set_alias(name, alias, version, expected, comment)

    def delete_alias(
        self,
        name: str,
        alias: str,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
    ) -> AliasChange:
        return self._aliases.delete_alias(name, alias, expected, comment)

    def alias_history(self, name: str, alias: str | None = None) -> builtins.list[AliasChange]:
        return self._aliases.alias_history(name, alias)

    def approve(self, name: str, version: int, alias: str, comment: str | None = None) -> Approval:
        return self._aliases.approve(name, version, alias, comment)

    def list_approvals(self, name: str, version: int | None = None) -> builtins.list[Approval]:
        return self._aliases.list_approvals(name, version)
