"""Monitoring: profiles, drift tests, data quality, quality with labels, monitors and alerts.

::

    from keel.monitoring import compare, run_monitor

    report = compare("train.parquet", "today.parquet")      # standalone, like `keel drift`
    report.dataset_drift, report.columns["age"].statistic
    report.to_html("drift.html")

    result = run_monitor("churn-api", window="1h")          # a deployment's last hour
    result.share_drifted, result.alerts

Names load on first use: a standalone ``compare`` needs NumPy and Arrow, not the
metadata store; scipy, Ray and the HTML report load when a call needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.lazy import lazy_exports

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LARGE_SAMPLE",
    "METHODS",
    "Alert",
    "CategoricalColumn",
    "ColumnDrift",
    "CommandSink",
    "DriftReport",
    "Issue",
    "MonitorResult",
    "MonitorSettings",
    "NumericColumn",
    "PageHinkley",
    "Profile",
    "Profiler",
    "Sink",
    "WebhookSink",
    "compare",
    "configure_monitor",
    "default_method",
    "get_monitor_settings",
    "get_reference",
    "list_alerts",
    "monitor_history",
    "parse_window",
    "profile",
    "reference_info",
    "run_monitor",
    "set_reference",
    "write_html",
]

_EXPORTS = {
    "Alert": "keel.monitoring.alerts",
    "CategoricalColumn": "keel.data.profiling.profiles",
    "ColumnDrift": "keel.monitoring.drift",
    "CommandSink": "keel.monitoring.alerts",
    "DEFAULT_THRESHOLDS": "keel.monitoring.stattests",
    "DriftReport": "keel.monitoring.drift",
    "Issue": "keel.monitoring.drift",
    "LARGE_SAMPLE": "keel.monitoring.stattests",
    "METHODS": "keel.monitoring.stattests",
    "MonitorResult": "keel.monitoring.monitor",
    "MonitorSettings": "keel.monitoring.settings",
    "NumericColumn": "keel.data.profiling.profiles",
    "PageHinkley": "keel.monitoring.quality",
    "Profile": "keel.data.profiling.profiles",
    "Profiler": "keel.data.profiling.build",
    "Sink": "keel.monitoring.alerts",
    "WebhookSink": "keel.monitoring.alerts",
    "compare": "keel.monitoring.drift",
    "configure_monitor": "keel.monitoring.settings",
    "default_method": "keel.monitoring.stattests",
    "get_monitor_settings": "keel.monitoring.settings",
    "get_reference": "keel.monitoring.reference",
    "list_alerts": "keel.monitoring.alerts",
    "monitor_history": "keel.monitoring.monitor",
    "parse_window": "keel.monitoring.settings",
    "profile": "keel.data.profiling.build",
    "reference_info": "keel.monitoring.reference",
    "run_monitor": "keel.monitoring.monitor",
    "set_reference": "keel.monitoring.reference",
    "write_html": "keel.monitoring.report",
}

if TYPE_CHECKING:
    from keel.data.profiling.build import Profiler, profile
    from keel.data.profiling.profiles import CategoricalColumn, NumericColumn, Profile
    from keel.monitoring.alerts import Alert, CommandSink, Sink, WebhookSink, list_alerts
    from keel.monitoring.drift import ColumnDrift, DriftReport, Issue, compare
    from keel.monitoring.monitor import MonitorResult, monitor_history, run_monitor
    from keel.monitoring.quality import PageHinkley
    from keel.monitoring.reference import get_reference, reference_info, set_reference
    from keel.monitoring.report import write_html
    from keel.monitoring.settings import (
        MonitorSettings,
        configure_monitor,
        get_monitor_settings,
        parse_window,
    )
    from keel.monitoring.stattests import DEFAULT_THRESHOLDS, LARGE_SAMPLE, METHODS, default_method


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
