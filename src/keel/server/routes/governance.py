"""The audit chain over the API: its entries, and a verification run by the server.

The server holds the audit key (``KEEL_AUDIT_KEY`` in its own environment) and
signs checkpoints with it as entries commit; clients read entries and ask for
verification, and never see the key.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from keel.governance import audit
from keel.server.context import CallerDep

router = APIRouter(tags=["audit"])


@router.get("/audit")
def list_audit(
    caller: CallerDep,
    object_type: str | None = Query(default=None, max_length=64),
    object_id: str | None = Query(default=None, max_length=512),
    actor: str | None = Query(default=None, max_length=256),
    limit: int = Query(default=100, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    """Audit entries, newest first (``object_id`` may end in ``*`` for a prefix)."""
    caller.require("read")
    entries = audit.list_entries(
        caller.state.store, object_type=object_type, object_id=object_id, actor=actor, limit=limit
    )
    return [e.to_dict() for e in entries]


@router.get("/audit/verify")
def verify_audit(caller: CallerDep) -> dict[str, Any]:
    """Walk the chain and compare its end with the newest (signed) checkpoint."""
    caller.require("admin")
    result = audit.verify(caller.state.store, settings=caller.state.settings)
    return {
        "ok": result.ok,
        "checked": result.checked,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
        "anchor": result.anchor,
    }
