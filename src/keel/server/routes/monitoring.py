"""The monitoring routes: monitor results, alerts and monitor settings.

Each route checks its permissions, then calls the monitoring functions over
the caller's client, which acts as the token's user. What each needs:

===========================================  =======================================
reading a deployment's monitor runs, the      ``read`` somewhere (any grant)
alerts, a deployment's monitor settings
changing a deployment's monitor settings      ``write`` (global); ``admin`` too when
                                              the change sets ``command`` (a shell
                                              command run wherever monitors run)
===========================================  =======================================

Monitor runs themselves read the prediction logs and run where those logs are
(``keel monitor run``); the server stores their results and alerts.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from keel.monitoring.alerts import local_list_alerts
from keel.monitoring.monitor import local_monitor_history
from keel.monitoring.settings import local_configure_monitor, local_monitor_settings
from keel.server.context import Caller, CallerDep
from keel.transport.wire import to_wire
from keel.validation import MAX_NAME_CHARS

router = APIRouter(tags=["monitoring"])

DeploymentName = Annotated[str, Path(max_length=MAX_NAME_CHARS, description="a deployment")]
Limit = Annotated[int | None, Query(ge=1, le=100_000, description="at most this many")]


class SettingsChange(BaseModel):
    """Monitor settings to change: only the fields sent change (see ``MonitorSettings``)."""

    window: str | None = Field(default=None, max_length=64)
    drift_share: float | None = Field(default=None, gt=0, le=1)
    clear_share: float | None = Field(default=None, ge=0, lt=1)
    columns: list[Annotated[str, Field(max_length=1_024)]] | None = Field(
        default=None, max_length=10_000
    )
    overrides: dict[str, Any] | None = Field(default=None, max_length=10_000)
    quality: dict[str, float] | None = Field(default=None, max_length=100)
    fire_after: int | None = Field(default=None, ge=1, le=10_000)
    resolve_after: int | None = Field(default=None, ge=1, le=10_000)
    webhook_url: str | None = Field(default=None, max_length=2_048)
    webhook_secret_env: str | None = Field(default=None, max_length=256)
    command: str | None = Field(default=None, max_length=10_000)
    expected_revision: int | None = Field(default=None, ge=0, le=2**31 - 1)
    reset: bool = False

    def changes(self) -> dict[str, Any]:
        """The settings fields the request sent (``null`` included: it clears an optional one)."""
        skip = {"expected_revision", "reset"}
        return {k: getattr(self, k) for k in self.model_fields_set - skip}


def _require_read(caller: Caller) -> None:
    caller.require_somewhere("read", "reading monitor results and alerts")


@router.get("/deployments/{name}/monitor-runs")
def monitor_runs(name: DeploymentName, caller: CallerDep, limit: Limit = None) -> Any:
    """The deployment's monitor runs, newest window first."""
    _require_read(caller)
    return to_wire(local_monitor_history(name, limit, caller.client))


@router.get("/alerts")
def alerts(
    caller: CallerDep,
    deployment: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
    limit: Limit = None,
) -> Any:
    """Alert events, newest first (of one deployment, or all)."""
    _require_read(caller)
    return to_wire(local_list_alerts(deployment, limit, caller.client))


@router.get("/deployments/{name}/monitor-settings")
def monitor_settings(name: DeploymentName, caller: CallerDep) -> Any:
    """The deployment's monitor settings (the defaults when none are stored)."""
    _require_read(caller)
    return to_wire(local_monitor_settings(name, caller.client))


@router.put("/deployments/{name}/monitor-settings")
def configure_monitor(name: DeploymentName, body: SettingsChange, caller: CallerDep) -> Any:
    """Change the deployment's monitor settings (409 if they moved past ``expected_revision``)."""
    caller.require("write")
    changes = body.changes()
    if changes.get("command"):
        caller.require("admin")
    return to_wire(
        local_configure_monitor(
            name,
            caller.client,
            expected_revision=body.expected_revision,
            reset=body.reset,
            **changes,
        )
    )
