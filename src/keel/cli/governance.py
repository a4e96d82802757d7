"""``keel policy …`` and ``keel roles …``: who may move protected aliases.

The automation policies' own commands (``apply``, ``show``, ``enable``,
``disable``) live in :mod:`keel.cli.automation` and join this group.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from keel.cli.output import console, print_json

policy_app = typer.Typer(
    help="Policies: protected aliases (moving them needs approvals) and automation "
    "(retrain, gate, roll out).",
    no_args_is_help=True,
)
roles_app = typer.Typer(help="Grant and revoke roles (identity: KEEL_USER).", no_args_is_help=True)
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


@roles_app.command("grant")
def grant_command(
    user: Annotated[str, typer.Argument(help="User name (as KEEL_USER gives it).")],
    role: Annotated[str, typer.Argument(help="Role, e.g. approver or admin.")],
) -> None:
    """Grant a role. Once anyone holds 'admin', only admins may grant."""
    from keel.client import Client

    Client().grant_role(user, role)
    console.print(f"{user} now has role {role!r}")


@roles_app.command("revoke")
def revoke_command(
    user: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help="Role to take away.")],
) -> None:
    """Revoke a role."""
    from keel.client import Client

    Client().revoke_role(user, role)
    console.print(f"{user} no longer has role {role!r}")


@roles_app.command("list")
def roles_list_command(as_json: JsonOption = False) -> None:
    """List users and their roles."""
    from keel.client import Client

    roles = Client().list_roles()
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
