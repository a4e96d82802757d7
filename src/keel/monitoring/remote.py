"""The monitoring part over ``keel server``: :class:`MonitoringPart`'s methods as REST calls.

Each method is one request to a route of :mod:`keel.server.routes.monitoring`;
the server checks the caller's permissions and runs the same monitoring code
(see that module for what each route needs). A monitor run is computed on the
server, over the prediction logs under the server's artifact root; a reference
profile is built here (from data and a model this process holds) and stored
there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from keel.data.profiling import Profile
from keel.errors import InvalidInput, NotFound
from keel.monitoring.alerts import Alert, Sink
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

    @staticmethod
    def _version_path(model_name: str, version: int) -> str:
        from keel.validation import check_name

        # as for a deployment: a name that is not one would change the route
        try:
            check_name(model_name, "model name")
        except InvalidInput:
            raise NotFound(f"no registered model named {model_name!r}") from None
        return f"/models/{quote(model_name, safe='')}/versions/{int(version)}/reference"

    def run_monitor(
        self,
        deployment: str,
        *,
        window: Any = None,
        end: Any = None,
        sinks: Sequence[Sink] | None = None,
    ) -> MonitorResult:
        from keel.monitoring.windows import parse_window
        from keel.predictions import check_deployment, to_ms

        if sinks is not None:
            raise InvalidInput(
                "sinks are objects of this process and cannot reach keel server: a monitor run "
                "through the server sends its alerts to the sinks the deployment's settings name "
                "(keel monitor configure DEPLOYMENT --webhook-url URL)"
            )
        check_deployment(deployment)  # the local messages, before any request
        body: dict[str, Any] = {}
        if window is not None:
            ms = parse_window(window)
            body["window"] = f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms / 1000}"
        if end is not None:
            body["end"] = to_ms(end, "end")
        path = f"{self._path(deployment)}/monitor-runs"
        return self.transport.call("POST", path, MonitorResult, json=body)

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

    def reference_info(self, model_name: str, version: int) -> dict[str, Any] | None:
        info: dict[str, Any] | None = self.transport.call(
            "GET", self._version_path(model_name, version), dict[str, Any] | None
        )
        return info

    def store_reference(
        self, model_name: str, version: int, profile: Profile, left_out: list[str]
    ) -> str:
        body = {"profile": profile.to_dict(), "left_out": list(left_out)}
        answer = self.transport.request("POST", self._version_path(model_name, version), json=body)
        return str(answer["digest"])

    def ensure_reference(self, model_name: str, version: int) -> dict[str, Any] | None:
        path = f"{self._version_path(model_name, version)}/ensure"
        info: dict[str, Any] | None = self.transport.call("POST", path, dict[str, Any] | None)
        return info
