"""Users, tokens and role grants, through whichever transport the client has.

Over the http transport every call is a request to ``keel server`` and needs
an admin's token. Over the local transport it writes the store directly,
acting as the local user: that is how the machine that runs the server sets
it up, and it is no control (whoever can open the database can do anything).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.governance import identity, roles
from keel.transport import Transport, TransportBound, local_or
from keel.transport.http import HttpTransport

if TYPE_CHECKING:
    from keel.config import Settings

__all__ = ["IdentityClient"]


class IdentityClient(TransportBound):
    """Users, tokens and roles; answers are the JSON shapes the server's API returns."""

    def __init__(self, settings: Settings | None = None, *, transport: Transport | None = None):
        self.transport = local_or(transport, settings)

    @property
    def _http(self) -> HttpTransport | None:
        return self.transport if isinstance(self.transport, HttpTransport) else None

    def create_user(self, name: str, grant: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """Add a user with the global roles ``grant`` names."""
        if (http := self._http) is not None:
            return dict(http.request("POST", "/users", json={"name": name, "roles": list(grant)}))
        with self.store.write() as conn:
            identity.create_user(conn, self.user, name)
            for role in grant:
                roles.grant(conn, self.user, name, role)
            return identity.get_user(conn, name).to_dict()

    def list_users(self) -> list[dict[str, Any]]:
        """Every user, with their roles."""
        if (http := self._http) is not None:
            return list(http.request("GET", "/users"))
        with self.store.read() as conn:
            return [u.to_dict() for u in identity.list_users(conn)]

    def create_token(
        self,
        user: str,
        *,
        expires: str | None = None,
        scopes: list[str] | tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """Make a token for ``user``; the answer's ``token`` is the secret, shown only now."""
        if (http := self._http) is not None:
            body = {"user": user, "expires": expires, "scopes": list(scopes) if scopes else None}
            return dict(http.request("POST", "/tokens", json=body))
        expiry = identity.parse_duration(expires)
        chosen = identity.parse_scopes(scopes)
        with self.store.write() as conn:
            info, secret = identity.create_token(
                conn, self.user, user, expires_in_ms=expiry, scopes=chosen
            )
        return {**info.to_dict(), "token": secret}

    def list_tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        """Tokens (never their secrets), newest first."""
        if (http := self._http) is not None:
            return list(http.request("GET", "/tokens", params={"user": user} if user else None))
        with self.store.read() as conn:
            return [t.to_dict() for t in identity.list_tokens(conn, user)]

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token."""
        if (http := self._http) is not None:
            return dict(http.request("DELETE", f"/tokens/{token_id}"))
        with self.store.write() as conn:
            return identity.revoke_token(conn, self.user, token_id).to_dict()

    def grant_role(self, user: str, role: str, scope_kind: str = "", scope_name: str = "") -> bool:
        """Grant ``role`` to ``user``, everywhere or on one experiment, model or alias."""
        if (http := self._http) is not None:
            body = {"user": user, "role": role, "scope_kind": scope_kind, "scope_name": scope_name}
            return bool(http.request("POST", "/roles", json=body)["granted"])
        with self.store.write() as conn:
            return roles.grant(conn, self.user, user, role, scope_kind, scope_name)

    def revoke_role(self, user: str, role: str, scope_kind: str = "", scope_name: str = "") -> None:
        """Take a role grant away."""
        if (http := self._http) is not None:
            body = {"user": user, "role": role, "scope_kind": scope_kind, "scope_name": scope_name}
            http.request("POST", "/roles/revoke", json=body)
            return
        with self.store.write() as conn:
            roles.revoke(conn, self.user, user, role, scope_kind, scope_name)

    def list_roles(self) -> dict[str, list[str]]:
        """Every user with a role, and their grants."""
        if (http := self._http) is not None:
            return dict(http.request("GET", "/roles"))
        with self.store.read() as conn:
            return roles.list_roles(conn)

    def whoami(self) -> dict[str, Any]:
        """Who this client acts as (on a server: the token's user, scopes and roles)."""
        if (http := self._http) is not None:
            return dict(http.request("GET", "/whoami"))
        with self.store.read() as conn:
            grants = roles.grants_of(conn, self.user)
        return {"user": self.user, "token_id": None, "roles": [g.label for g in grants]}
