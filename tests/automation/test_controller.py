"""The controller's writes: one transaction per decision, passed down to every call that writes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

import keel
from keel.automation import Controller, PolicyStore, history
from keel.automation.state import AWAITING_APPROVAL, Transition
from keel.governance import audit
from keel.serving import Deployments
from keel.store.sql import now_ms

REFUSAL = "the database refused the promoted event"


@contextlib.contextmanager
def refusing_promoted_events(store) -> Iterator[None]:
    """A database trigger that fails the insert of a ``promoted`` event, the last write of
    a promotion: everything the promotion's transaction did before it must roll back."""
    with store.write() as conn:
        if store.is_sqlite:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_promoted BEFORE INSERT ON automation_events "
                    f"WHEN NEW.kind = 'promoted' BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_promoted() RETURNS trigger AS $$ BEGIN "
                    f"RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'integrity_constraint_violation'; "
                    "END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_promoted BEFORE INSERT ON automation_events "
                    "FOR EACH ROW WHEN (NEW.kind = 'promoted') EXECUTE FUNCTION refuse_promoted()"
                )
            )
    try:
        yield
    finally:  # the PostgreSQL test database outlives this test: leave no trigger behind
        with store.write() as conn:
            if store.is_sqlite:
                conn.execute(text("DROP TRIGGER refuse_promoted"))
            else:
                conn.execute(text("DROP TRIGGER refuse_promoted ON automation_events"))
                conn.execute(text("DROP FUNCTION refuse_promoted()"))


def _awaiting_promotion(minimal_policy) -> None:
    """Policy 'doubler-loop' with version 2 as a live canary that passed and may be promoted."""
    store = PolicyStore()
    policy, _ = store.apply(minimal_policy())
    deployments = Deployments()
    current = deployments.get("doubler-api")
    deployments.set_spec("doubler-api", current.spec.with_canary("doubler", 2, 10))
    store.transition(
        store.state(policy.name),
        policy,
        Transition(
            AWAITING_APPROVAL,
            "approval_requested",
            "doubler/2 passed its canary",
            version=2,
            changes={
                "candidate_version": 2,
                "baseline_version": 1,
                "phase_started_at": now_ms(),
            },
        ),
    )


def test_a_failure_in_the_promotion_transaction_moves_no_alias_and_stores_no_event(
    served, minimal_policy
):
    _awaiting_promotion(minimal_policy)
    client = keel.Client()
    revision = Deployments().current_revision("doubler-api")
    state = PolicyStore().state("doubler-loop")
    entries = len(audit.list_entries(client.store))

    with refusing_promoted_events(client.store):
        with pytest.raises(SQLIntegrityError, match=REFUSAL):
            Controller().tick()

        # The alias move, the deployment revision, the state change and every audit entry of
        # the promotion were one transaction with the refused event: none of them is stored.
        assert client.get_alias("doubler", "champion") == 1
        assert [(h.from_version, h.to_version) for h in client.alias_history("doubler")] == [
            (None, 1)
        ]
        assert Deployments().current_revision("doubler-api") == revision
        assert Deployments().get("doubler-api").spec.routes_to("doubler", 2)
        after = PolicyStore().state("doubler-loop")
        assert (after.state, after.epoch) == (AWAITING_APPROVAL, state.epoch)
        assert [e.kind for e in history("doubler-loop")] == ["approval_requested"]
        assert len(audit.list_entries(client.store)) == entries
        assert audit.verify(client.store).ok

    # Once the database takes the event, the same tick promotes: all of it at once.
    [result] = Controller().tick()
    assert [e.kind for e in result.events] == ["promoted"]
    assert client.get_alias("doubler", "champion") == 2
    spec = Deployments().get("doubler-api").spec
    assert [(r.model, r.ref, r.weight) for r in spec.routes] == [("doubler", "champion", 100)]
    assert Deployments().current_revision("doubler-api") == revision + 1
    assert PolicyStore().state("doubler-loop").state == "idle"
    actions = [e.action for e in audit.list_entries(client.store, newest_first=False)[entries:]]
    assert actions == ["alias.set", "deployment.update", "automation.promoted"]
    assert audit.verify(client.store).ok


def test_a_canary_awaiting_approval_is_measured_and_promoted_through_any_client(
    served_anywhere, minimal_policy, audit_actions
):
    _awaiting_promotion(minimal_policy)
    [result] = Controller().tick()
    [promoted] = result.events
    assert promoted.kind == "promoted" and promoted.version == 2
    # measured from the logs where the store is: no request reached the canary
    assert promoted.details["live"]["canary_requests"] == 0
    client = keel.Client()
    assert client.get_alias("doubler", "champion") == 2
    spec = Deployments().get("doubler-api").spec
    assert [(r.model, r.ref, r.weight) for r in spec.routes] == [("doubler", "champion", 100)]
    assert PolicyStore().state("doubler-loop").state == "idle"
    assert audit_actions(served_anywhere, "automation.promoted") == ["automation.promoted"]
