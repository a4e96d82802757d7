"""Checkpoints: the audit chain's head, anchored outside the database.

The hash chain finds an edited, deleted or reordered row, but not the
newest rows deleted together with a rewound ``audit_head``: what is left is
a shorter chain that holds. A checkpoint records ``(seq, digest, time)`` of a
committed entry in the artifact store, signed with HMAC-SHA256 when
``audit_key`` is set, so :func:`keel.governance.audit.verify` can tell that
the chain once reached further than it does now.

A checkpoint is written after the transaction of a protected action
(:data:`PROTECTED_ACTIONS`: alias moves, approvals, roles, alias policies,
automation policies, promotions, deployments) and of every
:data:`EVERY`-th entry commits, so it only ever names a committed entry: a
rollback leaves none behind, and a crash between the commit and the write
leaves the previous checkpoint in place. Either way verify still passes on
an intact chain.

Layout in the artifact store: the checkpoint is a content-addressed object
(canonical JSON), and an empty object named
``audit-checkpoints/<seq, 20 digits>-<object digest>`` refers to it. References
are never overwritten, so concurrent writers cannot lose each other's
checkpoints; the newest is the one with the highest seq (several at one seq
are all checked).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from keel.artifacts import ArtifactStore, canonical_json, get_artifact_store
from keel.config import Settings, get_settings
from keel.errors import KeelError
from keel.store import Store, normalize_url
from keel.store.engine import after_commit
from keel.store.sql import now_ms

__all__ = [
    "EVERY",
    "FORMAT",
    "PREFIX",
    "PROTECTED_ACTIONS",
    "Checkpoint",
    "CheckpointLog",
    "is_due",
]

log = logging.getLogger(__name__)

FORMAT = "keel.audit-checkpoint/v1"
#: Where the references live in the artifact store.
PREFIX = "audit-checkpoints"
#: A checkpoint is written at least every this many entries.
EVERY = 100

#: Actions whose entry is checkpointed as soon as it commits: the changes that decide
#: who may do what and which model serves.
PROTECTED_ACTIONS = frozenset(
    {
        "alias.set",
        "alias.delete",
        "approval.create",
        "role.grant",
        "role.revoke",
        "policy.set",
        "policy.delete",
        "automation.policy_apply",
        "automation.policy_enable",
        "automation.policy_disable",
        "automation.promoted",
        "automation.rolled_back",
        "deployment.create",
        "deployment.update",
        "deployment.rollback",
    }
)

_REF_RE = re.compile(r"^(\d{20})-([0-9a-f]{64})$")
_PENDING = "keel.audit.checkpoint"


def is_due(action: str, seq: int) -> bool:
    """Whether entry ``seq`` doing ``action`` gets a checkpoint once it commits."""
    return action in PROTECTED_ACTIONS or seq % EVERY == 0


def _signature(key: str, seq: int, digest: str, at: int) -> str:
    payload = canonical_json({"format": FORMAT, "seq": seq, "digest": digest, "at": at})
    return hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """One stored checkpoint.

    Attributes:
        seq: the entry it anchors.
        digest: that entry's digest.
        at: when it was written (ms since the epoch).
        signature: hex HMAC-SHA256 over the three, or None when written without a key.
        object_digest: the artifact object that holds it.
    """

    seq: int
    digest: str
    at: int
    signature: str | None
    object_digest: str

    @property
    def written(self) -> str:
        """When it was written, for messages."""
        return datetime.fromtimestamp(self.at / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def signed_by(self, key: str) -> bool:
        """Whether the signature holds under ``key`` (False when unsigned)."""
        if self.signature is None:
            return False
        expected = _signature(key, self.seq, self.digest, self.at)
        return hmac.compare_digest(expected, self.signature)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "digest": self.digest,
            "at": self.at,
            "signed": self.signature is not None,
            "object": self.object_digest,
        }


class CheckpointError(KeelError):
    """A checkpoint reference or object is missing, damaged or altered."""


class CheckpointLog:
    """The checkpoints of one audit chain in one artifact store.

    Args:
        artifacts: the artifact store paired with the chain's database.
        key: the HMAC key (``audit_key``); None writes unsigned checkpoints.
    """

    def __init__(self, artifacts: ArtifactStore, key: str | None = None) -> None:
        self.artifacts = artifacts
        self.key = key

    @classmethod
    def for_store(cls, store: Store, settings: Settings | None = None) -> CheckpointLog | None:
        """The checkpoint log ``settings`` pair with ``store``; None if they describe another.

        The artifact store is taken from the settings, so it is only trusted to
        belong to this chain when the settings also name this database: a
        checkpoint of one chain in another chain's store would fail its verify.
        """
        resolved = settings or get_settings()
        if not _same_database(make_url(store.url), resolved):
            return None
        return cls(get_artifact_store(resolved), resolved.audit_key)

    def write(self, seq: int, digest: str) -> Checkpoint:
        """Store a checkpoint of committed entry ``seq``; the object first, then its reference."""
        at = now_ms()
        signature = None if self.key is None else _signature(self.key, seq, digest, at)
        doc = {"format": FORMAT, "seq": seq, "digest": digest, "at": at, "signature": signature}
        blob = self.artifacts.put_json(doc)
        # A crash between the two writes leaves an unreferenced object, never a
        # reference to nothing.
        self.artifacts.backend.put_bytes(f"{PREFIX}/{seq:020d}-{blob.digest}", b"")
        return Checkpoint(seq, digest, at, signature, blob.digest)

    def newest(self) -> list[Checkpoint]:
        """Every checkpoint at the highest checkpointed seq (usually one); [] if none.

        Raises:
            CheckpointError: a referenced object is missing, corrupt or says another seq.
        """
        refs: dict[int, list[str]] = {}
        for key in self.artifacts.backend.keys(PREFIX):
            match = _REF_RE.match(key.rpartition("/")[2])
            if match:
                refs.setdefault(int(match.group(1)), []).append(match.group(2))
        if not refs:
            return []
        seq = max(refs)
        return [self._load(seq, object_digest) for object_digest in sorted(refs[seq])]

    def _load(self, seq: int, object_digest: str) -> Checkpoint:
        where = f"checkpoint {PREFIX}/{seq:020d}-{object_digest} in {self.artifacts.url}"
        try:
            doc = self.artifacts.get_json(object_digest)
        except KeelError as exc:
            raise CheckpointError(
                f"{where} cannot be read ({exc}); it was deleted or altered"
            ) from exc
        try:
            if doc["format"] != FORMAT or int(doc["seq"]) < 1:
                raise ValueError(doc["format"])
            found = Checkpoint(
                seq=int(doc["seq"]),
                digest=str(doc["digest"]),
                at=int(doc["at"]),
                signature=None if doc["signature"] is None else str(doc["signature"]),
                object_digest=object_digest,
            )
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{where} is not a Keel audit checkpoint") from None
        if found.seq != seq:
            raise CheckpointError(
                f"{where} was altered: its name records entry {seq} but its contents "
                f"entry {found.seq}"
            )
        return found


def _same_database(url: Any, settings: Settings) -> bool:
    return bool(url == make_url(normalize_url(settings.store_url)))


def schedule(conn: Connection, seq: int, digest: str, action: str) -> None:
    """Checkpoint the transaction's newest entry after it commits, if any of its entries is due.

    Called by :func:`keel.governance.audit.record` for every entry. A failed
    checkpoint write is logged, not raised: the change it follows has
    committed, and the next checkpoint covers it.
    """
    transaction = conn.get_transaction()
    pending = conn.info.get(_PENDING)
    # ``info`` belongs to the pooled connection and outlives a transaction: only
    # this transaction's state counts.
    if pending is not None and pending[0] is transaction:
        pending[1].update(seq=seq, digest=digest)
        return
    conn.info.pop(_PENDING, None)
    if not is_due(action, seq):
        return
    try:
        settings = get_settings()
        if not _same_database(conn.engine.url, settings):
            return  # the settings name another database: no artifact store is known to pair
        checkpoints = CheckpointLog(get_artifact_store(settings), settings.audit_key)
    except KeelError as exc:  # the entry itself must not fail for want of its anchor
        log.warning("no audit checkpoint for entry %s: %s", seq, exc)
        return
    state: dict[str, Any] = {"seq": seq, "digest": digest}
    conn.info[_PENDING] = (transaction, state)

    def write() -> None:
        try:
            checkpoints.write(state["seq"], state["digest"])
        except Exception as exc:  # the change is committed; losing one anchor is not an error
            log.warning(
                "could not write the audit checkpoint of entry %s to %s: %s",
                state["seq"],
                checkpoints.artifacts.url,
                exc,
            )

    after_commit(conn, write)
