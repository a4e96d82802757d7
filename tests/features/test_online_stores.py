"""The online stores on real SQLite and real Redis: conditional writes, TTL, keys, values."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from _support.network import free_port
from keel.errors import BackendUnavailable, InvalidInput
from keel.features.online import OnlineStore, entity_key, open_online_store

REDIS_ENV = "KEEL_TEST_REDIS_URL"
HOUR_MS = 3_600_000


def redis_url_or_skip() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set; the Redis online store needs a Redis server")
    return url


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def drop_prefix(url: str, prefix: str) -> None:
    """Delete this test's keys only (other tests share the database: never FLUSHDB)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"keel:{prefix}:*", count=10_000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    """An empty online store of each backend (Redis: under a prefix of this test's own)."""
    if request.param == "sqlite":
        opened = open_online_store(f"sqlite:///{tmp_path / 'not-yet' / 'online.db'}")
        yield opened
        opened.close()
        return
    url = redis_url_or_skip()
    prefix = f"t{uuid.uuid4().hex[:12]}"
    opened = open_online_store(with_prefix(url, prefix))
    yield opened
    opened.close()
    drop_prefix(url, prefix)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def write(
    store: OnlineStore,
    view: str,
    keys: dict[str, list],
    event: list[int],
    values: dict[str, pa.Array | list],
    *,
    created: list[int] | None = None,
    ttl: int | None = None,
) -> int:
    return store.write(
        view,
        pa.table(keys),
        np.array(event, dtype=np.int64),
        np.array(created or [0] * len(event), dtype=np.int64),
        pa.table(values),
        ttl,
    )


def test_round_trip_keeps_every_type_and_null_and_reads_only_requested_features(store):
    t = now_ms()
    stamp = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
    values = {
        "rate": pa.array([0.25, None, float("inf")]),
        "trips": pa.array([3, -7, None], pa.int64()),
        "city": pa.array(["Zürich", None, ""]),
        "vip": pa.array([True, False, None]),
        "seen": pa.array([stamp, None, stamp], pa.timestamp("us", tz="UTC")),
    }
    assert write(store, "drivers", {"driver_id": [1, 2, 3]}, [t, t - 5, t - 9], values) == 3

    got = store.read(
        "drivers", [(3,), (1,), (99,), (2,)], ["trips", "city", "seen", "vip", "rate"], None, t
    )

    assert got == [
        (t - 9, {"trips": None, "city": "", "seen": stamp, "vip": None, "rate": float("inf")}),
        (t, {"trips": 3, "city": "Zürich", "seen": stamp, "vip": True, "rate": 0.25}),
        None,
        (t - 5, {"trips": -7, "city": None, "seen": None, "vip": False, "rate": None}),
    ]
    assert store.read("drivers", [], ["rate"], None, t) == []
    only = store.read("drivers", [(1,)], ["rate"], None, t)
    assert only == [(t, {"rate": 0.25})]
    # a feature the stored row lacks (added to the view since) reads as None
    assert store.read("drivers", [(1,)], ["rate", "added_later"], None, t) == [
        (t, {"rate": 0.25, "added_later": None})
    ]


def test_an_older_event_never_overwrites_and_a_later_created_one_at_the_same_event_does(store):
    t = now_ms()
    assert write(store, "v", {"k": [1, 2]}, [t, t], {"x": [1.0, 2.0]}, created=[t, t]) == 2

    # older event time: kept out, even with a later created time
    assert write(store, "v", {"k": [1]}, [t - 1], {"x": [9.0]}, created=[t + 999]) == 0
    # same event, earlier created: kept out
    assert write(store, "v", {"k": [2]}, [t], {"x": [8.0]}, created=[t - 1]) == 0
    assert store.read("v", [(1,), (2,)], ["x"], None, t) == [(t, {"x": 1.0}), (t, {"x": 2.0})]

    # same event, later created: a late correction lands; a newer event lands
    assert write(store, "v", {"k": [1, 2]}, [t, t + 10], {"x": [1.5, 2.5]}, created=[t + 1, 0]) == 2
    assert store.read("v", [(1,), (2,)], ["x"], None, t + 10) == [
        (t, {"x": 1.5}),
        (t + 10, {"x": 2.5}),
    ]
    # writing the same row again is a no-op in effect (ties go to the written row)
    assert write(store, "v", {"k": [2]}, [t + 10], {"x": [2.5]}) == 1
    assert store.read("v", [(2,)], ["x"], None, t + 10) == [(t + 10, {"x": 2.5})]


def test_an_expired_value_reads_as_missing_while_a_fresh_one_reads(store):
    t = now_ms()
    ttl = 3600
    written = write(
        store,
        "ttl_view",
        {"k": [1, 2, 3]},
        [t - 2 * HOUR_MS, t - 60_000, t - HOUR_MS + 60_000],
        {"x": [1.0, 2.0, 3.0]},
        ttl=ttl,
    )
    assert written == 3

    got = store.read("ttl_view", [(1,), (2,), (3,)], ["x"], ttl, t)

    assert got[0] is None
    assert got[1] == (t - 60_000, {"x": 2.0})
    # the boundary, as the offline join draws it: exactly ttl old is valid, 1 ms more is
    # not; the read decides by the caller's clock even where Redis has not dropped the key
    at_boundary = t + 60_000
    assert store.read("ttl_view", [(3,)], ["x"], ttl, at_boundary) == [
        (t - HOUR_MS + 60_000, {"x": 3.0})
    ]
    assert store.read("ttl_view", [(3,)], ["x"], ttl, at_boundary + 1) == [None]
    # without a TTL at read time the stored rows are there (SQLite keeps them until purged)
    if store.url.startswith("sqlite"):
        assert store.read("ttl_view", [(1,)], ["x"], None, t) == [(t - 2 * HOUR_MS, {"x": 1.0})]
        assert store.purge_expired("ttl_view", ttl, t) == 1
        assert store.read("ttl_view", [(1,)], ["x"], None, t) == [None]


def test_redis_expires_keys_itself_at_event_time_plus_ttl():
    url = redis_url_or_skip()
    import redis

    prefix = f"t{uuid.uuid4().hex[:12]}"
    store = open_online_store(with_prefix(url, prefix))
    raw = redis.Redis.from_url(url)
    try:
        t = now_ms()
        write(store, "exp", {"k": [1, 2]}, [t - 2 * HOUR_MS, t], {"x": [1.0, 2.0]}, ttl=3600)
        assert raw.exists(f"keel:{prefix}:exp:1") == 0  # already past its time: never kept
        assert raw.pexpiretime(f"keel:{prefix}:exp:2") == t + HOUR_MS
        write(store, "forever", {"k": [1]}, [t], {"x": [1.0]})
        assert raw.pttl(f"keel:{prefix}:forever:1") == -1
    finally:
        store.close()
        raw.close()
        drop_prefix(url, prefix)


def test_views_keyed_by_several_keys_and_by_strings(store):
    t = now_ms()
    keys = {"city": ["paris", "paris", "oslo"], "driver_id": [1, 2, 1]}
    assert write(store, "pairs", keys, [t, t, t], {"x": [1.0, 2.0, 3.0]}) == 3
    by_name = {"name": ["ada", "bo"]}
    assert write(store, "names", by_name, [t, t], {"x": [4.0, 5.0]}) == 2

    got = store.read("pairs", [("oslo", 1), ("paris", 2), ("oslo", 2)], ["x"], None, t)
    assert [r and r[1]["x"] for r in got] == [3.0, 2.0, None]
    assert [r and r[1]["x"] for r in store.read("names", [("bo",), ("cy",)], ["x"], None, t)] == [
        5.0,
        None,
    ]
    # an int key sent as JSON text, or as NumPy's or pandas' types, is the same entity
    same = [("1",), (np.int64(1),), (1.0,)]
    assert [r and r[1]["x"] for r in store.read("drivers", same, ["x"], None, t)] == [None] * 3
    write(store, "drivers", {"driver_id": [1]}, [t], {"x": [6.0]})
    assert [r and r[1]["x"] for r in store.read("drivers", same, ["x"], None, t)] == [6.0] * 3


def test_keys_are_encoded_one_way_for_writes_and_reads():
    assert entity_key((7,)) == "7" == entity_key(("7",)) == entity_key((np.int32(7),))
    assert entity_key(("paris", -2)) == "paris\x1f-2"
    with pytest.raises(InvalidInput, match=r"a join key is an integer or a string, got None"):
        entity_key((None,))
    with pytest.raises(InvalidInput, match=r"got 1.5"):
        entity_key((1.5,))


def test_bad_keys_and_values_are_refused_before_anything_is_written(store):
    t = now_ms()
    with pytest.raises(InvalidInput, match=r"join key column 'k' has 1 null value"):
        write(store, "v", {"k": [1, None]}, [t, t], {"x": [1.0, 2.0]})
    with pytest.raises(InvalidInput, match=r"join key column 'k' has type double"):
        write(store, "v", {"k": [1.5]}, [t], {"x": [1.0]})
    with pytest.raises(InvalidInput, match=r"separates the keys"):
        write(store, "v", {"a": ["x\x1fy"], "b": [1]}, [t], {"x": [1.0]})
    with pytest.raises(InvalidInput, match=r"feature 'x' has type list<item: int64>"):
        write(store, "v", {"k": [1]}, [t], {"x": pa.array([[1, 2]])})
    assert store.read("v", [(1,)], ["x"], None, t) == [None]


def test_delete_view_drops_only_that_view(store):
    t = now_ms()
    write(store, "a", {"k": [1, 2]}, [t, t], {"x": [1.0, 2.0]})
    write(store, "b", {"k": [1]}, [t], {"x": [3.0]})

    assert store.delete_view("a") == 2

    assert store.read("a", [(1,), (2,)], ["x"], None, t) == [None, None]
    assert store.read("b", [(1,)], ["x"], None, t) == [(t, {"x": 3.0})]


def test_large_writes_and_reads_span_batches(store):
    t = now_ms()
    n = 25_000  # more than one Redis pipeline and one SQLite read chunk
    keys = np.arange(n, dtype=np.int64)
    written = write(
        store,
        "big",
        {"k": keys},
        [t] * n,
        {"x": keys.astype(np.float64), "s": [str(i) for i in range(n)]},
    )
    assert written == n
    asked = [(int(i),) for i in range(0, n + 500, 7)]
    got = store.read("big", asked, ["x", "s"], None, t)
    assert got == [(t, {"x": float(k), "s": str(k)}) if k < n else None for (k,) in asked]


def test_sqlite_store_serves_reads_from_several_threads(tmp_path):
    store = open_online_store(f"sqlite:///{tmp_path / 'online.db'}")
    t = now_ms()
    write(store, "v", {"k": list(range(100))}, [t] * 100, {"x": [float(i) for i in range(100)]})
    errors: list[BaseException] = []

    def reader(offset: int) -> None:
        try:
            for i in range(50):
                k = (offset + i) % 100
                assert store.read("v", [(k,)], ["x"], None, t) == [(t, {"x": float(k)})]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i * 10,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    assert errors == []


def test_two_prefixes_sharing_a_redis_database_do_not_collide():
    url = redis_url_or_skip()
    one, two = f"t{uuid.uuid4().hex[:12]}", f"t{uuid.uuid4().hex[:12]}"
    first, second = (
        open_online_store(with_prefix(url, one)),
        open_online_store(with_prefix(url, two)),
    )
    try:
        t = now_ms()
        write(first, "v", {"k": [1]}, [t], {"x": [1.0]})
        write(second, "v", {"k": [1]}, [t], {"x": [2.0]})
        assert first.read("v", [(1,)], ["x"], None, t) == [(t, {"x": 1.0})]
        assert second.read("v", [(1,)], ["x"], None, t) == [(t, {"x": 2.0})]
        assert first.url.endswith(f"?prefix={one}")
    finally:
        first.close()
        second.close()
        drop_prefix(url, one)
        drop_prefix(url, two)


def test_an_unreachable_redis_is_reported_as_unavailable():
    store = open_online_store(f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=1")
    with pytest.raises(BackendUnavailable, match=r"cannot be reached while reading view 'v'"):
        store.read("v", [(1,)], ["x"], None, now_ms())
    with pytest.raises(BackendUnavailable, match=r"while writing view 'v'.*check that Redis runs"):
        write(store, "v", {"k": [1]}, [now_ms()], {"x": [1.0]})


def test_store_urls_pick_the_backend_and_refuse_others(tmp_path):
    sqlite = open_online_store(f"sqlite:///{tmp_path / 'o.db'}")
    assert type(sqlite).__name__ == "SqliteOnlineStore"
    redis_store = open_online_store("redis://:secret@127.0.0.1:6379/0?prefix=x")
    assert type(redis_store).__name__ == "RedisOnlineStore"
    assert "secret" not in redis_store.url
    with pytest.raises(InvalidInput, match=r"must be sqlite:///path/online.db or redis://"):
        open_online_store("postgresql://u:pw@db/features")
    with pytest.raises(InvalidInput, match=r"got 'postgresql://u:\*\*\*@db/features'"):
        open_online_store("postgresql://u:pw@db/features")
    with pytest.raises(InvalidInput, match=r"got 'memcached://:\*\*\*@cache:11211'"):
        open_online_store("memcached://:secret@cache:11211")  # a password without a user
    with pytest.raises(InvalidInput, match=r"needs a file"):
        open_online_store("sqlite:///:memory:")
    with pytest.raises(InvalidInput, match=r"online store prefix must be"):
        open_online_store("redis://127.0.0.1:6379/0?prefix=a:b")


def test_a_missing_client_library_names_the_extra_that_installs_it(tmp_path, monkeypatch):
    import sys

    # None in sys.modules makes `import redis` fail as if it were not installed
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(
        InvalidInput,
        match=r"the Redis online store needs redis, which is not installed: "
        r"pip install 'keel\[features\]'",
    ):
        open_online_store("redis://127.0.0.1:6379/0")
    monkeypatch.setitem(sys.modules, "msgpack", None)
    with pytest.raises(InvalidInput, match=r"SQLite online store needs msgpack"):
        open_online_store(f"sqlite:///{tmp_path / 'o.db'}")
