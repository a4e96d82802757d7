"""``keel server …``, ``keel users …`` and ``keel tokens …``: the control plane and its identities.

``keel server start`` serves the REST API; ``keel server init-admin`` makes
the first admin. ``keel users`` and ``keel tokens`` go through the server
named by ``--server``/``KEEL_SERVER_URL`` with an admin's ``KEEL_TOKEN``, or
straight to the store named by the settings when no server is named (for the
machine the server runs on).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from keel.cli.output import console, print_json

if TYPE_CHECKING:
    from keel.config import Settings
    from keel.governance.client import IdentityClient

server_app = typer.Typer(
    help="Run the control-plane server (REST API, tokens, roles).", no_args_is_help=True
)
users_app = typer.Typer(help="Users of a keel server.", no_args_is_help=True)
tokens_app = typer.Typer(
    help="API tokens of a keel server (stored only as hashes).", no_args_is_help=True
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _settings(store: str | None, artifacts: str | None, s3_endpoint: str | None = None) -> Settings:
    from keel.config import load_settings

    return load_settings(
        store_url=store, artifacts_url=artifacts, s3_endpoint_url=s3_endpoint, server_url=None
    )


@server_app.command("start")
def start_command(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 5005,
    store: Annotated[
        str | None,
        typer.Option(
            help="Metadata store: sqlite:///path or postgresql+psycopg://… (default: the home's)."
        ),
    ] = None,
    artifacts: Annotated[
        str | None, typer.Option(help="Artifact store: a folder or s3://bucket/prefix.")
    ] = None,
    s3_endpoint_url: Annotated[
        str | None, typer.Option(help="S3-compatible endpoint for s3:// artifacts.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth", help="No tokens: every caller is admin. Loopback only, one user."
        ),
    ] = False,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve the control plane: REST API at /api/v1, OpenAPI at /api/v1/openapi.json."""
    from keel.server.run import serve

    settings = _settings(store, artifacts, s3_endpoint_url)
    # workers rebuild their settings from the environment
    os.environ.pop("KEEL_SERVER_URL", None)
    for name, value in (
        ("KEEL_STORE_URL", settings.store_url),
        ("KEEL_ARTIFACTS_URL", settings.artifacts_url),
        ("KEEL_S3_ENDPOINT_URL", settings.s3_endpoint_url),
    ):
        if value:
            os.environ[name] = value
    console.print(
        f"keel server on http://{host}:{port}  (store {_redacted(settings.store_url)}, "
        f"artifacts {settings.artifacts_url}, auth {'off' if no_auth else 'on'})"
    )
    serve(settings, host=host, port=port, workers=workers, auth=not no_auth, access_log=access_log)


def _redacted(url: str) -> str:
    from keel.store import redact_url

    return redact_url(url)


@server_app.command("init-admin")
def init_admin_command(
    name: Annotated[str, typer.Option(help="The first admin's user name.")] = "admin",
    store: Annotated[str | None, typer.Option(help="Metadata store the server will use.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create the first admin and print their token once (refused once an admin exists)."""
    from keel.server.run import init_admin

    info, secret = init_admin(_settings(store, None), name)
    if as_json:
        print_json({**info.to_dict(), "token": secret})
        return
    console.print(f"Created admin {info.user!r} with token {info.id}. The token (shown once):")
    console.print(secret, highlight=False, soft_wrap=True)


# -- users and tokens: through the server when one is named, else on the local store -----


def _identity() -> IdentityClient:
    from keel.governance.client import IdentityClient

    return IdentityClient()


@users_app.command("create")
def users_create_command(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[
        list[str] | None,
        typer.Option("--role", help="Global role: viewer, editor, approver, admin."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a user with global roles (scoped roles: keel roles grant)."""
    user = _identity().create_user(name, grant=role or [])
    if as_json:
        print_json(user)
        return
    console.print(f"Created user {user['name']!r} with roles {', '.join(user['roles']) or 'none'}")


@users_app.command("list")
def users_list_command(as_json: JsonOption = False) -> None:
    """List users and their roles."""
    from rich.table import Table

    users = _identity().list_users()
    if as_json:
        print_json(users)
        return
    table = Table("user", "roles", "disabled")
    for user in users:
        table.add_row(user["name"], ", ".join(user["roles"]), "yes" if user["disabled"] else "")
    console.print(table)


@tokens_app.command("create")
def tokens_create_command(
    user: Annotated[str, typer.Option("--user", help="Who the token acts as.")],
    expires: Annotated[
        str | None, typer.Option(help="Lifetime: 30d, 12h, 90m, 2w (default: never).")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="api, predict, feedback or llm; repeat for several (default: all).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a token and print it once: only its hash is stored."""
    token = _identity().create_token(user, expires=expires, scopes=scope)
    if as_json:
        print_json(token)
        return
    console.print(
        f"Created token {token['id']} for {token['user']!r} (scopes {', '.join(token['scopes'])}"
        + (", never expires" if token["expires_at"] is None else "")
        + "). The token (shown once):"
    )
    console.print(token["token"], highlight=False, soft_wrap=True)


@tokens_app.command("list")
def tokens_list_command(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's tokens.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List tokens (never their secrets)."""
    from rich.table import Table

    tokens = _identity().list_tokens(user)
    if as_json:
        print_json(tokens)
        return
    table = Table("id", "user", "scopes", "expires", "state")
    for token in tokens:
        state = "revoked" if token["revoked_at"] else ("active" if token["active"] else "expired")
        table.add_row(
            token["id"],
            token["user"],
            ",".join(token["scopes"]),
            str(token["expires_at"] or "never"),
            state,
        )
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke_command(
    token_id: Annotated[str, typer.Argument(help="Token id (tok_…), from keel tokens list.")],
    as_json: JsonOption = False,
) -> None:
    """Revoke a token: it stops working at once."""
    token = _identity().revoke_token(token_id)
    if as_json:
        print_json(token)
        return
    console.print(f"Revoked token {token['id']} of {token['user']!r}")
