"""Stored policies and cycle states: compare-and-set transitions, claimed triggers, leases."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from keel.automation import PolicyStore, history
from keel.automation.state import RETRAINING, Transition
from keel.errors import Conflict, InvalidInput, NotFound


def test_apply_creates_then_revises_and_audits(served_anywhere, minimal_policy, audit_actions):
    store = PolicyStore()
    policy, revision = store.apply(minimal_policy())
    assert revision == 1 and store.state(policy.name).state == "idle"
    assert store.apply(minimal_policy())[1] == 1  # the same spec: nothing new
    _, revision = store.apply(minimal_policy(cooldown="5m"))
    assert revision == 2 and store.get(policy.name).cooldown == 300
    assert audit_actions(served_anywhere, "automation") == [
        "automation.policy_apply",
        "automation.policy_apply",
    ]


def test_apply_checks_the_model_deployment_and_approval_protection(served_anywhere, minimal_policy):
    store = PolicyStore()
    with pytest.raises(NotFound, match="nope"):
        store.apply(minimal_policy(model="nope"))
    with pytest.raises(NotFound, match="gone"):
        store.apply(minimal_policy(deployment="gone"))
    with pytest.raises(InvalidInput, match="keel policy protect champion"):
        store.apply(minimal_policy(approval={"mode": "required"}))
    store.client.set_alias_policy("champion", approvals=1, role="approver")
    assert store.apply(minimal_policy(approval={"mode": "required"}))[1] == 1


def test_a_transition_is_compare_and_set_and_writes_its_event(served_anywhere, minimal_policy):
    store = PolicyStore()
    policy, _ = store.apply(minimal_policy())
    state = store.state(policy.name)
    moved = store.transition(
        state, policy, Transition(RETRAINING, "triggered", "because", changes={"trigger_key": "k"})
    )
    assert moved.state == RETRAINING and moved.epoch == state.epoch + 1
    with pytest.raises(Conflict, match="moved past epoch"):  # a second writer with the old read
        store.transition(state, policy, Transition(RETRAINING, "triggered", "again"))
    assert store.state(policy.name).trigger_key == "k"
    assert [(e.kind, e.reason) for e in history(policy.name)] == [("triggered", "because")]


def test_a_trigger_key_is_claimed_once(served, minimal_policy):
    store = PolicyStore()
    policy, _ = store.apply(minimal_policy())
    with store.client.store.write() as conn:
        assert store.claim_trigger(conn, policy.name, "drift:1-2") is True
    with store.client.store.write() as conn:
        assert store.claim_trigger(conn, policy.name, "drift:1-2") is False
        assert store.claim_trigger(conn, policy.name, "drift:2-3") is True
    assert store.trigger_claimed(policy.name, "drift:1-2")


def test_a_live_lease_holds_and_a_dead_holders_lease_is_taken_over(served_anywhere, minimal_policy):
    store = PolicyStore()
    policy, _ = store.apply(minimal_policy())
    assert store.acquire(policy.name, "elsewhere:1:a", 60) is True
    assert store.acquire(policy.name, "elsewhere:1:b", 60) is False  # another host, not expired
    store.release(policy.name, "elsewhere:1:a")
    # A controller process on this host that died still holds a lease: it is taken at once.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    host = os.uname().nodename
    assert store.acquire(policy.name, f"{host}:{dead.stdout.strip()}:x", 600) is True
    assert store.acquire(policy.name, f"{host}:{os.getpid()}:me", 60) is True
    alive = f"{host}:{os.getpid()}:other"  # this process is alive: its lease holds
    store.release(policy.name, f"{host}:{os.getpid()}:me")
    assert store.acquire(policy.name, alive, 600) is True
    assert store.acquire(policy.name, f"{host}:{os.getpid()}:third", 60) is False
    assert json.loads(json.dumps(store.state(policy.name).to_dict()))["lease_owner"] == alive


def test_a_trigger_claims_its_key_once_and_moves_the_state_with_it(served_anywhere, minimal_policy):
    store = PolicyStore()
    policy, _ = store.apply(minimal_policy())
    state = store.state(policy.name)
    change = Transition(RETRAINING, "triggered", "drift", changes={"trigger_key": "drift:1-2"})
    moved = store.trigger(state, policy, "drift:1-2", change)
    assert moved is not None and moved.state == RETRAINING and moved.trigger_key == "drift:1-2"
    assert store.trigger_claimed(policy.name, "drift:1-2")
    assert not store.trigger_claimed(policy.name, "drift:2-3")
    again = Transition(RETRAINING, "triggered", "again")
    assert store.trigger(moved, policy, "drift:1-2", again) is None  # claimed: nothing moves
    assert store.state(policy.name).epoch == moved.epoch
    assert [(e.kind, e.reason) for e in history(policy.name)] == [("triggered", "drift")]
