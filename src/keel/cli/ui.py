"""``keel ui``: the web UI over the local home, for one user on this machine.

Like ``mlflow ui``: no login, and therefore loopback only. It serves the same
app as ``keel server`` (API and UI) over the home's store and artifacts, with
auth off, so anyone who can reach the port acts as the local user.
"""

from __future__ import annotations

from typing import Annotated

import typer

from keel.cli.output import console

__all__ = ["ui_command"]


def ui_command(
    port: Annotated[int, typer.Option(help="Port to bind.")] = 5000,
    host: Annotated[
        str, typer.Option(help="Loopback address to bind (127.0.0.1, ::1 or localhost).")
    ] = "127.0.0.1",
) -> None:
    """Open the web UI on the local home (no login; loopback only)."""
    from keel.config import load_settings
    from keel.errors import InvalidInput
    from keel.server.run import is_loopback, serve
    from keel.store import redact_url

    if not is_loopback(host):
        raise InvalidInput(
            f"keel ui has no login, so it serves only on loopback (127.0.0.1, ::1, localhost), "
            f"got {host!r}; to share the UI, run `keel server start` with tokens"
        )
    settings = load_settings(server_url=None)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"Keel UI on http://{shown}:{port}/  (store {redact_url(settings.store_url)})")
    console.print("No login: anyone who can reach this port acts as you. Stop it with Ctrl+C.")
    serve(settings, host=host, port=port, auth=False, warn_no_auth=False)
