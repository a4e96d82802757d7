"""Stored policies and where each policy's cycle stands.

A cycle moves through states::

    idle ─► retraining ─► gating ─► canary ─► (awaiting_approval) ─► idle
      │                     ▲  │         │
      └── (a prompt) ───────┘  │         │
                 │             │         │
                 └─────────────┴─────────┴──► idle   (retrain_failed, gate_failed, rolled_back)

A prompt policy has no retraining: its candidate is a version that exists,
so a trigger moves it from idle to gating directly.

Every transition is a compare-and-set on the state row's ``epoch`` and is
written together with the event that explains it (and, where the world
changes, with that change: the deployment revision or the alias move), so a
controller killed at any point leaves either the old state or the new one.

One controller acts on a policy at a time: it holds the row's lease
(``lease_owner``, ``lease_until``) and renews it while it works. A lease whose
holder is gone (expired, or a dead process on this host) is taken over.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, or_, select, update

from keel.automation.events import Event, check_kinds, list_events, record_event
from keel.automation.policy import Policy, load_policy
from keel.errors import Conflict, InvalidInput, NotFound
from keel.governance import audit
from keel.llm.part import PromptRows
from keel.registry.client import RegistryClient
from keel.store import schema as s
from keel.store.lease import holder_is_dead, new_owner
from keel.store.sql import insert_on_conflict, now_ms

if TYPE_CHECKING:
    from keel.client import Client
    from keel.serving.deployments import Deployments

__all__ = [
    "STATES",
    "TRANSITION_COLUMNS",
    "CycleState",
    "PolicyStore",
    "StateHandlers",
    "Transition",
    "check_transition",
    "new_owner",
]

IDLE = "idle"
RETRAINING = "retraining"
GATING = "gating"
CANARY = "canary"
AWAITING_APPROVAL = "awaiting_approval"
STATES = (IDLE, RETRAINING, GATING, CANARY, AWAITING_APPROVAL)


@dataclass(frozen=True)
class CycleState:
    """A policy's current cycle (see the module docstring)."""

    policy: str
    state: str
    epoch: int
    trigger_key: str | None = None
    candidate_version: int | None = None
    baseline_version: int | None = None
    pipeline_run_id: str | None = None
    phase_started_at: int | None = None
    cycle_ended_at: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    lease_owner: str | None = None
    lease_until: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "state": self.state,
            "epoch": self.epoch,
            "trigger_key": self.trigger_key,
            "candidate_version": self.candidate_version,
            "baseline_version": self.baseline_version,
            "pipeline_run_id": self.pipeline_run_id,
            "phase_started_at": self.phase_started_at,
            "cycle_ended_at": self.cycle_ended_at,
            "detail": self.detail,
            "lease_owner": self.lease_owner,
            "lease_until": self.lease_until,
        }


def _state(row: Any) -> CycleState:
    return CycleState(
        policy=row.policy,
        state=row.state,
        epoch=row.epoch,
        trigger_key=row.trigger_key,
        candidate_version=row.candidate_version,
        baseline_version=row.baseline_version,
        pipeline_run_id=row.pipeline_run_id,
        phase_started_at=row.phase_started_at,
        cycle_ended_at=row.cycle_ended_at,
        detail=json.loads(row.detail) if row.detail else {},
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
    )


@dataclass(frozen=True)
class Transition:
    """A state change and the event that explains it, written in one transaction."""

    state: str
    kind: str
    reason: str
    version: int | None = None
    details: dict[str, Any] | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    #: More events of the same decision, as ``(kind, reason)``, written after the first.
    followed_by: tuple[tuple[str, str], ...] = ()


#: What a transition may change besides ``state`` and ``epoch`` (leases are not among them).
TRANSITION_COLUMNS = frozenset(
    {
        "trigger_key",
        "candidate_version",
        "baseline_version",
        "pipeline_run_id",
        "phase_started_at",
        "cycle_ended_at",
        "detail",
    }
)


def check_transition(change: Transition) -> None:
    """A transition that names a state, event kinds and columns that exist.

    Raises:
        InvalidInput: one of them does not; the message lists the valid ones.
    """
    if change.state not in STATES:
        raise InvalidInput(f"unknown state {change.state!r}; expected {', '.join(STATES)}")
    check_kinds([change.kind, *(k for k, _ in change.followed_by)])
    unknown = sorted(set(change.changes) - TRANSITION_COLUMNS)
    if unknown:
        raise InvalidInput(
            f"a transition cannot change {', '.join(unknown)}; it may change "
            f"{', '.join(sorted(TRANSITION_COLUMNS))}"
        )


class PolicyStore:
    """Policies and cycle states in the metadata store (``client``: a ``keel.Client``).

    ``PolicyStore(client)`` on a client of ``keel server`` is a
    :class:`~keel.automation.remote.RemotePolicyStore`: the same methods, each one
    request to the server, which checks the caller's permissions and runs this
    class's code there. Every transition that changes the world with the state (the
    canary route, a roll back, a promotion) is one method here, so it stays one
    transaction on whichever side holds the store.
    """

    def __new__(cls, client: Client | None = None) -> PolicyStore:
        from keel.transport.http import HttpTransport

        if cls is PolicyStore:
            from keel.client import Client

            transport = (client or Client()).transport
            if isinstance(transport, HttpTransport):
                from keel.automation.remote import RemotePolicyStore

                return super().__new__(RemotePolicyStore)
        return super().__new__(cls)

    def __init__(self, client: Client | None = None) -> None:
        from keel.client import Client

        self.client = client or Client()

    @property
    def actor(self) -> str:
        return str(self.client.user)

    # -- policies ----------------------------------------------------------------------

    def apply(self, source: Any) -> tuple[Policy, int]:
        """Create or replace a policy (a file, dict or :class:`Policy`); returns it and its revision.

        Every name it uses must exist (:func:`~keel.automation.references.resolve_references`
        lists all that do not). The datasets its triggers watch are counted from their newest
        version now. Replacing a policy does not interrupt a cycle in progress; the next
        cycle uses the new rules.
        """
        from keel.automation.references import resolve_references

        policy = load_policy(source)
        # Names resolve where the controller will use them: the pipeline is imported here.
        resolved = resolve_references(policy, self.client)
        return self.store_policy(policy, resolved.datasets)

    def store_policy(self, policy: Policy, datasets: dict[str, int]) -> tuple[Policy, int]:
        """Store a checked policy (see :meth:`apply`); returns it and its revision.

        Args:
            policy: a parsed policy whose references resolved.
            datasets: the newest version of each dataset a trigger watches, now.
        """
        spec = json.dumps(policy.to_dict(), sort_keys=True)
        at = now_ms()
        with self.client.store.write() as conn:
            row = conn.execute(
                select(s.automation_policies).where(s.automation_policies.c.name == policy.name)
            ).first()
            if row is not None and row.spec == spec:
                return policy, int(row.revision)
            revision = 1 if row is None else int(row.revision) + 1
            values = {
                "model": policy.model,
                "deployment": policy.deployment,
                "spec": spec,
                "revision": revision,
                "enabled": True,
                "updated_at": at,
                "updated_by": self.actor,
            }
            if row is None:
                conn.execute(
                    s.automation_policies.insert().values(name=policy.name, created_at=at, **values)
                )
                conn.execute(
                    s.automation_state.insert().values(
                        policy=policy.name,
                        state=IDLE,
                        epoch=0,
                        # Schedules fire for times after this, not for every past one;
                        # a dataset version added after this is news (not a baseline).
                        detail=json.dumps({"applied_at": at, "datasets_seen": datasets}),
                    )
                )
            else:
                conn.execute(
                    update(s.automation_policies)
                    .where(s.automation_policies.c.name == policy.name)
                    .values(**values)
                )
                self._watch(conn, policy.name, datasets)
            audit.record(
                conn,
                actor=self.actor,
                action="automation.policy_apply",
                object_type="policy",
                object_id=policy.name,
                before=None if row is None else json.loads(row.spec),
                after=policy.to_dict(),
            )
        return policy, revision

    def _watch(self, conn: Connection, name: str, datasets: dict[str, int]) -> None:
        """Count datasets a new revision starts watching from their newest version now."""
        table = s.automation_state
        row = conn.execute(
            select(table.c.epoch, table.c.detail).where(table.c.policy == name)
        ).first()
        detail = json.loads(row.detail) if row is not None and row.detail else {}
        seen = dict(detail.get("datasets_seen") or {})
        new = {k: v for k, v in datasets.items() if k not in seen}
        if row is None or not new:
            return
        done = conn.execute(
            update(table)
            .where(table.c.policy == name, table.c.epoch == row.epoch)
            .values(
                detail=json.dumps({**detail, "datasets_seen": {**seen, **new}}),
                epoch=row.epoch + 1,
            )
        )
        if done.rowcount != 1:
            raise Conflict(f"policy {name!r} moved while it was applied; apply it again")

    def get(self, name: str) -> Policy:
        with self.client.store.read() as conn:
            row = conn.execute(
                select(s.automation_policies.c.spec).where(s.automation_policies.c.name == name)
            ).first()
        if row is None:
            raise NotFound(
                f"no automation policy {name!r}; create it with `keel policy apply FILE`"
            )
        return load_policy(json.loads(row.spec))

    def list(self, *, enabled_only: bool = False) -> list[dict[str, Any]]:
        """Every policy with its revision and current state."""
        p, st = s.automation_policies, s.automation_state
        query = select(p, st.c.state, st.c.candidate_version).join(st, st.c.policy == p.c.name)
        if enabled_only:
            query = query.where(p.c.enabled.is_(True))
        with self.client.store.read() as conn:
            rows = conn.execute(query.order_by(p.c.name)).all()
        return [
            {
                "name": r.name,
                "kind": next((k for k in ("prompt", "index") if k in json.loads(r.spec)), "model"),
                "model": r.model,
                "deployment": r.deployment,
                "revision": r.revision,
                "enabled": bool(r.enabled),
                "state": r.state,
                "candidate_version": r.candidate_version,
                "updated_at": r.updated_at,
                "updated_by": r.updated_by,
            }
            for r in rows
        ]

    def set_enabled(self, name: str, enabled: bool) -> None:
        with self.client.store.write() as conn:
            done = conn.execute(
                update(s.automation_policies)
                .where(s.automation_policies.c.name == name)
                .values(enabled=enabled, updated_at=now_ms(), updated_by=self.actor)
            )
            if done.rowcount != 1:
                raise NotFound(f"no automation policy {name!r}")
            audit.record(
                conn,
                actor=self.actor,
                action="automation.policy_enable" if enabled else "automation.policy_disable",
                object_type="policy",
                object_id=name,
                after={"enabled": enabled},
            )

    # -- cycle state ---------------------------------------------------------------------

    def state(self, name: str) -> CycleState:
        with self.client.store.read() as conn:
            row = conn.execute(
                select(s.automation_state).where(s.automation_state.c.policy == name)
            ).first()
        if row is None:
            raise NotFound(f"no automation policy {name!r}")
        return _state(row)

    def transition(
        self,
        current: CycleState,
        policy: Policy,
        change: Transition,
        conn: Connection | None = None,
    ) -> CycleState:
        """Move ``current`` to ``change.state`` if nobody moved it meanwhile; record the event.

        With ``conn`` (an open write transaction from ``store.write()``) the state change
        and its events join the caller's transaction, so they commit or roll back with the
        deployment revision or the alias move made there; else they are a transaction of
        their own.

        Raises:
            Conflict: the state moved since ``current`` was read.
        """
        values: dict[str, Any] = {"state": change.state, "epoch": current.epoch + 1}
        values.update(change.changes)
        if "detail" in values and not isinstance(values["detail"], str | None):
            values["detail"] = json.dumps(values["detail"], default=str)

        with self.client.store.write(conn) as conn:
            done = conn.execute(
                update(s.automation_state)
                .where(
                    s.automation_state.c.policy == current.policy,
                    s.automation_state.c.epoch == current.epoch,
                )
                .values(**values)
            )
            if done.rowcount != 1:
                raise Conflict(
                    f"policy {current.policy!r} moved past epoch {current.epoch} meanwhile "
                    "(another controller?); reload and retry"
                )
            for kind, reason, details in (
                (change.kind, change.reason, change.details),
                *((k, r, None) for k, r in change.followed_by),
            ):
                record_event(
                    conn,
                    actor=self.actor,
                    policy=policy.name,
                    kind=kind,
                    model=policy.model,
                    version=change.version,
                    reason=reason,
                    details=details,
                )
        merged = dict(values)
        if isinstance(merged.get("detail"), str):
            merged["detail"] = json.loads(merged["detail"])
        return replace(current, **merged)

    def note(
        self,
        policy: Policy,
        kind: str,
        reason: str,
        version: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """An event without a state change (e.g. a resumed cycle)."""
        with self.client.store.write() as conn:
            record_event(
                conn,
                actor=self.actor,
                policy=policy.name,
                kind=kind,
                model=policy.model,
                version=version,
                reason=reason,
                details=details,
            )

    def save_detail(self, current: CycleState, detail: dict[str, Any]) -> CycleState:
        """Merge ``detail`` into the stored state: a compare-and-set on its epoch, no event.

        Raises:
            Conflict: the state moved since ``current`` was read.
        """
        merged = {**current.detail, **detail}
        table = s.automation_state
        with self.client.store.write() as conn:
            done = conn.execute(
                update(table)
                .where(table.c.policy == current.policy, table.c.epoch == current.epoch)
                .values(detail=json.dumps(merged, default=str), epoch=current.epoch + 1)
            )
            if done.rowcount != 1:
                raise Conflict(f"policy {current.policy!r} moved meanwhile; reload and retry")
        return replace(current, detail=merged, epoch=current.epoch + 1)

    def last_event_id(self, name: str) -> int:
        """The id of the policy's newest event (0 when it has none)."""
        table = s.automation_events
        with self.client.store.read() as conn:
            value = conn.execute(
                select(func.max(table.c.id)).where(table.c.policy == name)
            ).scalar()
        return int(value or 0)

    def events_after(self, name: str, event_id: int) -> builtins.list[Event]:
        """The policy's events newer than ``event_id``, oldest first."""
        return self.history(name, after=event_id)

    def claim_trigger(self, conn: Connection, policy: str, key: str) -> bool:
        """Record ``key`` for ``policy``; False if it was claimed before (in this transaction)."""
        done = conn.execute(
            insert_on_conflict(conn, s.automation_triggers)
            .values(policy=policy, key=key[:256], created_at=now_ms())
            .on_conflict_do_nothing(
                index_elements=[s.automation_triggers.c.policy, s.automation_triggers.c.key]
            )
            .returning(s.automation_triggers.c.id)
        )
        return done.first() is not None

    def trigger_claimed(self, policy: str, key: str) -> bool:
        with self.client.store.read() as conn:
            row = conn.execute(
                select(s.automation_triggers.c.id).where(
                    s.automation_triggers.c.policy == policy,
                    s.automation_triggers.c.key == key[:256],
                )
            ).first()
        return row is not None

    # -- transitions that change the world with the state ------------------------------

    def trigger(
        self, current: CycleState, policy: Policy, key: str, change: Transition
    ) -> CycleState | None:
        """Claim the trigger ``key`` and make ``change``, in one transaction.

        Returns:
            The new state, or None when the key was claimed before (another controller
            already acted on this occasion; nothing changed).

        Raises:
            Conflict: the state moved since ``current`` was read.
        """
        with self.client.store.write() as conn:
            if not self.claim_trigger(conn, policy.name, key):
                return None
            return self.transition(current, policy, change, conn)

    def start_canary(
        self, current: CycleState, policy: Policy, change: Transition, version: int
    ) -> CycleState:
        """Add ``version``'s canary route to the policy's deployment and make ``change``.

        The deployment's new revision is a compare-and-set on the revision read here;
        it and the state change commit together.

        Raises:
            Conflict: the state or the deployment moved meanwhile.
        """
        deployments = self._deployments()
        deployment = deployments.get(policy.deployment)
        canary = policy.rollout.canary
        spec = deployment.spec.with_canary(policy.model, version, canary.weight)
        with self.client.store.write() as conn:
            deployments.set_spec(
                policy.deployment,
                spec,
                comment=f"automation {policy.name}: canary {policy.label(version)} at "
                f"{canary.weight}%",
                expected_revision=deployment.revision,
                conn=conn,
            )
            return self.transition(current, policy, change, conn)

    def roll_back(self, current: CycleState, policy: Policy, change: Transition) -> CycleState:
        """Drop the candidate's canary route (if it is still there) and make ``change``.

        Raises:
            Conflict: the state or the deployment moved meanwhile.
        """
        version = current.candidate_version
        deployments = self._deployments()
        deployment = deployments.get(policy.deployment)
        spec = deployment.spec.without_canary(policy.model, version)
        with self.client.store.write() as conn:
            if spec != deployment.spec:  # else nothing routes to it any more: just end
                deployments.set_spec(
                    policy.deployment,
                    spec,
                    comment=f"automation {policy.name}: roll back {policy.label(version)}: "
                    f"{change.reason}"[:500],
                    expected_revision=deployment.revision,
                    conn=conn,
                )
            return self.transition(current, policy, change, conn)

    def promote(
        self,
        current: CycleState,
        policy: Policy,
        change: Transition,
        *,
        expected: int | None,
        comment: str,
    ) -> CycleState:
        """Move the policy's alias to the candidate, drop its canary route, make ``change``.

        One transaction: the alias moves by compare-and-set from ``expected``, so there is
        never a second champion, and with it the deployment revision and the event. The
        alias is the registered model's or, for a prompt policy, the prompt's: the same
        registry code moves both, with the same approvals.

        Raises:
            ApprovalRequired: the alias is protected and the approvals are not there yet.
            Conflict: the alias, the deployment or the state moved meanwhile.
        """
        version = current.candidate_version
        if version is None:
            raise InvalidInput(f"policy {policy.name!r} has no candidate to promote")
        if policy.is_index:  # no deployment routes an index: the alias move is the promotion
            with self.client.store.write() as conn:
                self._registry(policy).set_alias(
                    policy.model,
                    policy.alias,
                    version,
                    expected=expected,
                    comment=comment,
                    conn=conn,
                )
                return self.transition(current, policy, change, conn)
        deployments = self._deployments()
        deployment = deployments.get(policy.deployment)
        with self.client.store.write() as conn:
            self._registry(policy).set_alias(
                policy.model, policy.alias, version, expected=expected, comment=comment, conn=conn
            )
            deployments.set_spec(
                policy.deployment,
                deployment.spec.promoted(policy.model, version, policy.alias),
                comment=f"automation {policy.name}: promoted {policy.label(version)}",
                expected_revision=deployment.revision,
                conn=conn,
            )
            return self.transition(current, policy, change, conn)

    def _deployments(self) -> Deployments:
        from keel.serving.deployments import Deployments

        return Deployments(self.client)

    def _registry(self, policy: Policy) -> RegistryClient:
        """The registry rows the policy's alias lives on: the models', prompts' or indexes'."""
        if policy.is_prompt:
            return PromptRows(transport=self.client.transport)
        if policy.is_index:
            from keel.llm.rag.part import RagRows

            return RagRows(transport=self.client.transport)
        return self.client.registry

    # -- events ---------------------------------------------------------------------------

    def history(
        self,
        policy: str | None = None,
        *,
        kinds: tuple[str, ...] | None = None,
        limit: int | None = None,
        after: int = 0,
    ) -> builtins.list[Event]:
        """Decision events oldest first: all policies' or one's, some kinds, after an id.

        Raises:
            InvalidInput: a kind is not one of :data:`~keel.automation.events.EVENT_KINDS`.
        """
        with self.client.store.read() as conn:
            return list_events(conn, policy=policy, kinds=kinds, limit=limit, after=after)

    # -- leases ----------------------------------------------------------------------------

    def acquire(self, name: str, owner: str, seconds: float) -> bool:
        """Take or renew the lease on ``name``'s cycle; False if a live controller holds it."""
        now = now_ms()
        until = now + int(seconds * 1000)
        table = s.automation_state
        with self.client.store.write() as conn:
            done = conn.execute(
                update(table)
                .where(
                    table.c.policy == name,
                    or_(
                        table.c.lease_owner.is_(None),
                        table.c.lease_owner == owner,
                        table.c.lease_until < now,
                    ),
                )
                .values(lease_owner=owner, lease_until=until)
            )
            if done.rowcount == 1:
                return True
            holder: str | None = conn.execute(
                select(table.c.lease_owner).where(table.c.policy == name)
            ).scalar()
            if (
                holder is None
                and not conn.execute(select(table.c.policy).where(table.c.policy == name)).first()
            ):
                raise NotFound(f"no automation policy {name!r}")
            if not holder_is_dead(holder):
                return False
            taken = conn.execute(  # its holder died on this host: take it over now
                update(table)
                .where(table.c.policy == name, table.c.lease_owner == holder)
                .values(lease_owner=owner, lease_until=until)
            )
            return taken.rowcount == 1

    def release(self, name: str, owner: str) -> None:
        table = s.automation_state
        with self.client.store.write() as conn:
            conn.execute(
                update(table)
                .where(table.c.policy == name, table.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )


class StateHandlers:
    """What the handlers of some policy states share with the controller that calls them.

    A policy kind whose states need more than the controller's own handlers
    (an index policy's cycle, a retrain that waits on a job queue) subclasses this.

    Args:
        client: the controller's ``keel.Client``.
        store: the controller's :class:`PolicyStore`.
        clock: milliseconds since the epoch.
        moved: the controller's record that it moved a policy into a state (so a state
            it entered itself is not reported as resumed).
    """

    def __init__(
        self,
        client: Client,
        store: PolicyStore,
        clock: Callable[[], int],
        moved: Callable[[Policy, CycleState], CycleState],
    ) -> None:
        self.client = client
        self.store = store
        self.clock = clock
        self.moved = moved
