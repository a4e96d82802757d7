"""Automation: each policy with its state, and a live timeline of its decisions.

The pages read what ``keel automation history`` and ``keel policy show`` read,
through :class:`~keel.automation.PolicyStore` on the caller's client, and check
what the API's automation routes check: ``read`` on some resource. A policy's
page draws its events newest first; ``static/timeline.js`` then asks
``/ui/api/automation/{policy}/events?after=<id>`` every few seconds and adds
the events that arrived since, drawn by the same template macro as the page.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse

from keel.automation import CycleState, Event, Policy, PolicyStore
from keel.automation.durations import human_duration
from keel.errors import KeelError, NotFound
from keel.server.context import Caller, SessionCallerDep
from keel.server.ui.render import PageCaller, failed, render, templates
from keel.validation import MAX_NAME_CHARS

__all__ = ["policy_overview", "router"]

#: Events a policy's page draws at first (the newest); older ones are on ``keel automation history``.
TIMELINE_EVENTS = 500
#: Events one poll of the timeline's JSON answers at most (the oldest after ``after``).
POLL_EVENTS = 200

router = APIRouter(include_in_schema=False)

PolicyName = Annotated[str, Path(max_length=MAX_NAME_CHARS)]


def _store(caller: Caller) -> PolicyStore:
    # what the API's read routes check before any lookup (keel.server.routes.automation)
    caller.require_somewhere("read", "reading automation policies and events")
    return PolicyStore(caller.client)


def _cooldown(policy: Policy, state: CycleState, now: int) -> dict[str, Any]:
    """The policy's cooldown, and until when the cycle that ended last holds new triggers off."""
    until = None
    if state.cycle_ended_at is not None:
        end = state.cycle_ended_at + int(policy.cooldown * 1000)
        until = end if end > now else None
    return {"length": human_duration(policy.cooldown), "until": until}


def policy_overview(store: PolicyStore, listed: dict[str, Any], now: int) -> dict[str, Any]:
    """One policy's row of the overview: its listing, state, cooldown and last decision."""
    name = listed["name"]
    policy = store.get(name)
    state = store.state(name)
    last = store.history(name, limit=1)
    return {
        **listed,
        "policy": policy,
        "cycle": state,
        "cooldown": _cooldown(policy, state, now),
        "last": last[0] if last else None,
    }


@router.get("/automation")
def automation_page(caller: PageCaller) -> HTMLResponse:
    """Every policy: its phase, candidate, last decision, cooldown, and paused or not."""
    try:
        store = _store(caller)
        now = int(time.time() * 1000)
        policies = [policy_overview(store, listed, now) for listed in store.list()]
    except KeelError as exc:
        return failed(exc)
    return render("automation.html", title="Automation", user=caller.user, policies=policies)


@router.get("/automation/{name}")
def policy_page(name: PolicyName, caller: PageCaller) -> HTMLResponse:
    """A policy's state and the timeline of its decisions, newest first, kept up to date."""
    try:
        store = _store(caller)
        now = int(time.time() * 1000)
        listed = next((p for p in store.list() if p["name"] == name), None)
        if listed is None:
            store.get(name)  # the library's NotFound, with its hint
            raise NotFound(f"no automation policy {name!r}")
        overview = policy_overview(store, listed, now)
        events = store.history(name, limit=TIMELINE_EVENTS)
    except KeelError as exc:
        return failed(exc)
    return render(
        "automation_policy.html",
        title=f"Policy {name}",
        user=caller.user,
        p=overview,
        events=list(reversed(events)),
        last_id=events[-1].id if events else 0,
        poll_events=POLL_EVENTS,
    )


def event_row(event: Event) -> str:
    """One event as the timeline's table row (the page and the poll draw it the same way)."""
    macros: Any = templates.get_template("automation_macros.html").module
    return str(macros.event_row(event))


@router.get("/ui/api/automation/{name}/events")
def policy_events(
    name: PolicyName,
    caller: SessionCallerDep,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> dict[str, Any]:
    """The policy's events after event ``after``, oldest first, with each one's timeline row.

    Answers ``events`` (as ``keel automation history --json``), ``rows`` (the HTML row of
    each, escaped by the template), ``last`` (the newest id seen, to ask after next) and
    ``more`` (whether events beyond :data:`POLL_EVENTS` wait for the next poll).
    """
    store = _store(caller)
    store.get(name)  # an unknown policy is a 404, not an empty list
    events = store.history(name, after=after)
    more = len(events) > POLL_EVENTS
    events = events[:POLL_EVENTS]
    return {
        "events": [e.to_dict() for e in events],
        "rows": [event_row(e) for e in events],
        "last": events[-1].id if events else after,
        "more": more,
    }
