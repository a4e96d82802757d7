"""Users, tokens and roles: the admin's routes.

Every route here needs permission ``admin`` (role ``admin``, unscoped). A
change of roles or a revoked token empties the server's token cache, so it
takes effect on the next call.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from keel.governance import identity, roles
from keel.server.context import Caller, CallerDep

router = APIRouter(tags=["identity"])


class NewUser(BaseModel):
    name: str = Field(max_length=128)
    roles: list[str] = Field(default_factory=list, max_length=16)


class NewToken(BaseModel):
    user: str = Field(max_length=128)
    expires: str | None = Field(default=None, description="a duration: 30d, 12h, 90m, 2w")
    scopes: list[str] | None = Field(default=None, description="api, predict, feedback")


class RoleGrant(BaseModel):
    user: str = Field(max_length=128)
    role: str = Field(max_length=128)
    scope_kind: str = Field(default="", description="'', experiment, model or alias")
    scope_name: str = Field(default="", max_length=256)


def _admin(caller: Caller) -> None:
    caller.require("admin")


@router.post("/users", status_code=201)
def create_user(body: NewUser, caller: CallerDep) -> dict[str, Any]:
    """Add a user, with global roles."""
    _admin(caller)
    with caller.state.store.write() as conn:
        identity.create_user(conn, caller.user, body.name)
        for role in body.roles:
            roles.grant(conn, caller.user, body.name, role)
        user = identity.get_user(conn, body.name)
    return user.to_dict()


@router.get("/users")
def list_users(caller: CallerDep) -> list[dict[str, Any]]:
    """Every user and their roles."""
    _admin(caller)
    with caller.state.store.read() as conn:
        return [u.to_dict() for u in identity.list_users(conn)]


@router.post("/tokens", status_code=201)
def create_token(body: NewToken, caller: CallerDep) -> dict[str, Any]:
    """Make a token; the answer holds its secret, which is never shown again."""
    _admin(caller)
    expires = identity.parse_duration(body.expires)
    scopes = identity.parse_scopes(body.scopes)
    with caller.state.store.write() as conn:
        info, secret = identity.create_token(
            conn, caller.user, body.user, expires_in_ms=expires, scopes=scopes
        )
    return {**info.to_dict(), "token": secret}


@router.get("/tokens")
def list_tokens(caller: CallerDep, user: str | None = None) -> list[dict[str, Any]]:
    """Tokens (never their secrets), newest first."""
    _admin(caller)
    with caller.state.store.read() as conn:
        return [t.to_dict() for t in identity.list_tokens(conn, user)]


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: str, caller: CallerDep) -> dict[str, Any]:
    """Revoke a token; it stops working at once on this server."""
    _admin(caller)
    with caller.state.store.write() as conn:
        info = identity.revoke_token(conn, caller.user, token_id)
    caller.state.forget_tokens()
    return info.to_dict()


@router.get("/roles")
def list_roles(caller: CallerDep) -> dict[str, list[str]]:
    """Every user with a role, and their roles."""
    caller.require("read")
    with caller.state.store.read() as conn:
        return roles.list_roles(conn)


@router.post("/roles")
def grant_role(body: RoleGrant, caller: CallerDep) -> dict[str, Any]:
    """Grant a role, everywhere or on one experiment, model or alias."""
    _admin(caller)
    with caller.state.store.write() as conn:
        created = roles.grant(
            conn, caller.user, body.user, body.role, body.scope_kind, body.scope_name
        )
    caller.state.forget_tokens()
    return {"granted": created}


@router.post("/roles/revoke")
def revoke_role(body: RoleGrant, caller: CallerDep) -> dict[str, Any]:
    """Revoke a role grant."""
    _admin(caller)
    with caller.state.store.write() as conn:
        roles.revoke(conn, caller.user, body.user, body.role, body.scope_kind, body.scope_name)
    caller.state.forget_tokens()
    return {"revoked": True}
