"""The audit trail: a hash chain of every change of state.

Each entry records who did what to which object, the object's state before
and after, the time, and ``prev_digest`` — the digest of the entry before
it. An entry's own digest is BLAKE3 over its canonical JSON, prev digest
included, so editing, deleting or reordering any row breaks the chain at
that row, and :func:`verify` names it.

Entries are written with :func:`record` *inside the transaction that makes
the change*, so a change and its entry commit or roll back together. The
single ``audit_head`` row holds the newest seq and digest; updating it
serializes writers (row lock on PostgreSQL, the write lock on SQLite), so
the chain never forks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import blake3
from sqlalchemy import Connection, select, update

from keel.artifacts.store import canonical_json
from keel.store import Store
from keel.store import schema as s
from keel.store.sql import now_ms

__all__ = [
    "GENESIS",
    "AuditEntry",
    "VerifyResult",
    "iter_entries",
    "list_entries",
    "record",
    "verify",
]

#: The ``prev_digest`` of the first entry.
GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: int
    actor: str
    action: str
    object_type: str
    object_id: str
    before: Any
    after: Any
    prev_digest: str
    digest: str

    def to_dict(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        return {
            "seq": self.seq,
            "time": datetime.fromtimestamp(self.at / 1000, UTC).isoformat(),
            "actor": self.actor,
            "action": self.action,
            "object": f"{self.object_type}:{self.object_id}",
            "before": self.before,
            "after": self.after,
            "prev_digest": self.prev_digest,
            "digest": self.digest,
        }


def _dump(value: Any) -> str | None:
    return None if value is None else canonical_json(value).decode()


def entry_digest(
    seq: int,
    at: int,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    before: str | None,
    after: str | None,
    prev_digest: str,
) -> str:
    """The digest of an entry's stored fields (``before``/``after`` as stored text)."""
    payload = [seq, at, actor, action, object_type, object_id, before, after, prev_digest]
    return blake3.blake3(canonical_json(payload)).hexdigest()


def record(
    conn: Connection,
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    before: Any = None,
    after: Any = None,
) -> AuditEntry:
    """Append an entry in the caller's (write) transaction and return it."""
    head = conn.execute(
        select(s.audit_head.c.seq, s.audit_head.c.digest)
        .where(s.audit_head.c.id == 1)
        .with_for_update()
    ).one()
    seq = int(head.seq) + 1
    at = now_ms()
    before_text, after_text = _dump(before), _dump(after)
    digest = entry_digest(
        seq, at, actor, action, object_type, object_id, before_text, after_text, head.digest
    )
    conn.execute(
        s.audit_log.insert().values(
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            before=before_text,
            after=after_text,
            prev_digest=head.digest,
            digest=digest,
        )
    )
    conn.execute(update(s.audit_head).where(s.audit_head.c.id == 1).values(seq=seq, digest=digest))
    return AuditEntry(
        seq, at, actor, action, object_type, object_id, before, after, head.digest, digest
    )


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        before=None if row.before is None else json.loads(row.before),
        after=None if row.after is None else json.loads(row.after),
        prev_digest=row.prev_digest,
        digest=row.digest,
    )


def list_entries(
    store: Store,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    actor: str | None = None,
    limit: int | None = None,
    newest_first: bool = True,
) -> list[AuditEntry]:
    """Entries, optionally of one object (``object_id`` may end in ``*`` for a prefix)."""
    query = select(s.audit_log)
    if object_type:
        query = query.where(s.audit_log.c.object_type == object_type)
    if object_id:
        if object_id.endswith("*"):
            query = query.where(s.audit_log.c.object_id.like(object_id[:-1] + "%"))
        else:
            query = query.where(s.audit_log.c.object_id == object_id)
    if actor:
        query = query.where(s.audit_log.c.actor == actor)
    query = query.order_by(s.audit_log.c.seq.desc() if newest_first else s.audit_log.c.seq)
    if limit:
        query = query.limit(limit)
    with store.read() as conn:
        return [_entry(row) for row in conn.execute(query)]


def iter_entries(store: Store, batch: int = 5000) -> Iterator[Any]:
    """Every stored row in seq order, as stored (text ``before``/``after``), in batches."""
    last = 0
    while True:
        with store.read() as conn:
            rows = conn.execute(
                select(s.audit_log)
                .where(s.audit_log.c.seq > last)
                .order_by(s.audit_log.c.seq)
                .limit(batch)
            ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
        }


def verify(store: Store) -> VerifyResult:
    """Walk the chain from the first entry; report the first entry that does not hold."""
    expected_seq = 1
    prev = GENESIS
    checked = 0
    for row in iter_entries(store):
        if row.seq != expected_seq:
            return VerifyResult(
                False,
                checked,
                expected_seq,
                f"entry {expected_seq} is missing: the chain jumps from {expected_seq - 1} to {row.seq}",
            )
        if row.prev_digest != prev:
            return VerifyResult(
                False,
                checked,
                row.seq,
                f"entry {row.seq} does not chain to entry {row.seq - 1}: rows were reordered, "
                "replaced or the previous one was edited",
            )
        actual = entry_digest(
            row.seq,
            row.at,
            row.actor,
            row.action,
            row.object_type,
            row.object_id,
            row.before,
            row.after,
            row.prev_digest,
        )
        if actual != row.digest:
            return VerifyResult(
                False,
                checked,
                row.seq,
                f"entry {row.seq} ({row.action} on {row.object_type}:{row.object_id}) was edited: "
                "its contents no longer match its digest",
            )
        prev = row.digest
        expected_seq += 1
        checked += 1
    with store.read() as conn:
        head = conn.execute(select(s.audit_head).where(s.audit_head.c.id == 1)).one()
    if head.seq != checked or head.digest != prev:
        return VerifyResult(
            False,
            checked,
            checked + 1,
            f"the chain ends at entry {checked} but the head records entry {head.seq}: "
            "entries were deleted from the end",
        )
    return VerifyResult(True, checked)
