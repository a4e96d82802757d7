"""The automation routes: policies, their cycle state, leases, transitions and events.

Each route checks one permission, then runs :class:`~keel.automation.PolicyStore`
as the token's user over the server's store. What each needs:

==============================================  =====================================
listing policies, reading one, its state,        ``read`` (on any resource)
its events, whether a trigger was claimed
applying, enabling or disabling a policy         ``admin``
the controller's own steps: leases, notes,       ``write`` on model MODEL (the policy's)
saving detail, a state transition, claiming
a trigger, starting a canary, rolling back
promoting                                        ``write`` on alias MODEL@ALIAS, plus the
                                                 approvals the alias's policy asks for
==============================================  =====================================

So ``keel automation run`` through the server acts as its token's user: an
editor of the model can run the loop, and a protected alias still waits for
its approvals. Every transition is one request and one transaction here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from keel.automation.events import EVENT_KINDS, Event
from keel.automation.policy import Policy, load_policy
from keel.automation.state import CycleState, PolicyStore, Transition, check_transition
from keel.errors import InvalidInput
from keel.server.context import Caller, CallerDep
from keel.transport.wire import from_wire, to_wire
from keel.validation import MAX_NAME_CHARS

router = APIRouter(tags=["automation"])

_REASON_CHARS = 1_000
PolicyName = Annotated[str, Path(max_length=MAX_NAME_CHARS, description="an automation policy")]


class PolicyApply(BaseModel):
    """A checked policy to store, and the newest version of each dataset it watches."""

    policy: dict[str, Any] = Field(description="the policy document (as `keel policy show`)")
    datasets: dict[Annotated[str, Field(max_length=MAX_NAME_CHARS)], int] = Field(
        default_factory=dict, max_length=1_000
    )


class TransitionRequest(BaseModel):
    """One step of a cycle: the state read, the change, and what changes with it."""

    current: dict[str, Any] = Field(description="the cycle state the change starts from")
    change: dict[str, Any] = Field(description="the new state, its event and changed columns")
    effect: Literal["state", "trigger", "canary", "rollback", "promote"] = "state"
    trigger_key: str | None = Field(default=None, max_length=256)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    expected: int | None = Field(default=None, ge=1)
    comment: str = Field(default="", max_length=500)


class Note(BaseModel):
    """An event without a state change."""

    kind: str = Field(max_length=64)
    reason: str = Field(max_length=_REASON_CHARS)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    details: dict[str, Any] | None = None


class DetailUpdate(BaseModel):
    """Detail to merge into the state, as a compare-and-set on ``epoch``."""

    epoch: int = Field(ge=0)
    detail: dict[str, Any]


class Lease(BaseModel):
    """Take or renew a policy's lease."""

    owner: str = Field(min_length=1, max_length=256)
    seconds: float = Field(gt=0, le=86_400)


def _store(caller: Caller) -> PolicyStore:
    return PolicyStore(caller.client)


def _read(caller: Caller) -> PolicyStore:
    caller.require_somewhere("read", "reading automation policies and events")
    return _store(caller)


def _controlled(caller: Caller, name: str) -> tuple[PolicyStore, Policy]:
    """The store and the stored policy, for a caller who may write its model."""
    store = _store(caller)
    policy = store.get(name)  # the stored one decides what is touched, never the request
    caller.require("write", "model", policy.model)
    return store, policy


# -- policies ---------------------------------------------------------------------------------


@router.get("/automation/policies")
def list_policies(caller: CallerDep, enabled_only: bool = False) -> Any:
    """Every policy with its revision and current state."""
    return to_wire(_read(caller).list(enabled_only=enabled_only))


@router.put("/automation/policies/{name}")
def apply_policy(name: PolicyName, body: PolicyApply, caller: CallerDep) -> Any:
    """Create or replace a policy whose references the client resolved (``admin``)."""
    caller.require("admin")
    policy = load_policy(body.policy)
    if policy.name != name:
        raise InvalidInput(f"the policy is named {policy.name!r}, but was sent to {name!r}")
    stored, revision = _store(caller).store_policy(policy, dict(body.datasets))
    return {"policy": stored.to_dict(), "revision": revision}


@router.get("/automation/policies/{name}")
def get_policy(name: PolicyName, caller: CallerDep) -> Any:
    """A policy's document."""
    return {"policy": _read(caller).get(name).to_dict()}


@router.post("/automation/policies/{name}/enable")
def enable_policy(name: PolicyName, caller: CallerDep) -> None:
    """Let the controller act on the policy again (``admin``)."""
    caller.require("admin")
    _store(caller).set_enabled(name, True)


@router.post("/automation/policies/{name}/disable")
def disable_policy(name: PolicyName, caller: CallerDep) -> None:
    """Stop the controller from starting cycles for the policy (``admin``)."""
    caller.require("admin")
    _store(caller).set_enabled(name, False)


# -- cycle state ---------------------------------------------------------------------------


@router.get("/automation/policies/{name}/state")
def get_state(name: PolicyName, caller: CallerDep) -> Any:
    """Where the policy's cycle stands."""
    return to_wire(_read(caller).state(name))


@router.post("/automation/policies/{name}/transitions")
def transition(name: PolicyName, body: TransitionRequest, caller: CallerDep) -> Any:
    """One step of the cycle in one transaction: the state's compare-and-set, its events,
    and with them the claimed trigger, the canary route, the roll back or the promotion.

    Answers the new state, or null when the trigger was claimed before.
    """
    store = _store(caller)
    policy = store.get(name)
    if body.effect == "promote":
        caller.require("write", "alias", f"{policy.model}@{policy.alias}")
    else:
        caller.require("write", "model", policy.model)
    current = from_wire(body.current, CycleState)
    change = from_wire(body.change, Transition)
    if current.policy != name:
        raise InvalidInput(f"the state sent is policy {current.policy!r}'s, not {name!r}'s")
    check_transition(change)
    if body.effect == "trigger":
        if not body.trigger_key:
            raise InvalidInput("a trigger transition needs its trigger_key")
        return to_wire(store.trigger(current, policy, body.trigger_key, change))
    if body.effect == "canary":
        if body.version is None:
            raise InvalidInput("a canary transition needs the candidate's version")
        return to_wire(store.start_canary(current, policy, change, body.version))
    if body.effect == "rollback":
        return to_wire(store.roll_back(current, policy, change))
    if body.effect == "promote":
        return to_wire(
            store.promote(current, policy, change, expected=body.expected, comment=body.comment)
        )
    return to_wire(store.transition(current, policy, change))


@router.post("/automation/policies/{name}/detail")
def save_detail(name: PolicyName, body: DetailUpdate, caller: CallerDep) -> Any:
    """Merge detail into the state (compare-and-set on its epoch; no event)."""
    store, _ = _controlled(caller, name)
    current = store.state(name)
    if current.epoch != body.epoch:
        from keel.errors import Conflict

        raise Conflict(f"policy {name!r} moved meanwhile; reload and retry")
    return to_wire(store.save_detail(current, body.detail))


@router.post("/automation/policies/{name}/events", status_code=201)
def note(name: PolicyName, body: Note, caller: CallerDep) -> None:
    """Record an event without a state change (e.g. a resumed cycle)."""
    store, policy = _controlled(caller, name)
    if body.kind not in EVENT_KINDS:
        raise InvalidInput(f"unknown event kind {body.kind!r}; expected {', '.join(EVENT_KINDS)}")
    store.note(policy, body.kind, body.reason, body.version, body.details)


@router.get("/automation/policies/{name}/trigger-claimed")
def trigger_claimed(
    name: PolicyName,
    caller: CallerDep,
    key: Annotated[str, Query(min_length=1, max_length=256)],
) -> Any:
    """Whether the policy's trigger ``key`` was claimed."""
    return {"claimed": _read(caller).trigger_claimed(name, key)}


@router.put("/automation/policies/{name}/lease")
def acquire_lease(name: PolicyName, body: Lease, caller: CallerDep) -> Any:
    """Take or renew the lease on the policy's cycle; false if a live controller holds it."""
    store, _ = _controlled(caller, name)
    return {"acquired": store.acquire(name, body.owner, body.seconds)}


@router.delete("/automation/policies/{name}/lease")
def release_lease(
    name: PolicyName,
    caller: CallerDep,
    owner: Annotated[str, Query(min_length=1, max_length=256)],
) -> None:
    """Give the lease back (only its owner's release does anything)."""
    store, _ = _controlled(caller, name)
    store.release(name, owner)


# -- events ------------------------------------------------------------------------------------


@router.get("/automation/events")
def list_events(
    caller: CallerDep,
    policy: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
    kind: Annotated[list[str] | None, Query(max_length=len(EVENT_KINDS))] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> Any:
    """Decision events oldest first (all policies or one; some kinds; after an event id)."""
    events: list[Event] = _read(caller).history(
        policy, kinds=tuple(kind) if kind else None, limit=limit, after=after
    )
    return to_wire(events)
