"""Tokens on the serving server: ``keel serve --auth``.

A request to an inference route needs a token with scope ``predict``; one to
the feedback route needs scope ``feedback`` (``keel tokens create --scope``).
Health, readiness and metrics stay open. The token comes as
``Authorization: Bearer <token>``, or as the password of Basic credentials for
clients that only do Basic. No token, or a bad one, is a 401; a good token
without the scope is a 403 naming the scope.

Where a token is checked depends on the process's settings:

- with a server (``KEEL_SERVER_URL``), the control plane answers: ``GET
  /api/v1/whoami`` with the caller's own token gives its user and scopes, or
  401. The serving process never opens the users table.
- otherwise the local store's token table, with
  :func:`keel.governance.identity.authenticate` (the same table the server reads).

Each answer, a refusal included, is kept for at most
:data:`TOKEN_CACHE_SECONDS`, keyed by the token's SHA-256 (never the secret),
so most requests pay a dict lookup and a revoked token stops working within
that time. A control plane that cannot be reached is a 503 and is not cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keel.errors import BackendUnavailable, PermissionDenied, Unauthenticated
from keel.governance.identity import Principal, authenticate, token_digest

if TYPE_CHECKING:
    import httpx

    from keel.config import Settings
    from keel.store import Store

__all__ = [
    "FEEDBACK_SCOPE",
    "PREDICT_SCOPE",
    "TOKEN_CACHE_SECONDS",
    "Authenticator",
    "ControlPlaneTokens",
    "StoreTokens",
    "authenticator_for",
]

#: The scope inference routes need.
PREDICT_SCOPE = "predict"
#: The scope the feedback route needs.
FEEDBACK_SCOPE = "feedback"
#: How long a token's answer is trusted before it is looked up again (seconds).
TOKEN_CACHE_SECONDS = 5.0
_CACHE_LIMIT = 10_000
_WHOAMI = "/api/v1/whoami"

#: Turns a secret into its principal, or raises ``Unauthenticated`` (blocking).
TokenLookup = Callable[[str], Principal]


class StoreTokens:
    """Token lookups in a local store's token table.

    Args:
        store: the metadata store holding users and tokens.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, secret: str) -> Principal:
        with self.store.read() as conn:
            return authenticate(conn, secret)

    def __repr__(self) -> str:
        return "the local store"


class ControlPlaneTokens:
    """Token lookups through ``keel server``: ``GET /api/v1/whoami`` with the caller's token.

    Args:
        server_url: the control plane, e.g. ``http://127.0.0.1:5005``.
        client: an ``httpx.Client`` to use instead of a new one (custom TLS).
    """

    def __init__(self, server_url: str, *, client: httpx.Client | None = None) -> None:
        self.server_url = server_url.rstrip("/")
        self._client = client
        self._lock = threading.Lock()

    @property
    def http(self) -> httpx.Client:
        """The connection pool (opened on first use; shared by the threads that look up)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import httpx

                    self._client = httpx.Client(
                        base_url=self.server_url,
                        headers={"user-agent": "keel-serve"},
                        timeout=httpx.Timeout(10.0, connect=5.0),
                    )
        return self._client

    def __call__(self, secret: str) -> Principal:
        import httpx

        try:
            answer = self.http.get(_WHOAMI, headers={"authorization": f"Bearer {secret}"})
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"could not check the token with keel server at {self.server_url} "
                f"({type(exc).__name__}); is it running?"
            ) from None
        if answer.status_code == 401:
            raise Unauthenticated(_error_text(answer, "the control plane refused the token"))
        if answer.status_code != 200:
            raise BackendUnavailable(
                f"keel server at {self.server_url} answered {answer.status_code} to a token "
                "check; expected 200 or 401"
            )
        doc: dict[str, Any] = answer.json()
        return Principal(str(doc["user"]), doc.get("token_id"), tuple(doc.get("scopes", ())), ())

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __repr__(self) -> str:
        return f"keel server at {self.server_url}"


def _error_text(answer: httpx.Response, default: str) -> str:
    try:
        return str(answer.json()["error"])
    except Exception:  # not Keel's error shape: say what we can without echoing the body
        return default


class Authenticator:
    """Checks a request's token and scope, with a short cache of answers.

    Args:
        lookup: turns a secret into its principal or raises ``Unauthenticated``
            (:class:`StoreTokens` or :class:`ControlPlaneTokens`).
        cache_seconds: how long an answer is kept.
        scope: the scope this server's callers need, named in the hint a missing token gets.
    """

    def __init__(
        self,
        lookup: TokenLookup,
        cache_seconds: float = TOKEN_CACHE_SECONDS,
        *,
        scope: str = "predict",
    ) -> None:
        self.lookup = lookup
        self.cache_seconds = cache_seconds
        self.scope = scope
        # digest -> (expiry, principal or the refusal's message)
        self._answers: dict[str, tuple[float, Principal | str]] = {}
        self._lock = threading.Lock()

    def cached(self, secret: str | None) -> Principal | None:
        """The principal from the cache when it is fresh; None when it must be looked up.

        Cheap and non-blocking, for the event loop; :meth:`principal` does the lookup.

        Raises:
            Unauthenticated: no token, or a refusal that is still fresh.
        """
        if not secret:
            raise Unauthenticated(
                "this server needs a token: send 'Authorization: Bearer <token>' "
                f"(`keel tokens create --user NAME --scope {self.scope}` makes one)"
            )
        hit = self._answers.get(token_digest(secret))
        if hit is None or hit[0] <= time.monotonic():
            return None
        if isinstance(hit[1], str):
            raise Unauthenticated(hit[1])
        return hit[1]

    def principal(self, secret: str | None) -> Principal:
        """The principal of ``secret``, looked up unless a fresh answer is cached (blocking).

        Raises:
            Unauthenticated: no token, or the token is malformed, unknown, expired or revoked.
            BackendUnavailable: the control plane could not be asked (never cached).
        """
        principal = self.cached(secret)
        if principal is not None:
            return principal
        assert secret  # cached() refused an empty one
        answer: Principal | str
        try:
            answer = self.lookup(secret)
        except Unauthenticated as exc:
            answer = str(exc)
        with self._lock:
            if len(self._answers) >= _CACHE_LIMIT:
                self._answers.clear()
            self._answers[token_digest(secret)] = (time.monotonic() + self.cache_seconds, answer)
        if isinstance(answer, str):
            raise Unauthenticated(answer)
        return answer

    @staticmethod
    def require(principal: Principal, scope: str) -> None:
        """Go on only if the token carries ``scope``.

        Raises:
            PermissionDenied: it does not; the message names the scope.
        """
        if scope not in principal.scopes:
            raise PermissionDenied(
                f"token {principal.token_id} of {principal.user!r} has scopes "
                f"{', '.join(principal.scopes) or 'none'}; this route needs scope {scope!r} "
                f"(`keel tokens create --user {principal.user} --scope {scope}`)"
            )

    def close(self) -> None:
        """Close the lookup's connections, if it holds any."""
        close = getattr(self.lookup, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        return f"tokens checked by {self.lookup!r}"


def authenticator_for(
    settings: Settings, store: Callable[[], Store], *, scope: str = "predict"
) -> Authenticator:
    """The authenticator a serving process with ``settings`` uses.

    Args:
        settings: with ``server_url``, tokens are checked by that control plane.
        store: gives the local store otherwise (called only then).
        scope: the scope its callers need (``predict`` for models, ``llm`` for the gateway).
    """
    if settings.server_url:
        return Authenticator(ControlPlaneTokens(str(settings.server_url)), scope=scope)
    return Authenticator(StoreTokens(store()), scope=scope)
