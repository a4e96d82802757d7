"""The monitoring part of a client: monitor runs and results, alerts, settings, references.

:func:`monitoring_part` picks it for a client's transport: :class:`MonitoringPart`
runs the queries on the client's own metadata store; over ``keel server`` it is
a :class:`keel.monitoring.remote.RemoteMonitoring`, whose methods are REST
calls to routes that run this same code on the server. The module functions
(:func:`~keel.monitoring.run_monitor`, :func:`~keel.monitoring.monitor_history`,
:func:`~keel.monitoring.list_alerts`, :func:`~keel.monitoring.get_monitor_settings`,
:func:`~keel.monitoring.configure_monitor`, and the reference functions of
:mod:`keel.monitoring.reference`) all go through it.

A monitor run reads prediction logs, so over ``keel server`` it runs on the
server, against the server's artifact root: the serving processes must write
their logs there (give ``keel serve`` the server's ``KEEL_ARTIFACTS_URL``, the
same folder or S3 prefix).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from keel.client import Client
    from keel.data.profiling import Profile
    from keel.monitoring.alerts import Alert, Sink
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

    def run_monitor(
        self,
        deployment: str,
        *,
        window: Any = None,
        end: Any = None,
        sinks: Sequence[Sink] | None = None,
    ) -> MonitorResult:
        """See :func:`keel.monitoring.run_monitor`."""
        from keel.monitoring.monitor import local_run_monitor

        return local_run_monitor(deployment, self.client, window=window, end=end, sinks=sinks)

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

    def reference_info(self, model_name: str, version: int) -> dict[str, Any] | None:
        """See :func:`keel.monitoring.reference_info`."""
        from keel.monitoring.reference import local_reference_info

        return local_reference_info(model_name, version, self.client)

    def store_reference(
        self, model_name: str, version: int, profile: Profile, left_out: list[str]
    ) -> str:
        """Store ``profile`` as the version's newest reference (audited); its digest.

        ``left_out`` names the columns of the data that were not model inputs (for the
        audit entry). :func:`keel.monitoring.set_reference` builds the profile first.
        """
        from keel.monitoring.reference import local_store_reference

        return local_store_reference(model_name, version, profile, left_out, self.client)

    def ensure_reference(self, model_name: str, version: int) -> dict[str, Any] | None:
        """See :func:`keel.monitoring.reference.ensure_reference`."""
        from keel.monitoring.reference import local_ensure_reference

        return local_ensure_reference(model_name, version, self.client)


def monitoring_part(client: Client) -> MonitoringPart:
    """The monitoring part for ``client``'s transport: SQL locally, REST calls over http."""
    from keel.transport.http import HttpTransport

    if isinstance(client.transport, HttpTransport):
        from keel.monitoring.remote import RemoteMonitoring

        return RemoteMonitoring(client)
    return MonitoringPart(client)
