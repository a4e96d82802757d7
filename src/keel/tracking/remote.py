"""The tracking part over ``keel server``: the same methods as :class:`TrackingClient`, as REST calls.

:class:`RemoteTracking` is what :class:`keel.Client` holds when its transport is
the http one. It subclasses :class:`~keel.tracking.client.TrackingClient` so the
two share one interface; each method it overrides is one request to a route of
:mod:`keel.server.routes.tracking`. A method it does not override would need
the metadata store, which the http transport refuses with a clear error.
"""

from __future__ import annotations

from keel.tracking.client import TrackingClient
from keel.transport.http import HttpTransport

__all__ = ["RemoteTracking"]


class RemoteTracking(TrackingClient):
    """Experiments, runs, metrics, artifacts and search through ``keel server``."""

    transport: HttpTransport

    def __init__(self, transport: HttpTransport) -> None:
        super().__init__(transport=transport)
