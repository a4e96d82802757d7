"""Starting ``keel server``: checks before the first request, then uvicorn.

Auth is on unless ``--no-auth``, and then the server binds only to loopback
and says so loudly. With auth on it refuses to start until an admin exists
(``keel server init-admin`` makes the first one and prints its token once).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

from sqlalchemy import func, select

from keel.config import Settings, get_settings
from keel.errors import InvalidInput, PermissionDenied
from keel.governance import identity, roles
from keel.store import get_store
from keel.store import schema as s

__all__ = ["app_from_env", "count_admins", "init_admin", "is_loopback", "serve"]

_NO_AUTH_ENV = "KEEL_SERVER_NO_AUTH"


def count_admins(settings: Settings) -> int:
    """Users holding the admin role everywhere."""
    store = get_store(settings)
    with store.read() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(s.role_grants)
                .join(s.users, s.users.c.name == s.role_grants.c.user_name)
                .where(s.role_grants.c.role == roles.ADMIN_ROLE, s.role_grants.c.scope_kind == "")
            ).scalar_one()
        )


def init_admin(settings: Settings, name: str = "admin") -> tuple[identity.TokenInfo, str]:
    """Create the first admin and a token for them; refused once an admin exists.

    Returns:
        The token's listing and its secret, shown only now.
    """
    if count_admins(settings):
        raise PermissionDenied(
            "an admin exists already; admins make users and tokens through the server "
            "(keel users create NAME --role admin)"
        )
    store = get_store(settings)
    actor = f"init-admin:{settings.user}"
    with store.write() as conn:
        identity.create_user(conn, actor, name)
        roles.grant(conn, actor, name, roles.ADMIN_ROLE)
        return identity.create_token(conn, actor, name)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_from_env() -> Any:
    """uvicorn factory for ``--workers N``: every worker builds its app from the environment."""
    from keel.server.app import create_app

    return create_app(get_settings(), auth=os.environ.get(_NO_AUTH_ENV) != "1")


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 5005,
    workers: int = 1,
    auth: bool = True,
    access_log: bool = False,
    warn_no_auth: bool = True,
) -> None:
    """Serve the control plane with uvicorn until interrupted.

    ``warn_no_auth``: print the loud ``--no-auth`` warning (``keel ui`` says it its own way).
    """
    try:
        import fastapi  # noqa: F401
    except ImportError:
        raise InvalidInput("keel server needs FastAPI: pip install 'keel[server]'") from None
    if not auth:
        if not is_loopback(host):
            raise InvalidInput(
                f"--no-auth serves only on loopback (127.0.0.1, ::1, localhost), got {host!r}: "
                "anyone who can reach the port would act as admin"
            )
        if warn_no_auth:
            print(
                "WARNING: keel server runs WITHOUT AUTHENTICATION (--no-auth): every caller on "
                "this machine acts as admin. Use it for one user on loopback only.",
                file=sys.stderr,
                flush=True,
            )
    else:
        get_store(settings)  # migrate before workers fork, so they find the schema ready
        if not count_admins(settings):
            raise PermissionDenied(
                "auth is on and there is no admin: run `keel server init-admin` with the same "
                "--store to create one (it prints the first admin token once), or start with "
                "--no-auth for a single user on loopback"
            )
    from keel.asgi import run_uvicorn
    from keel.server.app import create_app

    run_uvicorn(
        lambda: create_app(settings, auth=auth),
        "keel.server.run:app_from_env",
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        environ={_NO_AUTH_ENV: "0" if auth else "1"},
    )
