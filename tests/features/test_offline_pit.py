"""Point-in-time correct training sets: the leakage timeline, output forms, lineage, bad input."""

from __future__ import annotations

import math
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import keel
from keel.errors import Conflict, InvalidInput, NotFound

T0 = datetime(2024, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def at(hours: float = 0, *, days: float = 0, ms: int = 0) -> datetime:
    """A time on the crafted timeline: T0 plus an offset."""
    return T0 + timedelta(hours=hours, days=days) + ms * MS


def epoch_ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


DEFS = """\
from datetime import timedelta

import pandas as pd

from keel.features import (
    Entity, FeatureView, Field, FileSource, RequestSource, on_demand_feature_view,
)

driver = Entity("driver", join_keys=["driver_id"])

# ttl 2 h; late corrections through the created column
hourly = FeatureView(
    "hourly",
    entities=[driver],
    source=FileSource("data/hourly.parquet"),
    timestamp_field="event_ts",
    created_timestamp_field="created_ts",
    features=[Field("conv", "float64"), Field("trips", "int64")],
    ttl=timedelta(hours=2),
)

# ttl 1 day; event times are zoned (Europe/Paris) timestamps
daily = FeatureView(
    "daily",
    entities=[driver],
    source=FileSource("data/daily"),
    timestamp_field="day_ts",
    features=[Field("rating", "float64")],
    ttl=timedelta(days=1),
)

# no ttl; event times are integer milliseconds since the epoch
lifetime = FeatureView(
    "lifetime",
    entities=[driver],
    source=FileSource("data/lifetime.parquet"),
    timestamp_field="ts_ms",
    features=[Field("tier", "string")],
)

trip = RequestSource("trip", schema=[Field("km", "float64")])


@on_demand_feature_view(
    sources=[hourly, trip],
    schema=[Field("conv_per_km", "float64"), Field("busy", "bool")],
)
def per_km(df):
    return pd.DataFrame({"conv_per_km": df["conv"] / df["km"], "busy": df["trips"] >= 3})
"""


def write_sources(root: Path) -> None:
    """The crafted timeline: future rows, TTL edges, corrections and duplicates."""
    data = root / "data"
    (data / "daily").mkdir(parents=True)
    ts = pa.timestamp("us")
    hourly = pa.table(
        {
            "driver_id": pa.array([1, 1, 1, 1, 1, 2, 2, 2], pa.int64()),
            "event_ts": pa.array(
                [
                    at(0),
                    at(1),
                    at(1),  # a late correction of the row above: same event time, created later
                    at(3),
                    at(9),  # in the future of most entity rows
                    at(2),
                    at(2),  # the row above written twice
                    at(2),  # the same event time, no created time: loses to the two above
                ],
                pa.timestamp("us", tz="UTC"),
            ).cast(ts),  # zoneless in the file: read as UTC
            "created_ts": pa.array(
                [at(0), at(1), at(5), at(3), at(9), at(2), at(2), None],
                pa.timestamp("us", tz="UTC"),
            ),
            "conv": [0.10, 0.20, 0.25, 0.30, 0.90, 0.50, 0.50, 0.99],
            "trips": pa.array([1, 2, 3, 4, 9, 5, 5, 99], pa.int64()),
        }
    )
    pq.write_table(hourly, data / "hourly.parquet")
    daily = pa.table(
        {
            "driver_id": pa.array([1, 1, 2], pa.int64()),
            "day_ts": pa.array([at(0), at(6), at(-22)], pa.timestamp("us", tz="UTC")).cast(
                pa.timestamp("us", tz="Europe/Paris")
            ),
            "rating": [4.0, 4.5, 3.0],
        }
    )
    # two files in the folder: every file is read
    pq.write_table(daily.slice(0, 2), data / "daily" / "part-0.parquet")
    pq.write_table(daily.slice(2), data / "daily" / "part-1.parquet")
    lifetime = pa.table(
        {
            "driver_id": pa.array([1, 2], pa.int64()),
            "ts_ms": pa.array([epoch_ms(at(days=-31)), epoch_ms(at(3))], pa.int64()),
            "tier": ["gold", "silver"],
        }
    )
    pq.write_table(lifetime, data / "lifetime.parquet")


@pytest.fixture
def defs(sqlite_env, tmp_path: Path) -> Path:
    write_sources(tmp_path)
    path = tmp_path / "defs.py"
    path.write_text(DEFS)
    keel.Client().features.apply(path)
    return path


# Entity rows, deliberately out of time order. Expected values worked out by hand:
#   hourly (ttl 2 h, inclusive: ts - 2h <= event <= ts), daily (ttl 1 day), lifetime (no ttl).
ROWS: list[tuple[int, datetime, float]] = [
    (1, at(0.5), 2.0),  # r0
    (2, at(2), 4.0),  # r1  exact event time of the duplicates
    (1, at(1), 1.0),  # r2  exactly at an event time: the corrected value
    (1, at(3, ms=-1), 1.0),  # r3  1 ms before the 03:00 row: never the future value
    (1, at(5), 2.0),  # r4  the 03:00 row is exactly 2 h old: still valid
    (1, at(5, ms=1), 2.0),  # r5  ... and 2 h + 1 ms old: expired
    (2, at(2, ms=-1), 4.0),  # r6  before driver 2's first hourly row
    (3, at(5), 1.0),  # r7  an entity with no rows anywhere
    (1, at(10), 3.0),  # r8  after the 09:00 row
    (2, at(2, ms=1), 4.0),  # r9  daily row (-22 h) is 24 h + 1 ms old: expired
    (2, at(days=4), 4.0),  # r10 only the no-ttl view still has a value
    (1, at(0.5), 2.0),  # r11 a duplicate entity row: same answer, own place
]

#            conv   trips  rating  tier
EXPECTED: list[tuple[Any, ...]] = [
    (0.10, 1, 4.0, "gold"),  # r0
    (0.50, 5, 3.0, None),  # r1  daily -22 h is exactly 24 h old: valid; tier at 03:00 is later
    (0.25, 3, 4.0, "gold"),  # r2
    (0.25, 3, 4.0, "gold"),  # r3
    (0.30, 4, 4.0, "gold"),  # r4
    (None, None, 4.0, "gold"),  # r5
    (None, None, 3.0, None),  # r6
    (None, None, None, None),  # r7
    (0.90, 9, 4.5, "gold"),  # r8
    (0.50, 5, None, None),  # r9
    (None, None, None, "silver"),  # r10
    (0.10, 1, 4.0, "gold"),  # r11
]

FEATURES = ["hourly:conv", "daily:rating", "hourly:trips", "lifetime:tier"]


def entity_frame(tz: str | None = None) -> pd.DataFrame:
    stamps = pd.DatetimeIndex([when for _, when, _ in ROWS])  # UTC
    stamps = stamps.tz_convert(tz) if tz else stamps.tz_localize(None)
    return pd.DataFrame(
        {
            "driver_id": [d for d, _, _ in ROWS],
            "event_timestamp": stamps,
            "km": [k for _, _, k in ROWS],
            "label": list(range(len(ROWS))),
        },
        index=pd.RangeIndex(100, 100 + len(ROWS)),
    )


def plain(value: Any) -> Any:
    """A cell as a plain value: NaN, NA and NaT become None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def rows_of(frame: pd.DataFrame, columns: list[str]) -> list[tuple[Any, ...]]:
    return [tuple(plain(v) for v in row) for row in frame[columns].itertuples(index=False)]


def test_training_set_is_point_in_time_correct(defs):
    entity_df = entity_frame()
    result = keel.features.get_historical_features(entity_df, FEATURES)

    assert list(result.columns) == [*entity_df.columns, "conv", "rating", "trips", "tier"]
    pd.testing.assert_frame_equal(result[entity_df.columns], entity_df)  # unchanged, index kept
    assert rows_of(result, ["conv", "trips", "rating", "tier"]) == EXPECTED
    assert str(result["trips"].dtype) == "Int64"  # a missing integer stays an integer column
    assert result["conv"].dtype == "float64"


def test_the_online_path_serves_the_same_values_on_the_same_timeline(
    sqlite_env, tmp_path, monkeypatch
):
    # materialize up to each entity row's time, in time order (incremental runs), and read
    # the online store as of that time: every value equals the training set's. The
    # timeline moves to tomorrow: a materialization purges what has expired by the clock.
    from keel.features.online import open_online_store

    tomorrow = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    shift = tomorrow - T0
    monkeypatch.setattr(sys.modules[__name__], "T0", tomorrow)  # at() now reads from it
    write_sources(tmp_path)
    (tmp_path / "defs.py").write_text(DEFS)
    keel.Client().features.apply(tmp_path / "defs.py")
    url = f"sqlite:///{tmp_path / 'online.db'}"
    views = {"hourly": (["conv", "trips"], 7200), "daily": (["rating"], 86400)}
    views["lifetime"] = (["tier"], None)
    store = open_online_store(url)
    served: dict[int, tuple[Any, ...]] = {}
    try:
        for when in sorted({w + shift for _, w, _ in ROWS}):
            keel.Client().features.materialize(list(views), end=when, store=url)
            for i, (driver, w, _) in enumerate(ROWS):
                if w + shift != when:
                    continue
                values: dict[str, Any] = {}
                for view, (names, ttl) in views.items():
                    [row] = store.read(view, [(driver,)], names, ttl, epoch_ms(when))
                    values.update({n: None if row is None else row[1][n] for n in names})
                served[i] = (values["conv"], values["trips"], values["rating"], values["tier"])
    finally:
        store.close()
    assert [served[i] for i in range(len(ROWS))] == EXPECTED


def test_zoned_entity_timestamps_are_the_same_instants(defs):
    entity_df = entity_frame("Asia/Tokyo")
    result = keel.features.get_historical_features(entity_df, FEATURES)

    assert rows_of(result, ["conv", "trips", "rating", "tier"]) == EXPECTED
    assert result["event_timestamp"].equals(entity_df["event_timestamp"])  # still in Tokyo time


def test_string_and_integer_entity_timestamps(defs):
    as_text = entity_frame().assign(
        event_timestamp=[when.isoformat() for _, when, _ in ROWS]  # "...+00:00"
    )
    as_ms = entity_frame().assign(event_timestamp=[epoch_ms(when) for _, when, _ in ROWS])
    for entity_df in (as_text, as_ms):
        result = keel.features.get_historical_features(entity_df, FEATURES)
        assert rows_of(result, ["conv", "trips", "rating", "tier"]) == EXPECTED


def test_arrow_output_keeps_the_entity_table_and_adds_typed_columns(defs):
    table = pa.Table.from_pandas(entity_frame(), preserve_index=False)
    result = keel.features.get_historical_features(table, FEATURES, format="arrow")

    assert isinstance(result, pa.Table)
    assert result.select(table.column_names).equals(table)
    assert result.schema.field("trips").type == pa.int64()
    assert result.schema.field("tier").type == pa.string()
    got = list(
        zip(
            *(result.column(c).to_pylist() for c in ["conv", "trips", "rating", "tier"]),
            strict=True,
        )
    )
    assert got == EXPECTED


def test_parquet_output_matches_and_leaves_no_partial_file(defs, tmp_path):
    entity_df = entity_frame()
    target = tmp_path / "out" / "train.parquet"
    returned = keel.features.get_historical_features(entity_df, FEATURES, output=target)

    assert returned == target
    assert sorted(p.name for p in target.parent.iterdir()) == ["train.parquet"]
    written = pq.read_table(target).to_pandas()
    assert list(written.columns) == [*entity_df.columns, "conv", "rating", "trips", "tier"]
    assert written["label"].tolist() == list(range(len(ROWS)))  # input order
    assert rows_of(written, ["conv", "trips", "rating", "tier"]) == EXPECTED


def test_entity_rows_from_a_parquet_file(defs, tmp_path):
    path = tmp_path / "entities.parquet"
    entity_df = entity_frame()
    entity_df.to_parquet(path, index=False)
    result = keel.features.get_historical_features(path, FEATURES, memory_limit="256MB")

    assert result["label"].tolist() == list(range(len(ROWS)))
    assert rows_of(result, ["conv", "trips", "rating", "tier"]) == EXPECTED


def test_on_demand_features_see_source_features_not_asked_for(defs, tmp_path):
    # conv is not asked for, but the function reads it (and trips) at each row's time
    result = keel.features.get_historical_features(
        entity_frame(), ["daily:rating", "per_km:conv_per_km", "per_km:busy"]
    )
    assert list(result.columns)[-3:] == ["rating", "conv_per_km", "busy"]
    expected = [
        (None if conv is None else conv / km, None if trips is None else trips >= 3)
        for (conv, trips, _, _), (_, _, km) in zip(EXPECTED, ROWS, strict=True)
    ]
    got = rows_of(result, ["conv_per_km", "busy"])
    assert [g[1] for g in got] == [e[1] for e in expected]
    for (g, _), (e, _) in zip(got, expected, strict=True):
        assert g == pytest.approx(e) if e is not None else g is None
    assert str(result["busy"].dtype) == "boolean"

    # the same through Parquet, where the function runs batch by batch
    target = keel.features.get_historical_features(
        entity_frame(), ["per_km:conv_per_km", "hourly:trips"], output=tmp_path / "odfv.parquet"
    )
    written = pq.read_table(target).to_pandas()
    assert rows_of(written, ["conv_per_km"]) == [(g[0],) for g in got]
    assert rows_of(written, ["trips"]) == [(e[1],) for e in EXPECTED]


def test_on_demand_view_without_its_request_field_names_it(defs):
    with pytest.raises(
        InvalidInput,
        match=r"on-demand feature view 'per_km' needs request field 'km'; entity_df has columns \['driver_id', 'event_timestamp', 'label'\]",
    ):
        keel.features.get_historical_features(entity_frame().drop(columns=["km"]), ["per_km:busy"])


def test_full_feature_names_and_the_clash_they_resolve(defs, tmp_path):
    # a second view with a feature of the same name
    extra = tmp_path / "extra.py"
    extra.write_text(
        textwrap.dedent(
            """\
            from keel.features import Entity, FeatureView, Field, FileSource

            driver = Entity("driver", join_keys=["driver_id"])
            again = FeatureView(
                "again",
                entities=[driver],
                source=FileSource("data/hourly.parquet"),
                timestamp_field="event_ts",
                features=[Field("conv", "float64")],
            )
            """
        )
    )
    keel.Client().features.apply(extra)
    with pytest.raises(
        InvalidInput, match=r"share the column name\(s\) \['conv'\]; pass full_feature_names=True"
    ):
        keel.features.get_historical_features(entity_frame(), ["hourly:conv", "again:conv"])

    result = keel.features.get_historical_features(
        entity_frame(), ["hourly:conv", "again:conv"], full_feature_names=True
    )
    assert list(result.columns)[-2:] == ["hourly__conv", "again__conv"]
    # no ttl: at 05:00 + 1 ms the 03:00 row is still valid
    assert plain(result["again__conv"].iloc[5]) == 0.30
    assert plain(result["hourly__conv"].iloc[5]) is None


def test_true_duplicates_pick_the_same_row_whatever_the_file_order(defs, tmp_path):
    # without a created column, the two rows of driver 1 at 01:00 (and the three of
    # driver 2 at 02:00) tie: one of them wins, the same one however the file holds them
    extra = tmp_path / "again.py"
    extra.write_text(
        textwrap.dedent(
            """\
            from keel.features import Entity, FeatureView, Field, FileSource

            driver = Entity("driver", join_keys=["driver_id"])
            again = FeatureView(
                "again",
                entities=[driver],
                source=FileSource("data/hourly.parquet"),
                timestamp_field="event_ts",
                features=[Field("conv", "float64"), Field("trips", "int64")],
            )
            """
        )
    )
    keel.Client().features.apply(extra)
    picked = rows_of(
        keel.features.get_historical_features(entity_frame(), ["again:conv", "again:trips"]),
        ["conv", "trips"],
    )
    assert picked[2] in [(0.20, 2), (0.25, 3)]
    assert picked[1] in [(0.50, 5), (0.99, 99)]
    source = tmp_path / "data" / "hourly.parquet"
    table = pq.read_table(source)
    for order in (list(reversed(range(table.num_rows))), [1, 2, 0, 3, 4, 7, 5, 6]):
        pq.write_table(table.take(order), source, row_group_size=1)
        again = keel.features.get_historical_features(entity_frame(), ["again:conv", "again:trips"])
        assert rows_of(again, ["conv", "trips"]) == picked


def test_lineage_records_the_view_versions_as_run_inputs(defs):
    client = keel.Client()
    with keel.start_run() as run:
        keel.features.get_historical_features(entity_frame(), ["hourly:conv", "per_km:busy"])
    graph = client.lineage.upstream(f"runs:/{run.info.run_id}")
    inputs = {e.src for e in graph.edges if e.relation == "input"}
    assert {"features:/hourly@1", "features:/per_km@1"} <= inputs
    assert "features:/daily@1" not in inputs

    # outside a run, an explicit run id (a prefix will do)
    with keel.start_run() as later:
        pass
    other = later.id
    keel.features.get_historical_features(entity_frame(), ["daily:rating"], run_id=other[:8])
    graph = client.lineage.upstream(f"runs:/{other}")
    assert {e.src for e in graph.edges} == {"features:/daily@1"}

    with pytest.raises(NotFound):
        keel.features.get_historical_features(entity_frame(), ["daily:rating"], run_id="f" * 32)


@pytest.mark.parametrize(
    ("features", "error", "pattern"),
    [
        ([], InvalidInput, r"no features asked for; name at least one view:feature"),
        (["hourly"], InvalidInput, r"expected a feature reference such as"),
        (["nope:conv"], NotFound, r"unknown feature view 'nope'"),
        (
            ["hourly:nope"],
            InvalidInput,
            r"feature view 'hourly' has no feature 'nope'; it has \['conv', 'trips'\]",
        ),
    ],
)
def test_bad_feature_references(defs, features, error, pattern):
    with pytest.raises(error, match=pattern):
        keel.features.get_historical_features(entity_frame(), features)


def test_entity_df_without_a_join_key_or_the_timestamp(defs):
    with pytest.raises(
        InvalidInput,
        match=r"feature view 'hourly' needs join key 'driver_id'; entity_df has columns "
        r"\['event_timestamp', 'km', 'label'\]",
    ):
        keel.features.get_historical_features(entity_frame().drop(columns=["driver_id"]), FEATURES)
    with pytest.raises(
        InvalidInput,
        match=r"entity_df has no timestamp column 'ts'; it has columns "
        r"\['driver_id', 'event_timestamp', 'km', 'label'\]; pass timestamp_column=",
    ):
        keel.features.get_historical_features(entity_frame(), FEATURES, timestamp_column="ts")


def test_entity_df_with_bad_values(defs):
    missing_time = entity_frame()
    missing_time.loc[101, "event_timestamp"] = pd.NaT
    with pytest.raises(
        InvalidInput, match=r"entity_df has 1 row\(s\) without a time in 'event_timestamp'"
    ):
        keel.features.get_historical_features(missing_time, FEATURES)
    bad_key = entity_frame().assign(driver_id=["x"] + [str(d) for d, _, _ in ROWS[1:]])
    with pytest.raises(
        InvalidInput, match=r"entity_df's join key 'driver_id' has 1 value\(s\) that are not int64"
    ):
        keel.features.get_historical_features(bad_key, FEATURES)
    with pytest.raises(InvalidInput, match=r"clash with entity_df's columns"):
        keel.features.get_historical_features(entity_frame().assign(conv=1.0), ["hourly:conv"])
    with pytest.raises(InvalidInput, match=r"entity_df must be a pandas DataFrame"):
        keel.features.get_historical_features([{"driver_id": 1}], FEATURES)
    with pytest.raises(InvalidInput, match=r"format must be 'pandas' or 'arrow', got 'polars'"):
        keel.features.get_historical_features(entity_frame(), FEATURES, format="polars")
    with pytest.raises(InvalidInput, match=r"memory_limit must be a size such as '4GB'"):
        keel.features.get_historical_features(entity_frame(), FEATURES, memory_limit="lots")


def test_a_source_without_its_timestamp_column(defs, tmp_path):
    pq.write_table(
        pa.table({"driver_id": [1], "when": [epoch_ms(at(0))], "tier": ["gold"]}),
        tmp_path / "data" / "lifetime.parquet",
    )
    with pytest.raises(
        InvalidInput,
        match=r"feature view 'lifetime': its source .*lifetime\.parquet has no column 'ts_ms'; "
        r"columns: \['driver_id', 'when', 'tier'\]",
    ):
        keel.features.get_historical_features(entity_frame(), ["lifetime:tier"])


@pytest.mark.slow
def test_a_join_larger_than_its_memory_limit_spills_and_stays_exact(sqlite_env, tmp_path):
    # 50,000 drivers x 40 hourly rows = 2M feature rows (over 100 MB as the join sorts
    # them) and 400,000 entity rows, under a 40 MB limit: DuckDB must spill to disk
    import numpy as np

    drivers, hours, n = 50_000, 40, 400_000
    data = tmp_path / "data"
    data.mkdir()
    k = np.repeat(np.arange(drivers, dtype=np.int64), hours)
    h = np.tile(np.arange(hours, dtype=np.int64), drivers)
    start = epoch_ms(T0)
    pq.write_table(
        pa.table(
            {
                "driver_id": k,
                "event_ts": start + h * 3_600_000,
                "value": (k * 1000 + h).astype(np.float64),
            }
        ),
        data / "big.parquet",
        row_group_size=200_000,
    )
    (tmp_path / "big.py").write_text(
        textwrap.dedent(
            """\
            from datetime import timedelta

            from keel.features import Entity, FeatureView, Field, FileSource

            driver = Entity("driver", join_keys=["driver_id"])
            big = FeatureView(
                "big",
                entities=[driver],
                source=FileSource("data/big.parquet"),
                timestamp_field="event_ts",
                features=[Field("value", "float64")],
                ttl=timedelta(hours=2),
            )
            """
        )
    )
    keel.Client().features.apply(tmp_path / "big.py")
    rng = np.random.default_rng(7)
    who = rng.integers(0, drivers, n)
    # minutes after T0, up to 3 h past the last row: the tail falls outside the ttl
    minutes = rng.integers(0, (hours + 3) * 60, n)
    entity_df = pd.DataFrame(
        {"driver_id": who, "event_timestamp": pd.Timestamp(T0) + pd.to_timedelta(minutes, "min")}
    )
    out = keel.features.get_historical_features(
        entity_df, ["big:value"], output=tmp_path / "big_out.parquet", memory_limit="40MB"
    )
    written = pq.read_table(out).to_pandas()

    # the row at hour floor(minutes / 60), capped at the last hour, unless over 2 h old
    hour = np.minimum(minutes // 60, hours - 1)
    fresh = minutes <= hour * 60 + 120
    expected = np.where(fresh, who * 1000 + hour, np.nan)
    assert written["driver_id"].tolist() == who.tolist()
    np.testing.assert_array_equal(written["value"].to_numpy(), expected)


def test_run_on_demand_keeps_the_rows_index_and_checks_the_output(defs, tmp_path):
    from keel.features.on_demand import run_on_demand

    spec = keel.Client().features.get("per_km", kind="on_demand_feature_view").spec
    frame = pd.DataFrame(
        {"conv": [0.5, None], "trips": pd.array([4, 1], dtype="Int64"), "km": ["2", "4"]},
        index=[7, 3],
    )
    out = run_on_demand(spec, frame)  # km arrives as text: cast to its declared float64
    assert list(out.index) == [7, 3]
    assert rows_of(out, ["conv_per_km", "busy"]) == [(0.25, True), (None, False)]

    with pytest.raises(InvalidInput, match=r"request field 'km' is not float64"):
        run_on_demand(spec, frame.assign(km=["two", "four"]))

    # a function that breaks its contract, applied from a definitions file of its own
    broken = tmp_path / "broken.py"
    broken.write_text(
        textwrap.dedent(
            """\
            import pandas as pd

            from keel.features import Field, RequestSource, on_demand_feature_view

            trip = RequestSource("trip", schema=[Field("km", "float64")])


            @on_demand_feature_view(sources=[trip], schema=[Field("half", "float64")])
            def short(df):
                return pd.DataFrame({"half": (df["km"] / 2).iloc[:1]})


            @on_demand_feature_view(sources=[trip], schema=[Field("half", "float64")])
            def unnamed(df):
                return pd.DataFrame({"other": df["km"]})
            """
        )
    )
    client = keel.Client()
    client.features.apply(broken)
    rows = pd.DataFrame({"km": [1.0, 2.0]})
    with pytest.raises(InvalidInput, match=r"'short': its function returned 1 rows for 2"):
        run_on_demand(client.features.get("short", kind="on_demand_feature_view").spec, rows)
    with pytest.raises(
        InvalidInput, match=r"'unnamed': its function returned no column\(s\) \['half'\]"
    ):
        run_on_demand(client.features.get("unnamed", kind="on_demand_feature_view").spec, rows)


def test_an_on_demand_function_changed_since_apply_is_refused_offline_and_online(defs):
    # the loader runs only the code that was applied: an edit without `keel features apply`
    # would make training and serving compute different features
    defs.write_text(DEFS.replace('df["trips"] >= 3', 'df["trips"] >= 30'))
    with pytest.raises(
        Conflict, match=r"the function 'per_km' of on-demand feature view 'per_km' changed"
    ):
        keel.features.get_historical_features(entity_frame(), ["per_km:busy"])
    with pytest.raises(
        Conflict, match=r"run `keel features apply .*defs\.py` so training and serving"
    ):
        keel.features.get_online_features([{"driver_id": 1, "km": 2.0}], ["per_km:busy"])
    keel.Client().features.apply(defs)  # applied again, the new code runs
    result = keel.features.get_historical_features(entity_frame(), ["per_km:busy"])
    assert not result["busy"].fillna(False).any()  # no row has 30 trips
