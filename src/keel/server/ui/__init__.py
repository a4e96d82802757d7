"""The web UI of ``keel server`` and ``keel ui``: server-rendered pages and charts.

Pages are Jinja2 templates rendered on the server (autoescaped: every name,
param and tag a user logged is text, never markup); a small script draws each
metric with uPlot, which ships in ``static/vendor`` with its licence, so the UI
needs no build step and makes no request to any host but the server.

Like the API's routes, the pages hold no logic: they check the caller's
permission (:mod:`keel.server.permissions`) and call the same library code
through ``caller.client``. A page reads the caller's token from the session
cookie the login page sets; without a valid one it sends the browser to
``/login``, and the JSON under ``/ui/api`` answers 401.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from keel.server.ui.render import LoginRequired, login_url

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

__all__ = ["mount_ui"]

_STATIC = Path(__file__).parent / "static"

#: The UI's modules, one router each: pages first, then the JSON their scripts ask for.
AREAS = ("pages", "runs", "models", "deployments", "monitoring", "automation", "data", "audit",
         "api")  # fmt: skip


def mount_ui(app: FastAPI) -> None:
    """Add the UI's pages, its chart JSON and its static files to ``app`` (after the API)."""
    from importlib import import_module

    for area in AREAS:
        app.include_router(import_module(f"keel.server.ui.{area}").router)
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(login_url(exc.next_path), status_code=303)
