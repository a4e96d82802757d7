"""``keel features …`` end to end in a child process: apply, list, show, history, status, errors."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import keel
from _support.features import driver_stats_definitions, write_definitions


@pytest.fixture
def cli(sqlite_env, run_keel) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli(*args)``: ``keel *args`` on the test's home, as alice."""

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return run_keel(
            *args, settings=sqlite_env, env={"KEEL_USER": "alice", "COLUMNS": "200"}, cwd=cwd
        )

    return run


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def _error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def write_defs(folder: Path, ttl_hours: int = 2) -> Path:
    # no created-timestamp column: the source the materialize test writes has none
    text = driver_stats_definitions(ttl_hours=ttl_hours, created_timestamp=False)
    return write_definitions(folder, text)


@pytest.mark.slow  # about fifteen keel processes
def test_apply_then_list_show_and_history(cli, tmp_path):
    path = write_defs(tmp_path)

    first = _ok(cli("features", "apply", str(path))).stdout
    assert "3 created: driver@1, driver_stats@1, per_km@1" in first
    assert "0 updated" in first and "0 unchanged" in first
    assert f"applied {path} in " in first

    write_defs(tmp_path, ttl_hours=6)
    second = json.loads(_ok(cli("features", "apply", str(path), "--json")).stdout)
    assert second["counts"] == {"created": 0, "updated": 1, "unchanged": 2}
    assert [(d["name"], d["version"]) for d in second["updated"]] == [("driver_stats", 2)]
    assert second["updated"][0]["created_by"] == "alice"

    listed = json.loads(_ok(cli("features", "list", "--json")).stdout)
    assert [(d["kind"], d["name"], d["version"]) for d in listed] == [
        ("entity", "driver", 1),
        ("feature_view", "driver_stats", 2),
        ("on_demand_feature_view", "per_km", 1),
    ]
    only = json.loads(_ok(cli("features", "list", "--kind", "entity", "--json")).stdout)
    assert [d["name"] for d in only] == ["driver"]
    table = _ok(cli("features", "list")).stdout
    assert "driver_stats" in table and "6h" in table

    shown = _ok(cli("features", "show", "driver_stats")).stdout
    for text in (
        "view driver_stats",
        "version     2",
        "join keys driver_id",
        f"file {tmp_path / 'data' / 'stats'}",
        "event event_ts",
        "ttl         6h",
        "conv_rate",
        "float64",
        "trips",
        "int64",
        "not materialized yet",
    ):
        assert text in shown, text
    old = json.loads(
        _ok(cli("features", "show", "driver_stats", "--version", "1", "--json")).stdout
    )
    assert (old["version"], old["spec"]["ttl_seconds"], old["watermarks"]) == (1, 7200, [])
    on_demand = _ok(cli("features", "show", "per_km")).stdout
    assert "on-demand per_km" in on_demand and "request     trip (km: float64)" in on_demand
    entity = _ok(cli("features", "show", "driver", "--kind", "entity")).stdout
    assert "join keys   driver_id (int64)" in entity

    history = json.loads(_ok(cli("features", "history", "driver_stats", "--json")).stdout)
    assert [(h["version"], h["spec"]["ttl_seconds"]) for h in history] == [(1, 7200), (2, 21600)]
    assert "alice" in _ok(cli("features", "history", "driver_stats")).stdout

    verified = _ok(cli("audit", "verify"))
    assert "ok" in (verified.stdout + verified.stderr).lower()


def test_status_shows_each_views_watermark_per_store(cli, sqlite_env, tmp_path):
    _ok(cli("features", "apply", str(write_defs(tmp_path))))
    before = json.loads(_ok(cli("features", "status", "--json")).stdout)
    assert before == [{"view": "driver_stats", "version": 1, "store": None}]
    assert "never materialized" in _ok(cli("features", "status")).stdout

    event = int(time.time() * 1000) - 3_600_000
    keel.Client().features.set_watermark(
        "driver_stats",
        sqlite_env.online_store,
        view_version=1,
        last_event_ms=event,
        last_created_ms=None,
        rows=1234,
    )
    status = json.loads(_ok(cli("features", "status", "--json")).stdout)
    assert len(status) == 1
    row = status[0]
    assert (row["view"], row["store"], row["last_event_ms"], row["rows_written"], row["runs"]) == (
        "driver_stats",
        sqlite_env.online_store,
        event,
        1234,
        1,
    )
    assert 3600 <= row["lag_seconds"] < 3600 + 600 and row["stale_version"] is False
    text = _ok(cli("features", "status")).stdout
    assert "1,234" in text and "1.0h" in text
    shown = json.loads(_ok(cli("features", "show", "driver_stats", "--json")).stdout)
    assert [w["rows_written"] for w in shown["watermarks"]] == [1234]


def test_errors_print_one_line_and_exit_non_zero(cli, tmp_path):
    missing = _error(cli("features", "apply", str(tmp_path / "nope.py")))
    assert "no definitions file at" in missing and "nope.py" in missing

    bad = tmp_path / "bad.py"
    bad.write_text(
        "from keel.features import Entity, FeatureView, Field, FileSource\n"
        "e = Entity('e')\n"
        "v = FeatureView('v', entities=[e], source=FileSource('x'), timestamp_field='ts',\n"
        "                features=[Field('f', 'decimal')])\n"
    )
    line = _error(cli("features", "apply", str(bad)))
    assert f"{bad}:3: feature view 'v''s field 'f' has type 'decimal'" in line

    broken = tmp_path / "broken.py"
    broken.write_text("from keel.features import Entity\nx = (\n")
    assert f"{broken}:2: " in _error(cli("features", "apply", str(broken)))

    unknown = tmp_path / "unknown.py"
    unknown.write_text(
        "from keel.features import Entity, FeatureView, Field, FileSource\n"
        "e = Entity('driver')\n"
        "v = FeatureView('v', entities=['drivers'], source=FileSource('x'),\n"
        "                timestamp_field='ts', features=[Field('f')])\n"
    )
    assert f"{unknown}:3: feature view 'v' names unknown entity 'drivers'" in _error(
        cli("features", "apply", str(unknown))
    )

    _ok(cli("features", "apply", str(write_defs(tmp_path))))
    typo = _error(cli("features", "show", "driver_stat"))
    assert "did you mean 'driver_stats'" in typo and "keel features apply" in typo
    assert "has no version 9" in _error(cli("features", "show", "driver_stats", "--version", "9"))
    assert "--version must be a positive integer, got 0" in _error(
        cli("features", "show", "driver_stats", "--version", "0")
    )
    assert "kind must be one of" in _error(cli("features", "list", "--kind", "views"))
    assert "did you mean 'driver_stats'" in _error(cli("features", "history", "driver_stat"))


def test_applying_a_hundred_views_from_the_command_line(cli, tmp_path):
    lines = ["from datetime import timedelta", "from keel.features import *", ""]
    for e in range(10):
        lines.append(f"e{e} = Entity('entity_{e}', join_keys=['key_{e}'])")
    features = ", ".join(f"Field('f{i}')" for i in range(10))
    for v in range(100):
        lines.append(
            f"v{v} = FeatureView('view_{v}', entities=[e{v % 10}], "
            f"source=FileSource('data/view_{v}'), timestamp_field='ts', "
            f"features=[{features}], ttl=timedelta(days=1))"
        )
    path = tmp_path / "many.py"
    path.write_text("\n".join(lines) + "\n")
    keel.Client().features.list()  # the home and its schema exist before the measured run

    started = time.perf_counter()
    result = json.loads(_ok(cli("features", "apply", str(path), "--json")).stdout)
    wall = time.perf_counter() - started

    assert result["counts"] == {"created": 110, "updated": 0, "unchanged": 0}
    again = json.loads(_ok(cli("features", "apply", str(path), "--json")).stdout)
    assert again["counts"] == {"created": 0, "updated": 0, "unchanged": 110}
    listed = json.loads(_ok(cli("features", "list", "--kind", "feature_view", "--json")).stdout)
    assert len(listed) == 100
    print(
        f"\nkeel features apply, 100 views: {wall * 1000:.0f} ms end to end, "
        f"{result['seconds'] * 1000:.0f} ms in apply; unchanged re-apply "
        f"{again['seconds'] * 1000:.0f} ms"
    )


@pytest.mark.slow  # about a dozen keel processes
def test_materialize_then_read_online_values_from_the_command_line(cli, tmp_path):
    import pandas as pd

    folder = tmp_path / "data" / "stats"
    folder.mkdir(parents=True)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    pd.DataFrame(
        {
            "driver_id": [1, 1, 2],
            "event_ts": [now - pd.Timedelta(minutes=m) for m in (30, 10, 20)],
            "conv_rate": [0.1, 0.2, 0.5],
            "trips": [3, 4, 7],
        }
    ).to_parquet(folder / "part.parquet")
    _ok(cli("features", "apply", str(write_defs(tmp_path))))

    first = json.loads(_ok(cli("features", "materialize", "--json")).stdout)
    assert [(r["view"], r["rows_written"]) for r in first] == [("driver_stats", 2)]
    assert first[0]["last_event_ms"] == int((now - pd.Timedelta(minutes=10)).timestamp() * 1000)
    again = json.loads(_ok(cli("features", "materialize", "driver_stats", "--json")).stdout)
    assert [r["rows_written"] for r in again] == [0]
    status = json.loads(_ok(cli("features", "status", "--json")).stdout)
    assert [(s["view"], s["rows_written"], s["runs"]) for s in status] == [("driver_stats", 2, 2)]

    read = ["features", "get", "-e", "driver_id=1", "-e", "driver_id=2", "-e", "driver_id=3"]
    values = json.loads(
        _ok(cli(*read, "-f", "driver_stats:conv_rate", "-f", "driver_stats:trips", "--json")).stdout
    )
    assert values["driver_id"] == [1, 2, 3]
    assert values["conv_rate"] == [0.2, 0.5, None]
    assert values["trips"] == [4, 7, None]
    derived = _ok(cli(*read, "-e", "km=2", "-f", "per_km:rate_per_km")).stdout
    assert "0.1" in derived and "0.25" in derived

    assert "needs join key 'driver_id'" in _error(
        cli("features", "get", "-e", "driver=1", "-f", "driver_stats:trips")
    )
    assert "has no feature 'trip'" in _error(
        cli("features", "get", "-e", "driver_id=1", "-f", "driver_stats:trip")
    )
    assert "--entity takes KEY=VALUE" in _error(
        cli("features", "get", "-e", "driver_id", "-f", "driver_stats:trips")
    )
    assert "--start takes an ISO time" in _error(
        cli("features", "materialize", "--start", "yesterday")
    )
