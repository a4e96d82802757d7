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

A chain that holds can still be a chain whose newest rows were deleted
and whose head was rewound. Checkpoints (:mod:`keel.governance.checkpoints`)
anchor the head outside the database, in the artifact store: :func:`record`
has one written when a protected action or every hundredth entry commits,
and :func:`verify` reports ``entries after seq N are missing`` when the
newest checkpoint names an entry the chain no longer has.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import blake3
from sqlalchemy import Connection, bindparam, select, update

import keel.governance.checkpoints as checkpoints
from keel.artifacts.store import canonical_json
from keel.config import Settings, get_settings
from keel.errors import IntegrityError, InvalidInput
from keel.governance.checkpoints import Checkpoint, CheckpointError, CheckpointLog
from keel.store import Store, normalize_url, redact_url
from keel.store import schema as s
from keel.store.sql import now_ms

__all__ = [
    "GENESIS",
    "AuditEntry",
    "VerifyResult",
    "acting_token",
    "checkpoint",
    "iter_entries",
    "list_entries",
    "parse_object_ref",
    "record",
    "verify",
]

#: The ``prev_digest`` of the first entry.
GENESIS = "0" * 64

# Statements of record(), built once: every change of state writes an entry, and building a
# statement (``.values(...)``, ``.where(...)``) costs more than running it — it was most of a
# run's start and end. A prebuilt statement also finds its compiled form in SQLAlchemy's cache
# at once; SQLAlchemy compiles it per dialect (FOR UPDATE on PostgreSQL, nothing on SQLite).
_LOCK_HEAD = (
    select(s.audit_head.c.seq, s.audit_head.c.digest)
    .where(s.audit_head.c.id == 1)
    .with_for_update()
)
_INSERT_ENTRY = s.audit_log.insert()
_ADVANCE_HEAD = (
    update(s.audit_head)
    .where(s.audit_head.c.id == 1)
    .values(seq=bindparam("new_seq"), digest=bindparam("new_digest"))
)

#: The API token the current server request acts with; ``keel server`` sets it per request.
_acting_token: ContextVar[str | None] = ContextVar("keel_acting_token", default=None)


@contextmanager
def acting_token(token_id: str | None) -> Iterator[None]:
    """Record ``token_id`` on every entry written inside the block (and threads it starts)."""
    reset = _acting_token.set(token_id)
    try:
        yield
    finally:
        _acting_token.reset(reset)


def set_acting_token(token_id: str | None) -> None:
    """Set the token recorded on entries for the rest of this context (a server request)."""
    _acting_token.set(token_id)


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
    token_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        return {
            "seq": self.seq,
            "time": datetime.fromtimestamp(self.at / 1000, UTC).isoformat(),
            "actor": self.actor,
            "token_id": self.token_id,
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
    token_id: str | None = None,
) -> str:
    """The digest of an entry's stored fields (``before``/``after`` as stored text).

    The token id joins the digested fields only when there is one, so entries written
    before tokens existed keep their digests.
    """
    payload: list[Any] = [seq, at, actor, action, object_type, object_id, before, after]
    payload.append(prev_digest)
    if token_id is not None:
        payload.append(token_id)
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
    head = conn.execute(_LOCK_HEAD).one()
    seq = int(head.seq) + 1
    at = now_ms()
    before_text, after_text = _dump(before), _dump(after)
    token_id = _acting_token.get()
    digest = entry_digest(
        seq,
        at,
        actor,
        action,
        object_type,
        object_id,
        before_text,
        after_text,
        head.digest,
        token_id,
    )
    # Every column, always: one compiled form of the INSERT serves every entry.
    conn.execute(
        _INSERT_ENTRY,
        {
            "seq": seq,
            "at": at,
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "before": before_text,
            "after": after_text,
            "prev_digest": head.digest,
            "digest": digest,
            "token_id": token_id,
        },
    )
    conn.execute(_ADVANCE_HEAD, {"new_seq": seq, "new_digest": digest})
    checkpoints.schedule(conn, seq, digest, action)
    return AuditEntry(
        seq, at, actor, action, object_type, object_id, before, after, head.digest, digest, token_id
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
        token_id=row.token_id,
    )


def parse_object_ref(ref: str) -> tuple[str, str]:
    """Split an object reference ``TYPE:ID`` (``alias:churn@champion``) into type and id.

    Only the first colon separates, so an id may hold colons of its own.

    Raises:
        InvalidInput: ``ref`` has no colon, or an empty type or id.
    """
    object_type, sep, object_id = ref.partition(":")
    if not sep or not object_type or not object_id:
        raise InvalidInput(
            f"an audit object must be TYPE:ID such as alias:churn@champion or run:<id>, got {ref!r}"
        )
    return object_type, object_id


def list_entries(
    store: Store,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: int | None = None,
    until: int | None = None,
    before: int | None = None,
    limit: int | None = None,
    newest_first: bool = True,
) -> list[AuditEntry]:
    """Entries that every filter given matches.

    Args:
        store: the metadata store holding the log.
        object_type: the kind of object (``alias``, ``run``, ``policy`` …).
        object_id: the object's id, or a prefix ending in ``*``.
        actor: the user who acted.
        action: the action (``alias.set``), or a prefix ending in ``*`` (``automation.*``).
        since: entries at or after this time (ms since the epoch).
        until: entries before this time (ms since the epoch).
        before: entries with a seq below this one: the next page of a newest-first
            listing, which the seq index answers at once however deep the page.
        limit: at most this many entries.
        newest_first: order by seq, descending (the default) or ascending.

    Raises:
        InvalidInput: the time range is empty.
    """
    if since is not None and until is not None and since >= until:
        raise InvalidInput("the time range is empty: 'since' must be before 'until'")
    log = s.audit_log
    query = select(log)
    if object_type:
        query = query.where(log.c.object_type == object_type)
    if object_id:
        query = query.where(_matches(log.c.object_id, object_id))
    if actor:
        query = query.where(log.c.actor == actor)
    if action:
        query = query.where(_matches(log.c.action, action))
    if since is not None:
        query = query.where(log.c.at >= since)
    if until is not None:
        query = query.where(log.c.at < until)
    if before is not None:
        query = query.where(log.c.seq < before)
    query = query.order_by(log.c.seq.desc() if newest_first else log.c.seq)
    if limit:
        query = query.limit(limit)
    with store.read() as conn:
        return [_entry(row) for row in conn.execute(query)]


def _matches(column: Any, value: str) -> Any:
    """``column = value``, or a prefix match when ``value`` ends in ``*`` (``%``/``_`` literal)."""
    if not value.endswith("*"):
        return column == value
    prefix = value[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(prefix + "%", escape="\\")


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
    """What :func:`verify` found.

    Attributes:
        ok: the chain holds and reaches the newest checkpoint.
        checked: entries that hold, from the first.
        first_bad_seq: the first entry that does not hold or is missing; None when the
            problem is the checkpoint itself.
        reason: what is wrong, for people.
        checkpoint: the newest checkpoint the chain was compared with, if any.
        anchor: what the chain's end was compared with, for people.
    """

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    checkpoint: Checkpoint | None = None
    anchor: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_dict(),
            "anchor": self.anchor,
        }


def verify(store: Store, *, settings: Settings | None = None) -> VerifyResult:
    """Walk the chain from the first entry and compare its end with the newest checkpoint.

    Reports the first entry that does not hold (edited, deleted, reordered),
    a head that records more entries than the chain has, entries after the
    chain's end that a checkpoint proves existed (``entries after seq N are
    missing``), and a checkpoint that is damaged or, when ``audit_key`` is
    set, unsigned or not signed with it.

    Args:
        store: the metadata store whose chain to check.
        settings: the artifact store holding the checkpoints and the key that signs
            them; the process's settings by default. Checkpoints are compared only
            when these settings name ``store``'s database.
    """
    return _verify(store, CheckpointLog.for_store(store, settings), signatures=True)[0]


def checkpoint(store: Store, *, settings: Settings | None = None) -> Checkpoint:
    """Check the chain, then write a checkpoint of its newest entry (signed if a key is set).

    Checkpoints are written by themselves at protected actions and every
    :data:`~keel.governance.checkpoints.EVERY` entries; this one is for a
    newly set ``audit_key`` (so the newest checkpoint is signed) or a schedule.
    The chain must verify, except for the signature of the newest checkpoint.

    Raises:
        InvalidInput: the settings name another database, or the chain is empty.
        IntegrityError: the chain does not verify.
    """
    resolved = settings or get_settings()
    log = CheckpointLog.for_store(store, resolved)
    if log is None:
        raise InvalidInput(
            f"the settings name the database {redact_url(normalize_url(resolved.store_url))}, "
            f"not {redact_url(store.url)}: pass the settings of this store so its checkpoint "
            "goes to its artifact store"
        )
    result, last_digest = _verify(store, log, signatures=False)
    if not result.ok:
        raise IntegrityError(
            f"the audit chain does not verify, so it gets no checkpoint: {result.reason}"
        )
    if result.checked == 0:
        raise InvalidInput("the audit chain is empty: there is no entry to checkpoint yet")
    return log.write(result.checked, last_digest)


def _verify(
    store: Store, log: CheckpointLog | None, *, signatures: bool
) -> tuple[VerifyResult, str]:
    """The result and the digest of the newest entry that holds."""
    # Order matters with writers running: checkpoints first (each names an entry
    # committed before it was written), then the head, then the rows. Every entry
    # a checkpoint or the head names is then among the rows read.
    newest: list[Checkpoint] = []
    problem: str | None = None
    if log is None:
        anchor = "no checkpoints: the settings name another database than this store"
    else:
        try:
            newest = log.newest()
        except CheckpointError as exc:
            problem = str(exc)
        anchor = "no checkpoint yet: only the in-database checks ran"
    with store.read() as conn:
        head = conn.execute(select(s.audit_head).where(s.audit_head.c.id == 1)).one()
    wanted = {head.seq, *(c.seq for c in newest)}
    digests: dict[int, str] = {}
    expected_seq = 1
    prev = GENESIS
    checked = 0
    for row in iter_entries(store):
        if row.seq != expected_seq:
            reason = (
                f"entry {expected_seq} is missing: the chain jumps from {expected_seq - 1} "
                f"to {row.seq}"
            )
            return VerifyResult(False, checked, expected_seq, reason), prev
        if row.prev_digest != prev:
            reason = (
                f"entry {row.seq} does not chain to entry {row.seq - 1}: rows were reordered, "
                "replaced or the previous one was edited"
            )
            return VerifyResult(False, checked, row.seq, reason), prev
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
            row.token_id,
        )
        if actual != row.digest:
            reason = (
                f"entry {row.seq} ({row.action} on {row.object_type}:{row.object_id}) was "
                "edited: its contents no longer match its digest"
            )
            return VerifyResult(False, checked, row.seq, reason), prev
        if row.seq in wanted:
            digests[row.seq] = row.digest
        prev = row.digest
        expected_seq += 1
        checked += 1
    if head.seq > checked:
        reason = (
            f"the chain ends at entry {checked} but the head records entry {head.seq}: "
            "entries were deleted from the end"
        )
        return VerifyResult(False, checked, checked + 1, reason), prev
    if digests.get(head.seq, GENESIS) != head.digest:
        reason = (
            f"the head records entry {head.seq} with digest {head.digest}, but that entry's "
            f"digest is {digests.get(head.seq)}: the head was edited"
        )
        return VerifyResult(False, checked, head.seq, reason), prev
    if problem is not None:
        return VerifyResult(False, checked, None, problem), prev
    key = log.key if log is not None and signatures else None
    for found in newest:
        if key is not None and found.signature is not None and not found.signed_by(key):
            reason = (
                f"the checkpoint of entry {found.seq} written {found.written} does not verify "
                "under the configured audit key: its seq, digest or time were altered, or "
                "another key signed it"
            )
            return VerifyResult(False, checked, None, reason, found), prev
    if key is not None and newest and not any(found.signed_by(key) for found in newest):
        found = newest[0]
        reason = (
            f"the checkpoint of entry {found.seq} written {found.written} is not signed, but an "
            "audit key is set: it was written before the key was set (then run `keel audit "
            "checkpoint` to sign the current head) or by someone without the key"
        )
        return VerifyResult(False, checked, None, reason, found), prev
    for found in newest:
        what = f"the checkpoint of entry {found.seq} written {found.written}"
        if found.seq > checked:
            reason = (
                f"entries after seq {checked} are missing: {what} records entry {found.seq}, "
                f"but the chain ends at entry {checked}; the newest rows were deleted and the "
                "head rewound. Restore the audit log from a backup"
            )
            return VerifyResult(False, checked, checked + 1, reason, found), prev
        if digests[found.seq] != found.digest:
            reason = (
                f"entry {found.seq} does not match {what}: the chain was rewritten at or "
                f"before entry {found.seq}"
            )
            return VerifyResult(False, checked, found.seq, reason, found), prev
    if newest:
        signed = [found for found in newest if found.signature is not None]
        found = (signed or newest)[0]
        state = (
            "unsigned"
            if found.signature is None
            else "signature verified"
            if key is not None
            else "signed; signature not checked: no audit key is set"
        )
        anchor = f"checkpoint of entry {found.seq} written {found.written} ({state})"
        return VerifyResult(True, checked, checkpoint=found, anchor=anchor), prev
    return VerifyResult(True, checked, anchor=anchor), prev
