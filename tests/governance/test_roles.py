"""Roles: who holds which, who may grant them, and grants that commit with their transaction."""

from __future__ import annotations

from dataclasses import replace

import pytest

import keel
from keel.errors import InvalidInput, NotFound, PermissionDenied
from keel.governance import audit, roles


def _as(settings, user: str) -> keel.Client:
    return keel.Client(replace(settings, user=user))


def test_once_an_admin_exists_only_admins_change_policy_and_roles(keel_env):
    first = _as(keel_env, "ann")
    first.grant_role("ann", "admin")
    outsider = _as(keel_env, "eve")
    with pytest.raises(PermissionDenied, match="needs role 'admin'"):
        outsider.grant_role("eve", "admin")
    with pytest.raises(PermissionDenied, match="needs role 'admin'"):
        outsider.set_alias_policy("production")
    first.set_alias_policy("production", approvals=2, role="approver")
    assert [p.to_dict() for p in first.list_alias_policies()] == [
        {"alias": "production", "approvals": 2, "role": "approver", "allow_registrant": False}
    ]
    assert first.list_roles() == {"ann": ["admin"]}


def test_a_grant_commits_or_rolls_back_with_the_callers_transaction(keel_env):
    store = keel.Client().store
    with pytest.raises(RuntimeError, match="the caller's next write failed"), store.write() as conn:
        assert roles.grant(conn, "ann", "ann", roles.ADMIN_ROLE) is True
        assert roles.roles_of(conn, "ann") == {"admin"}  # seen inside the transaction
        raise RuntimeError("the caller's next write failed")
    with store.read() as conn:
        assert roles.list_roles(conn) == {}
    assert [e.action for e in audit.list_entries(store)] == []

    with store.write() as conn:
        assert roles.grant(conn, "ann", "ann", roles.ADMIN_ROLE) is True
        assert roles.grant(conn, "ann", "bob", "approver") is True
        assert roles.grant(conn, "ann", "bob", "approver") is False  # held already: no entry
    with store.write() as conn:
        roles.revoke(conn, "ann", "bob", "approver")
        with pytest.raises(NotFound, match="user 'bob' does not have role 'approver'"):
            roles.revoke(conn, "ann", "bob", "approver")
    with store.read() as conn:
        assert roles.list_roles(conn) == {"ann": ["admin"]}
        with pytest.raises(PermissionDenied, match="user 'eve' does not have it"):
            roles.require_admin(conn, "eve")
    actions = [(e.action, e.object_id) for e in audit.list_entries(store, newest_first=False)]
    assert actions == [
        ("role.grant", "ann/admin"),
        ("role.grant", "bob/approver"),
        ("role.revoke", "bob/approver"),
    ]


def test_role_names_are_checked_in_one_place(keel_env):
    client = keel.Client()
    expected = "role must be a simple name such as 'approver', got 'two words'"
    with pytest.raises(InvalidInput, match=expected):
        roles.check_role("two words")
    with pytest.raises(InvalidInput, match=expected):
        client.grant_role("ann", "two words")
    with pytest.raises(InvalidInput, match=expected):
        client.set_alias_policy("production", role="two words")
    with pytest.raises(InvalidInput, match="user must be a non-empty name"):
        client.grant_role(" ", "approver")
    assert client.list_roles() == {} and client.list_alias_policies() == []
