"""Monitoring: drift per feature over time, quality, latency and errors, alerts.

The pages check what the API's monitoring routes check
(:mod:`keel.server.routes.monitoring`: ``read`` somewhere) and read through the
monitoring library: the deployments monitoring knows, their newest monitor run
and their alert events; a deployment's drift over consecutive windows of its
prediction log comes from :func:`keel.monitoring.timeline.drift_timeline`,
which compares each window as a monitor run does (nothing is stored). The
heatmap's cells carry a severity: 1 at the column's drift threshold, so a
p-value test and a distance read on one scale.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse

from keel.errors import InvalidInput, KeelError
from keel.monitoring.alerts import Alert, local_list_alerts
from keel.monitoring.drift import ColumnDrift
from keel.monitoring.monitor import local_monitor_history
from keel.monitoring.names import known_deployments
from keel.monitoring.timeline import DriftTimeline, drift_timeline
from keel.server.routes.monitoring import require_read
from keel.server.ui.render import PageCaller, failed, render, time_param
from keel.validation import MAX_NAME_CHARS

__all__ = ["router", "severity"]

router = APIRouter(include_in_schema=False)

DeploymentName = Annotated[str, Path(max_length=MAX_NAME_CHARS)]
_ALERTS_SHOWN = 200


def severity(column: ColumnDrift) -> float | None:
    """How far a column is towards drift: 0 like the reference, 1 at its threshold.

    A p-value scores ``log(p) / log(threshold)``, a distance ``distance / threshold``,
    so both kinds of test share one colour scale. ``None`` when it was not tested.
    """
    if not column.tested:
        return None
    if column.statistic_kind == "p-value":
        p = min(1.0, max(column.statistic, 1e-300))
        return math.log(p) / math.log(column.threshold) if column.threshold < 1 else 0.0
    return column.statistic / column.threshold if column.threshold > 0 else 0.0


def _open_alerts(alerts: list[Alert]) -> list[Alert]:
    """Per rule, its newest event when that event is a firing (newest first in, newest out)."""
    newest: dict[str, Alert] = {}
    for alert in alerts:
        newest.setdefault(alert.rule, alert)
    return [a for a in newest.values() if a.state == "firing"]


@router.get("/monitoring")
def monitoring_page(caller: PageCaller) -> HTMLResponse:
    """Every deployment monitoring knows: its newest drift share and its open alerts."""
    try:
        require_read(caller)
        rows = []
        for name in known_deployments(caller.client):
            latest = local_monitor_history(name, 1, caller.client)
            alerts = local_list_alerts(name, _ALERTS_SHOWN, caller.client)
            rows.append({"name": name, "latest": latest[0] if latest else None,
                         "open": _open_alerts(alerts)})  # fmt: skip
    except KeelError as exc:
        return failed(exc)
    return render("monitoring.html", title="Monitoring", user=caller.user, rows=rows)


def _version(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.isdigit() or not 1 <= int(text) <= 2**31 - 1:
        raise InvalidInput(
            f"version must be a model version number (1, 2, …), got {raw[:100]!r}; "
            "leave it out to see every version"
        )
    return int(text)


def _heatmap(timeline: DriftTimeline) -> list[dict[str, Any]]:
    """One row per column: its cell in each window (``None`` where nothing was compared)."""
    rows = []
    for name in timeline.columns:
        cells: list[dict[str, Any] | None] = []
        role = "feature"
        for window in timeline.windows:
            column = None if window.report is None else window.report.columns.get(name)
            if column is None:
                cells.append(None)
                continue
            role = column.role
            cells.append(
                {
                    "score": severity(column),
                    "drifted": column.drifted,
                    "tip": f"{name} · {column.method} {column.statistic_kind} "
                    f"{column.statistic:.4g} (drift when {column.drift_rule}) · "
                    f"{column.current_count} rows of {window.version}"
                    + (" · DRIFTED" if column.drifted else ""),
                }
            )
        label = name.removeprefix("input.")
        rows.append({"name": name, "label": label, "role": role, "cells": cells})
    return rows


def _quality_series(timeline: DriftTimeline) -> dict[str, Any]:
    """Per quality metric, its value in each window (``None`` where nothing was labelled)."""
    keys = sorted({k for w in timeline.windows if w.quality for k in w.quality["metrics"]})
    return {
        "times": [w.start / 1000 for w in timeline.windows],
        "rows": [w.quality["rows"] if w.quality else 0 for w in timeline.windows],
        "metrics": {
            k: [(w.quality or {}).get("metrics", {}).get(k) for w in timeline.windows] for k in keys
        },
    }


@router.get("/monitoring/{deployment}")
def deployment_monitoring_page(
    deployment: DeploymentName,
    caller: PageCaller,
    version: Annotated[str | None, Query(max_length=64)] = None,
    window: Annotated[str | None, Query(max_length=64)] = None,
    start: Annotated[str | None, Query(max_length=64)] = None,
    end: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    """Drift per feature over windows of the log, quality, latency and errors, alerts."""
    try:
        require_read(caller)
        timeline = drift_timeline(
            deployment,
            caller.client,
            start=time_param(start, "start"),
            end=time_param(end, "end"),
            window=window or None,
            version=_version(version),
        )
        alerts = local_list_alerts(deployment, _ALERTS_SHOWN, caller.client)
        latest = local_monitor_history(deployment, 1, caller.client)
    except KeelError as exc:
        return failed(exc)
    return render(
        "monitoring_deployment.html",
        title=f"Monitoring · {deployment}",
        user=caller.user,
        deployment=deployment,
        timeline=timeline,
        heatmap=_heatmap(timeline),
        quality=json.dumps(_quality_series(timeline)),
        labelled=timeline.labelled,
        alerts=alerts,
        open_ids={a.id for a in _open_alerts(alerts)},
        latest=latest[0] if latest else None,
        chosen={"version": version or "", "window": window or "", "start": start or "",
                "end": end or ""},
    )  # fmt: skip
