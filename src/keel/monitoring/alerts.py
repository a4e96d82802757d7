"""Alerts: rules with hysteresis, stored as events, sent to sinks.

A monitor run measures a value per rule (the share of drifted columns,
failed data-quality checks, change detections, a quality metric). Each
deployment and rule has a state, *ok* or *firing*, that moves only like this:

- *ok → firing* after ``fire_after`` consecutive runs whose value breaches
  the firing threshold;
- *firing → ok* after ``resolve_after`` consecutive runs whose value is back
  past the clearing threshold, which sits on the safe side of the firing one.

A value between the two thresholds resets the streak and keeps the state,
so a value hovering around its threshold cannot make the alert flap. The
state row is read and written under a row lock in the transaction that
stores the run, so two monitor runs at once cannot both fire; a run for a
window older than the newest evaluated one is stored but does not move the
state. Every transition is an :class:`Alert` row plus an audit entry, in the
same transaction.

After the transaction commits, each transition goes to the sinks: the store
always (the row itself), and optionally a webhook (:class:`WebhookSink`:
``POST`` of the JSON body, signed with HMAC-SHA256 in ``X-Keel-Signature``,
retried with exponential back-off) and a shell command (:class:`CommandSink`:
the body on stdin). A sink is any object with a ``name`` and a
``send(alert, body) -> dict`` method; what each sink reported is stored
with the alert (``deliveries``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, select, update

from keel.governance import audit
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms

if TYPE_CHECKING:
    from keel.client import Client


__all__ = [
    "Alert",
    "CommandSink",
    "Measurement",
    "Sink",
    "WebhookSink",
    "deliver",
    "evaluate",
    "list_alerts",
    "signature",
]

SIGNATURE_HEADER = "X-Keel-Signature"


@dataclass(frozen=True)
class Alert:
    """A rule started firing (``state="firing"``) or stopped (``state="resolved"``)."""

    id: int
    deployment: str
    rule: str
    state: str
    value: float | None
    threshold: float | None
    message: str
    monitor_run_id: int | None  # None: no monitor run raised it (an LLM budget's alert)
    at: int
    deliveries: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "deployment": self.deployment,
            "rule": self.rule,
            "state": self.state,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
            "monitor_run_id": self.monitor_run_id,
            "at": self.at,
            "deliveries": self.deliveries,
        }

    def body(self, extra: Mapping[str, Any] | None = None) -> bytes:
        """The JSON every sink receives."""
        doc = {k: v for k, v in self.to_dict().items() if k != "deliveries"}
        doc.update(extra or {})
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Measurement:
    """What one monitor run measured for one rule.

    Attributes:
        value: the measured value; ``None`` means "nothing to judge" (state unchanged).
        fire: the value breaches the firing threshold.
        clear: the value is back past the clearing threshold.
        message: says what fired, for people.
    """

    rule: str
    value: float | None
    fire: bool
    clear: bool
    threshold: float | None
    message: str


def _alert(row: Any) -> Alert:
    return Alert(
        row.id,
        row.deployment,
        row.rule,
        row.state,
        row.value,
        row.threshold,
        row.message,
        row.monitor_run_id,
        row.at,
        json.loads(row.deliveries) if row.deliveries else {},
    )


def evaluate(
    conn: Connection,
    *,
    deployment: str,
    run_id: int | None,
    window_end: int,
    measurements: Sequence[Measurement],
    fire_after: int,
    resolve_after: int,
    actor: str,
) -> list[Alert]:
    """Move each rule's state for this run (in the caller's write transaction).

    ``run_id`` is ``None`` for a check that stores no monitor run (an index's freshness,
    :mod:`keel.monitoring.indexes`).

    Returns:
        The alerts this run raised or resolved.
    """
    raised: list[Alert] = []
    for m in measurements:
        if m.value is None:
            continue
        conn.execute(
            insert_on_conflict(conn, s.alert_states)
            .values(
                deployment=deployment,
                rule=m.rule,
                firing=False,
                streak=0,
                since=None,
                last_window_end=0,
                updated_at=now_ms(),
            )
            .on_conflict_do_nothing(index_elements=["deployment", "rule"])
        )
        state = conn.execute(
            select(s.alert_states)
            .where(s.alert_states.c.deployment == deployment, s.alert_states.c.rule == m.rule)
            .with_for_update()
        ).one()
        if window_end < state.last_window_end:
            continue  # a late run for an older window: stored, but the present decides
        firing, streak, since = bool(state.firing), int(state.streak), state.since
        moved = m.clear if firing else m.fire
        streak = streak + 1 if moved else 0
        transition = None
        if not firing and streak >= fire_after:
            firing, streak, since, transition = True, 0, window_end, "firing"
        elif firing and streak >= resolve_after:
            firing, streak, since, transition = False, 0, None, "resolved"
        conn.execute(
            update(s.alert_states)
            .where(s.alert_states.c.deployment == deployment, s.alert_states.c.rule == m.rule)
            .values(
                firing=firing,
                streak=streak,
                since=since,
                last_window_end=window_end,
                updated_at=now_ms(),
            )
        )
        if transition is None:
            continue
        message = m.message if transition == "firing" else f"{m.rule} resolved: {m.message}"
        at = now_ms()
        alert_id = conn.execute(
            s.alerts.insert()
            .values(
                deployment=deployment,
                rule=m.rule,
                state=transition,
                value=m.value,
                threshold=m.threshold,
                message=message,
                monitor_run_id=run_id,
                at=at,
            )
            .returning(s.alerts.c.id)
        ).scalar_one()
        audit.record(
            conn,
            actor=actor,
            action=f"alert.{'fire' if transition == 'firing' else 'resolve'}",
            object_type="deployment",
            object_id=deployment,
            before={"rule": m.rule, "firing": transition != "firing"},
            after={
                "rule": m.rule,
                "firing": transition == "firing",
                "value": m.value,
                "monitor_run": run_id,
            },
        )
        raised.append(
            Alert(
                alert_id, deployment, m.rule, transition, m.value, m.threshold, message, run_id, at
            )
        )
    return raised


# -- sinks -----------------------------------------------------------------------------------


class Sink(Protocol):
    """Where alerts go besides the store."""

    name: str

    def send(self, alert: Alert, body: bytes) -> dict[str, Any]:
        """Deliver one alert; return what happened (``ok`` and details). Never raise."""
        ...


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``, the value of ``X-Keel-Signature``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookSink:
    """``POST`` the alert's JSON to a URL, signed, retried with exponential back-off.

    Args:
        url: the receiver (``http://`` or ``https://``).
        secret_env: the environment variable holding the HMAC secret. Read at
            send time; when it is named but unset, nothing is sent and the
            delivery records why (an unsigned alert would be rejected anyway).
        attempts: tries in all; connection errors, timeouts, 408, 429 and 5xx
            are retried, other answers are final.
        backoff: seconds before the second try; doubled before each next one.
        timeout: seconds each try may take.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret_env: str | None = None,
        *,
        attempts: int = 4,
        backoff: float = 0.5,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.secret_env = secret_env
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout

    def send(self, alert: Alert, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "X-Keel-Event": "alert"}
        if self.secret_env:
            secret = os.environ.get(self.secret_env)
            if not secret:
                return {
                    "ok": False,
                    "attempts": 0,
                    "error": f"the webhook secret variable {self.secret_env} is not set; "
                    "nothing was sent",
                }
            headers[SIGNATURE_HEADER] = signature(secret, body)
        error = "no attempt"
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return {"ok": True, "attempts": attempt, "status": response.status}
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                if exc.code not in (408, 429) and exc.code < 500:
                    return {"ok": False, "attempts": attempt, "status": exc.code, "error": error}
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                error = str(getattr(exc, "reason", exc))
            if attempt < self.attempts:
                time.sleep(self.backoff * 2 ** (attempt - 1))
        return {"ok": False, "attempts": self.attempts, "error": error}


class CommandSink:
    """Run a shell command with the alert's JSON on stdin and in ``KEEL_ALERT_*`` variables."""

    name = "command"

    def __init__(self, command: str, *, timeout: float = 60.0) -> None:
        self.command = command
        self.timeout = timeout

    def send(self, alert: Alert, body: bytes) -> dict[str, Any]:
        env = {
            **os.environ,
            "KEEL_ALERT_DEPLOYMENT": alert.deployment,
            "KEEL_ALERT_RULE": alert.rule,
            "KEEL_ALERT_STATE": alert.state,
            "KEEL_ALERT_MESSAGE": alert.message,
        }
        try:
            done = subprocess.run(
                self.command,
                shell=True,
                input=body,
                env=env,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"still running after {self.timeout:g}s; stopped"}
        except OSError as exc:
            return {"ok": False, "error": str(exc)}
        outcome: dict[str, Any] = {"ok": done.returncode == 0, "exit": done.returncode}
        if done.returncode:
            outcome["stderr"] = done.stderr.decode("utf-8", "replace")[-500:]
        return outcome


def deliver(
    store: Any, alerts: Sequence[Alert], sinks: Sequence[Sink], extra: Mapping[str, Any]
) -> list[Alert]:
    """Send each alert to each sink and record the outcomes with the alert."""
    delivered: list[Alert] = []
    for alert in alerts:
        body = alert.body(extra)
        outcomes: dict[str, Any] = {"store": {"ok": True}}
        for sink in sinks:
            try:
                outcomes[sink.name] = sink.send(alert, body)
            except Exception as exc:  # a sink must not stop the others
                outcomes[sink.name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        with store.write() as conn:
            conn.execute(
                update(s.alerts)
                .where(s.alerts.c.id == alert.id)
                .values(deliveries=json.dumps(outcomes, sort_keys=True))
            )
        delivered.append(
            Alert(**{**alert.__dict__, "deliveries": outcomes})  # frozen: build a new one
        )
    return delivered


def list_alerts(
    deployment: str | None = None, *, limit: int | None = None, client: Client | None = None
) -> list[Alert]:
    """Alert events, newest first (of one deployment, or all).

    Raises:
        NotFound: no such deployment (see :mod:`keel.monitoring.names`).
    """
    from keel.monitoring.clients import resolve_client
    from keel.monitoring.part import monitoring_part

    return monitoring_part(resolve_client(client)).list_alerts(deployment, limit)


def local_list_alerts(deployment: str | None, limit: int | None, client: Client) -> list[Alert]:
    """:func:`list_alerts` on the client's own metadata store."""
    from keel.monitoring.names import require_deployment

    query = select(s.alerts).order_by(s.alerts.c.id.desc())
    if deployment is not None:
        require_deployment(deployment, client)
        query = query.where(s.alerts.c.deployment == deployment)
    if limit:
        query = query.limit(limit)
    with client.store.read() as conn:
        return [_alert(row) for row in conn.execute(query)]


def firing_rules(conn: Connection, deployment: str) -> list[str]:
    """The rules of ``deployment`` firing now."""
    return list(
        conn.execute(
            select(s.alert_states.c.rule)
            .where(s.alert_states.c.deployment == deployment, s.alert_states.c.firing.is_(True))
            .order_by(s.alert_states.c.rule)
        ).scalars()
    )
