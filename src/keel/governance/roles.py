"""Roles: which user holds which named role, where, and who may hand them out.

A role is a plain name granted to a user name, everywhere or on one scope: an
experiment, a registered model, or one alias of a model (``fraud@champion``,
the rule of who may move which alias). Roles mean something where a rule
names them: an alias's protection asks for approvals from a role
(:mod:`keel.registry.approvals`), changing policies or roles needs
:data:`ADMIN_ROLE` once anyone holds it, and ``keel server`` checks every
call against :data:`ROLE_PERMISSIONS` (:func:`allows`). Until someone is an
admin, anyone may grant, so a fresh install can bootstrap its first admin.

The server's four roles and what they permit:

============  ====================================================================
``viewer``    ``read``
``editor``    ``read``, ``write``: log runs, register versions, create deployments
``approver``  ``read``, ``approve``: approve versions for protected aliases
``admin``     all of these, and ``admin``: users, tokens, roles, policies, protection
============  ====================================================================

A grant on a model covers the model's aliases; a grant on an alias covers that
alias only; a grant on an experiment covers its runs.

Every function works in the caller's transaction (a ``Connection`` from
``Store.write()`` or ``Store.read()``), so a grant, the check that allowed it
and its audit entry commit or roll back together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, and_, delete, func, or_, select

from keel.errors import InvalidInput, NotFound, PermissionDenied
from keel.governance import audit
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms

__all__ = [
    "ADMIN_ROLE",
    "PERMISSIONS",
    "ROLE_PERMISSIONS",
    "SCOPE_KINDS",
    "Grant",
    "allows",
    "check_role",
    "grant",
    "grants_of",
    "holders",
    "list_roles",
    "require_admin",
    "revoke",
    "roles_of",
]

#: The role that may change alias policies and roles, once anyone holds it.
ADMIN_ROLE = "admin"

#: What each server role permits; a role not named here permits nothing on the server
#: (it can still be named by an alias's protection rule).
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "editor": frozenset({"read", "write"}),
    "approver": frozenset({"read", "approve"}),
    "admin": frozenset({"read", "write", "approve", "admin"}),
}
PERMISSIONS = ("read", "write", "approve", "admin")
#: What a grant may be scoped to; "" is everywhere.
SCOPE_KINDS = ("experiment", "model", "alias")


@dataclass(frozen=True)
class Grant:
    """A role held everywhere (``scope_kind`` "") or on one experiment, model or alias."""

    role: str
    scope_kind: str = ""
    scope_name: str = ""

    @property
    def label(self) -> str:
        """``editor``, or ``editor on model fraud``."""
        if not self.scope_kind:
            return self.role
        return f"{self.role} on {self.scope_kind} {self.scope_name}"

    def covers(self, kind: str | None, name: str | None) -> bool:
        """Whether this grant's scope covers the resource ``kind``/``name`` (None: global)."""
        if not self.scope_kind:
            return True
        if kind is None or name is None:
            return False
        if self.scope_kind == kind:
            return self.scope_name == name
        # a model's grant covers its aliases (``fraud@champion``)
        return (
            self.scope_kind == "model"
            and kind == "alias"
            and name.partition("@")[0] == self.scope_name
        )


def allows(
    grants: Iterable[Grant], permission: str, kind: str | None = None, name: str | None = None
) -> bool:
    """Whether any of ``grants`` gives ``permission`` on the resource ``kind``/``name``."""
    return any(
        permission in ROLE_PERMISSIONS.get(g.role, ()) and g.covers(kind, name) for g in grants
    )


def grants_of(conn: Connection, user: str) -> tuple[Grant, ...]:
    """Every grant ``user`` holds, global ones first."""
    rows = conn.execute(
        select(s.role_grants.c.role, s.role_grants.c.scope_kind, s.role_grants.c.scope_name)
        .where(s.role_grants.c.user_name == user)
        .order_by(s.role_grants.c.scope_kind, s.role_grants.c.scope_name, s.role_grants.c.role)
    ).all()
    return tuple(Grant(r.role, r.scope_kind, r.scope_name) for r in rows)


def _check_scope(scope_kind: str, scope_name: str) -> None:
    if scope_kind == "" and scope_name == "":
        return
    if scope_kind not in SCOPE_KINDS or not scope_name:
        raise InvalidInput(
            f"a grant's scope must be one of {', '.join(SCOPE_KINDS)} with a name, "
            f"got {scope_kind!r} {scope_name!r}"
        )
    if scope_kind == "alias" and "@" not in scope_name:
        raise InvalidInput(
            f"an alias scope is MODEL@ALIAS, e.g. fraud@champion; got {scope_name!r}"
        )


_ROLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,127}$")


def check_role(role: Any) -> str:
    """``role`` if it is a simple name (a letter, then letters, digits, ``_`` or ``-``).

    Raises:
        InvalidInput: it is not.
    """
    if not isinstance(role, str) or not _ROLE_RE.match(role):
        raise InvalidInput(f"role must be a simple name such as 'approver', got {role!r}")
    return role


def _covering(model: str | None, alias: str | None) -> Any:
    """Grants that hold everywhere, or on ``model``, or on its ``alias`` (when named)."""
    c = s.role_grants.c
    where = c.scope_kind == ""
    if model is not None:
        where = or_(where, and_(c.scope_kind == "model", c.scope_name == model))
        if alias is not None:
            where = or_(where, and_(c.scope_kind == "alias", c.scope_name == f"{model}@{alias}"))
    return where


def roles_of(
    conn: Connection, user: str, model: str | None = None, alias: str | None = None
) -> set[str]:
    """The roles ``user`` holds everywhere, plus on ``model`` and its ``alias`` when named."""
    return set(
        conn.execute(
            select(s.role_grants.c.role).where(
                s.role_grants.c.user_name == user, _covering(model, alias)
            )
        ).scalars()
    )


def holders(role: str, model: str | None = None, alias: str | None = None) -> Select[tuple[str]]:
    """A subquery of the users holding ``role`` (everywhere, or on ``model``/its ``alias``)."""
    return select(s.role_grants.c.user_name).where(
        s.role_grants.c.role == role, _covering(model, alias)
    )


def require_admin(conn: Connection, actor: str) -> None:
    """Policies and roles change only by admins, once anyone is an admin.

    Raises:
        PermissionDenied: an admin exists and ``actor`` is not one.
    """
    admins = conn.execute(
        select(func.count()).where(
            s.role_grants.c.role == ADMIN_ROLE, s.role_grants.c.scope_kind == ""
        )
    ).scalar_one()
    if admins and ADMIN_ROLE not in roles_of(conn, actor):
        raise PermissionDenied(
            f"changing policies and roles needs role {ADMIN_ROLE!r}; user {actor!r} "
            "does not have it"
        )


def grant(
    conn: Connection,
    actor: str,
    user: str,
    role: str,
    scope_kind: str = "",
    scope_name: str = "",
) -> bool:
    """Give ``user`` the role ``role`` on behalf of ``actor``; False if they held it already.

    ``scope_kind``/``scope_name`` limit the grant to one experiment, model or alias.

    Raises:
        InvalidInput: ``role`` or ``user`` is not a valid name.
        PermissionDenied: see :func:`require_admin`.
    """
    check_role(role)
    _check_scope(scope_kind, scope_name)
    if not isinstance(user, str) or not user.strip():
        raise InvalidInput(f"user must be a non-empty name, got {user!r}")
    require_admin(conn, actor)
    key = s.role_grants.c
    done = conn.execute(
        insert_on_conflict(conn, s.role_grants)
        .values(
            user_name=user,
            role=role,
            scope_kind=scope_kind,
            scope_name=scope_name,
            granted_at=now_ms(),
            granted_by=actor,
        )
        .on_conflict_do_nothing(
            index_elements=[key.user_name, key.role, key.scope_kind, key.scope_name]
        )
        .returning(s.role_grants.c.role)
    )
    if done.first() is None:
        return False
    after = {"user": user, "role": role}
    if scope_kind:
        after["scope"] = f"{scope_kind}:{scope_name}"
    audit.record(
        conn,
        actor=actor,
        action="role.grant",
        object_type="role",
        object_id=f"{user}/{role}" + (f"/{scope_kind}:{scope_name}" if scope_kind else ""),
        after=after,
    )
    return True


def revoke(
    conn: Connection,
    actor: str,
    user: str,
    role: str,
    scope_kind: str = "",
    scope_name: str = "",
) -> None:
    """Take ``role`` (on the given scope) from ``user`` on behalf of ``actor``.

    Raises:
        PermissionDenied: see :func:`require_admin`.
        NotFound: ``user`` does not hold ``role``.
    """
    require_admin(conn, actor)
    done = conn.execute(
        delete(s.role_grants).where(
            s.role_grants.c.user_name == user,
            s.role_grants.c.role == role,
            s.role_grants.c.scope_kind == scope_kind,
            s.role_grants.c.scope_name == scope_name,
        )
    )
    label = Grant(role, scope_kind, scope_name).label
    if not done.rowcount:
        raise NotFound(f"user {user!r} does not have role {label!r}")
    audit.record(
        conn,
        actor=actor,
        action="role.revoke",
        object_type="role",
        object_id=f"{user}/{role}" + (f"/{scope_kind}:{scope_name}" if scope_kind else ""),
        before={"user": user, "role": role},
    )


def list_roles(conn: Connection) -> dict[str, list[str]]:
    """Every user with a role, and their roles (``editor on model fraud``), sorted by name."""
    c = s.role_grants.c
    rows = conn.execute(
        select(c.user_name, c.role, c.scope_kind, c.scope_name).order_by(
            c.user_name, c.scope_kind, c.scope_name, c.role
        )
    ).all()
    roles: dict[str, list[str]] = {}
    for row in rows:
        roles.setdefault(row.user_name, []).append(
            Grant(row.role, row.scope_kind, row.scope_name).label
        )
    return roles
