"""The RAG index routes: indexes, their versions, aliases and approvals.

An index lives on the model registry's rows and machinery (see
:mod:`keel.llm.rag.part`), and names are shared between models, prompts and
indexes, so its permissions are a model's, on the index's name. A client builds
an index itself (it reads, chunks and embeds, and stores the blobs and the index
document through the blob routes); registering the document is the one write here.

===========================================  =======================================
reading an index, its versions, aliases,      ``read`` on model NAME
approvals and history
registering a version (the index is           ``write`` on model NAME
created on first use)
moving or deleting an alias                   ``write`` on alias NAME@ALIAS (a grant
                                              on NAME covers its aliases), plus the
                                              approvals the alias's policy asks for
approving a version                           ``approve`` on model NAME
===========================================  =======================================
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from keel.errors import InvalidInput, NotFound
from keel.server.context import CallerDep
from keel.server.routes.aliases import add_alias_routes
from keel.transport.wire import to_wire
from keel.validation import MAX_NAME_CHARS

router = APIRouter(tags=["rag"])

_TEXT_CHARS = 100_000

IndexName = Annotated[str, Path(max_length=MAX_NAME_CHARS, description="a RAG index")]

Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="a version number")]


class NewIndexVersion(BaseModel):
    """An index's next version: the digest of its index document, stored already.

    The server reads the document from its artifact store and checks it
    (:func:`keel.llm.rag.documents.check_document`) and that the blobs it names are there.
    """

    digest: str = Field(min_length=64, max_length=64, description="the index document's digest")
    description: str | None = Field(default=None, max_length=_TEXT_CHARS)


@router.get("/rag")
def list_indexes(caller: CallerDep) -> Any:
    """The RAG indexes the caller may read, by name."""
    if "api" not in caller.principal.scopes:
        caller.require("read")  # refused with the scope it lacks
    indexes = caller.client.rag.list()
    return to_wire([i for i in indexes if caller.can("read", "model", i.name)])


@router.get("/rag/{name}")
def get_index(name: IndexName, caller: CallerDep) -> Any:
    """An index, with its latest version number and its aliases."""
    caller.require("read", "model", name)
    return to_wire(caller.client.rag.get_index(name))


@router.post("/rag/{name}/versions", status_code=201)
def register_index_version(name: IndexName, body: NewIndexVersion, caller: CallerDep) -> Any:
    """Register the index document ``digest`` as the index's next version.

    A document whose key a version already has answers that version.
    """
    from keel.artifacts import check_digest

    caller.require("write", "model", name)
    artifacts = caller.client.transport.artifacts
    try:
        document = artifacts.get_json(check_digest(body.digest))
    except NotFound:
        raise NotFound(
            f"the server's artifact store does not hold index document {body.digest}; "
            "upload it first (the client's build does)"
        ) from None
    except ValueError:
        raise InvalidInput(f"object {body.digest} is not JSON, so not an index document") from None
    return to_wire(caller.client.rag.register(name, document, description=body.description))


@router.get("/rag/{name}/versions")
def list_index_versions(name: IndexName, caller: CallerDep) -> Any:
    """Every version of the index, oldest first, each with its index document."""
    caller.require("read", "model", name)
    return to_wire(caller.client.rag.versions(name))


@router.get("/rag/{name}/versions/{version}")
def get_index_version(name: IndexName, version: Version, caller: CallerDep) -> Any:
    """One version, with its index document."""
    caller.require("read", "model", name)
    return to_wire(caller.client.rag.get(name, version))


add_alias_routes(
    router,
    "rag",
    "index",
    part=lambda caller: caller.client.rag,
    by_alias=lambda caller, name, alias: caller.client.rag.get_by_alias(name, alias),
)
