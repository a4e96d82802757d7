"""Alias protection and approvals: who must sign off before a protected alias moves.

A protected alias (``production``, ``champion``, …) has a policy for every
model: how many approvals a version needs, from which role, and whether the
person who registered the version may be one of them (the four-eyes rule is
on unless the policy allows it). An approval is one row per approver,
version and alias, kept unique by the database, so approving twice is a
:class:`~keel.errors.Conflict` rather than a second vote. Approvals count
only while their approver still holds the role.

The functions here work in the caller's transaction, so the check that lets
an alias move commits together with the move (:mod:`keel.registry.aliases`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, func, select

from keel.errors import ApprovalRequired, Conflict, InvalidInput, NotFound, PermissionDenied
from keel.governance import audit, roles
from keel.registry.aliases import kind_words
from keel.registry.entities import AliasPolicy, Approval
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms

__all__ = [
    "approve",
    "check_approvals",
    "delete_policy",
    "get_policy",
    "list_approvals",
    "list_policies",
    "set_policy",
]


def get_policy(conn: Connection, alias: str) -> AliasPolicy | None:
    """The protection of ``alias``, or ``None`` when it moves freely."""
    row = conn.execute(select(s.alias_policies).where(s.alias_policies.c.alias == alias)).first()
    return (
        None
        if row is None
        else AliasPolicy(row.alias, row.approvals, row.role, row.allow_registrant)
    )


def check_approvals(conn: Connection, model: Any, target: Any, alias: str) -> None:
    """Let ``alias`` of ``model`` (its row) move to ``target`` (the version's row), or refuse.

    Raises:
        ApprovalRequired: the alias is protected and the version lacks approvals from
            current holders of the policy's role; the message gives the command that
            approves it.
    """
    policy = get_policy(conn, alias)
    if policy is None or policy.approvals <= 0:
        return
    have = count_approvals(conn, model, target, policy)
    if have < policy.approvals:
        registrant = (
            "" if policy.allow_registrant else f", not from its registrant {target.created_by!r}"
        )
        raise ApprovalRequired(
            f"alias {alias!r} is protected: moving it to {model.name} version {target.version} "
            f"needs {policy.approvals} approval(s) from role {policy.role!r}{registrant}; it has "
            f"{have}. Approve with: keel {kind_words(model)[1]} approve {model.name} "
            f"{target.version} "
            f"--for {alias} --comment '...'"
        )


def count_approvals(conn: Connection, model: Any, target: Any, policy: AliasPolicy) -> int:
    """The approvals of ``target`` for ``policy``'s alias that count towards moving it.

    Only from users who hold the policy's role now, and not from the version's
    registrant unless the policy allows it (four eyes).
    """
    query = select(func.count()).where(
        s.approvals.c.model_id == model.id,
        s.approvals.c.version == target.version,
        s.approvals.c.alias == policy.alias,
        s.approvals.c.approver.in_(roles.holders(policy.role, model.name, policy.alias)),
    )
    if not policy.allow_registrant:
        query = query.where(s.approvals.c.approver != target.created_by)
    return int(conn.execute(query).scalar_one())


def approve(
    conn: Connection, model: Any, target: Any, alias: str, approver: str, comment: str | None
) -> Approval:
    """Record ``approver``'s approval of ``target`` (the version's row) for ``alias``.

    Raises:
        InvalidInput: the alias is not protected (nothing to approve).
        PermissionDenied: the approver lacks the policy's role, or registered the version.
        Conflict: the approver already approved it.
    """
    name, version = model.name, target.version
    policy = get_policy(conn, alias)
    if policy is None:
        raise InvalidInput(
            f"alias {alias!r} is not protected, so moving it needs no approval; protect it "
            f"with `keel policy protect {alias} --approvals 1 --role approver`"
        )
    held = roles.roles_of(conn, approver, name, alias)
    if policy.role not in held:
        raise PermissionDenied(
            f"approving for {alias!r} needs role {policy.role!r}; user {approver!r} has "
            f"{', '.join(sorted(held)) or 'no roles'}. An admin can grant it: "
            f"keel roles grant {approver} {policy.role}"
        )
    if not policy.allow_registrant and target.created_by == approver:
        raise PermissionDenied(
            f"four-eyes rule: {approver!r} registered {name} version {version} and cannot "
            f"approve it for {alias!r}; ask another holder of role {policy.role!r}"
        )
    created = now_ms()
    done = conn.execute(
        insert_on_conflict(conn, s.approvals)
        .values(
            model_id=model.id,
            version=version,
            alias=alias,
            approver=approver,
            comment=comment,
            created_at=created,
        )
        .on_conflict_do_nothing(
            index_elements=[
                s.approvals.c.model_id,
                s.approvals.c.version,
                s.approvals.c.alias,
                s.approvals.c.approver,
            ]
        )
        .returning(s.approvals.c.id)
    )
    if done.first() is None:
        raise Conflict(f"{approver!r} already approved {name} version {version} for {alias!r}")
    audit.record(
        conn,
        actor=approver,
        action="approval.create",
        object_type="model_version",
        object_id=f"{name}/{version}",
        after={"alias": alias, "comment": comment},
    )
    return Approval(name, version, alias, approver, comment, created)


def list_approvals(conn: Connection, model: Any, version: int | None = None) -> list[Approval]:
    """Approvals of ``model``'s versions (or of one version), oldest first."""
    query = select(s.approvals).where(s.approvals.c.model_id == model.id)
    if version is not None:
        query = query.where(s.approvals.c.version == version)
    rows = conn.execute(query.order_by(s.approvals.c.id)).all()
    return [
        Approval(model.name, r.version, r.alias, r.approver, r.comment, r.created_at) for r in rows
    ]


def set_policy(conn: Connection, actor: str, policy: AliasPolicy) -> None:
    """Create or replace the protection of ``policy.alias``; admins only once one exists.

    Raises:
        PermissionDenied: see :func:`keel.governance.roles.require_admin`.
    """
    roles.require_admin(conn, actor)
    before = get_policy(conn, policy.alias)
    stmt = insert_on_conflict(conn, s.alias_policies).values(
        alias=policy.alias,
        approvals=policy.approvals,
        role=policy.role,
        allow_registrant=policy.allow_registrant,
        updated_at=now_ms(),
        updated_by=actor,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[s.alias_policies.c.alias],
            set_={
                "approvals": stmt.excluded.approvals,
                "role": stmt.excluded.role,
                "allow_registrant": stmt.excluded.allow_registrant,
                "updated_at": stmt.excluded.updated_at,
                "updated_by": stmt.excluded.updated_by,
            },
        )
    )
    audit.record(
        conn,
        actor=actor,
        action="policy.set",
        object_type="policy",
        object_id=policy.alias,
        before=None if before is None else before.to_dict(),
        after=policy.to_dict(),
    )


def delete_policy(conn: Connection, actor: str, alias: str) -> None:
    """Remove the protection of ``alias``; admins only once one exists.

    Raises:
        PermissionDenied: see :func:`keel.governance.roles.require_admin`.
        NotFound: the alias is not protected.
    """
    roles.require_admin(conn, actor)
    before = get_policy(conn, alias)
    if before is None:
        raise NotFound(f"alias {alias!r} is not protected")
    conn.execute(delete(s.alias_policies).where(s.alias_policies.c.alias == alias))
    audit.record(
        conn,
        actor=actor,
        action="policy.delete",
        object_type="policy",
        object_id=alias,
        before=before.to_dict(),
    )


def list_policies(conn: Connection) -> list[AliasPolicy]:
    """Every protected alias, sorted."""
    rows = conn.execute(select(s.alias_policies).order_by(s.alias_policies.c.alias)).all()
    return [AliasPolicy(r.alias, r.approvals, r.role, r.allow_registrant) for r in rows]
