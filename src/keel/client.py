"""``keel.Client``: everything the module-level API does, addressed by id."""

from __future__ import annotations

from keel.tracking.client import TrackingClient

__all__ = ["Client"]


class Client(TrackingClient):
    """One client for experiments, runs, metrics, artifacts and search.

    Args:
        settings: defaults to the process's settings.

    Example:
        >>> client = keel.Client()
        >>> page = client.search_runs(filter_string="metrics.acc > 0.9", max_results=10)
    """
