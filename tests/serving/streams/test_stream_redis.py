"""``keel stream`` on Redis Streams: a real server, real ``keel stream`` processes, real kills."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterable
from typing import Any

import httpx
import orjson
import pytest

from _support.network import free_port
from _support.streams import wait_for
from keel.predictions import read_predictions
from keel.serving.streams.redis import RedisSink, RedisSource

GROUP = "keel-cancer"  # the default group of models:/cancer@champion


def _fill(client: Any, stream: str, payloads: Iterable[bytes]) -> list[str]:
    """XADD every payload (in pipelines of 5,000); the entry ids, in order."""
    ids: list[str] = []
    pipe = client.pipeline(transaction=False)
    for n, payload in enumerate(payloads, 1):
        pipe.xadd(stream, {"data": payload})
        if n % 5000 == 0:
            ids.extend(i.decode() for i in pipe.execute())
    ids.extend(i.decode() for i in pipe.execute())
    return ids


def _entries(client: Any, stream: str) -> list[dict[str, Any]]:
    """Every entry's ``data`` JSON, oldest first."""
    out: list[dict[str, Any]] = []
    start = "-"
    while True:
        chunk = client.xrange(stream, min=start, count=10_000)
        out.extend(orjson.loads(fields[b"data"]) for _, fields in chunk)
        if len(chunk) < 10_000:
            return out
        start = "(" + chunk[-1][0].decode()


def _group(client: Any, stream: str) -> dict[str, Any]:
    """The consumer group's XINFO (empty until ``keel stream`` has created it)."""
    if not client.exists(stream):
        return {}
    groups = [g for g in client.xinfo_groups(stream) if g["name"] in (GROUP, GROUP.encode())]
    return groups[0] if groups else {}


def _last_json(output: str) -> dict[str, Any]:
    """The last JSON object ``keel stream --json`` printed."""
    return json.loads(output[output.rindex("\n{") + 1 :])


def _drained(client: Any, stream: str) -> bool:
    info = _group(client, stream)
    return bool(info) and info["pending"] == 0 and info["lag"] == 0


@pytest.mark.slow
def test_every_event_has_one_output_and_one_log_row_after_two_sigkills(
    registered, redis_client, redis_url, names, keel_stream
):
    rows = registered.features.to_dict(orient="records")
    total = 100_000
    events, out = f"{names}-events", f"{names}-out"
    ids = _fill(redis_client, events, (orjson.dumps(rows[n % len(rows)]) for n in range(total)))
    args = [
        "models:/cancer@champion",
        "--source",
        f"{redis_url}?stream={events}",
        "--sink",
        f"{redis_url}?stream={out}",
        "--consumer",
        "c1",
    ]
    pending_at_kill = []
    for threshold in (20_000, 55_000):
        proc = keel_stream(*args, settings=registered.settings)
        wait_for(
            lambda t=threshold: (
                redis_client.xlen(out) >= t and _group(redis_client, events)["pending"] > 0
            ),
            f"{threshold} outputs with events pending",
            180,
            proc,
        )
        proc.kill()  # mid-stream: outputs written, events unacknowledged
        pending_at_kill.append(_group(redis_client, events)["pending"])
    assert redis_client.xlen(out) < total and all(pending_at_kill)
    proc = keel_stream(*args, "--json", settings=registered.settings)
    wait_for(lambda: _drained(redis_client, events), "every event acknowledged", 300, proc)
    assert proc.stop() == 0, proc.output()
    # The last consumer took back what the killed one (of the same name) left pending.
    stopped = _last_json(proc.output())
    assert stopped["event"] == "stopped" and stopped["redelivered"] >= pending_at_kill[-1]

    outputs = _entries(redis_client, out)
    request_ids = [o["request_id"] for o in outputs]
    assert collections.Counter(request_ids).most_common(1)[0][1] == 1  # no event twice
    assert set(request_ids) == {f"{events}:{i}" for i in ids}  # and none missing
    expected = registered.models[1].predict(registered.features).tolist()
    position = {f"{events}:{i}": n for n, i in enumerate(ids)}
    assert all(o["prediction"] == expected[position[o["request_id"]] % len(rows)] for o in outputs)

    logged = read_predictions(registered.settings.artifacts_url, "cancer", columns=["request_id"])
    log_ids = logged["request_id"].to_pylist()
    assert len(log_ids) == total and set(log_ids) == set(request_ids)


@pytest.mark.slow
def test_poison_events_go_to_the_dead_letter_stream_and_metrics_show_the_lag(
    registered, redis_client, redis_url, names, keel_stream
):
    rows = registered.features.to_dict(orient="records")
    payloads = [orjson.dumps(rows[n % len(rows)]) for n in range(1000)]
    payloads[10] = b"{oops"
    payloads[500] = orjson.dumps({**rows[500 % len(rows)], "worst area": "huge"})
    events, out = f"{names}-events", f"{names}-out"
    ids = _fill(redis_client, events, payloads)
    port = free_port()
    proc = keel_stream(
        "models:/cancer@champion",
        "--source",
        f"{redis_url}?stream={events}",
        "--sink",
        f"{redis_url}?stream={out}",
        "--metrics-port",
        str(port),
        "--batch",
        "100",
        settings=registered.settings,
    )
    wait_for(lambda: _drained(redis_client, events), "drained", 120, proc)

    def metrics() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics").text
        except httpx.HTTPError:
            return ""

    text = wait_for(
        lambda: (m := metrics()) and 'keel_stream_lag{deployment="cancer"} 0.0' in m and m,
        "the lag at 0 in /metrics",
        30,
        proc,
    )
    assert 'keel_stream_events_total{deployment="cancer",outcome="answered"} 998.0' in text
    assert 'keel_stream_events_total{deployment="cancer",outcome="dead_lettered"} 2.0' in text
    assert proc.stop() == 0
    assert "Stopped: 998 events answered, 2 dead-lettered" in proc.output()

    dead = _entries(redis_client, f"{events}:dead-letter")  # the default dead-letter stream
    assert [d["request_id"] for d in dead] == [f"{events}:{ids[10]}", f"{events}:{ids[500]}"]
    assert dead[0]["payload"] == "{oops" and "not valid JSON" in dead[0]["error"]
    assert "'worst area'" in dead[1]["error"]
    assert len(_entries(redis_client, out)) == 998


def test_a_redis_sink_replaces_the_output_of_an_event_written_again(redis_client, redis_url, names):
    sink = RedisSink(f"{redis_url}?stream={names}-out&window=60")
    try:
        sink.write([("events:1-0", b'{"prediction": 0}'), ("events:2-0", b'{"prediction": 1}')])
        sink.write([("events:1-0", b'{"prediction": 1}')])
    finally:
        sink.close()
    entries = redis_client.xrange(f"{names}-out")
    assert [(f[b"request_id"], f[b"data"]) for _, f in entries] == [
        (b"events:2-0", b'{"prediction": 1}'),
        (b"events:1-0", b'{"prediction": 1}'),
    ]
    assert 0 < redis_client.ttl(f"keel:stream-output:{names}-out:events:1-0") <= 60


def test_a_restarted_consumer_takes_back_its_pending_events_and_others_claim_idle_ones(
    redis_client, redis_url, names
):
    ids = _fill(redis_client, f"{names}-events", [b"{}"] * 5)
    url = f"{redis_url}?stream={names}-events&claim_idle=0.001"
    first = RedisSource(url, group="g", consumer="a")
    assert [e.id for e in first.read(10, 0.1)] == ids
    first.close()  # "killed" before acknowledging

    again = RedisSource(url, group="g", consumer="a")
    taken = again.read(10, 0.1)
    assert [(e.id, e.redelivered) for e in taken] == [(i, True) for i in ids]
    assert taken[0].enqueued_ms == int(ids[0].split("-")[0])
    again.close()

    time.sleep(0.01)  # idle longer than claim_idle
    other = RedisSource(url, group="g", consumer="b")
    claimed = other.read(10, 0.1)
    assert [(e.id, e.redelivered) for e in claimed] == [(i, True) for i in ids]
    other.ack(claimed)
    assert other.lag() == 0
    assert other.read(10, 0.05) == []
    other.close()
