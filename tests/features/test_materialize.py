"""Materialization into SQLite and Redis, then online reads: incremental runs, late
corrections, TTL, bounds, rebuilds, failures that lose nothing, and read errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import keel
from _support.features import (
    MINUTE_MS,
    driver_stats_definitions,
    initial_stats_rows,
    online_store_url,
    write_driver_stats,
)
from _support.network import free_port
from keel.errors import BackendUnavailable, InvalidInput, NotFound, StorageError
from keel.features.serving_read import OnlineReader, get_online_features

#: zones: a view over two entities, appended to the driver_stats definitions
ZONES = """
city = Entity("city", join_keys=["city"], dtype="string")
zones = FeatureView(
    "zones",
    entities=[city, driver],
    source=FileSource("data/zones", format="parquet"),
    timestamp_field="event_ts",
    features=[Field("demand"), Field("trips", "int64")],
)
"""


@dataclass
class Home:
    """A Keel home with the definitions applied, its source folders, and a reference time."""

    client: keel.Client
    defs: Path
    stats: Path
    zones: Path
    t: int  # ms: "now" for the data, a few minutes in the past

    def apply(self, *, extra: str = "", description: str = "driver stats") -> None:
        text = driver_stats_definitions(description=description, extra_features=extra)
        self.defs.write_text(text + ZONES)
        self.client.features.apply(self.defs)


@pytest.fixture
def home(sqlite_env, tmp_path: Path) -> Home:
    stats = tmp_path / "data" / "stats"
    zones = tmp_path / "data" / "zones"
    stats.mkdir(parents=True)
    zones.mkdir(parents=True)
    t = (time.time_ns() // 1_000_000 // MINUTE_MS - 10) * MINUTE_MS
    h = Home(keel.Client(), tmp_path / "defs.py", stats, zones, t)
    write_driver_stats(stats / "part-1.parquet", initial_stats_rows(t))
    pq.write_table(
        pa.table(
            {
                "city": ["paris", "paris", "oslo"],
                "driver_id": pa.array([1, 2, 1], pa.int64()),
                "event_ts": pa.array(
                    [datetime.fromtimestamp((t - MINUTE_MS) / 1000, UTC)] * 3,
                    pa.timestamp("ms", tz="UTC"),
                ),
                "demand": [1.5, 2.5, 3.5],
                "trips": pa.array([10, 20, 30], pa.int64()),
            }
        ),
        zones / "zones.parquet",
    )
    h.apply()
    return h


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An online store URL of each backend (Redis: a prefix of this test's own, dropped after)."""
    with online_store_url(request.param, tmp_path / "online" / "online.db") as url:
        yield url


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def rates(store: str, ids: list[int]) -> list[float | None]:
    got = get_online_features(
        keel.Client(), [{"driver_id": i} for i in ids], ["driver_stats:conv_rate"], store=store
    )
    return got.to_dict()["conv_rate"]


def test_two_runs_write_only_new_rows_and_a_late_correction_overwrites(home, store_url):
    t = home.t
    features = home.client.features

    first = features.materialize(["driver_stats"], end=at(t), store=store_url)

    assert [(r.view, r.rows_read, r.rows_written, r.rows_expired) for r in first] == [
        ("driver_stats", 4, 2, 1)
    ]
    assert first[0].last_event_ms == t - 40 * MINUTE_MS
    assert first[0].rebuilt is False
    assert rates(store_url, [1, 2, 3]) == [0.2, 0.5, None]

    write_driver_stats(
        home.stats / "part-2.parquet",
        [
            (1, t - 30 * MINUTE_MS, t - 30 * MINUTE_MS, 0.3, 3),  # new
            (2, t - 45 * MINUTE_MS, t - 20 * MINUTE_MS, 0.55, 6),  # late correction
            (4, t + 5 * MINUTE_MS, t + 5 * MINUTE_MS, 0.7, 7),  # after this run's end
        ],
    )
    second = features.materialize(["driver_stats"], end=at(t + MINUTE_MS), store=store_url)

    assert (second[0].rows_read, second[0].rows_written) == (2, 2)
    mark = features.watermark("driver_stats", second[0].store)
    assert mark is not None
    assert (mark.last_event_ms, mark.last_created_ms) == (t - 30 * MINUTE_MS, t - 20 * MINUTE_MS)
    assert (mark.rows_written, mark.runs, mark.view_version) == (4, 2, 1)
    assert rates(store_url, [1, 2, 3, 4]) == [0.3, 0.55, None, None]

    third = features.materialize(["driver_stats"], store=store_url)  # end: now

    assert (third[0].rows_read, third[0].rows_written) == (1, 1)
    assert rates(store_url, [4]) == [0.7]
    again = features.materialize(["driver_stats"], store=store_url)
    assert (again[0].rows_read, again[0].rows_written) == (0, 0)


def test_online_values_and_on_demand_features_are_exactly_the_expected_ones(home, store_url):
    home.client.features.materialize(end=at(home.t), store=store_url)

    got = get_online_features(
        home.client,
        [
            {"driver_id": 2, "city": "paris", "km": 4.0},
            {"driver_id": 1, "city": "oslo", "km": 2.0},
            {"driver_id": 3, "city": "rome", "km": 1.0},
        ],
        ["per_km:rate_per_km", "driver_stats:trips", "zones:demand", "driver_stats:conv_rate"],
        store=store_url,
    )

    assert got.to_dict() == {
        "driver_id": [2, 1, 3],
        "city": ["paris", "oslo", "rome"],
        "rate_per_km": [0.125, 0.1, None],
        "trips": [5, 2, None],
        "demand": [2.5, 3.5, None],
        "conv_rate": [0.5, 0.2, None],
    }
    assert got.feature_columns == ["rate_per_km", "trips", "demand", "conv_rate"]
    t = home.t
    assert got.event_ms == {
        "driver_stats": [t - 45 * MINUTE_MS, t - 40 * MINUTE_MS, None],
        "zones": [t - MINUTE_MS, t - MINUTE_MS, None],
    }
    frame = got.to_df()
    assert list(frame.columns) == list(got.to_dict())
    assert frame["trips"].tolist()[:2] == [5, 2]


def test_a_reader_reads_data_frames_with_full_names_and_no_rows(home, store_url):
    import pandas as pd

    home.client.features.materialize(end=at(home.t), store=store_url)
    reader = OnlineReader(
        home.client,
        ["driver_stats:conv_rate", "zones:demand"],
        store=store_url,
        full_feature_names=True,
    )
    try:
        rows = pd.DataFrame({"driver_id": [1, 2], "city": ["paris", "paris"]})
        got = reader.read(rows).to_dict()
        # a server holds columns: the same read from a dict of them
        columns = reader.read({"driver_id": [1, 2], "city": ["paris", "paris"]}).to_dict()
        empty = reader.read([])
        with pytest.raises(InvalidInput, match=r"of one length, got lengths \[1, 2\]"):
            reader.read({"driver_id": [1, 2], "city": ["paris"]})
    finally:
        reader.close()
    assert got == {
        "driver_id": [1, 2],
        "city": ["paris", "paris"],
        "driver_stats__conv_rate": [0.2, 0.5],
        "zones__demand": [1.5, 2.5],
    }
    assert columns == got
    assert len(empty) == 0
    assert empty.to_dict()["driver_stats__conv_rate"] == []


def test_start_and_end_bound_the_event_times_selected(home, store_url):
    t = home.t
    result = home.client.features.materialize(
        ["driver_stats"], start=at(t - 46 * MINUTE_MS), end=at(t - 44 * MINUTE_MS), store=store_url
    )

    assert (result[0].rows_read, result[0].rows_written) == (1, 1)
    assert result[0].last_event_ms == t - 45 * MINUTE_MS
    assert rates(store_url, [1, 2]) == [None, 0.5]
    with pytest.raises(InvalidInput, match=r"start .* is after end"):
        home.client.features.materialize(start=at(t), end=at(t - 1), store=store_url)


def test_a_failing_source_leaves_the_watermark_so_the_rerun_writes_everything(home, tmp_path):
    store = f"sqlite:///{tmp_path / 'online.db'}"
    features = home.client.features
    t = home.t
    features.materialize(["driver_stats"], end=at(t), store=store)
    before = features.watermark("driver_stats", store)
    write_driver_stats(
        home.stats / "part-2.parquet", [(5, t - 5 * MINUTE_MS, t - 5 * MINUTE_MS, 0.8, 8)]
    )
    broken = home.stats / "part-3.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file")

    with pytest.raises((InvalidInput, StorageError), match=r"feature view 'driver_stats'"):
        features.materialize(["driver_stats"], store=store)

    assert features.watermark("driver_stats", store) == before
    broken.unlink()
    rerun = features.materialize(["driver_stats"], store=store)
    assert (rerun[0].rows_read, rerun[0].rows_written) == (1, 1)
    assert rates(store, [5]) == [0.8]


def test_an_unreachable_online_store_records_nothing(home):
    store = f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=1"
    features = home.client.features

    with pytest.raises(
        BackendUnavailable, match=r"cannot be reached while writing view 'driver_stats'"
    ):
        features.materialize(["driver_stats"], end=at(home.t), store=store)

    assert features.watermarks() == []


def test_a_changed_view_is_rebuilt_and_a_new_description_is_not(home, store_url):
    features = home.client.features
    features.materialize(["driver_stats"], end=at(home.t), store=store_url)

    home.apply(description="stats of drivers")  # version 2: nothing the rows depend on
    same = features.materialize(["driver_stats"], end=at(home.t), store=store_url)
    assert (same[0].view_version, same[0].rebuilt, same[0].rows_read) == (2, False, 0)

    home.apply(extra=', Field("rating")', description="stats of drivers")  # version 3
    write_driver_stats(
        home.stats / "part-1.parquet",
        [(1, home.t - 40 * MINUTE_MS, home.t - 40 * MINUTE_MS, 0.2, 2)],
        rating=[4.5],
    )
    for old in home.stats.glob("part-[2-9]*.parquet"):
        old.unlink()
    rebuilt = features.materialize(["driver_stats"], end=at(home.t), store=store_url)

    assert rebuilt[0].rebuilt is True
    assert "changed features since version 2" in (rebuilt[0].reason or "")
    assert (rebuilt[0].rows_read, rebuilt[0].rows_written) == (1, 1)
    # driver 2's row came from the old source: the rebuild dropped it
    got = get_online_features(
        home.client,
        [{"driver_id": 1}, {"driver_id": 2}],
        ["driver_stats:rating", "driver_stats:conv_rate"],
        store=store_url,
    )
    assert got.to_dict()["rating"] == [4.5, None]
    assert got.to_dict()["conv_rate"] == [0.2, None]


def test_progress_reports_rows_done_of_the_total(home, tmp_path):
    calls: list[tuple[str, int, int]] = []
    home.client.features.materialize(
        end=at(home.t),
        store=f"sqlite:///{tmp_path / 'online.db'}",
        progress=lambda view, done, total: calls.append((view, done, total)),
    )
    assert calls == [
        ("driver_stats", 0, 2),
        ("driver_stats", 2, 2),
        ("zones", 0, 3),
        ("zones", 3, 3),
    ]


def test_bad_reads_and_materializations_say_what_to_fix(home, tmp_path):
    store = f"sqlite:///{tmp_path / 'online.db'}"
    client = home.client
    with pytest.raises(
        InvalidInput,
        match=r"feature view 'driver_stats' needs join key 'driver_id'; the rows have \['drv'\]",
    ):
        get_online_features(client, [{"drv": 1}], ["driver_stats:conv_rate"], store=store)
    with pytest.raises(InvalidInput, match=r"feature view 'driver_stats' has no feature 'speed'"):
        get_online_features(client, [{"driver_id": 1}], ["driver_stats:speed"], store=store)
    with pytest.raises(NotFound, match=r"unknown feature view 'drivers'"):
        get_online_features(client, [{"driver_id": 1}], ["drivers:conv_rate"], store=store)
    with pytest.raises(
        InvalidInput, match=r"on-demand feature view 'per_km' needs request field 'km'"
    ):
        get_online_features(client, [{"driver_id": 1}], ["per_km:rate_per_km"], store=store)
    with pytest.raises(InvalidInput, match=r"would share the column name.*full_feature_names=True"):
        OnlineReader(client, ["driver_stats:trips", "zones:trips"], store=store)
    with pytest.raises(InvalidInput, match=r"'per_km' is an on-demand feature view"):
        client.features.materialize(["per_km"], store=store)
    with pytest.raises(NotFound, match=r"driver_stat"):
        client.features.materialize(["driver_stat"], store=store)
