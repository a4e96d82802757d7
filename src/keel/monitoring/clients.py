"""The client the monitoring functions use when the caller passes none."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.client import Client


__all__ = ["resolve_client"]


def resolve_client(client: Client | None = None) -> Any:
    """``client``, or a :class:`keel.Client` on the process's settings (imported late:
    a standalone drift comparison never needs the metadata store)."""
    if client is not None:
        return client
    from keel.client import Client

    return Client()
