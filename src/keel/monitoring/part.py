"""The monitoring part of a client: monitor results, alerts and monitor settings.

:func:`monitoring_part` picks it for a client's transport: :class:`MonitoringPart`
runs the queries on the client's own metadata store; over ``keel server`` it is
a :class:`keel.monitoring.remote.RemoteMonitoring`, whose methods are REST
calls to routes that run this same code on the server. The module functions
(:func:`~keel.monitoring.monitor_history`, :func:`~keel.monitoring.list_alerts`,
:func:`~keel.monitoring.get_monitor_settings`,
:func:`~keel.monitoring.configure_monitor`) all go through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.client import Client
    from keel.monitoring.alerts import Alert
    from keel.monitoring.monitor import MonitorResult
    from keel.monitoring.settings import MonitorSettings

__all__ = ["MonitoringPart", "monitoring_part"]


class MonitoringPart:
    """Monitor results, alerts and settings on the client's own store.

    Args:
        client: a ``keel.Client``; its user is the actor of settings changes.
    """

    def __init__(self, client: Client) -> None:
        self.client = client

    def monitor_history(self, deployment: str, limit: int | None = None) -> list[MonitorResult]:
        """See :func:`keel.monitoring.monitor_history`."""
        from keel.monitoring.monitor import local_monitor_history

        return local_monitor_history(deployment, limit, self.client)

    def list_alerts(self, deployment: str | None = None, limit: int | None = None) -> list[Alert]:
        """See :func:`keel.monitoring.list_alerts`."""
        from keel.monitoring.alerts import local_list_alerts

        return local_list_alerts(deployment, limit, self.client)

    def get_monitor_settings(self, deployment: str) -> MonitorSettings:
        """See :func:`keel.monitoring.get_monitor_settings`."""
        from keel.monitoring.settings import local_monitor_settings

        return local_monitor_settings(deployment, self.client)

    def configure_monitor(
        self,
        deployment: str,
        *,
        expected_revision: int | None = None,
        reset: bool = False,
        **changes: Any,
    ) -> MonitorSettings:
        """See :func:`keel.monitoring.configure_monitor`."""
        from keel.monitoring.settings import local_configure_monitor

        return local_configure_monitor(
            deployment, self.client, expected_revision=expected_revision, reset=reset, **changes
        )


def monitoring_part(client: Client) -> MonitoringPart:
    """The monitoring part for ``client``'s transport: SQL locally, REST calls over http."""
    from keel.transport.http import HttpTransport

    if isinstance(client.transport, HttpTransport):
        from keel.monitoring.remote import RemoteMonitoring

        return RemoteMonitoring(client)
    return MonitoringPart(client)
