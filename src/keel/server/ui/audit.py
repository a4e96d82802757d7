"""Audit: the log, filtered and paged by the server, under its hash chain's verification.

What each part needs is what the API's audit routes need
(:mod:`keel.server.routes.governance`): the entries ``read``, granted globally;
the verification ``admin`` (it walks the whole chain and reads the checkpoints).
A reader who is not an admin sees the entries and a note saying who can verify.

Filters are those of :func:`keel.governance.audit.list_entries`; a page holds
:data:`PAGE_SIZE` entries, newest first, and the next page starts below the
oldest seq shown, so paging never counts rows however long the log.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from keel.errors import InvalidInput, KeelError
from keel.governance import audit
from keel.server.ui.render import PageCaller, failed, render, time_param

__all__ = ["PAGE_SIZE", "router"]

#: Entries per page of the audit log.
PAGE_SIZE = 50

router = APIRouter(include_in_schema=False)

Text = Annotated[str | None, Query(max_length=512)]


def _filters(
    actor: str | None,
    action: str | None,
    object_ref: str | None,
    since: str | None,
    until: str | None,
    before: str | None,
) -> dict[str, Any]:
    """The filters of :func:`keel.governance.audit.list_entries` the form's fields ask for.

    Raises:
        InvalidInput: a time is not a date or time, or ``before`` not an entry's seq.
    """
    object_type = object_id = None
    if object_ref:
        object_type, sep, rest = object_ref.partition(":")
        object_id = rest if sep and rest else None
    below = None
    if before:
        if not before.isdigit():
            raise InvalidInput(f"'before' is an entry's seq (a whole number), got {before!r}")
        below = int(before)
    return {
        "actor": actor or None,
        "action": action or None,
        "object_type": object_type or None,
        "object_id": object_id,
        "since": time_param(since, "'since'"),
        "until": time_param(until, "'until'"),
        "before": below,
        "limit": PAGE_SIZE + 1,  # one more tells whether there is a next page
    }


@router.get("/audit")
def audit_page(
    caller: PageCaller,
    actor: Text = None,
    action: Text = None,
    object: Text = None,
    since: Annotated[str | None, Query(max_length=64)] = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    """The audit log, newest first, filtered, with the chain's verification at the top."""
    try:
        caller.require("read")  # as GET /api/v1/audit
    except KeelError as exc:
        return failed(exc)
    fields = {"actor": actor or "", "action": action or "", "object": object or "",
              "since": since or "", "until": until or ""}  # fmt: skip
    verified = None
    if caller.can("admin"):  # as GET /api/v1/audit/verify
        verified = audit.verify(caller.state.store, settings=caller.state.settings)
    error = None
    entries: list[audit.AuditEntry] = []
    try:
        filters = _filters(actor, action, object, since, until, before)
        entries = audit.list_entries(caller.state.store, **filters)
    except InvalidInput as exc:
        error = str(exc)
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    kept = {k: v for k, v in fields.items() if v}
    next_link = f"/audit?{urlencode({**kept, 'before': entries[-1].seq})}" if more else None
    first_link = f"/audit?{urlencode(kept)}" if before else None
    return render(
        "audit.html",
        400 if error else 200,
        title="Audit",
        user=caller.user,
        fields=fields,
        entries=entries,
        error=error,
        verified=verified,
        next_link=next_link,
        first_link=first_link,
    )
