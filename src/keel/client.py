"""``keel.Client``: everything the module-level API does, addressed by id."""

from __future__ import annotations

from keel.registry.client import RegistryClient

__all__ = ["Client"]


class Client(RegistryClient):
    """One client for experiments, runs, metrics, artifacts, search and the registry.

    Args:
        settings: defaults to the process's settings.

    Example:
        >>> client = keel.Client()
        >>> page = client.search_runs(filter_string="metrics.acc > 0.9", max_results=10)
        >>> client.set_alias("churn", "champion", 3)
    """
