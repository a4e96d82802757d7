"""Deployments: routes and weights, canary and shadow, revisions and rollback, live traffic.

The pages check what the API's routes check (:mod:`keel.server.routes.deployments`):
``read`` somewhere to see deployments; to roll back, ``write`` somewhere, then
``write`` on every model the target revision routes to and on every model the
current one does. A revision's "Roll back" button is shown only to a caller who
passes those checks, and the form's handler makes them again before calling
:meth:`keel.serving.Deployments.rollback`.

Live traffic (requests per second, latency quantiles, error rate) comes from the
prediction and error logs through :func:`keel.monitoring.traffic.traffic_series`;
the page's script asks ``/ui/api/deployments/{name}/traffic`` for it every few
seconds.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from keel.errors import InvalidInput, KeelError, PermissionDenied
from keel.monitoring.traffic import MAX_BUCKETS, traffic_series
from keel.server.context import Caller, SessionCallerDep
from keel.server.routes.deployments import require_read, require_rollback
from keel.server.ui.render import PageCaller, failed, render, same_origin, time_param
from keel.serving.deployments import Deployment, Deployments
from keel.store.sql import now_ms
from keel.validation import MAX_NAME_CHARS

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

DeploymentName = Annotated[str, Path(max_length=MAX_NAME_CHARS)]
_COMMENT_CHARS = 5_000
#: What the live charts show first: the last quarter of an hour.
DEFAULT_SINCE_MS = 15 * 60_000


def _may_roll_back(caller: Caller, deployments: Deployments, name: str, to: int) -> bool:
    try:
        require_rollback(caller, deployments, name, to)
    except (PermissionDenied, InvalidInput):
        return False
    return True


def _routes(deployment: Deployment, status: dict[str, Any]) -> list[dict[str, Any]]:
    """The routes as the page shows them: role, label, the version served now, weight."""
    rows = []
    for index, route in enumerate(status["routes"]):
        role = route["role"]
        if role == "route":
            role = "primary" if index == 0 else "canary"
        rows.append({**route, "role": role})
    return rows


@router.get("/deployments")
def deployments_page(caller: PageCaller) -> HTMLResponse:
    """Every deployment: its routes with versions and weights, canary and shadow."""
    try:
        require_read(caller)
        part = Deployments(caller.client)
        listed = [{"deployment": d, "routes": _routes(d, part.status(d.name))} for d in part.all()]
    except KeelError as exc:
        return failed(exc)
    return render("deployments.html", title="Deployments", user=caller.user, listed=listed)


@router.get("/deployments/{name}")
def deployment_page(
    name: DeploymentName,
    caller: PageCaller,
    rolled_back_to: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> HTMLResponse:
    """One deployment: routes and weights, canary and shadow, revisions, live traffic."""
    try:
        require_read(caller)
        part = Deployments(caller.client)
        deployment = part.get(name)
        routes = _routes(deployment, part.status(name))
        history = list(reversed(part.history(name)))
    except KeelError as exc:
        return failed(exc)
    revisions = [
        {
            "deployment": d,
            "routes": ", ".join(f"{r.label} {r.weight}%" for r in d.spec.routes),
            "shadow": d.spec.shadow.label if d.spec.shadow else "",
            "may_roll_back": d.revision < deployment.revision
            and _may_roll_back(caller, part, name, d.revision),
        }
        for d in history
    ]
    notice = None
    if rolled_back_to is not None:
        notice = (
            f"Rolled back to the spec of revision {rolled_back_to}: the deployment is at "
            f"revision {deployment.revision} now."
        )
    return render(
        "deployment.html",
        title=name,
        user=caller.user,
        deployment=deployment,
        routes=routes,
        revisions=revisions,
        notice=notice,
    )


@router.post("/deployments/{name}/rollback", response_model=None)
async def rollback(
    name: DeploymentName, request: Request, caller: PageCaller
) -> HTMLResponse | RedirectResponse:
    """Put back a revision's spec (the form's ``revision``), checked as the API checks it."""
    try:
        same_origin(request)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        raw = form.get("revision", [""])[0].strip()
        if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
            raise InvalidInput(
                f"revision must be the number of an earlier revision of {name!r}, got {raw!r}"
            )
        comment = form.get("comment", [""])[0].strip()[:_COMMENT_CHARS] or None

        def act() -> None:
            part = Deployments(caller.client)
            require_rollback(caller, part, name, int(raw))
            part.rollback(name, int(raw), comment)

        await run_in_threadpool(act)
    except KeelError as exc:
        return failed(exc)
    target = f"/deployments/{name}?{urlencode({'rolled_back_to': int(raw)})}"
    return RedirectResponse(target, status_code=303)


# -- the traffic the charts draw ----------------------------------------------------------


@router.get("/ui/api/deployments/{name}/traffic")
def traffic(
    name: DeploymentName,
    caller: SessionCallerDep,
    since: Annotated[str | None, Query(max_length=64)] = None,
    until: Annotated[str | None, Query(max_length=64)] = None,
    buckets: Annotated[int, Query(ge=1, le=MAX_BUCKETS)] = 60,
) -> dict[str, Any]:
    """Requests, errors and latency per bucket from ``since`` (default: 15 minutes ago)."""
    caller.require_somewhere("read", "reading monitor results and alerts")
    end = time_param(until, "until")
    start = time_param(since, "since")
    if start is None:
        start = (end if end is not None else now_ms()) - DEFAULT_SINCE_MS
    return traffic_series(name, caller.client, start=start, end=end, buckets=buckets).to_dict()
