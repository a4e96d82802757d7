"""The registry part over ``keel server``: :class:`RegistryClient`'s methods as REST calls.

:class:`RemoteRegistry` is what :class:`keel.Client` holds when its transport is
the http one; each method it overrides is one request to a route of
:mod:`keel.server.routes.registry`, where the server checks the caller's
roles and runs the same registry code.
"""

from __future__ import annotations

from keel.registry.client import RegistryClient
from keel.tracking.client import TrackingClient
from keel.transport.http import HttpTransport

__all__ = ["RemoteRegistry"]


class RemoteRegistry(RegistryClient):
    """Registered models, versions, aliases and approvals through ``keel server``."""

    transport: HttpTransport

    def __init__(self, transport: HttpTransport, tracking: TrackingClient) -> None:
        super().__init__(transport=transport, tracking=tracking)
