"""The monitoring routes: monitor runs, alerts, monitor settings, canaries and references.

Each route checks its permissions, then calls the monitoring functions over
the caller's client, which acts as the token's user. What each needs:

===========================================  =======================================
reading a deployment's monitor runs, the      ``read`` somewhere (any grant)
alerts, a deployment's monitor settings,
a canary's live metrics
running a deployment's monitor                ``write`` on every model the deployment
                                              routes to (its results and alerts are
                                              that traffic's)
changing a deployment's monitor settings      ``write`` (global); ``admin`` too when
                                              the change sets ``command`` (a shell
                                              command run wherever monitors run)
reading a version's reference                 ``read`` on the model
storing a version's reference, taking one     ``write`` on the model
from its training data
===========================================  =======================================

A monitor run and a canary's measurement read the prediction logs under the
server's artifact root, so they run here: the serving processes must log to
that root (the same folder or S3 prefix as the server's ``KEEL_ARTIFACTS_URL``).
A reference profile set by a client is built by the client (from data and a
model it holds) and stored here.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from keel.automation.live import measure_canary
from keel.monitoring.alerts import local_list_alerts
from keel.monitoring.monitor import local_monitor_history, local_run_monitor
from keel.monitoring.reference import (
    local_ensure_reference,
    local_reference_info,
    local_store_reference,
    parse_reference,
)
from keel.monitoring.settings import local_configure_monitor, local_monitor_settings
from keel.server.context import Caller, CallerDep
from keel.serving.deployments import Deployments
from keel.transport.wire import to_wire
from keel.validation import MAX_NAME_CHARS

router = APIRouter(tags=["monitoring"])

DeploymentName = Annotated[str, Path(max_length=MAX_NAME_CHARS, description="a deployment")]
Limit = Annotated[int | None, Query(ge=1, le=100_000, description="at most this many")]
ModelName = Annotated[str, Path(max_length=MAX_NAME_CHARS, description="a registered model")]
Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="a version number")]
_MAX_MS = 2**63 - 1


class MonitorRun(BaseModel):
    """Run the deployment's monitor over ``[end - window, end)``."""

    window: str | None = Field(
        default=None, max_length=64, description="its length (default: the setting)"
    )
    end: int | None = Field(default=None, ge=0, le=_MAX_MS, description="epoch ms (default: now)")


class ReferenceBody(BaseModel):
    """A reference profile the client built, and the data's columns that were not inputs."""

    profile: dict[str, Any] = Field(description="the profile, as Profile.to_dict() writes it")
    left_out: list[Annotated[str, Field(max_length=1_024)]] = Field(
        default_factory=list, max_length=10_000
    )


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
    slo: dict[str, float | None] | None = Field(default=None, max_length=20)
    fire_after: int | None = Field(default=None, ge=1, le=10_000)
    resolve_after: int | None = Field(default=None, ge=1, le=10_000)
    skew_rate: float | None = Field(default=None, ge=0, lt=1)
    skew_sample: int | None = Field(default=None, ge=1, le=1_000_000)
    webhook_url: str | None = Field(default=None, max_length=2_048)
    webhook_secret_env: str | None = Field(default=None, max_length=256)
    command: str | None = Field(default=None, max_length=10_000)
    expected_revision: int | None = Field(default=None, ge=0, le=2**31 - 1)
    reset: bool = False

    def changes(self) -> dict[str, Any]:
        """The settings fields the request sent (``null`` included: it clears an optional one)."""
        skip = {"expected_revision", "reset"}
        return {k: getattr(self, k) for k in self.model_fields_set - skip}


def require_read(caller: Caller) -> None:
    """Go on only if ``caller`` may read monitor results and alerts (the UI checks the same)."""
    caller.require_somewhere("read", "reading monitor results and alerts")


@router.get("/deployments/{name}/monitor-runs")
def monitor_runs(name: DeploymentName, caller: CallerDep, limit: Limit = None) -> Any:
    """The deployment's monitor runs, newest window first."""
    require_read(caller)
    return to_wire(local_monitor_history(name, limit, caller.client))


@router.post("/deployments/{name}/monitor-runs")
def run_monitor(name: DeploymentName, body: MonitorRun, caller: CallerDep) -> Any:
    """Run the deployment's monitor over the prediction logs here; store; alert."""
    # first "write anywhere": a viewer hears which permission it lacks, not whether a name exists
    caller.require_somewhere("write", "running monitors")
    for model in Deployments(caller.client).get(name).spec.models:
        caller.require("write", "model", model)
    return to_wire(local_run_monitor(name, caller.client, window=body.window, end=body.end))


@router.get("/deployments/{name}/canary")
def canary(
    name: DeploymentName,
    caller: CallerDep,
    version: Annotated[int, Query(ge=1, le=2**31 - 1, description="the canary's version")],
    since: Annotated[int, Query(ge=0, le=_MAX_MS, description="epoch ms it started")],
) -> Any:
    """The canary version's live metrics against the other routed versions since ``since``."""
    require_read(caller)
    return to_wire(measure_canary(name, version, since, client=caller.client))


@router.get("/models/{name}/versions/{version}/reference")
def reference(name: ModelName, version: Version, caller: CallerDep) -> Any:
    """Where the version's reference profile comes from (null: it has none)."""
    caller.require("read", "model", name)
    return to_wire(local_reference_info(name, version, caller.client))


@router.post("/models/{name}/versions/{version}/reference")
def store_reference(
    name: ModelName, version: Version, body: ReferenceBody, caller: CallerDep
) -> Any:
    """Store a profile the client built as the version's newest reference (audited)."""
    caller.require("write", "model", name)
    profile = parse_reference(body.profile)
    digest = local_store_reference(name, version, profile, list(body.left_out), caller.client)
    return {"digest": digest}


@router.post("/models/{name}/versions/{version}/reference/ensure")
def ensure_reference(name: ModelName, version: Version, caller: CallerDep) -> Any:
    """The version's reference, taken from its training data if it has none (null: none)."""
    caller.require("write", "model", name)
    return to_wire(local_ensure_reference(name, version, caller.client))


@router.get("/alerts")
def alerts(
    caller: CallerDep,
    deployment: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
    limit: Limit = None,
) -> Any:
    """Alert events, newest first (of one deployment, or all)."""
    require_read(caller)
    return to_wire(local_list_alerts(deployment, limit, caller.client))


@router.get("/deployments/{name}/monitor-settings")
def monitor_settings(name: DeploymentName, caller: CallerDep) -> Any:
    """The deployment's monitor settings (the defaults when none are stored)."""
    require_read(caller)
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
