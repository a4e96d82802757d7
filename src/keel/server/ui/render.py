"""What every page of the UI shares: the templates, the session check and the error page.

The area modules (``pages``, ``models``, ``deployments`` …) each hold a router of
pages; they render through :func:`render`, answer a refusal or an unknown id with
:func:`failed`, and take the caller from :data:`PageCaller`, which sends a browser
without a valid session to the login page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from keel.errors import InvalidInput, KeelError, PermissionDenied, Unauthenticated
from keel.server.context import Caller, session_caller

__all__ = [
    "HOME", "LoginRequired", "PageCaller", "failed", "local_path", "login_url", "render",
    "same_origin", "time_param",
]  # fmt: skip

#: Where the UI starts, and where a login with no (or no local) ``next`` lands.
HOME = "/experiments"

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # every name, param and tag on a page is a user's text
    undefined=jinja2.StrictUndefined,
)


class LoginRequired(Exception):
    """A page was asked for without a valid session: the browser goes to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def login_url(next_path: str) -> str:
    """The login page that returns to ``next_path`` once the user has logged in."""
    return f"/login?{urlencode({'next': next_path})}"


async def _page_caller(request: Request) -> Caller:
    try:
        return await session_caller(request)
    except Unauthenticated:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path) from None


#: The caller of a page, from the session cookie; without one the browser logs in first.
PageCaller = Annotated[Caller, Depends(_page_caller)]


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """The template ``name`` rendered with ``context`` (autoescaped)."""
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status)


def failed(exc: KeelError) -> HTMLResponse:
    """A page for a refusal (403), an unknown id (404) or a bad request (400)."""
    return render("error.html", exc.status_code, title="Error", message=str(exc))


def same_origin(request: Request) -> None:
    """Go on only if a form was posted by one of this server's own pages.

    The session cookie is ``SameSite=Strict`` already; checking ``Origin`` (or, failing
    that, ``Referer``) as well refuses a cross-site post from a browser that ignores it.

    Raises:
        PermissionDenied: the request names another origin, or none at all.
    """
    sent = request.headers.get("origin") or request.headers.get("referer") or ""
    parts = urlsplit(sent)
    if (parts.scheme, parts.netloc) != (request.url.scheme, request.url.netloc):
        raise PermissionDenied(
            f"a form of the UI must be posted from this server's pages, got origin "
            f"{sent or 'none'!r}; use the API with a token instead"
        )


def time_param(value: str | None, name: str) -> int | None:
    """Epoch ms from a page's time field (epoch ms or ISO-8601 text); ``None`` when empty.

    Raises:
        InvalidInput: anything else, saying what is accepted.
    """
    from keel.predictions import to_ms

    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        ms = int(text) if text.lstrip("-").isdigit() else to_ms(text, name)
    except InvalidInput:
        ms = None
    if ms is None or not 0 <= ms <= 2**63 - 1:
        raise InvalidInput(
            f"{name} must be epoch milliseconds or ISO-8601 text such as "
            f"2026-11-23T14:00:00Z, got {value[:100]!r}"
        )
    return ms


def local_path(path: str | None) -> str:
    """``path`` if it stays on this server, else the home page (no open redirect)."""
    if path and path.startswith("/") and not path.startswith(("//", "/\\")):
        return path
    return HOME


def _time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


templates.filters["time"] = _time
