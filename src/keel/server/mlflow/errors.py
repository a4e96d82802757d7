"""MLflow's error shape for the MLflow-compatible API.

The mlflow client branches on ``error_code`` (a missing experiment is
created, an existing one is looked up), so every answer under the MLflow
prefixes is ``{"error_code": ..., "message": ...}`` with the status MLflow
gives that code. Keel's errors map onto the codes in one table,
:data:`CODES`; the rest of ``keel server`` keeps its ``{"error": ...}`` shape.

A request that does not fit the API (a body that is not JSON, a field of the
wrong type) is ``INVALID_PARAMETER_VALUE``; a path the API does not have is
``ENDPOINT_NOT_FOUND``; neither is a 5xx. Only a fault of the server's own
world (storage, a corrupt object) answers 5xx, and an unexpected exception
answers ``INTERNAL_ERROR`` without its details, which go to the server's log.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from keel.errors import (
    Conflict,
    InvalidInput,
    KeelError,
    NotFound,
    PermissionDenied,
    SystemFault,
    Unauthenticated,
    UserError,
)
from keel.transport.http import ERROR_CLASS_HEADER

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CODES", "PREFIXES", "MlflowError", "error_response", "install"]

log = logging.getLogger("keel.server.mlflow")

#: Where the MLflow-compatible API lives; answers under these have MLflow's error shape.
PREFIXES = (
    "/api/2.0/mlflow",
    "/ajax-api/2.0/mlflow",
    "/api/2.0/mlflow-artifacts",
    "/api/3.0/mlflow",
    "/ajax-api/3.0/mlflow",
)

#: Keel's error classes and MLflow's code and status for each, most specific first.
CODES: tuple[tuple[type[KeelError], str, int], ...] = (
    (NotFound, "RESOURCE_DOES_NOT_EXIST", 404),
    (Conflict, "RESOURCE_ALREADY_EXISTS", 400),
    (InvalidInput, "INVALID_PARAMETER_VALUE", 400),
    (Unauthenticated, "UNAUTHENTICATED", 401),
    (PermissionDenied, "PERMISSION_DENIED", 403),
    (SystemFault, "TEMPORARILY_UNAVAILABLE", 503),
)


class MlflowError(UserError):
    """An error with an MLflow code Keel's tree has no class for (``ENDPOINT_NOT_FOUND``).

    Args:
        message: what was expected, what came, what to do.
        error_code: MLflow's code.
        status: the HTTP status MLflow answers it with.
    """

    def __init__(self, message: str, error_code: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status_code = status


def error_response(error_code: str, message: str, status: int) -> JSONResponse:
    """One MLflow error answer."""
    return JSONResponse({"error_code": error_code, "message": message}, status_code=status)


def _code(exc: KeelError) -> tuple[str, int]:
    if isinstance(exc, MlflowError):
        return exc.error_code, exc.status_code
    for cls, code, status in CODES:
        if isinstance(exc, cls):
            return code, status
    return "INTERNAL_ERROR", 500


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "request does not fit MLflow's API: " + "; ".join(problems)


class _Guard:
    """Answer an unexpected exception with ``INTERNAL_ERROR`` inside the MLflow app.

    Starlette's catch-all handler re-raises after answering, which a mounted app
    would pass up to the enclosing one; this stops it here, once logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # the answer is under way: only dropping the connection tells the client
            answer = error_response(
                "INTERNAL_ERROR", "internal error; the server's log has the details", 500
            )
            await answer(scope, receive, send)


def install(app: FastAPI) -> None:
    """Give ``app`` (the mounted MLflow app) MLflow's error shape for every failure."""

    @app.exception_handler(KeelError)
    async def keel_error(request: Request, exc: KeelError) -> JSONResponse:
        code, status = _code(exc)
        answer = error_response(code, str(exc), status)
        answer.headers[ERROR_CLASS_HEADER] = type(exc).__name__
        return answer

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response("INVALID_PARAMETER_VALUE", _validation_message(exc), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            return error_response(
                "ENDPOINT_NOT_FOUND",
                f"{request.method} {request.url.path} is not an endpoint of the MLflow API "
                "Keel serves; see the README section 'Coming from MLflow' for what is covered",
                404,
            )
        return error_response("INVALID_PARAMETER_VALUE", str(exc.detail), exc.status_code)

    app.add_middleware(_Guard)
