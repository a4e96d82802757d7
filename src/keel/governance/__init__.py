"""Governance: the audit chain and its checkpoints; users, tokens and roles come with the server."""

from keel.governance.audit import (
    AuditEntry,
    VerifyResult,
    checkpoint,
    list_entries,
    record,
    verify,
)
from keel.governance.checkpoints import PROTECTED_ACTIONS, Checkpoint

__all__ = [
    "PROTECTED_ACTIONS",
    "AuditEntry",
    "Checkpoint",
    "VerifyResult",
    "checkpoint",
    "list_entries",
    "record",
    "verify",
]
