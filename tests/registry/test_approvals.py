"""Protected aliases: approvals from a role, the four-eyes rule, and approvals that stop counting."""

from __future__ import annotations

import pytest

import keel
from keel.errors import ApprovalRequired, Conflict, InvalidInput, PermissionDenied


def test_protected_alias_needs_an_approval_from_the_role_and_not_the_registrant(
    any_env, model_run, as_user
):
    bob = as_user("bob")  # registers
    alice = as_user("alice")  # approves
    mallory = as_user("mallory")  # has no role
    version = bob.create_model_version("fraud", model_run()).version
    # locally anyone may grant until an admin exists; on a server this is the admin's token
    governor = keel.Client()
    governor.grant_role("alice", "approver")
    governor.grant_role("bob", "approver")
    governor.set_alias_policy("production", approvals=1, role="approver")

    bob.set_alias("fraud", "staging", version)  # unprotected aliases move freely
    with pytest.raises(
        ApprovalRequired, match=r"needs 1 approval\(s\) from role 'approver'.*it has 0"
    ):
        bob.set_alias("fraud", "production", version)
    with pytest.raises(PermissionDenied, match="four-eyes"):
        bob.approve("fraud", version, "production")
    # the library refuses the role; a server refuses the permission first
    with pytest.raises(PermissionDenied, match=r"needs role 'approver'|lacks permission 'approve'"):
        mallory.approve("fraud", version, "production")
    with pytest.raises(InvalidInput, match="is not protected"):
        alice.approve("fraud", version, "staging")
    alice.approve("fraud", version, "production", comment="metrics reviewed")
    with pytest.raises(Conflict, match="already approved"):
        alice.approve("fraud", version, "production")
    bob.set_alias("fraud", "production", version)
    assert bob.get_alias("fraud", "production") == version
    [approval] = bob.list_approvals("fraud", version)
    assert (approval.approver, approval.comment) == ("alice", "metrics reviewed")


def test_approval_from_someone_who_lost_the_role_does_not_count(any_env, model_run, as_user):
    carol = as_user("carol")
    admin = keel.Client()  # the first admin locally; the server's admin token there
    admin.grant_role(admin.registry.user, "admin")
    admin.grant_role("carol", "approver")
    admin.set_alias_policy("production", approvals=1, role="approver")
    version = admin.create_model_version("m", model_run()).version
    carol.approve("m", version, "production")
    admin.revoke_role("carol", "approver")
    with pytest.raises(ApprovalRequired, match="it has 0"):
        admin.set_alias("m", "production", version)
    with pytest.raises(PermissionDenied):
        carol.grant_role("carol", "admin")  # only admins grant, once one exists


def test_a_refused_protected_move_in_a_callers_transaction_changes_nothing(
    keel_env, model_run, as_user
):
    owner = as_user("owner")
    version = owner.create_model_version("guarded", model_run()).version
    owner.set_alias("guarded", "staging", version)
    owner.set_alias_policy("production", approvals=1, role="approver")
    refused = pytest.raises(
        ApprovalRequired, match="keel models approve guarded 1 --for production"
    )
    with refused, owner.store.write() as conn:
        owner.delete_alias("guarded", "staging", conn=conn)
        owner.set_alias("guarded", "production", version, conn=conn)
    # The refusal rolled back the caller's whole transaction, the earlier delete included.
    assert owner.get_registered_model("guarded").aliases == {"staging": version}


def test_approval_count_is_the_count_a_move_checks(keel_env, model_run, as_user):
    admin = keel.Client()
    admin.grant_role(admin.registry.user, "admin")
    for name in ("carol", "dave"):
        admin.grant_role(name, "approver")
    admin.set_alias_policy("production", approvals=2, role="approver")
    version = as_user("dave").create_model_version("m", model_run()).version
    registry = admin.registry
    assert registry.approval_count("m", version, "production") == (0, 2)
    assert registry.approval_count("m", version, "staging") == (0, 0)  # not protected
    as_user("carol").approve("m", version, "production")
    assert registry.approval_count("m", version, "production") == (1, 2)
    admin.revoke_role("carol", "approver")  # her approval stops counting, as for a move
    assert registry.approval_count("m", version, "production") == (0, 2)
