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

from keel.server.ui.pages import LoginRequired

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

__all__ = ["mount_ui"]

_STATIC = Path(__file__).parent / "static"


def mount_ui(app: FastAPI) -> None:
    """Add the UI's pages, its chart JSON and its static files to ``app`` (after the API)."""
    from keel.server.ui import api, pages

    app.include_router(pages.router)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(pages.login_url(exc.next_path), status_code=303)
