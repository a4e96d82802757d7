"""Aliases: movable, named pointers at a model's versions, with their history.

An alias moves by compare-and-set: ``UPDATE … WHERE version = <the version
the caller saw>`` (or an ``INSERT … ON CONFLICT DO NOTHING`` when the caller
saw none). A caller that lost a race changes nothing and gets
:class:`~keel.errors.Conflict`, so there is never a second champion and never
a silent overwrite. Every move appends to the alias's history and to the
audit chain in the same transaction.

The functions here work in the caller's transaction (a ``Connection`` from
``Store.write()``); whether a protected alias may move at all is
:mod:`keel.registry.approvals`' question, asked before :func:`move`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, select, update

from keel.errors import Conflict, NotFound
from keel.governance import audit
from keel.registry.entities import AliasChange
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms
from keel.suggest import hint

__all__ = [
    "alias_missing",
    "all_aliases",
    "current",
    "history",
    "kind_words",
    "model_aliases",
    "move",
    "remove",
    "version_aliases",
]


def current(conn: Connection, model_id: int, alias: str) -> int | None:
    """The version ``alias`` of the model points at, or ``None``."""
    return conn.execute(
        select(s.aliases.c.version).where(
            s.aliases.c.model_id == model_id, s.aliases.c.alias == alias
        )
    ).scalar()


def model_aliases(conn: Connection, model_id: int) -> dict[str, int]:
    """Every alias of one model and its version, sorted by alias."""
    return dict(
        conn.execute(
            select(s.aliases.c.alias, s.aliases.c.version)
            .where(s.aliases.c.model_id == model_id)
            .order_by(s.aliases.c.alias)
        ).all()
    )


def all_aliases(conn: Connection) -> dict[int, dict[str, int]]:
    """Every alias of every model, by model id (aliases sorted)."""
    rows = conn.execute(
        select(s.aliases.c.model_id, s.aliases.c.alias, s.aliases.c.version).order_by(
            s.aliases.c.alias
        )
    ).all()
    by_model: dict[int, dict[str, int]] = {}
    for model_id, alias, version in rows:
        by_model.setdefault(model_id, {})[alias] = version
    return by_model


def version_aliases(conn: Connection, model_id: int, version: int) -> list[str]:
    """The aliases pointing at one version, sorted."""
    return list(
        conn.execute(
            select(s.aliases.c.alias)
            .where(s.aliases.c.model_id == model_id, s.aliases.c.version == version)
            .order_by(s.aliases.c.alias)
        ).scalars()
    )


def kind_words(model: Any) -> tuple[str, str]:
    """What a registry row is called in messages, and its command group.

    ``("model", "models")``, ``("prompt", "prompts")`` for a prompt (:mod:`keel.llm`), or
    ``("RAG index", "rag")`` for a retrieval index (:mod:`keel.llm.rag`).
    """
    return _KIND_WORDS.get(model.kind, ("model", "models"))


#: Per registry kind other than a model: what messages call one, and its command group.
_KIND_WORDS = {"prompt": ("prompt", "prompts"), "rag-index": ("RAG index", "rag")}


def alias_missing(conn: Connection, model: Any, alias: str) -> NotFound:
    """``NotFound`` for an alias ``model`` (its row) lacks, naming the aliases it has."""
    noun, group = kind_words(model)
    return NotFound(
        f"{noun} {model.name!r} has no alias {alias!r}; "
        + hint(
            alias,
            model_aliases(conn, model.id),
            kind=f"aliases of {model.name!r}",
            create=f"point one at a version with `keel {group} alias set {model.name} "
            f"{alias} VERSION`",
        )
    )


def move(
    conn: Connection,
    model: Any,
    alias: str,
    version: int,
    *,
    expected: int | None,
    actor: str,
    comment: str | None = None,
) -> AliasChange:
    """Point ``alias`` of ``model`` (its row) at ``version`` if it still holds ``expected``.

    Moving an alias to the version it already holds changes nothing and records nothing.

    Raises:
        Conflict: the alias holds another version than ``expected`` (``None``: unset).
    """
    if expected == version and current(conn, model.id, alias) == version:
        return AliasChange(alias, version, version, now_ms(), actor, comment)
    at = now_ms()
    if expected is None:
        done = conn.execute(
            insert_on_conflict(conn, s.aliases)
            .values(
                model_id=model.id, alias=alias, version=version, updated_at=at, updated_by=actor
            )
            .on_conflict_do_nothing(index_elements=[s.aliases.c.model_id, s.aliases.c.alias])
            .returning(s.aliases.c.version)
        )
        # An INSERT's rowcount is not reliable across drivers; a returned row is.
        moved = done.first() is not None
    else:
        done = conn.execute(
            update(s.aliases)
            .where(
                s.aliases.c.model_id == model.id,
                s.aliases.c.alias == alias,
                s.aliases.c.version == expected,
            )
            .values(version=version, updated_at=at, updated_by=actor)
        )
        moved = done.rowcount == 1
    if not moved:
        now = current(conn, model.id, alias)
        raise Conflict(
            f"alias {alias!r} of {kind_words(model)[0]} {model.name!r} is at "
            f"{'no version' if now is None else f'version {now}'}, not "
            f"{'unset' if expected is None else f'version {expected}'} as this call "
            "expected: another client moved it. Reload and retry"
        )
    change = AliasChange(alias, expected, version, at, actor, comment)
    _record(conn, model, change)
    return change


def remove(
    conn: Connection,
    model: Any,
    alias: str,
    *,
    expected: int,
    actor: str,
    comment: str | None = None,
) -> AliasChange:
    """Remove ``alias`` of ``model`` (its row) if it still points at ``expected``.

    Raises:
        Conflict: another client moved or removed it meanwhile.
    """
    done = conn.execute(
        delete(s.aliases).where(
            s.aliases.c.model_id == model.id,
            s.aliases.c.alias == alias,
            s.aliases.c.version == expected,
        )
    )
    if done.rowcount != 1:
        raise Conflict(
            f"alias {alias!r} of {kind_words(model)[0]} {model.name!r} no longer points at "
            f"version {expected}: "
            "another client moved or removed it. Reload and retry"
        )
    change = AliasChange(alias, expected, None, now_ms(), actor, comment)
    _record(conn, model, change)
    return change


def _record(conn: Connection, model: Any, change: AliasChange) -> None:
    """Append an alias move to its history and to the audit chain (caller's transaction)."""
    conn.execute(
        s.alias_history.insert().values(
            model_id=model.id,
            alias=change.alias,
            from_version=change.from_version,
            to_version=change.to_version,
            at=change.at,
            actor=change.actor,
            comment=change.comment,
        )
    )
    audit.record(
        conn,
        actor=change.actor,
        action="alias.delete" if change.to_version is None else "alias.set",
        object_type="alias",
        object_id=f"{model.name}@{change.alias}",
        before=None if change.from_version is None else {"version": change.from_version},
        after=None
        if change.to_version is None
        else {"version": change.to_version, "comment": change.comment},
    )


def history(conn: Connection, model: Any, alias: str | None = None) -> list[AliasChange]:
    """Every move of ``model``'s aliases (or of one alias), oldest first.

    Raises:
        NotFound: ``alias`` was never set (every move is recorded, so no history means
            no alias).
    """
    query = select(s.alias_history).where(s.alias_history.c.model_id == model.id)
    if alias:
        query = query.where(s.alias_history.c.alias == alias)
    rows = conn.execute(query.order_by(s.alias_history.c.id)).all()
    if alias and not rows:
        raise alias_missing(conn, model, alias)
    return [
        AliasChange(r.alias, r.from_version, r.to_version, r.at, r.actor, r.comment) for r in rows
    ]
