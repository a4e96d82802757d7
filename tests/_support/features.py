"""Feature-store test helpers: definitions files, Parquet sources and online stores.

Two sets of definitions recur across the feature tests:

- ``driver_stats_definitions``: entity ``driver``, view ``driver_stats`` (conv_rate,
  trips) over ``data/stats``, request source ``trip`` and on-demand view ``per_km``;
  the registry, CLI, HTTP and materialization tests apply it. ``write_driver_stats``
  writes its source rows, ``initial_stats_rows`` the four rows those tests start from.
- ``ETA_DEFINITIONS``: the views behind the ``eta`` deployment the serving and skew
  tests serve (conv_rate and acc_rate over ``stats``, request source ``trip`` and
  on-demand view ``fares``); ``write_rates`` writes its source.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import keel

__all__ = [
    "ETA_DEFINITIONS",
    "MINUTE_MS",
    "REDIS_ENV",
    "StatsRow",
    "driver_stats_definitions",
    "initial_stats_rows",
    "online_store_url",
    "register_champion",
    "write_definitions",
    "write_driver_stats",
    "write_rates",
]

MINUTE_MS = 60_000
#: The Redis server the Redis online store's tests use; they skip, saying so, without it.
REDIS_ENV = "KEEL_TEST_REDIS_URL"

#: (driver_id, event ms, created ms, conv_rate, trips): one row of the driver_stats source.
StatsRow = tuple[int, int, int, float, int]

_DRIVER_STATS = """\
from datetime import timedelta

import pandas as pd

from keel.features import (
    Entity, FeatureView, Field, FileSource, RequestSource, on_demand_feature_view,
)

driver = Entity("driver", join_keys=["driver_id"])
stats = FeatureView(
    "driver_stats",
    entities=[driver],
    source=FileSource("data/stats", format="parquet"),
    timestamp_field="event_ts",
CREATED_TIMESTAMP    features=[Field("conv_rate"), Field("trips", "int64")EXTRA_FEATURES],
    ttl=timedelta(hours=TTL_HOURS),
    description=DESCRIPTION,
)
trip = RequestSource("trip", schema=[Field("km")])


@on_demand_feature_view(sources=[stats, trip], schema=[Field("rate_per_km")])
def per_km(df):
    return pd.DataFrame({"rate_per_km": df["conv_rate"] / df["km"]})
"""

ETA_DEFINITIONS = """\
from datetime import timedelta

import pandas as pd

from keel.features import (
    Entity, FeatureView, Field, FileSource, RequestSource, on_demand_feature_view,
)

driver = Entity("driver", join_keys=["driver_id"], dtype="int64")
driver_stats = FeatureView(
    "driver_stats",
    entities=[driver],
    source=FileSource("stats", format="parquet"),
    timestamp_field="event_ts",
    features=[Field("conv_rate", "float64"), Field("acc_rate", "float64")],
    ttl=timedelta(days=2),
)
trip = RequestSource("trip", schema=[Field("fare", "float64"), Field("km", "float64")])


@on_demand_feature_view(sources=[driver_stats, trip], schema=[Field("fare_per_km", "float64")])
def fares(df):
    return pd.DataFrame({"fare_per_km": df["fare"] / df["km"] * (1 + df["conv_rate"])})
"""


def driver_stats_definitions(
    *,
    ttl_hours: int = 2,
    description: str = "",
    created_timestamp: bool = True,
    extra_features: str = "",
) -> str:
    """The text of a definitions file with the driver_stats view and its on-demand view.

    Args:
        ttl_hours: driver_stats's TTL.
        description: driver_stats's description.
        created_timestamp: whether the source has a ``created_ts`` column the view
            orders late corrections by.
        extra_features: Python text appended to the view's feature list, e.g.
            ``', Field("rating")'``.
    """
    created = '    created_timestamp_field="created_ts",\n' if created_timestamp else ""
    return (
        _DRIVER_STATS.replace("CREATED_TIMESTAMP", created)
        .replace("EXTRA_FEATURES", extra_features)
        .replace("TTL_HOURS", str(ttl_hours))
        .replace("DESCRIPTION", json.dumps(description))
    )


def write_definitions(folder: Path, text: str, name: str = "defs.py") -> Path:
    """Write ``text`` as the definitions file ``folder/name`` and return its path."""
    path = folder / name
    path.write_text(text)
    return path


def _stamps(ms: Sequence[int]) -> pa.Array:
    return pa.array(
        [datetime.fromtimestamp(m / 1000, UTC) for m in ms], pa.timestamp("ms", tz="UTC")
    )


def write_driver_stats(path: Path, rows: Sequence[StatsRow], **extra: list[Any]) -> None:
    """Write ``rows`` as the Parquet file ``path`` of driver_stats's source.

    Args:
        path: the file to write, in the source's folder.
        rows: (driver_id, event ms, created ms, conv_rate, trips) rows.
        **extra: further columns, by name, e.g. ``rating=[4.5]``.
    """
    columns = {
        "driver_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_ts": _stamps([r[1] for r in rows]),
        "created_ts": _stamps([r[2] for r in rows]),
        "conv_rate": pa.array([r[3] for r in rows], pa.float64()),
        "trips": pa.array([r[4] for r in rows], pa.int64()),
        **{k: pa.array(v) for k, v in extra.items()},
    }
    pq.write_table(pa.table(columns), path)


def initial_stats_rows(t: int) -> list[StatsRow]:
    """Four driver_stats rows before ``t`` (ms): drivers 1 and 2 within the 2 h TTL, driver 3 past it.

    Driver 1 has two rows (conv_rate 0.1, then 0.2 at t - 40 min); driver 2 has
    conv_rate 0.5 and 5 trips; each row's created time is its event time.
    """
    return [
        (1, t - 50 * MINUTE_MS, t - 50 * MINUTE_MS, 0.1, 1),
        (1, t - 40 * MINUTE_MS, t - 40 * MINUTE_MS, 0.2, 2),
        (2, t - 45 * MINUTE_MS, t - 45 * MINUTE_MS, 0.5, 5),
        (3, t - 180 * MINUTE_MS, t - 180 * MINUTE_MS, 0.9, 9),  # past the 2 h TTL
    ]


def write_rates(
    folder: Path,
    name: str,
    drivers: Sequence[int],
    event_ms: int,
    conv_rate: Sequence[float],
    acc_rate: Sequence[float],
) -> None:
    """Write ``folder/stats/<name>.parquet``, rows of ETA_DEFINITIONS's source, all at ``event_ms``."""
    table = pa.table(
        {
            "driver_id": pa.array(drivers, pa.int64()),
            "event_ts": pa.array([event_ms] * len(drivers), pa.int64()).cast(
                pa.timestamp("ms", "UTC")
            ),
            "conv_rate": pa.array(conv_rate, pa.float64()),
            "acc_rate": pa.array(acc_rate, pa.float64()),
        }
    )
    (folder / "stats").mkdir(exist_ok=True)
    pq.write_table(table, folder / "stats" / f"{name}.parquet")


def register_champion(model: Any, input_example: Any, name: str = "eta") -> int:
    """Log ``model`` in a new run, register it as ``name``, and point ``champion`` at it.

    Returns:
        The registered version.
    """
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=input_example)
    version = keel.register_model(info.uri, name)
    keel.Client().set_alias(name, "champion", version)
    return version


@contextmanager
def online_store_url(kind: str, sqlite_path: Path) -> Iterator[str]:
    """An online store URL: SQLite at ``sqlite_path``, or Redis under a key prefix of its own.

    Args:
        kind: ``sqlite`` or ``redis``. Redis needs ``KEEL_TEST_REDIS_URL``; without it
            the test skips, saying so. The prefix's keys are dropped on leaving.
        sqlite_path: the SQLite store's file.
    """
    if kind == "sqlite":
        yield f"sqlite:///{sqlite_path}"
        return
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set; the Redis online store needs a Redis server")
    prefix = f"t{uuid.uuid4().hex[:12]}"
    try:
        yield f"{url}{'&' if '?' in url else '?'}prefix={prefix}"
    finally:
        import redis

        server = redis.Redis.from_url(url)
        keys = list(server.scan_iter(match=f"keel:{prefix}:*", count=10_000))
        if keys:
            server.unlink(*keys)
        server.close()
