"""Monitor settings per deployment: stored as JSON, changed by compare-and-set, audited.

A deployment without settings is monitored with the defaults of
:class:`MonitorSettings`: a one-hour window, the ``drift`` alert at half the
feature columns (clearing below 30%), alerts to the store only; a prompt
deployment, the error-rate SLO of :data:`keel.monitoring.llm.DEFAULT_SLO`; a
deployment with features, a ``skew:`` alert per feature above a 5% skew rate on
a sample of 1,000 requests (see :mod:`keel.monitoring.skew`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from keel.errors import Conflict, InvalidInput
from keel.monitoring.alerts import CommandSink, Sink, WebhookSink
from keel.monitoring.clients import resolve_client
from keel.monitoring.drift import DRIFT_SHARE
from keel.monitoring.names import require_deployment
from keel.monitoring.skew import DEFAULT_SKEW_RATE, DEFAULT_SKEW_SAMPLE
from keel.monitoring.windows import parse_window, spell_window

if TYPE_CHECKING:
    from keel.client import Client


__all__ = [
    "DEFAULT_WINDOW",
    "MonitorSettings",
    "check_settings",
    "configure_monitor",
    "get_monitor_settings",
    "parse_window",
]

DEFAULT_WINDOW = "1h"


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitorSettings:
    """How a deployment is monitored. The defaults need no configuration at all.

    Attributes:
        window: how much of the log one run reads, ending at the run's ``end``.
        drift_share: the share of drifted feature columns that fires the ``drift`` alert.
        clear_share: the share below which it resolves (default 0.6 x ``drift_share``).
        columns: the feature columns to test (plain names or ``input.<name>``); all by default.
        overrides: per column, a method or ``{"method", "threshold"}`` (as :func:`compare`).
        quality: alert thresholds per quality metric, e.g. ``{"accuracy": 0.9, "rmse": 3}``
            (below the first fires, above the second fires).
        slo: of a prompt deployment, the thresholds its traces are held to, over
            :data:`keel.monitoring.llm.DEFAULT_SLO`: ``error_rate``, ``latency_p99_ms``,
            ``cost_per_request``, ``tokens_per_request`` (``None`` turns one off) and
            ``min_requests``, e.g. ``{"error_rate": 0.02, "latency_p99_ms": 2000}``.
        skew_rate: of a deployment with features, the share of sampled requests served a
            feature value other than the offline store's above which that feature's
            ``skew:`` alert fires (it resolves at or below 0.6 x this).
        skew_sample: the most served requests a run compares with the offline store.
        fire_after: consecutive breaching runs before an alert fires.
        resolve_after: consecutive clear runs before it resolves.
        webhook_url: POST alerts here; ``webhook_secret_env`` names the variable with the
            HMAC secret (the secret itself is never stored).
        command: a shell command run with each alert's JSON on stdin.
        revision: 0 for the defaults; counts stored changes.
    """

    window: str = DEFAULT_WINDOW
    drift_share: float = DRIFT_SHARE
    clear_share: float | None = None
    columns: tuple[str, ...] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    slo: dict[str, float | None] = field(default_factory=dict)
    skew_rate: float = DEFAULT_SKEW_RATE
    skew_sample: int = DEFAULT_SKEW_SAMPLE
    fire_after: int = 1
    resolve_after: int = 2
    webhook_url: str | None = None
    webhook_secret_env: str | None = None
    command: str | None = None
    revision: int = 0

    @property
    def clear_below(self) -> float:
        return self.clear_share if self.clear_share is not None else 0.6 * self.drift_share

    def sinks(self) -> list[Sink]:
        sinks: list[Sink] = []
        if self.webhook_url:
            sinks.append(WebhookSink(self.webhook_url, self.webhook_secret_env))
        if self.command:
            sinks.append(CommandSink(self.command))
        return sinks

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["columns"] = None if self.columns is None else list(self.columns)
        doc["clear_below"] = self.clear_below
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], revision: int = 0) -> MonitorSettings:
        values = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        if values.get("columns") is not None:
            values["columns"] = tuple(values["columns"])
        values["revision"] = revision
        return cls(**values)


_SETTABLE = set(MonitorSettings.__dataclass_fields__) - {"revision"}
#: The settings that always hold a value: ``null`` clears only the optional ones.
_REQUIRED = frozenset(
    {
        "window",
        "drift_share",
        "overrides",
        "quality",
        "slo",
        "skew_rate",
        "skew_sample",
        "fire_after",
        "resolve_after",
    }
)


def check_settings(settings: MonitorSettings) -> MonitorSettings:
    """``settings`` if every field holds a valid value, else InvalidInput saying which."""
    parse_window(settings.window)
    if not 0 < settings.drift_share <= 1:
        raise InvalidInput(f"drift_share must be in (0, 1], got {settings.drift_share!r}")
    if settings.clear_share is not None and not 0 <= settings.clear_share < settings.drift_share:
        raise InvalidInput(
            f"clear_share must be at least 0 and below drift_share ({settings.drift_share}) so "
            f"the alert cannot flap; got {settings.clear_share!r}"
        )
    rate = settings.skew_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
        raise InvalidInput(
            f"skew_rate is the share of requests with skew that fires the alert, in [0, 1); "
            f"got {rate!r}"
        )
    for name in ("skew_sample", "fire_after", "resolve_after"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{name} must be a whole number >= 1, got {value!r}")
    from keel.checks.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

    known = set(CLASSIFICATION_METRICS) | set(REGRESSION_METRICS)
    for metric, limit in settings.quality.items():
        if metric not in known:
            raise InvalidInput(
                f"quality metric {metric!r} is not one Keel measures; use one of "
                f"{', '.join(sorted(known))}"
            )
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            raise InvalidInput(f"quality threshold of {metric!r} must be a number, got {limit!r}")
    from keel.monitoring.llm import check_slo

    check_slo(settings.slo)
    if settings.webhook_url and not settings.webhook_url.startswith(("http://", "https://")):
        raise InvalidInput(
            f"webhook_url must start with http:// or https://, got {settings.webhook_url!r}"
        )
    if settings.webhook_secret_env and not re.match(
        r"^[A-Za-z_][A-Za-z0-9_]*$", settings.webhook_secret_env
    ):
        raise InvalidInput(
            "webhook_secret_env is the NAME of an environment variable holding the secret "
            f"(letters, digits, '_'), got {settings.webhook_secret_env!r}"
        )
    return settings


def get_monitor_settings(deployment: str, *, client: Client | None = None) -> MonitorSettings:
    """The deployment's stored settings, or the defaults when it has none."""
    from keel.monitoring.part import monitoring_part

    return monitoring_part(resolve_client(client)).get_monitor_settings(deployment)


def local_monitor_settings(deployment: str, client: Client) -> MonitorSettings:
    """:func:`get_monitor_settings` from the client's own metadata store."""
    from keel.store import schema as s

    with client.store.read() as conn:
        row = conn.execute(
            select(s.monitor_settings).where(s.monitor_settings.c.deployment == deployment)
        ).first()
    if row is None:
        return MonitorSettings()
    return MonitorSettings.from_dict(json.loads(row.settings), row.revision)


def configure_monitor(
    deployment: str,
    *,
    expected_revision: int | None = None,
    reset: bool = False,
    client: Client | None = None,
    **changes: Any,
) -> MonitorSettings:
    """Change a deployment's monitor settings (only the given fields); audited.

    Args:
        expected_revision: the revision the caller read; a concurrent change makes this
            raise ``Conflict`` instead of overwriting it (default: the one read here).
        reset: start from the defaults instead of the stored settings.
        **changes: :class:`MonitorSettings` fields.

    Raises:
        InvalidInput: an unknown field or a bad value.
        NotFound: no such deployment (see :mod:`keel.monitoring.names`).
        Conflict: the settings changed since ``expected_revision``.
    """
    from keel.monitoring.part import monitoring_part

    return monitoring_part(resolve_client(client)).configure_monitor(
        deployment, expected_revision=expected_revision, reset=reset, **changes
    )


def local_configure_monitor(
    deployment: str,
    client: Client,
    *,
    expected_revision: int | None = None,
    reset: bool = False,
    **changes: Any,
) -> MonitorSettings:
    """:func:`configure_monitor` on the client's own metadata store."""
    from keel.governance import audit
    from keel.predictions import check_deployment
    from keel.store import schema as s
    from keel.store.sql import insert_on_conflict, now_ms

    check_deployment(deployment)
    unknown = sorted(set(changes) - _SETTABLE)
    if unknown:
        raise InvalidInput(
            f"unknown monitor setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(_SETTABLE))}"
        )
    nulled = sorted(k for k in _REQUIRED if k in changes and changes[k] is None)
    if nulled:
        raise InvalidInput(
            f"monitor setting(s) {', '.join(nulled)} cannot be null; send a value, or reset to "
            "the defaults (`keel monitor set DEPLOYMENT --reset`)"
        )
    if "columns" in changes and changes["columns"] is not None:
        changes["columns"] = tuple(changes["columns"])
    if "window" in changes:
        changes["window"] = spell_window(changes["window"])
    current = local_monitor_settings(deployment, client)
    seen = current.revision if expected_revision is None else expected_revision
    base = MonitorSettings(revision=current.revision) if reset else current
    wanted = check_settings(replace(base, **changes))
    require_deployment(deployment, client)
    stored = {k: v for k, v in wanted.to_dict().items() if k not in ("revision", "clear_below")}
    actor = client.user
    with client.store.write() as conn:
        if seen == 0:
            inserted = conn.execute(
                insert_on_conflict(conn, s.monitor_settings)
                .values(
                    deployment=deployment,
                    settings=json.dumps(stored, sort_keys=True),
                    revision=1,
                    updated_at=now_ms(),
                    updated_by=actor,
                )
                .on_conflict_do_nothing(index_elements=["deployment"])
                .returning(s.monitor_settings.c.revision)
            ).first()
            moved = inserted is not None
        else:
            moved = (
                conn.execute(
                    update(s.monitor_settings)
                    .where(
                        s.monitor_settings.c.deployment == deployment,
                        s.monitor_settings.c.revision == seen,
                    )
                    .values(
                        settings=json.dumps(stored, sort_keys=True),
                        revision=seen + 1,
                        updated_at=now_ms(),
                        updated_by=actor,
                    )
                ).rowcount
                == 1
            )
        if not moved:
            raise Conflict(
                f"the monitor settings of {deployment!r} changed since revision {seen}; read "
                "them again (keel monitor show) and retry"
            )
        before = {
            k: v for k, v in current.to_dict().items() if k not in ("revision", "clear_below")
        }
        audit.record(
            conn,
            actor=actor,
            action="monitor.configure",
            object_type="deployment",
            object_id=deployment,
            before=before if current.revision else None,
            after=stored,
        )
    return replace(wanted, revision=seen + 1)
