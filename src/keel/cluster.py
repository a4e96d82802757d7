"""Joining Ray: one place that imports it and connects, for every part that scales out.

Pipelines, batch scoring and large profiles run on Ray with ``executor="ray"``.
They all join the cluster the ``ray_address`` setting names (``KEEL_RAY_ADDRESS``:
``auto``, ``ray://host:10001`` …); without one, a local Ray starts with the
machine's CPUs. A process that already called ``ray.init`` keeps its cluster.
"""

from __future__ import annotations

import logging
from types import ModuleType

from keel.errors import BackendUnavailable, InvalidInput

__all__ = ["import_ray", "join_ray"]


def import_ray() -> ModuleType:
    """The ``ray`` module, or the command that installs it."""
    try:
        import ray
    except ImportError:
        raise InvalidInput(
            "executor='ray' needs Ray, which is not installed: pip install 'keel[ray]'"
        ) from None
    return ray


def join_ray(address: str | None = None, *, num_cpus: int | None = None) -> ModuleType:
    """Connect to the cluster (``address``, else the ``ray_address`` setting, else a local Ray).

    Args:
        address: overrides the setting.
        num_cpus: CPUs of a *local* Ray (default: all of this machine's).

    Raises:
        InvalidInput: Ray is not installed.
        BackendUnavailable: the cluster cannot be reached, or a local Ray cannot start.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address is None:
        from keel.config import get_settings

        address = get_settings().ray_address
    try:
        if address:
            ray.init(address=address, ignore_reinit_error=True, logging_level=logging.WARNING)
        else:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                ignore_reinit_error=True,
                logging_level=logging.ERROR,  # the instance is ours; its notices are noise
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address} (KEEL_RAY_ADDRESS)" if address else "a local Ray"
        raise BackendUnavailable(
            f"cannot start or reach {where}: {exc}; check KEEL_RAY_ADDRESS, or unset it to start "
            "a local Ray"
        ) from None
    return ray
