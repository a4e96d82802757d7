"""Users and API tokens: who a ``keel server`` call acts as.

A token is ``keel_`` followed by 32 random bytes (256 bits) in URL-safe
base64. Only its SHA-256 is stored, so the database cannot give a token
back; the secret is shown once, when it is created. A token belongs to one
user, may expire, may be revoked, and carries *scopes*:

- ``api``: the control-plane API, with the user's roles;
- ``predict``: inference routes of ``keel serve --auth``;
- ``feedback``: the feedback route of ``keel serve --auth``.

:func:`authenticate` turns a secret into a :class:`Principal` (the user, the
token's id, its scopes and the user's role grants) or raises
``Unauthenticated``. Everything here works in the caller's transaction, so a
token and its audit entry commit together.

Locally (no server) identity is the OS user or ``KEEL_USER`` and none of this
is consulted: that is a convenience, not a control.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, update

from keel.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from keel.governance import audit
from keel.governance.roles import Grant, grants_of
from keel.store import schema as s
from keel.store.sql import now_ms

__all__ = [
    "SCOPES",
    "Principal",
    "TokenInfo",
    "User",
    "authenticate",
    "create_token",
    "create_user",
    "get_user",
    "list_tokens",
    "list_users",
    "parse_duration",
    "parse_scopes",
    "revoke_token",
    "token_digest",
    "token_from_header",
]

#: What a token may be used for: the control plane's API, a serving server's inference
#: and feedback routes, and the LLM gateway. A token made without ``--scope`` has them all.
SCOPES = ("api", "predict", "feedback", "llm")

_TOKEN_PREFIX = "keel_"
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}$")
_DURATION_RE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class User:
    name: str
    created_at: int
    created_by: str
    disabled: bool
    roles: tuple[Grant, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "disabled": self.disabled,
            "roles": [g.label for g in self.roles],
        }


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: everything but the secret, which is never stored."""

    id: str
    user: str
    scopes: tuple[str, ...]
    created_at: int
    created_by: str
    expires_at: int | None
    revoked_at: int | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now_ms())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "active": self.active,
        }


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the token's user, the token, its scopes and the user's grants.

    ``expires_at`` (epoch milliseconds, None: never) lets a cache of principals drop
    a token the moment it expires instead of trusting it for its whole cache time.
    """

    user: str
    token_id: str | None
    scopes: tuple[str, ...]
    grants: tuple[Grant, ...]
    expires_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "token_id": self.token_id,
            "scopes": list(self.scopes),
            "roles": [g.label for g in self.grants],
        }


def token_digest(secret: str) -> str:
    """The stored form of a token: SHA-256 of its text (a token has 256 random bits)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def token_from_header(value: str | None) -> str | None:
    """The secret in ``Bearer <token>`` or ``Basic base64(user:token)``; None if absent.

    Basic is for clients that only do Basic: the token is the password, the user
    name is ignored (the token names its user).

    Raises:
        Unauthenticated: the header is there but is neither scheme, or Basic that does
            not decode.
    """
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return rest.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("malformed Basic credentials") from None
        _, _, password = decoded.partition(":")
        return password or None
    raise Unauthenticated(f"unsupported authorization scheme {scheme!r}; use Bearer or Basic")


def check_user_name(name: Any) -> str:
    """``name`` if it is a user name (letters, digits, ``_ . @ -``; at most 128 characters)."""
    if not isinstance(name, str) or not _USER_RE.match(name):
        raise InvalidInput(
            "user name must start with a letter or digit and hold only letters, digits and "
            f"'_ . @ -' (at most 128 characters), got {name!r}"
        )
    return name


def parse_duration(text: str | None) -> int | None:
    """Milliseconds in ``30d``, ``12h``, ``90m``, ``2w`` or ``45s``; None for None."""
    if text is None:
        return None
    match = _DURATION_RE.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise InvalidInput(
            f"expiry must be a positive number with a unit s, m, h, d or w (e.g. 30d), got {text!r}"
        )
    return int(match.group(1)) * _UNITS[match.group(2)] * 1000


def parse_scopes(scopes: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Scopes as a sorted tuple; all of :data:`SCOPES` when none are given."""
    if scopes is None:
        return SCOPES
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    chosen = sorted({str(item).strip() for item in items if str(item).strip()})
    unknown = [item for item in chosen if item not in SCOPES]
    if unknown or not chosen:
        raise InvalidInput(
            f"token scopes must be among {', '.join(SCOPES)}, got {', '.join(unknown) or 'none'}"
        )
    return tuple(chosen)


def _user_row(conn: Connection, name: str) -> Any:
    return conn.execute(select(s.users).where(s.users.c.name == name)).first()


def create_user(conn: Connection, actor: str, name: str) -> User:
    """Add a user; ``Conflict`` if the name is taken."""
    check_user_name(name)
    if _user_row(conn, name) is not None:
        raise Conflict(f"user {name!r} already exists; see `keel users list`")
    at = now_ms()
    conn.execute(
        s.users.insert().values(name=name, created_at=at, created_by=actor, disabled=False)
    )
    audit.record(
        conn, actor=actor, action="user.create", object_type="user", object_id=name, after={}
    )
    return User(name, at, actor, False)


def get_user(conn: Connection, name: str) -> User:
    """The user ``name`` with their role grants; ``NotFound`` if absent."""
    row = _user_row(conn, name)
    if row is None:
        raise NotFound(f"no user {name!r}; create one with `keel users create {name} --role ROLE`")
    return User(row.name, row.created_at, row.created_by, bool(row.disabled), grants_of(conn, name))


def list_users(conn: Connection) -> list[User]:
    """Every user, by name, with their grants."""
    rows = conn.execute(select(s.users).order_by(s.users.c.name)).all()
    return [
        User(r.name, r.created_at, r.created_by, bool(r.disabled), grants_of(conn, r.name))
        for r in rows
    ]


def create_token(
    conn: Connection,
    actor: str,
    user: str,
    *,
    expires_in_ms: int | None = None,
    scopes: tuple[str, ...] = SCOPES,
) -> tuple[TokenInfo, str]:
    """Make a token for ``user``: its listing, and the secret, which is shown only now."""
    row = _user_row(conn, user)
    if row is None:
        raise NotFound(f"no user {user!r}; create one with `keel users create {user} --role ROLE`")
    secret = _TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = "tok_" + secrets.token_hex(8)
    at = now_ms()
    expires_at = None if expires_in_ms is None else at + expires_in_ms
    conn.execute(
        s.api_tokens.insert().values(
            id=token_id,
            user_name=user,
            digest=token_digest(secret),
            scopes=",".join(scopes),
            created_at=at,
            created_by=actor,
            expires_at=expires_at,
            revoked_at=None,
        )
    )
    audit.record(
        conn,
        actor=actor,
        action="token.create",
        object_type="token",
        object_id=token_id,
        after={"user": user, "scopes": list(scopes), "expires_at": expires_at},
    )
    return TokenInfo(token_id, user, scopes, at, actor, expires_at, None), secret


def _token(row: Any) -> TokenInfo:
    return TokenInfo(
        row.id,
        row.user_name,
        tuple(row.scopes.split(",")),
        row.created_at,
        row.created_by,
        row.expires_at,
        row.revoked_at,
    )


def list_tokens(conn: Connection, user: str | None = None) -> list[TokenInfo]:
    """Tokens, newest first; only ``user``'s when given."""
    query = select(s.api_tokens).order_by(s.api_tokens.c.created_at.desc(), s.api_tokens.c.id)
    if user is not None:
        query = query.where(s.api_tokens.c.user_name == user)
    return [_token(r) for r in conn.execute(query)]


def get_token(conn: Connection, token_id: str) -> TokenInfo:
    """The token ``token_id``; ``NotFound`` if there is none."""
    row = conn.execute(select(s.api_tokens).where(s.api_tokens.c.id == token_id)).first()
    if row is None:
        raise NotFound(f"no token {token_id!r}; see `keel tokens list`")
    return _token(row)


def revoke_token(conn: Connection, actor: str, token_id: str) -> TokenInfo:
    """Revoke ``token_id`` now; revoking a revoked token changes nothing."""
    token = get_token(conn, token_id)
    if token.revoked_at is not None:
        return token
    at = now_ms()
    conn.execute(update(s.api_tokens).where(s.api_tokens.c.id == token_id).values(revoked_at=at))
    audit.record(
        conn,
        actor=actor,
        action="token.revoke",
        object_type="token",
        object_id=token_id,
        before={"user": token.user},
    )
    return get_token(conn, token_id)


def authenticate(conn: Connection, secret: str) -> Principal:
    """The principal a token acts as.

    Raises:
        Unauthenticated: the token is malformed, unknown, expired or revoked, or its user
            is disabled. The message says which, never echoing the token.
    """
    if not isinstance(secret, str) or not secret.startswith(_TOKEN_PREFIX) or len(secret) > 128:
        raise Unauthenticated("malformed token: Keel tokens start with 'keel_'")
    row = conn.execute(
        select(s.api_tokens, s.users.c.disabled)
        .join(s.users, s.users.c.name == s.api_tokens.c.user_name)
        .where(s.api_tokens.c.digest == token_digest(secret))
    ).first()
    if row is None:
        raise Unauthenticated("unknown token: create one with `keel tokens create --user NAME`")
    if row.revoked_at is not None:
        raise Unauthenticated(f"token {row.id} was revoked; create a new one")
    if row.expires_at is not None and row.expires_at <= now_ms():
        raise Unauthenticated(f"token {row.id} has expired; create a new one")
    if row.disabled:
        raise Unauthenticated(f"user {row.user_name!r} is disabled")
    return Principal(
        row.user_name,
        row.id,
        tuple(row.scopes.split(",")),
        grants_of(conn, row.user_name),
        row.expires_at,
    )
