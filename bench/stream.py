"""Streaming inference throughput: ``keel stream`` on Redis Streams vs batched predict in memory.

What is measured
----------------
A ``HistGradientBoostingClassifier`` (scikit-learn defaults, 100 trees) is
fitted on breast_cancer's 569 rows x 30 features, stored with
``keel.log_model`` and registered in a fresh Keel home. ``--events`` events
(default 100,000) are the data set's rows over and over, each one JSON
object of the 30 inputs, as producers write them.

The version is compiled with ``--runtime`` (default ``onnx``; parity must
pass) and every side predicts with that form, as ``keel stream`` serves a
version whose compilation passed; ``--runtime native`` measures scikit-learn.

* **ceiling**: the loaded model's ``predict`` on the same rows already in
  memory as one NumPy array, in slices of ``--batch`` rows: no JSON, no
  broker, no log. Streaming cannot beat it.
* **memory**: Keel's stream consumer (the loop ``keel stream`` runs) on the
  in-process source and sink: parsing each event, routing, the signature
  check, one ``predict`` per batch, outputs as JSON and prediction-log rows
  flushed to Parquet before each acknowledgement. What the loop costs without
  a broker.
* **redis**: the same consumer on Redis Streams (``--redis``, default
  ``redis://127.0.0.1:6379/0``): a consumer group read with ``XREADGROUP``,
  outputs written with the replace-on-redelivery script, acknowledgements
  with ``XACK`` after each log flush. The stream is filled before the clock
  starts; the clock stops when every event is acknowledged.

Each side runs ``--repeat`` times (default 3), alternating, after one untimed
warm-up of the model; the median and the best events/s are printed with the
ratio to the ceiling, and whether Redis reached ``--target`` events/s
(default 20,000). Every output is checked against the ceiling's prediction
and the benchmark exits 1 if one differs or an event has no output or two.
``OMP_NUM_THREADS`` is 1 unless set (``keel stream`` runs its models so),
leaving the other core to Redis. Figures depend on the machine and on what
else runs on it; the CPU count is printed.

Usage::

    python bench/stream.py                # from the dev venv: .venv/bin/python bench/stream.py
    python bench/stream.py --events 200000 --batch 1000 --repeat 5 --json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before NumPy or scikit-learn load OpenMP

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def setup(folder: Path, events: int, runtime: str) -> tuple[Any, Any, list[bytes], Any]:
    """A registered model, its events as JSON, the rows as a matrix, and Keel's settings.

    For a compiled ``runtime`` the version is compiled first (parity must pass), and the
    ceiling predicts with that compiled form too: the same model the consumer serves.
    """
    import numpy as np
    import orjson
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    import keel

    settings = keel.init(home=folder / ".keel")
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = HistGradientBoostingClassifier(random_state=0).fit(x, y)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=x.head(3))
    keel.register_model(info.uri, "bench-cancer")
    if runtime != "native":
        from keel.models.compile import compile_version

        compile_version("bench-cancer", 1, to=runtime, data=x)
    records = x.to_dict(orient="records")
    payloads = [orjson.dumps(records[n % len(records)]) for n in range(events)]
    matrix = np.take(x.to_numpy(), np.arange(events) % len(records), axis=0)
    model = keel.load_model("models:/bench-cancer/1", runtime=runtime)
    return settings, model, payloads, matrix


def ceiling(model: Any, matrix: Any, batch: int) -> tuple[float, Any]:
    import numpy as np

    started = time.perf_counter()
    parts = [model.predict(matrix[at : at + batch]) for at in range(0, len(matrix), batch)]
    seconds = time.perf_counter() - started
    return len(matrix) / seconds, np.concatenate(parts)


def consume(
    settings: Any, source: Any, sink: Any, dead: Any, events: int, batch: int, runtime: str
) -> float:
    """Run Keel's consumer until ``events`` are acknowledged; events/s."""
    from keel.predictions import PredictionLogger, PredictionReader
    from keel.serving.server import runtime_for_target
    from keel.serving.streams import StreamConsumer

    served = runtime_for_target("models:/bench-cancer/1", runtime=runtime)
    served.table  # noqa: B018 - loaded (and warmed up) before the clock
    logger = PredictionLogger(settings.artifacts_url, flush_interval=60)
    consumer = StreamConsumer(
        served,
        source,
        sink,
        dead,
        logger=logger,
        reader=PredictionReader(settings.artifacts_url),
        batch_size=batch,
    )
    try:
        started = time.perf_counter()
        while consumer.stats.read < events:
            consumer.step()
        consumer.commit()
        seconds = time.perf_counter() - started
    finally:
        logger.close()
    if consumer.stats.answered != events or consumer.stats.dead_lettered:
        raise SystemExit(f"the consumer answered {consumer.stats.answered} of {events} events")
    return events / seconds


def check(outputs: list[bytes], expected: Any, order: dict[str, int]) -> None:
    import orjson

    seen: set[str] = set()
    for raw in outputs:
        doc = orjson.loads(raw)
        rid = doc["request_id"]
        if rid in seen:
            raise SystemExit(f"event {rid} has two outputs")
        seen.add(rid)
        if doc["prediction"] != expected[order[rid]]:
            raise SystemExit(f"event {rid}: {doc['prediction']} != {expected[order[rid]]}")
    if len(seen) != len(order):
        raise SystemExit(f"{len(order) - len(seen)} events have no output")


def memory_run(
    settings: Any, payloads: list[bytes], expected: Any, batch: int, runtime: str
) -> float:
    from keel.serving.streams import MemorySink, MemorySource

    source, sink = MemorySource(payloads, f"m{uuid.uuid4().hex[:8]}"), MemorySink()
    rate = consume(settings, source, sink, MemorySink(), len(payloads), batch, runtime)
    check(
        list(sink.outputs.values()),
        expected,
        {f"{source.name}:{n}": n for n in range(len(payloads))},
    )
    return rate


def redis_run(
    settings: Any, url: str, payloads: list[bytes], expected: Any, batch: int, runtime: str
) -> float:
    import redis

    from keel.serving.streams.redis import RedisSink, RedisSource

    client = redis.Redis.from_url(url)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    events, out = f"{name}-events", f"{name}-out"
    try:
        ids: list[str] = []
        pipe = client.pipeline(transaction=False)
        for n, payload in enumerate(payloads, 1):
            pipe.xadd(events, {"data": payload})
            if n % 10_000 == 0:
                ids.extend(i.decode() for i in pipe.execute())
        ids.extend(i.decode() for i in pipe.execute())
        source = RedisSource(f"{url}?stream={events}", group="bench", consumer="c1")
        sink = RedisSink(f"{url}?stream={out}")
        dead = RedisSink(f"{url}?stream={out}-dead", "--dead-letter")
        try:
            rate = consume(settings, source, sink, dead, len(payloads), batch, runtime)
        finally:
            for end in (source, sink, dead):
                end.close()
        outputs = [fields[b"data"] for _, fields in client.xrange(out)]
        check(outputs, expected, {f"{events}:{i}": n for n, i in enumerate(ids)})
        return rate
    finally:
        keys = [
            events,
            out,
            f"{out}-dead",
            *client.scan_iter(f"keel:stream-output:{out}:*", 10_000),
        ]
        for at in range(0, len(keys), 10_000):
            client.delete(*keys[at : at + 10_000])
        client.close()


def summary(rates: list[float]) -> dict[str, float]:
    return {"median": statistics.median(rates), "best": max(rates)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per run")
    parser.add_argument("--batch", type=int, default=500, help="events per micro-batch")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis server URL")
    parser.add_argument("--target", type=float, default=20_000, help="events/s Redis should reach")
    parser.add_argument(
        "--runtime",
        default="onnx",
        choices=["native", "onnx", "treelite"],
        help="compile the version to this first and serve it so, as `keel stream` does by "
        "default once a compilation passed (native: the scikit-learn model)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="keel-bench-stream-") as tmp:
        progress(f"fitting and registering the model; {args.events:,} events")
        settings, model, payloads, matrix = setup(Path(tmp), args.events, args.runtime)
        model.predict(matrix[: args.batch])  # warm-up
        rates: dict[str, list[float]] = {"ceiling": [], "memory": [], "redis": []}
        expected: Any = None
        for n in range(args.repeat):
            progress(f"run {n + 1}/{args.repeat}")
            rate, expected = ceiling(model, matrix, args.batch)
            rates["ceiling"].append(rate)
            rows = expected.tolist()
            rates["memory"].append(memory_run(settings, payloads, rows, args.batch, args.runtime))
            rates["redis"].append(
                redis_run(settings, args.redis, payloads, rows, args.batch, args.runtime)
            )

    figures = {side: summary(values) for side, values in rates.items()}
    top = figures["ceiling"]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "events": args.events,
        "batch": args.batch,
        "runtime": args.runtime,
        "events_per_second": figures,
        "ratio_to_ceiling": {
            side: {k: figures[side][k] / top[k] for k in ("median", "best")}
            for side in ("memory", "redis")
        },
        "target": args.target,
        "redis_reaches_target": figures["redis"]["median"] >= args.target,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.events:,} events, batches of {args.batch}, {args.runtime} runtime, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':10} {'median ev/s':>12} {'best ev/s':>12} {'x ceiling':>10}")
    for side in ("ceiling", "memory", "redis"):
        f = figures[side]
        share = "" if side == "ceiling" else f"{f['median'] / top['median']:.2f}"
        print(f"{side:10} {f['median']:>12,.0f} {f['best']:>12,.0f} {share:>10}")
    verdict = "reaches" if result["redis_reaches_target"] else "misses"
    print(f"redis {verdict} the target of {args.target:,.0f} events/s (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
