"""Skew monitoring: a served deployment whose materialization was skipped raises the skew alert.

Real pieces throughout: definitions applied from a file, a Parquet source written
with pyarrow, the SQLite online store, a scikit-learn model served by uvicorn on a
free port, the prediction log, and the monitor run as ``keel monitor`` runs it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import keel
from _support.features import ETA_DEFINITIONS, register_champion, write_definitions, write_rates
from _support.serving import Server
from keel.errors import InvalidInput
from keel.monitoring import configure_monitor, list_alerts, monitor_history, run_monitor
from keel.monitoring.skew import compare_values
from keel.predictions import read_predictions
from keel.serving import Deployments, build_spec

HOUR_MS = 3_600_000
FEATURES = "driver_stats:conv_rate,driver_stats:acc_rate,fares:fare_per_km"
INPUTS = ["conv_rate", "acc_rate", "fare_per_km", "km"]


def _now_ms() -> int:
    from keel.store.sql import now_ms

    return now_ms()


@pytest.fixture
def eta(tmp_path: Path) -> dict[str, Any]:
    """Keel with 20 drivers materialized, eta/1 registered and deployed with three features."""
    pytest.importorskip("skops", reason="scikit-learn packages need skops")
    from sklearn.ensemble import HistGradientBoostingRegressor

    settings = keel.init(home=tmp_path / ".keel")
    rng = np.random.default_rng(0)
    conv, acc = rng.uniform(0, 1, 20).round(6), rng.uniform(0, 1, 20).round(6)
    write_rates(tmp_path, "part-0", list(range(1, 21)), _now_ms() - 3 * HOUR_MS, conv, acc)
    client = keel.Client()
    client.features.apply(write_definitions(tmp_path, ETA_DEFINITIONS))
    client.features.materialize()
    x = pd.DataFrame(rng.uniform(0.1, 3, size=(300, 4)), columns=INPUTS)
    y = 3 * x["conv_rate"] + x["acc_rate"] - 0.5 * x["fare_per_km"] + x["km"]
    model = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(x, y)
    register_champion(model, x.head(3))
    Deployments().create("eta", build_spec("eta@champion", features=FEATURES))
    return {"settings": settings, "folder": tmp_path, "conv": conv, "acc": acc}


@pytest.fixture
def served(eta) -> Iterator[Server]:
    """``keel serve eta`` in this process: uvicorn on a free port, logging predictions."""
    from keel.serving.server import app_for_target

    with Server(app_for_target("eta")) as server:
        yield server


def _send(url: str, drivers: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    records = [
        {"driver_id": d, "fare": float(rng.uniform(5, 50)), "km": float(rng.uniform(1, 20))}
        for d in drivers
    ]
    with httpx.Client(base_url=url) as http:
        for record in records:  # one request each: one logged row each
            answer = http.post("/invocations", json={"dataframe_records": [record]})
            assert answer.status_code == 200, answer.text


def _window_end(server: Any, root: str) -> int:
    """Just past the newest logged row: the next requests fall in the next window."""
    server.app.state.logger.flush()
    times = read_predictions(root, "eta", columns=["time"]).column("time")
    return int(pc.max(times).cast(pa.int64()).as_py()) + 1


def test_a_skipped_materialization_raises_the_skew_alert_until_materialized(eta, served):
    root = str(eta["settings"].artifacts_url)
    configure_monitor("eta", resolve_after=1)
    server = served
    drivers = list(range(1, 21))
    started = _now_ms()
    _send(server.url, drivers, seed=1)  # served as materialized
    lagging = _window_end(server, root)
    clean = run_monitor("eta", window=(lagging - started) / 1000, end=lagging)
    assert {k: v["rate"] for k, v in clean.skew["features"].items()} == {
        "driver_stats:conv_rate": 0.0,
        "driver_stats:acc_rate": 0.0,
        "fares:fare_per_km": 0.0,
    }
    assert not [a for a in clean.alerts if a.rule.startswith("skew:")]

    # New rows for drivers 1-5 an hour ago: conv_rate changes, acc_rate is restated
    # unchanged. The materialization that would bring them online is skipped.
    conv, acc = eta["conv"].copy(), eta["acc"]
    conv[:5] = (conv[:5] + 0.5).round(6)
    write_rates(eta["folder"], "part-1", drivers[:5], _now_ms() - HOUR_MS, conv[:5], acc[:5])
    _send(server.url, drivers, seed=2)
    first_end = _window_end(server, root)

    skewed = run_monitor("eta", window=(first_end - lagging) / 1000, end=first_end)
    rates = {k: v["rate"] for k, v in skewed.skew["features"].items()}
    assert rates == {
        "driver_stats:conv_rate": 0.25,  # 5 of 20 requests served the old value
        "driver_stats:acc_rate": 0.0,  # restated, not changed: no skew
        "fares:fare_per_km": 0.25,  # computed from conv_rate: skewed with it
    }
    assert skewed.skew["sampled"] == 20 and skewed.skew["excluded"] == 0
    assert skewed.skew["features"]["driver_stats:conv_rate"]["skewed"] == 5
    fired = {a.rule: a for a in skewed.alerts if a.state == "firing"}
    assert set(fired) >= {"skew:driver_stats:conv_rate", "skew:fares:fare_per_km"}
    assert "skew:driver_stats:acc_rate" not in fired
    assert fired["skew:driver_stats:conv_rate"].value == 0.25
    assert "25.0% of 20 sampled requests" in fired["skew:driver_stats:conv_rate"].message
    stored = monitor_history("eta", limit=1)[0]
    assert stored.id == skewed.id and stored.skew == skewed.skew  # stored with the run

    # Rows that arrived after a request, for event times before it, count as skew too:
    # the first window, checked again now, shows the lag its requests were served with.
    again = run_monitor("eta", window=(lagging - started) / 1000, end=lagging)
    assert again.skew["features"]["driver_stats:conv_rate"]["rate"] == 0.25
    assert not again.alerts  # an older window is stored but moves no alert

    # Materialized now: fresh requests are served what the offline store says.
    keel.Client().features.materialize()
    _send(server.url, drivers, seed=3)
    second_end = _window_end(server, root)
    fixed = run_monitor("eta", window=(second_end - first_end) / 1000, end=second_end)
    assert {v["rate"] for v in fixed.skew["features"].values()} == {0.0}
    resolved = {a.rule for a in fixed.alerts if a.state == "resolved"}
    assert resolved == {"skew:driver_stats:conv_rate", "skew:fares:fare_per_km"}
    rules = {a.rule for a in list_alerts("eta")}
    assert "skew:driver_stats:acc_rate" not in rules


def test_the_sample_is_bounded_and_seeded_by_the_window(eta, served, run_keel):
    configure_monitor("eta", skew_sample=7)
    server = served
    started = _now_ms()
    _send(server.url, list(range(1, 21)), seed=4)
    end = _window_end(server, str(eta["settings"].artifacts_url))
    window = (end - started) / 1000
    first = run_monitor("eta", window=window, end=end).skew
    again = run_monitor("eta", window=window, end=end).skew
    assert first["rows"] == 20 and first["sampled"] == 7
    assert first == again  # the same window, the same sample
    at = dt.datetime.fromtimestamp(end / 1000, dt.UTC).isoformat(timespec="milliseconds")
    shown = run_keel(
        "monitor", "run", "eta", "--window", str(window), "--end", at, settings=eta["settings"]
    )
    assert shown.returncode == 0, shown.stderr
    assert "feature skew (7 of 20 requests compared)" in shown.stdout
    assert "driver_stats:conv_rate: 0.0% (0 rows)" in shown.stdout


def test_skew_settings_are_checked_and_shown(eta, run_keel):
    with pytest.raises(InvalidInput, match=r"skew_rate .* in \[0, 1\); got 1.5"):
        configure_monitor("eta", skew_rate=1.5)
    with pytest.raises(InvalidInput, match="skew_sample must be a whole number >= 1, got 0"):
        configure_monitor("eta", skew_sample=0)
    done = run_keel(
        "monitor", "set", "eta", "--skew-rate", "0.1", "--json", settings=eta["settings"]
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["skew_rate"] == 0.1


def test_rows_logged_without_the_join_keys_are_counted_out(eta, served):
    Deployments().update("eta", clear_features=True)  # requests carry every input again
    served.app.state.runtime.refresh()
    started = _now_ms()
    rows = [{"conv_rate": 0.5, "acc_rate": 0.5, "fare_per_km": 2.0, "km": 3.0}] * 3
    with httpx.Client(base_url=served.url) as http:
        answer = http.post("/invocations", json={"dataframe_records": rows})
    assert answer.status_code == 200, answer.text
    end = _window_end(served, str(eta["settings"].artifacts_url))
    window = (end - started) / 1000
    assert run_monitor("eta", window=window, end=end).skew is None  # no features declared
    Deployments().update("eta", features=FEATURES)
    skew = run_monitor("eta", window=window, end=end).skew
    assert skew["rows"] == 0 and skew["excluded"] == 3 and skew["features"] == {}
    assert not [a for a in list_alerts("eta") if a.rule.startswith("skew:")]


def test_values_compare_within_tolerance_and_missing_alike():
    served = pd.Series([1.0, 2.0, np.nan, None, 5.0, 0.1 + 0.2], dtype=object)
    offline = pd.Series([1.0 + 1e-9, 2.1, np.nan, 4.0, None, 0.3], dtype="Float64")
    assert compare_values(served, offline).tolist() == [True, False, True, False, False, True]
    text = compare_values(pd.Series(["a", None, "b"]), pd.Series(["a", None, "c"]))
    assert text.tolist() == [True, True, False]
    ints = compare_values(pd.Series([1, 2, 3]), pd.Series([1, 2, None], dtype="Int64"))
    assert ints.tolist() == [True, True, False]
