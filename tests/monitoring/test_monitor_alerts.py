"""Alerts: hysteresis without flapping, one alert under concurrent runs, and real sinks."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from pathlib import Path

import pytest

import keel
from _support.monitoring import HOUR, T0, Logs, Model, features
from keel.governance import audit
from keel.monitoring import configure_monitor, list_alerts, run_monitor
from keel.monitoring.alerts import Measurement, evaluate


def share(value: float, on: float = 0.5, off: float = 0.3) -> Measurement:
    return Measurement("drift", value, value >= on, value < off, on, f"share {value}")


def feed(values: list[float], *, fire_after: int = 1, resolve_after: int = 2, start: int = 0):
    """Evaluate one measurement per value, as consecutive monitor runs would."""
    from keel.store import schema as s

    client = keel.Client()
    states: list[str] = []
    for i, value in enumerate(values):
        with client.store.write() as conn:
            run_id = conn.execute(
                s.monitor_runs.insert()
                .values(
                    deployment="api",
                    window_start=0,
                    window_end=start + i + 1,
                    rows=0,
                    labelled_rows=0,
                    drifted_columns="[]",
                    failed_checks=0,
                    created_at=0,
                    created_by="test",
                )
                .returning(s.monitor_runs.c.id)
            ).scalar_one()
            raised = evaluate(
                conn,
                deployment="api",
                run_id=run_id,
                window_end=start + i + 1,
                measurements=[share(value)],
                fire_after=fire_after,
                resolve_after=resolve_after,
                actor="test",
            )
        states.extend(a.state for a in raised)
    return states


def test_a_value_hovering_around_its_threshold_fires_once_and_does_not_flap(keel_env):
    assert feed([0.2, 0.55, 0.45, 0.52, 0.48, 0.51, 0.49, 0.5]) == ["firing"]
    # It resolves only after two runs below the clearing threshold (0.3), not one.
    assert feed([0.25, 0.4, 0.25, 0.2], start=100) == ["resolved"]
    assert [a.state for a in list_alerts("api")] == ["resolved", "firing"]
    entries = audit.list_entries(keel.Client().store, object_id="api")
    assert [e.action for e in entries] == ["alert.resolve", "alert.fire"]


def test_fire_after_needs_consecutive_breaches(keel_env):
    assert feed([0.6, 0.4, 0.6, 0.4, 0.6], fire_after=2) == []
    assert feed([0.6, 0.6], fire_after=2, start=10) == ["firing"]


def test_a_late_run_for_an_older_window_does_not_move_the_state(keel_env):
    assert feed([0.9], start=50) == ["firing"]
    assert feed([0.0, 0.0, 0.0], start=10) == []  # windows 11-13 are older than 51
    assert [a.state for a in list_alerts("api")] == ["firing"]


def test_concurrent_monitor_runs_of_one_window_raise_one_alert(churn: Model, logs: Logs):
    moved = features(600, seed=6, shift=1.0, plans=(0.2, 0.3, 0.5))
    logs.write("churn-api", moved, T0)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            run_monitor("churn-api", end=T0 + HOUR)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    drift = [a for a in list_alerts("churn-api") if a.rule == "drift"]
    assert len(drift) == 1 and drift[0].state == "firing"


def drifting_window(logs: Logs) -> None:
    logs.write("churn-api", features(600, seed=6, shift=1.0, plans=(0.2, 0.3, 0.5)), T0)


def calm(logs: Logs, churn: Model) -> None:
    """Two windows of traffic like the training data (slices of it): the alert resolves."""
    for i in (1, 2):
        rows = churn.train.iloc[600 * i : 600 * (i + 1)]
        logs.write("churn-api", rows, T0 + i * HOUR, predictions=churn.estimator.predict(rows))


def test_the_webhook_gets_a_signed_body_and_a_retry_after_a_503(
    churn: Model, logs: Logs, receiver, monkeypatch: pytest.MonkeyPatch
):
    hook = receiver([503])
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    drifting_window(logs)
    configure_monitor("churn-api", webhook_url=hook.url, webhook_secret_env="HOOK_SECRET")
    result = run_monitor("churn-api", end=T0 + HOUR)
    drift = next(a for a in result.alerts if a.rule == "drift")
    assert drift.deliveries["webhook"] == {"ok": True, "attempts": 2, "status": 200}
    posted = [(h, b) for h, b in hook.requests if json.loads(b)["rule"] == "drift"]
    assert len(posted) == 2  # the 503, then the retry
    headers, body = posted[-1]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Keel-Signature"] == expected
    doc = json.loads(body)
    assert doc["state"] == "firing" and doc["deployment"] == "churn-api"
    assert doc["window_end"] == T0 + HOUR and doc["report_digest"] == result.report_digest
    stored = next(a for a in list_alerts("churn-api") if a.rule == "drift")
    assert stored.deliveries["webhook"]["ok"] is True


def test_a_webhook_that_refuses_is_not_retried_and_a_missing_secret_sends_nothing(
    churn: Model, logs: Logs, receiver
):
    hook = receiver([403, 403, 403, 403])
    drifting_window(logs)
    configure_monitor("churn-api", webhook_url=hook.url)
    result = run_monitor("churn-api", end=T0 + HOUR)
    outcome = next(a for a in result.alerts if a.rule == "drift").deliveries["webhook"]
    assert outcome == {"ok": False, "attempts": 1, "status": 403, "error": "HTTP 403"}

    configure_monitor("churn-api", webhook_secret_env="UNSET_SECRET_VARIABLE")
    calm(logs, churn)
    run_monitor("churn-api", end=T0 + 2 * HOUR)
    resolved = run_monitor("churn-api", end=T0 + 3 * HOUR)
    drift = next(a for a in resolved.alerts if a.rule == "drift")
    assert drift.state == "resolved"
    assert drift.deliveries["webhook"]["attempts"] == 0
    assert "UNSET_SECRET_VARIABLE is not set" in drift.deliveries["webhook"]["error"]


def test_a_shell_command_gets_the_alert_on_stdin(churn: Model, logs: Logs, tmp_path: Path):
    out = tmp_path / "alerts.jsonl"
    drifting_window(logs)
    configure_monitor(
        "churn-api",
        command=f'cat >> "{out}"; echo >> "{out}"; echo "$KEEL_ALERT_RULE" >> "{out}.rules"',
    )
    result = run_monitor("churn-api", end=T0 + HOUR)
    lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    assert {d["rule"] for d in lines} == {a.rule for a in result.alerts}
    assert "drift" in Path(f"{out}.rules").read_text().split()
    assert all(a.deliveries["command"] == {"ok": True, "exit": 0} for a in result.alerts)
    configure_monitor("churn-api", command="echo broken >&2; exit 3")
    calm(logs, churn)
    run_monitor("churn-api", end=T0 + 2 * HOUR)
    resolved = run_monitor("churn-api", end=T0 + 3 * HOUR)
    failed = next(a for a in resolved.alerts if a.rule == "drift").deliveries["command"]
    assert failed == {"ok": False, "exit": 3, "stderr": "broken\n"}
