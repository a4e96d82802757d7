"""The alias and approval routes that models and prompts share, built once per collection.

Prompts live on the model registry's records (:mod:`keel.llm.part`), so moving,
removing and tracing an alias, and approving a version for a protected one, are
the same operations with the same permissions under ``/models/{name}`` and
``/prompts/{name}``. :func:`add_alias_routes` adds them to a router for one
collection; only the part that answers them and the words in the docs differ.

===========================================  =======================================
reading an alias, the history, approvals      ``read`` on model NAME
moving or deleting an alias                   ``write`` on alias NAME@ALIAS (a grant
                                              on NAME covers its aliases), plus the
                                              approvals the alias's policy asks for
approving a version                           ``approve`` on model NAME
===========================================  =======================================
"""

# No ``from __future__ import annotations`` here: FastAPI reads the routes' parameter
# types at runtime, and some are built per collection inside add_alias_routes.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from keel.registry.client import UNSET
from keel.server.context import Caller, CallerDep
from keel.transport.wire import to_wire
from keel.validation import MAX_NAME_CHARS

__all__ = ["COMMENT_CHARS", "AliasMove", "NewApproval", "add_alias_routes"]

#: The longest comment an alias move or an approval may carry.
COMMENT_CHARS = 5_000

Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="a version number")]


class AliasMove(BaseModel):
    """Point an alias at a version, as a compare-and-set.

    Leave ``expected`` out to take whatever the alias holds when the move starts;
    send it (``null``: the alias is not set) to refuse the move if it moved since.
    """

    version: int = Field(ge=1, le=2**31 - 1)
    expected: int | None = Field(default=None, ge=1)
    comment: str | None = Field(default=None, max_length=COMMENT_CHARS)


class NewApproval(BaseModel):
    """An approval of a version for a protected alias, by the caller."""

    alias: str = Field(max_length=MAX_NAME_CHARS)
    comment: str | None = Field(default=None, max_length=COMMENT_CHARS)


def add_alias_routes(
    router: APIRouter,
    collection: str,
    noun: str,
    part: Callable[[Caller], Any],
    by_alias: Callable[[Caller, str, str], Any],
) -> None:
    """Add the alias and approval routes under ``/{collection}/{name}`` to ``router``.

    Args:
        router: the collection's router.
        collection: the path segment, ``models`` or ``prompts``.
        noun: what one item is called in the docs (``model``, ``prompt``).
        part: the caller's part that moves aliases and approves (``set_alias``,
            ``delete_alias``, ``alias_history``, ``approve``, ``list_approvals``).
        by_alias: the version an alias points at, from the caller, the name and the alias.
    """
    Name = Annotated[str, Path(max_length=MAX_NAME_CHARS, description=f"a {noun}")]
    Alias = Annotated[str, Path(max_length=MAX_NAME_CHARS, description=f"an alias of the {noun}")]
    base = f"/{collection}/{{name}}"

    def get_version_by_alias(name: Name, alias: Alias, caller: CallerDep) -> Any:
        caller.require("read", "model", name)
        return to_wire(by_alias(caller, name, alias))

    def set_alias(name: Name, alias: Alias, body: AliasMove, caller: CallerDep) -> Any:
        caller.require("write", "alias", f"{name}@{alias}")
        expected = body.expected if "expected" in body.model_fields_set else UNSET
        return to_wire(
            part(caller).set_alias(
                name, alias, body.version, expected=expected, comment=body.comment
            )
        )

    def delete_alias(
        name: Name,
        alias: Alias,
        caller: CallerDep,
        expected: Annotated[
            int | None, Query(ge=1, le=2**31 - 1, description="the version it must hold")
        ] = None,
        comment: Annotated[str | None, Query(max_length=COMMENT_CHARS)] = None,
    ) -> Any:
        caller.require("write", "alias", f"{name}@{alias}")
        return to_wire(
            part(caller).delete_alias(
                name, alias, expected=UNSET if expected is None else expected, comment=comment
            )
        )

    def alias_history(
        name: Name,
        caller: CallerDep,
        alias: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
    ) -> Any:
        caller.require("read", "model", name)
        return to_wire(part(caller).alias_history(name, alias))

    def approve(name: Name, version: Version, body: NewApproval, caller: CallerDep) -> Any:
        caller.require("approve", "model", name)
        return to_wire(part(caller).approve(name, version, body.alias, body.comment))

    def list_approvals(
        name: Name,
        caller: CallerDep,
        version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    ) -> Any:
        caller.require("read", "model", name)
        return to_wire(part(caller).list_approvals(name, version))

    routes: list[tuple[str, str, Callable[..., Any], str, int]] = [
        ("GET", "/aliases/{alias}", get_version_by_alias,
         "The version the alias points at (404 when it is not set).", 200),
        ("PUT", "/aliases/{alias}", set_alias,
         "Move the alias (compare-and-set; a protected alias needs its approvals first).", 200),
        ("DELETE", "/aliases/{alias}", delete_alias,
         "Remove the alias (compare-and-set on ``expected`` when given).", 200),
        ("GET", "/alias-history", alias_history,
         f"Every move of the {noun}'s aliases (or of one), oldest first.", 200),
        ("POST", "/versions/{version}/approvals", approve,
         "Approve a version for a protected alias as the caller (never as its registrant).",
         201),
        ("GET", "/approvals", list_approvals,
         f"Approvals of the {noun}'s versions (or of one), oldest first.", 200),
    ]  # fmt: skip
    for method, path, endpoint, doc, status in routes:
        endpoint.__doc__ = doc
        router.add_api_route(
            base + path,
            endpoint,
            methods=[method],
            status_code=status,
            name=f"{noun}_{endpoint.__name__}",
        )
