"""The monitoring part over ``keel server``: :class:`MonitoringPart`'s methods as REST calls.

Each method is one request to a route of :mod:`keel.server.routes.monitoring`;
the server checks the caller's permissions and runs the same monitoring code
(see that module for what each route needs).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from keel.errors import InvalidInput, NotFound
from keel.monitoring.alerts import Alert
from keel.monitoring.monitor import MonitorResult
from keel.monitoring.part import MonitoringPart
from keel.monitoring.settings import MonitorSettings
from keel.transport.http import HttpTransport

__all__ = ["RemoteMonitoring"]

_SETTABLE = set(MonitorSettings.__dataclass_fields__) - {"revision"}


class RemoteMonitoring(MonitoringPart):
    """Monitor results, alerts and settings through ``keel server``."""

    @property
    def transport(self) -> HttpTransport:
        """The client's http transport."""
        transport = self.client.transport
        assert isinstance(transport, HttpTransport)  # monitoring_part chose this class for it
        return transport

    def _path(self, deployment: str) -> str:
        from keel.predictions import check_deployment

        # a name that is not one (``a/b``) would change the route: answer as locally
        try:
            check_deployment(deployment)
        except InvalidInput:
            raise NotFound(f"no deployment named {deployment!r}") from None
        return f"/deployments/{quote(deployment, safe='')}"

    def monitor_history(self, deployment: str, limit: int | None = None) -> list[MonitorResult]:
        params = {} if not limit else {"limit": limit}
        path = f"{self._path(deployment)}/monitor-runs"
        return self.transport.call("GET", path, list[MonitorResult], params=params)

    def list_alerts(self, deployment: str | None = None, limit: int | None = None) -> list[Alert]:
        params: dict[str, Any] = {}
        if deployment is not None:
            params["deployment"] = deployment
        if limit:
            params["limit"] = limit
        return self.transport.call("GET", "/alerts", list[Alert], params=params)

    def get_monitor_settings(self, deployment: str) -> MonitorSettings:
        path = f"{self._path(deployment)}/monitor-settings"
        return self.transport.call("GET", path, MonitorSettings)

    def configure_monitor(
        self,
        deployment: str,
        *,
        expected_revision: int | None = None,
        reset: bool = False,
        **changes: Any,
    ) -> MonitorSettings:
        from keel.monitoring.windows import spell_window

        if "window" in changes:  # a timedelta crosses as its spelling
            changes["window"] = spell_window(changes["window"])
        if changes.get("columns") is not None:
            changes["columns"] = list(changes["columns"])
        unknown = sorted(set(changes) - _SETTABLE)
        if unknown:  # as locally, before anything is sent
            raise InvalidInput(
                f"unknown monitor setting(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(_SETTABLE))}"
            )
        body = {**changes, "expected_revision": expected_revision, "reset": reset}
        path = f"{self._path(deployment)}/monitor-settings"
        return self.transport.call("PUT", path, MonitorSettings, json=body)
