"""``keel server``: the control plane's ASGI app.

One REST API under ``/api/v1`` for everything :class:`keel.Client` does,
documented by the OpenAPI document at ``/api/v1/openapi.json`` (browsable at
``/api/v1/docs``). Every route authenticates its caller
(:mod:`keel.server.context`), checks the permission it needs, and calls the
same library code the local client runs; routes hold no logic of their own.

Errors answer ``{"error": "..."}``: a Keel error with its status, a request
that does not fit the API with 400, anything unexpected with 500 and a line
in the server's log, never a traceback or the request's payload.

Request bodies are capped: the blob routes by ``max_upload_bytes`` (they
stream to disk), every other route by ``max_request_bytes`` (its body is
parsed in memory). A body over the cap gets 413 before the route runs: at
once when its ``Content-Length`` says so, else as soon as the bytes received
pass the cap.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from keel.errors import KeelError, TooLarge
from keel.server.context import ServerState
from keel.server.idempotency import IdempotencyMiddleware
from keel.transport.http import API_PREFIX, ERROR_CLASS_HEADER

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from keel.config import Settings

__all__ = ["BodyLimitMiddleware", "create_app"]

log = logging.getLogger("keel.server")

#: Path prefixes of uploads streamed to disk under ``max_upload_bytes``, not parsed in
#: memory: Keel's blob routes and MLflow's artifact proxy.
STREAMED_UPLOADS = (f"{API_PREFIX}/blobs/", "/api/2.0/mlflow-artifacts/")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "request does not fit the API: " + "; ".join(problems)


class _OverLimit(Exception):
    """Raised into the app from ``receive`` when a body passes the cap."""


class BodyLimitMiddleware:
    """ASGI middleware that answers 413 to a request body over ``limit`` bytes.

    A ``Content-Length`` over the limit is refused without reading the body. A
    body without one (chunked) is counted as it arrives; once past the limit the
    app's ``receive`` raises and whatever the app answers is replaced by the 413.
    Nothing is buffered here: each message passes straight through.

    Args:
        app: the ASGI app to wrap.
        limit: the most bytes a body may have.
        exempt: path prefixes with limits of their own (the blob routes).
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send, declared)
            return
        received = 0
        over = started = False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    raise _OverLimit
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to a failed read; the 413 below replaces it
            started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except _OverLimit:
            pass
        if over and not started:
            await self._refuse(send, received, at_least=True)

    async def _refuse(self, send: Send, size: int, *, at_least: bool = False) -> None:
        of = f"at least {size}" if at_least else f"{size}"
        body = json.dumps(
            {
                "error": f"request body of {of} bytes is over the server's limit of "
                f"{self.limit} bytes (KEEL_MAX_REQUEST_BYTES); send smaller batches"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (ERROR_CLASS_HEADER.encode(), TooLarge.__name__.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server's parser refuses it; counting still applies
    return None


def create_app(settings: Settings, *, auth: bool = True) -> FastAPI:
    """The control-plane app over the store and artifacts ``settings`` name.

    Args:
        settings: the server's settings (its store, artifacts, audit key, limits).
        auth: check tokens and roles; off only for one user on loopback (``--no-auth``).
    """
    from keel import __version__
    from keel.server import mlflow
    from keel.server.routes import (
        admin,
        automation,
        blobs,
        data,
        deployments,
        features,
        governance,
        interop,
        jobs,
        lineage,
        llm,
        monitoring,
        pipelines,
        prompts,
        rag,
        registry,
        system,
        tracking,
    )
    from keel.server.ui import mount_ui

    app = FastAPI(
        title="Keel control plane",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.keel = ServerState(settings, auth=auth)
    app.add_middleware(IdempotencyMiddleware, state=app.state.keel)
    # outside the idempotency middleware: a body refused claims no key
    app.add_middleware(
        BodyLimitMiddleware, limit=settings.max_request_bytes, exempt=STREAMED_UPLOADS
    )

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

    # MLflow's prefixes first: no native route shares them, and a request matches its
    # Mount at once instead of being tried against every native route before it.
    mlflow.mount(app)
    for module in (
        system,
        admin,
        blobs,
        tracking,
        registry,
        prompts,
        rag,
        llm,
        data,
        features,
        deployments,
        monitoring,
        automation,
        jobs,
        lineage,
        pipelines,
        interop,
        governance,
    ):
        router: Any = module.router
        app.include_router(router, prefix="/api/v1")
    app.include_router(system.health_router)
    mount_ui(app)  # last: its "/" and "/static" must not shadow an API or MLflow route
    return app
