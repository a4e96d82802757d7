"""Health, readiness and who the caller is."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from keel.server.context import CallerDep, ServerState

router = APIRouter(tags=["system"])
#: Open routes outside /api/v1, for load balancers and orchestrators.
health_router = APIRouter(tags=["system"])


@health_router.get("/health")
def health() -> dict[str, str]:
    """The process is up (liveness); says nothing of the store."""
    return {"status": "ok"}


def _check_store(state: ServerState) -> None:
    with state.store.read() as conn:
        conn.execute(text("SELECT 1"))


@health_router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """The store answers (readiness): 503 with the reason when it does not."""
    state: ServerState = request.app.state.keel
    try:
        await run_in_threadpool(_check_store, state)
    except Exception as exc:
        return JSONResponse({"error": f"store not ready: {type(exc).__name__}"}, status_code=503)
    return JSONResponse({"status": "ready", "auth": state.auth})


@router.get("/whoami")
def whoami(caller: CallerDep) -> dict[str, Any]:
    """The caller as the server sees it: user, token id, scopes and roles."""
    return caller.principal.to_dict()
