"""Decision events: what the controller decided, when, about which version, and why.

Each event is a row written in the same transaction as the state change it
explains, together with its audit entry, so the history, the state and the
audit trail can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from keel.errors import InvalidInput
from keel.governance import audit
from keel.store import schema as s
from keel.store.sql import now_ms

__all__ = ["EVENT_KINDS", "Event", "check_kinds", "list_events", "record_event"]

#: Every kind of event, in the order a cycle produces them.
EVENT_KINDS = (
    "triggered",
    "retrain_started",
    "retrain_finished",
    "retrain_failed",
    "gate_passed",
    "gate_failed",
    "canary_started",
    "approval_requested",
    "promoted",
    "rolled_back",
    "resumed",
)


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple, each one of :data:`EVENT_KINDS`.

    Raises:
        InvalidInput: a kind is not an event kind; the message lists the valid ones.
    """
    given = tuple(kinds)
    unknown = sorted(set(given) - set(EVENT_KINDS))
    if unknown:
        raise InvalidInput(
            f"unknown event kind(s) {', '.join(unknown)}; expected {', '.join(EVENT_KINDS)}"
        )
    return given


@dataclass(frozen=True)
class Event:
    """One decision of the controller."""

    id: int
    at: int
    policy: str
    kind: str
    model: str
    version: int | None
    reason: str
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        return {
            "id": self.id,
            "time": datetime.fromtimestamp(self.at / 1000, UTC).isoformat(timespec="milliseconds"),
            "at": self.at,
            "policy": self.policy,
            "kind": self.kind,
            "model": self.model,
            "version": self.version,
            "reason": self.reason,
            "details": self.details,
        }


def record_event(
    conn: Connection,
    *,
    actor: str,
    policy: str,
    kind: str,
    model: str,
    version: int | None,
    reason: str,
    details: dict[str, Any] | None = None,
) -> int:
    """Write an event and its audit entry in the caller's transaction; returns the event id."""
    if kind not in EVENT_KINDS:  # a programming error, not user input
        raise ValueError(f"unknown event kind {kind!r}")
    at = now_ms()
    event_id = conn.execute(
        s.automation_events.insert()
        .values(
            at=at,
            policy=policy,
            kind=kind,
            model=model,
            version=version,
            reason=reason,
            details=None if details is None else json.dumps(details, default=str),
        )
        .returning(s.automation_events.c.id)
    ).scalar_one()
    audit.record(
        conn,
        actor=actor,
        action=f"automation.{kind}",
        object_type="policy",
        object_id=policy,
        after={"event": event_id, "model": model, "version": version, "reason": reason},
    )
    return int(event_id)


def list_events(
    conn: Connection,
    *,
    policy: str | None = None,
    kinds: tuple[str, ...] | None = None,
    since: int | None = None,
    limit: int | None = None,
    after: int = 0,
) -> list[Event]:
    """Events oldest first, optionally for one policy, some kinds, after a time or an id.

    Raises:
        InvalidInput: a kind is not one of :data:`EVENT_KINDS`.
    """
    if kinds:
        kinds = check_kinds(kinds)
    table = s.automation_events
    query = select(table).order_by(table.c.id)
    if policy is not None:
        query = query.where(table.c.policy == policy)
    if kinds:
        query = query.where(table.c.kind.in_(kinds))
    if since is not None:
        query = query.where(table.c.at >= since)
    if after:
        query = query.where(table.c.id > after)
    rows = conn.execute(query).all()
    if limit is not None:
        rows = rows[-limit:]
    return [
        Event(
            id=row.id,
            at=row.at,
            policy=row.policy,
            kind=row.kind,
            model=row.model,
            version=row.version,
            reason=row.reason,
            details=json.loads(row.details) if row.details else {},
        )
        for row in rows
    ]
