"""``keel monitor …`` from a shell, and a monitor over logs a real server wrote."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

import keel
from _support.monitoring import HOUR, T0, Logs, Model, features
from keel.monitoring import monitor_history, run_monitor


@pytest.fixture
def shell(keel_env, tmp_path: Path):
    """Variables for ``keel`` child processes pointing at the test's home and store."""
    env = {"KEEL_HOME": str(keel_env.home), "KEEL_STORE_URL": keel_env.store_url}
    work = tmp_path / "work"
    work.mkdir()
    return env, work


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def test_monitor_commands_run_show_history_alerts_and_settings(
    churn: Model, logs: Logs, shell, run_keel
):
    env, work = shell
    logs.write("churn-api", features(600, seed=6, shift=1.0, plans=(0.2, 0.3, 0.5)), T0)
    keel.init(home=work / "elsewhere")  # release the home: the CLI opens it itself

    out = run_keel(
        "monitor",
        "run",
        "churn-api",
        "--end",
        iso(T0 + HOUR),
        "--json",
        "--html",
        "window.html",
        env=env,
        cwd=work,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["rows"] == 600 and doc["dataset_drift"] is True
    assert doc["window_end"] == iso(T0 + HOUR)
    assert {a["rule"] for a in doc["alerts"]} >= {"drift"}
    assert (work / "window.html").stat().st_size > 1_000_000

    history = json.loads(
        run_keel("monitor", "history", "churn-api", "--json", env=env, cwd=work).stdout
    )
    assert [h["id"] for h in history] == [doc["id"]]
    table = run_keel("monitor", "history", "churn-api", env=env, cwd=work)
    assert table.returncode == 0 and "67%" in table.stdout
    alerts = json.loads(run_keel("monitor", "alerts", "--json", env=env, cwd=work).stdout)
    assert alerts[0]["deployment"] == "churn-api" and alerts[0]["deliveries"]["store"]["ok"]

    changed = run_keel(
        "monitor",
        "set",
        "churn-api",
        "--window",
        "2h",
        "--quality",
        "accuracy=0.9",
        "--column",
        "age",
        "--json",
        env=env,
        cwd=work,
    )
    assert changed.returncode == 0, changed.stderr
    settings = json.loads(
        run_keel("monitor", "show", "churn-api", "--json", env=env, cwd=work).stdout
    )
    assert settings["window"] == "2h" and settings["quality"] == {"accuracy": 0.9}
    assert settings["columns"] == ["age"] and settings["revision"] == 1

    bad = run_keel("monitor", "set", "churn-api", "--window", "soon", env=env, cwd=work)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: window must be like")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_reference_commands_show_and_replace_a_versions_reference(churn: Model, shell, run_keel):
    env, work = shell
    churn.train.head(800).to_parquet(work / "newer.parquet")
    keel.init(home=work / "elsewhere")
    shown = json.loads(
        run_keel("monitor", "reference", "show", "churn", "1", "--json", env=env, cwd=work).stdout
    )
    assert shown["source"] == "package" and shown["rows"] == 3_000
    assert set(shown["columns"]) == {"input.age", "input.income", "input.plan", "output.prediction"}
    out = run_keel(
        "monitor",
        "reference",
        "set",
        "churn",
        "1",
        "newer.parquet",
        "--no-predict",
        env=env,
        cwd=work,
    )
    assert out.returncode == 0, out.stderr
    assert "800 rows" in out.stdout
    again = json.loads(
        run_keel("monitor", "reference", "show", "churn", "1", "--json", env=env, cwd=work).stdout
    )
    assert (
        again["source"] == "set"
        and again["rows"] == 800
        and "output.prediction" not in again["columns"]
    )
    missing = run_keel("monitor", "reference", "show", "churn", "9", env=env, cwd=work)
    assert missing.returncode == 1 and "has no version 9" in missing.stderr


@pytest.mark.slow
def test_a_monitor_reads_what_a_real_server_logged_and_the_labels_sent_to_it(churn: Model):
    import uvicorn

    from keel.serving.server import app_for_target

    app = app_for_target(f"models:/churn/{churn.version}", refresh_interval=0.2)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    moved = features(200, seed=6, shift=1.0, plans=(0.2, 0.3, 0.5))
    ids, predicted = [], []
    started = int(time.time() * 1000)
    try:
        with httpx.Client(timeout=30) as http:
            for start in range(0, len(moved), 20):
                chunk = moved.iloc[start : start + 20]
                body = {"dataframe_split": json.loads(chunk.to_json(orient="split", index=False))}
                answer = http.post(f"{url}/invocations", json=body)
                assert answer.status_code == 200, answer.text
                ids.append(answer.headers["x-request-id"])
                predicted.append(answer.json()["predictions"])
            labels = [[1 - p for p in batch] for batch in predicted]  # every prediction wrong
            for request_id, batch in zip(ids, labels, strict=True):
                sent = http.post(
                    f"{url}/v2/models/churn/feedback",
                    json={
                        "ids": [request_id] * len(batch),
                        "labels": batch,
                        "rows": list(range(len(batch))),
                    },
                )
                assert sent.status_code == 200, sent.text
    finally:
        server.should_exit = True
        thread.join(timeout=30)  # shutting down flushes the prediction log
    result = run_monitor("churn", window="1h", end=int(time.time() * 1000) + 1_000)
    assert result.rows == 200 and result.window_start <= started
    assert result.versions == {
        "churn/1": {
            "rows": 200,
            "reference": True,
            "share_drifted": pytest.approx(2 / 3),
            "drifted_columns": ["input.age", "input.plan", "output.prediction"],
        }
    }
    assert "input.age" in result.drifted_columns
    assert result.labelled_rows == 200 and result.quality is not None
    assert result.quality["metrics"]["accuracy"] == 0.0
    assert monitor_history("churn")[0].id == result.id
