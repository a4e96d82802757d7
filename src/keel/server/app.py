"""``keel server``: the control plane's ASGI app.

One REST API under ``/api/v1`` for everything :class:`keel.Client` does,
documented by the OpenAPI document at ``/api/v1/openapi.json`` (browsable at
``/api/v1/docs``). Every route authenticates its caller
(:mod:`keel.server.context`), checks the permission it needs, and calls the
same library code the local client runs; routes hold no logic of their own.

Errors answer ``{"error": "..."}``: a Keel error with its status, a request
that does not fit the API with 400, anything unexpected with 500 and a line
in the server's log, never a traceback or the request's payload.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from keel.errors import KeelError
from keel.server.context import ServerState
from keel.server.idempotency import IdempotencyMiddleware
from keel.transport.http import ERROR_CLASS_HEADER

if TYPE_CHECKING:
    from keel.config import Settings

__all__ = ["create_app"]

log = logging.getLogger("keel.server")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "request does not fit the API: " + "; ".join(problems)


def create_app(settings: Settings, *, auth: bool = True) -> FastAPI:
    """The control-plane app over the store and artifacts ``settings`` name.

    Args:
        settings: the server's settings (its store, artifacts, audit key, limits).
        auth: check tokens and roles; off only for one user on loopback (``--no-auth``).
    """
    from keel import __version__
    from keel.server.routes import (
        admin,
        automation,
        blobs,
        data,
        deployments,
        governance,
        lineage,
        monitoring,
        registry,
        system,
        tracking,
    )

    app = FastAPI(
        title="Keel control plane",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.keel = ServerState(settings, auth=auth)
    app.add_middleware(IdempotencyMiddleware, state=app.state.keel)

    @app.exception_handler(KeelError)
    async def keel_error(request: Request, exc: KeelError) -> JSONResponse:
        answer = _error(exc.status_code, str(exc))
        # the class travels in a header, so the http transport raises the same subclass
        # (ApprovalRequired, not only PermissionDenied) and the body stays {"error": ...}
        answer.headers[ERROR_CLASS_HEADER] = type(exc).__name__
        return answer

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the server's log has the details")

    for module in (
        system,
        admin,
        blobs,
        tracking,
        registry,
        data,
        deployments,
        monitoring,
        automation,
        lineage,
        governance,
    ):
        router: Any = module.router
        app.include_router(router, prefix="/api/v1")
    app.include_router(system.health_router)
    return app
