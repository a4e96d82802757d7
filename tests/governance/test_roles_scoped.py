"""Scoped grants: a role on one experiment, model or alias, stored and checked on both stores."""

from __future__ import annotations

from dataclasses import replace

import pytest

from keel.errors import InvalidInput, NotFound
from keel.governance import audit, roles
from keel.governance.client import IdentityClient
from keel.governance.roles import Grant, allows


def test_a_model_grant_covers_its_aliases_and_an_alias_grant_only_itself():
    model = Grant("editor", "model", "fraud")
    alias = Grant("editor", "alias", "fraud@staging")
    assert model.covers("model", "fraud") and model.covers("alias", "fraud@prod")
    assert not model.covers("model", "fraudster") and not model.covers("alias", "fraudster@x")
    assert not model.covers(None, None)  # a scoped grant is not a global one
    assert alias.covers("alias", "fraud@staging")
    assert not alias.covers("alias", "fraud@prod") and not alias.covers("model", "fraud")
    assert not Grant("editor", "experiment", "fraud").covers("model", "fraud")
    assert allows([model], "write", "alias", "fraud@prod")
    assert not allows([model], "approve", "model", "fraud")
    assert not allows([Grant("viewer")], "write", "model", "fraud")
    assert allows([Grant("admin")], "admin")


def test_scoped_grants_are_stored_listed_audited_and_revoked_by_scope(keel_env):
    client = IdentityClient(replace(keel_env, user="ann"))
    assert client.grant_role("ann", "admin") is True
    assert client.grant_role("ed", "editor", "model", "fraud") is True
    assert client.grant_role("ed", "editor", "model", "fraud") is False
    assert client.grant_role("ed", "editor", "experiment", "churn") is True
    assert client.list_roles() == {
        "ann": ["admin"],
        "ed": ["editor on experiment churn", "editor on model fraud"],
    }
    with pytest.raises(NotFound, match="does not have role 'editor'"):
        client.revoke_role("ed", "editor")  # the global grant: ed holds only scoped ones
    client.revoke_role("ed", "editor", "model", "fraud")
    assert client.list_roles()["ed"] == ["editor on experiment churn"]
    with client.store.read() as conn:
        assert roles.roles_of(conn, "ed") == set()  # scoped grants are not global roles
    ids = [e.object_id for e in audit.list_entries(client.store, newest_first=False)]
    assert ids == ["ann/admin", "ed/editor/model:fraud", "ed/editor/experiment:churn",
                   "ed/editor/model:fraud"]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("alias", "fraud", "an alias scope is MODEL@ALIAS"),
        ("project", "x", "a grant's scope must be one of experiment, model, alias"),
        ("model", "", "a grant's scope must be one of"),
    ],
)
def test_a_bad_scope_is_refused_and_nothing_is_granted(keel_env, kind, name, message):
    client = IdentityClient()
    with pytest.raises(InvalidInput, match=message):
        client.grant_role("ed", "editor", kind, name)
    assert client.list_roles() == {}
