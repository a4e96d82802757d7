"""Roles: which user holds which named role, and who may hand them out.

A role is a plain name (``approver``, ``admin``, …) granted to a user name.
Roles mean something where a rule names them: an alias's protection asks for
approvals from a role (:mod:`keel.registry.approvals`), and changing policies
or roles needs :data:`ADMIN_ROLE` once anyone holds it. Until someone is an
admin, anyone may grant, so a fresh install can bootstrap its first admin.

Every function works in the caller's transaction (a ``Connection`` from
``Store.write()`` or ``Store.read()``), so a grant, the check that allowed it
and its audit entry commit or roll back together.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection, Select, delete, func, select

from keel.errors import InvalidInput, NotFound, PermissionDenied
from keel.governance import audit
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms

__all__ = [
    "ADMIN_ROLE",
    "check_role",
    "grant",
    "holders",
    "list_roles",
    "require_admin",
    "revoke",
    "roles_of",
]

#: The role that may change alias policies and roles, once anyone holds it.
ADMIN_ROLE = "admin"

_ROLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,127}$")


def check_role(role: Any) -> str:
    """``role`` if it is a simple name (a letter, then letters, digits, ``_`` or ``-``).

    Raises:
        InvalidInput: it is not.
    """
    if not isinstance(role, str) or not _ROLE_RE.match(role):
        raise InvalidInput(f"role must be a simple name such as 'approver', got {role!r}")
    return role


def roles_of(conn: Connection, user: str) -> set[str]:
    """The roles ``user`` holds."""
    return set(
        conn.execute(
            select(s.role_grants.c.role).where(s.role_grants.c.user_name == user)
        ).scalars()
    )


def holders(role: str) -> Select[tuple[str]]:
    """A subquery of the users holding ``role``, to filter other queries with (``in_``)."""
    return select(s.role_grants.c.user_name).where(s.role_grants.c.role == role)


def require_admin(conn: Connection, actor: str) -> None:
    """Policies and roles change only by admins, once anyone is an admin.

    Raises:
        PermissionDenied: an admin exists and ``actor`` is not one.
    """
    admins = conn.execute(
        select(func.count()).where(s.role_grants.c.role == ADMIN_ROLE)
    ).scalar_one()
    if admins and ADMIN_ROLE not in roles_of(conn, actor):
        raise PermissionDenied(
            f"changing policies and roles needs role {ADMIN_ROLE!r}; user {actor!r} "
            "does not have it"
        )


def grant(conn: Connection, actor: str, user: str, role: str) -> bool:
    """Give ``user`` the role ``role`` on behalf of ``actor``; False if they held it already.

    Raises:
        InvalidInput: ``role`` or ``user`` is not a valid name.
        PermissionDenied: see :func:`require_admin`.
    """
    check_role(role)
    if not isinstance(user, str) or not user.strip():
        raise InvalidInput(f"user must be a non-empty name, got {user!r}")
    require_admin(conn, actor)
    done = conn.execute(
        insert_on_conflict(conn, s.role_grants)
        .values(user_name=user, role=role, granted_at=now_ms(), granted_by=actor)
        .on_conflict_do_nothing(index_elements=[s.role_grants.c.user_name, s.role_grants.c.role])
        .returning(s.role_grants.c.role)
    )
    if done.first() is None:
        return False
    audit.record(
        conn,
        actor=actor,
        action="role.grant",
        object_type="role",
        object_id=f"{user}/{role}",
        after={"user": user, "role": role},
    )
    return True


def revoke(conn: Connection, actor: str, user: str, role: str) -> None:
    """Take ``role`` from ``user`` on behalf of ``actor``.

    Raises:
        PermissionDenied: see :func:`require_admin`.
        NotFound: ``user`` does not hold ``role``.
    """
    require_admin(conn, actor)
    done = conn.execute(
        delete(s.role_grants).where(s.role_grants.c.user_name == user, s.role_grants.c.role == role)
    )
    if not done.rowcount:
        raise NotFound(f"user {user!r} does not have role {role!r}")
    audit.record(
        conn,
        actor=actor,
        action="role.revoke",
        object_type="role",
        object_id=f"{user}/{role}",
        before={"user": user, "role": role},
    )


def list_roles(conn: Connection) -> dict[str, list[str]]:
    """Every user with a role, and their roles, sorted by name."""
    rows = conn.execute(
        select(s.role_grants.c.user_name, s.role_grants.c.role).order_by(
            s.role_grants.c.user_name, s.role_grants.c.role
        )
    ).all()
    roles: dict[str, list[str]] = {}
    for user, role in rows:
        roles.setdefault(user, []).append(role)
    return roles
