"""Governance: the audit chain; identities, tokens and roles come with the server."""

from keel.governance.audit import AuditEntry, VerifyResult, list_entries, record, verify

__all__ = ["AuditEntry", "VerifyResult", "list_entries", "record", "verify"]
