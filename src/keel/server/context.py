"""Who is calling and what they may do: the request context every route receives.

:class:`ServerState` holds what the server process shares across requests: its
settings, one metadata store, one artifact store and a short cache of
authenticated tokens (a token's principal is looked up at most every
``TOKEN_CACHE_SECONDS``, so auth costs a dict lookup on most calls and a
revoked token stops working within that time).

:class:`Caller` is one request's principal and a :class:`keel.Client` that acts
as that principal over the server's stores. Routes call
:meth:`Caller.require` with the permission and resource they touch before
they call the library; a refusal is a 403 naming what was missing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from keel.errors import PermissionDenied, Unauthenticated
from keel.governance import audit
from keel.governance.identity import (
    SCOPES,
    Principal,
    authenticate,
    token_digest,
    token_from_header,
)
from keel.governance.roles import ADMIN_ROLE, ROLE_PERMISSIONS, Grant, allows
from keel.store.sql import now_ms
from keel.transport.local import LocalTransport

if TYPE_CHECKING:
    from keel.artifacts import ArtifactStore
    from keel.client import Client
    from keel.config import Settings
    from keel.store import Store

__all__ = [
    "SESSION_COOKIE",
    "TOKEN_CACHE_SECONDS",
    "Caller",
    "CallerDep",
    "ServerState",
    "SessionCallerDep",
    "session_caller",
]

#: How long an authenticated token is trusted before it is looked up again.
TOKEN_CACHE_SECONDS = 5.0
_CACHE_LIMIT = 10_000
#: The cookie the web UI's login sets to the user's token.
SESSION_COOKIE = "keel_session"


@dataclass
class ServerState:
    """What one server process shares across requests."""

    settings: Settings
    auth: bool = True
    _tokens: dict[str, tuple[float, Principal]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @cached_property
    def transport(self) -> LocalTransport:
        return LocalTransport(self.settings)

    @property
    def store(self) -> Store:
        return self.transport.store

    @property
    def artifacts(self) -> ArtifactStore:
        return self.transport.artifacts

    def cached_principal(self, secret: str | None) -> Principal | None:
        """The principal of a bearer secret if the cache holds it fresh; no I/O, so no thread."""
        if not self.auth or not secret:
            return None
        cached = self._tokens.get(token_digest(secret))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    def principal(self, secret: str | None) -> Principal:
        """The principal of a bearer secret, from the cache when it is fresh."""
        if not self.auth:
            return Principal(self.settings.user, None, SCOPES, (Grant(ADMIN_ROLE),))
        if not secret:
            raise Unauthenticated(
                "this server needs a token: send 'Authorization: Bearer <token>' "
                "(KEEL_TOKEN for keel's client; `keel tokens create` makes one)"
            )
        key = token_digest(secret)
        now = time.monotonic()
        cached = self._tokens.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        with self.store.read() as conn:
            principal = authenticate(conn, secret)
        fresh_until = now + TOKEN_CACHE_SECONDS
        if principal.expires_at is not None:
            # never trust a cached token past its expiry
            fresh_until = min(fresh_until, now + (principal.expires_at - now_ms()) / 1000)
        with self._lock:
            if len(self._tokens) >= _CACHE_LIMIT:
                self._tokens.clear()
            self._tokens[key] = (fresh_until, principal)
        return principal

    def forget_tokens(self) -> None:
        """Drop the token cache (after a revocation or a change of roles on this server)."""
        with self._lock:
            self._tokens.clear()


@dataclass
class Caller:
    """One request's principal, and a client acting as it on the server's stores."""

    principal: Principal
    state: ServerState

    @cached_property
    def client(self) -> Client:
        from keel.client import Client

        state = self.state
        return Client(
            transport=LocalTransport(
                state.settings,
                store=state.store,
                artifacts=state.artifacts,
                user=self.principal.user,
            )
        )

    @property
    def user(self) -> str:
        return self.principal.user

    def can(self, permission: str, kind: str | None = None, name: str | None = None) -> bool:
        """Whether the caller holds ``permission`` on the resource (None: anywhere)."""
        return allows(self.principal.grants, permission, kind, name)

    def require_somewhere(self, permission: str, why: str | None = None) -> None:
        """Go on only if the caller holds ``permission`` on at least one resource (any scope).

        Checked before a lookup whose answer (found or not) would tell an outsider something.

        Raises:
            PermissionDenied: no grant of the caller gives it; the message names the
                roles held, and says ``why`` when given.
        """
        self._require_api_scope()
        if not any(permission in ROLE_PERMISSIONS.get(g.role, ()) for g in self.principal.grants):
            raise self._lacks(permission, why=why)

    def _lacks(self, permission: str, where: str = "", why: str | None = None) -> PermissionDenied:
        """The refusal naming ``permission``, where it was missing and the roles the caller holds."""
        held = ", ".join(g.label for g in self.principal.grants) or "none"
        reason = f"{why}; " if why else ""
        return PermissionDenied(
            f"user {self.user!r} lacks permission {permission!r}{where} ({reason}roles: {held}); "
            "an admin can grant it with `keel roles grant`"
        )

    def _require_api_scope(self) -> None:
        if "api" not in self.principal.scopes:
            raise PermissionDenied(
                f"token {self.principal.token_id} has scopes {', '.join(self.principal.scopes)}; "
                "the control-plane API needs scope 'api'"
            )

    def require(self, permission: str, kind: str | None = None, name: str | None = None) -> None:
        """Go on only if the caller holds ``permission`` on the resource.

        Raises:
            PermissionDenied: the caller does not; the message names the permission.
        """
        self._require_api_scope()
        if not self.can(permission, kind, name):
            raise self._lacks(permission, f" on {kind} {name!r}" if kind else "")


async def _caller(request: Request) -> Caller:
    return await _caller_of(request, token_from_header(request.headers.get("authorization")))


async def session_caller(request: Request) -> Caller:
    """The caller of a web UI request: the Authorization header, else the session cookie."""
    # The web UI's pages and its JSON read the token from the login cookie. Only the
    # UI's GET routes take this dependency: the API keeps to the Authorization header,
    # so no API write can ride on a cookie a browser sends by itself.
    secret = token_from_header(request.headers.get("authorization"))
    return await _caller_of(request, secret or request.cookies.get(SESSION_COOKIE))


async def _caller_of(request: Request, secret: str | None) -> Caller:
    state: ServerState = request.app.state.keel
    # a cached token needs no thread: most requests skip the hop to the pool
    principal = state.cached_principal(secret)
    if principal is None:
        principal = await run_in_threadpool(state.principal, secret)
    # set on the request's own context, so the threads that run its route inherit it
    audit.set_acting_token(principal.token_id)
    return Caller(principal, state)


#: A route parameter that authenticates the request and yields its :class:`Caller`.
CallerDep = Annotated[Caller, Depends(_caller)]
#: Like :data:`CallerDep`, falling back to the web UI's session cookie (its GET routes only).
SessionCallerDep = Annotated[Caller, Depends(session_caller)]
