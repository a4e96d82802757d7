"""``keel policy …`` and ``keel roles …``: who may move protected aliases, and who may do what.

``keel roles`` goes through :class:`keel.governance.client.IdentityClient`: to the
server ``--server``/``KEEL_SERVER_URL`` names (with an admin's ``KEEL_TOKEN``), or
to the local store as the local user when no server is named.

The automation policies' own commands (``apply``, ``show``, ``enable``,
``disable``) live in :mod:`keel.cli.automation` and join this group.
"""

from __future__ import annotations

from typing import Annotated

import typer

from keel.cli.output import console, print_json

policy_app = typer.Typer(
    help="Policies: protected aliases (moving them needs approvals) and automation "
    "(retrain, gate, roll out).",
    no_args_is_help=True,
)
roles_app = typer.Typer(
    help="Grant and revoke roles, everywhere or on one experiment, model or alias "
    "(through a server with --server, else on the local store as KEEL_USER).",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@policy_app.command("protect")
def protect_command(
    alias: Annotated[
        str, typer.Argument(help="Alias to protect, for every model (e.g. production).")
    ],
    approvals: Annotated[int, typer.Option(help="Approvals needed to move it.")] = 1,
    role: Annotated[str, typer.Option(help="Role an approver must hold.")] = "approver",
    allow_registrant: Annotated[
        bool, typer.Option(help="Let a version's registrant approve it (off: four-eyes).")
    ] = False,
) -> None:
    """Protect an alias: moving it needs approvals from a role."""
    from keel.client import Client

    policy = Client().set_alias_policy(
        alias, approvals=approvals, role=role, allow_registrant=allow_registrant
    )
    console.print(
        f"Protected {policy.alias!r}: {policy.approvals} approval(s) from role {policy.role!r}"
        + ("" if policy.allow_registrant else ", never from the version's registrant")
    )


@policy_app.command("unprotect")
def unprotect_command(alias: Annotated[str, typer.Argument(help="Alias to unprotect.")]) -> None:
    """Remove an alias's protection."""
    from keel.client import Client

    Client().delete_alias_policy(alias)
    console.print(f"{alias!r} is no longer protected")


@policy_app.command("list")
def policy_list_command(as_json: JsonOption = False) -> None:
    """List protected aliases and automation policies."""
    from rich.table import Table

    from keel.automation import PolicyStore
    from keel.client import Client

    client = Client()
    protected = client.list_alias_policies()
    automation = PolicyStore(client).list()
    if as_json:
        print_json(
            {"protected_aliases": [p.to_dict() for p in protected], "automation": automation}
        )
        return
    if not protected:
        console.print("No protected aliases.")
    else:
        table = Table("alias", "approvals", "role", "registrant may approve", title="Protected")
        for p in protected:
            table.add_row(p.alias, str(p.approvals), p.role, "yes" if p.allow_registrant else "no")
        console.print(table)
    if not automation:
        console.print("No automation policies (`keel policy apply FILE` creates one).")
        return
    table = Table("policy", "model", "deployment", "state", "enabled", title="Automation")
    for row in automation:
        table.add_row(
            row["name"],
            row["model"],
            row["deployment"],
            row["state"],
            "yes" if row["enabled"] else "no",
        )
    console.print(table)


def _scope(experiment: str | None, model: str | None, alias: str | None) -> tuple[str, str]:
    """The grant's scope from the command's options: ("", "") is everywhere."""
    given = [
        (kind, name)
        for kind, name in (("experiment", experiment), ("model", model), ("alias", alias))
        if name is not None
    ]
    if len(given) > 1:
        from keel.errors import InvalidInput

        raise InvalidInput(
            "a grant has one scope: give at most one of --experiment, --model and --alias, "
            f"got {' and '.join('--' + kind for kind, _ in given)}"
        )
    return given[0] if given else ("", "")


def _label(role: str, kind: str, name: str) -> str:
    return f"role {role!r}" + (f" on {kind} {name!r}" if kind else "")


ExperimentOption = Annotated[
    str | None,
    typer.Option(
        "--experiment", help="Only on this experiment (its runs included).", show_default=False
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", help="Only on this registered model (its aliases included).", show_default=False
    ),
]
AliasOption = Annotated[
    str | None,
    typer.Option(
        "--alias", help="Only on this alias, as MODEL@ALIAS (who may move it).", show_default=False
    ),
]


@roles_app.command("grant")
def grant_command(
    user: Annotated[
        str, typer.Argument(help="User name (a server's user, else as KEEL_USER gives it).")
    ],
    role: Annotated[str, typer.Argument(help="Role: viewer, editor, approver or admin.")],
    experiment: ExperimentOption = None,
    model: ModelOption = None,
    alias: AliasOption = None,
) -> None:
    """Grant a role, everywhere or on one experiment, model or alias.

    Through a server (--server / KEEL_SERVER_URL) this needs an admin's KEEL_TOKEN;
    locally, once anyone holds 'admin', only admins may grant.
    """
    from keel.governance.client import IdentityClient

    kind, name = _scope(experiment, model, alias)
    created = IdentityClient().grant_role(user, role, kind, name)
    verb = "now has" if created else "already had"
    console.print(f"{user} {verb} {_label(role, kind, name)}")


@roles_app.command("revoke")
def revoke_command(
    user: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help="Role to take away.")],
    experiment: ExperimentOption = None,
    model: ModelOption = None,
    alias: AliasOption = None,
) -> None:
    """Revoke a role grant (the scope must match the grant's)."""
    from keel.governance.client import IdentityClient

    kind, name = _scope(experiment, model, alias)
    IdentityClient().revoke_role(user, role, kind, name)
    console.print(f"{user} no longer has {_label(role, kind, name)}")


@roles_app.command("list")
def roles_list_command(as_json: JsonOption = False) -> None:
    """List users and their roles (scoped ones as 'editor on model fraud')."""
    from rich.table import Table

    from keel.governance.client import IdentityClient

    roles = IdentityClient().list_roles()
    if as_json:
        print_json(roles)
        return
    if not roles:
        console.print("No roles granted.")
        return
    table = Table("user", "roles")
    for user, held in roles.items():
        table.add_row(user, ", ".join(held))
    console.print(table)
