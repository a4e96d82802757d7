"""Prediction logs: every logged row lands exactly once, whole files only, through kills and outages."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from keel.errors import InvalidInput, StorageError
from keel.predictions import (
    FEEDBACK_SCHEMA,
    PredictionLogger,
    PredictionReader,
    read_predictions,
)

HOUR = 3_600_000
T0 = int(dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC).timestamp() * 1000)  # an hour boundary
PART_NAME = re.compile(r"^part-\d+-\d+-[0-9a-f]{8}\.parquet$")


def columns_for(
    request_id: str, when_ms: int, n: int, *, version: int = 1, route: str = "primary"
) -> dict[str, Any]:
    """The columns the server logs for one request of ``n`` rows."""
    return {
        "request_id": [request_id] * n,
        "time": [when_ms] * n,
        "model": ["churn"] * n,
        "version": [version] * n,
        "route": [route] * n,
        "latency_ms": [0.5] * n,
        "row": list(range(n)),
        "input.age": np.arange(n, dtype=np.float64) + 30,
        "output.prediction": np.array(["stay"] * n),
    }


def storage(url: str, endpoint: str | None) -> tuple[Any, str]:
    """An fsspec filesystem and base path for the root, to look at what was written."""
    if url.startswith("s3://"):
        fs = fsspec.filesystem(
            "s3",
            client_kwargs={"endpoint_url": endpoint},
            skip_instance_cache=True,
            use_listings_cache=False,
        )
        return fs, url.removeprefix("s3://")
    return fsspec.filesystem("file"), url


def prediction_files(url: str, endpoint: str | None) -> list[str]:
    fs, base = storage(url, endpoint)
    try:
        return sorted(fs.find(f"{base}/predictions"))
    except FileNotFoundError:
        return []


def keys_of(table: pa.Table) -> Counter[tuple[str, int]]:
    ids, rows = table.column("request_id").to_pylist(), table.column("row").to_pylist()
    return Counter(zip(ids, rows, strict=True))


def hour_label(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).strftime("%Y-%m-%dT%H")


# -- many threads, partitions, schema ------------------------------------------------------------


def test_rows_from_eight_threads_come_back_exactly_once_in_their_hour_partitions(
    artifacts_url: str, s3_endpoint: str | None, tmp_path: Path
):
    logger = PredictionLogger(
        artifacts_url, s3_endpoint_url=s3_endpoint, spill_dir=tmp_path / "spill", flush_interval=0.2
    )
    expected: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    def worker(thread: int) -> None:
        mine: Counter[tuple[str, int]] = Counter()
        for i in range(2000):
            rid = f"t{thread}-{i}"
            n = 3 if i % 5 == 0 else 1  # some multi-row requests
            when = T0 + (thread * 2000 + i) * 677 % (3 * HOUR)  # three hours
            cols = columns_for(rid, when, n, version=1 + thread % 2)
            if thread % 2:  # version 2: a 2-D output and an extra input
                cols["output.proba"] = np.full((n, 2), 0.5)
                cols["input.plan"] = ["pro"] * n
            else:  # version 1: the same output as a list per row
                cols["output.proba"] = [[0.1, 0.9]] * n
            logger.log("churn", cols, n)
            mine.update((rid, r) for r in range(n))
        with lock:
            expected.update(mine)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logger.close()

    stats = logger.stats()
    total = sum(expected.values())
    assert stats["rows_logged"] == stats["rows_written"] == total
    assert stats["queue_rows"] == stats["pending_rows"] == stats["rows_spilled"] == 0

    table = read_predictions(artifacts_url, "churn", s3_endpoint_url=s3_endpoint)
    assert keys_of(table) == expected  # every row, exactly once
    assert PredictionReader(artifacts_url, s3_endpoint_url=s3_endpoint).count("churn") == total
    schema = table.schema
    assert schema.names[:7] == [
        "request_id",
        "time",
        "model",
        "version",
        "route",
        "latency_ms",
        "row",
    ]
    assert schema.field("time").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("version").type == pa.int64()
    assert schema.field("latency_ms").type == pa.float64()
    assert schema.field("input.age").type == pa.float64()
    assert schema.field("output.prediction").type == pa.string()
    assert pa.types.is_list(schema.field("output.proba").type)
    assert schema.field("output.proba").type.value_type == pa.float64()
    assert schema.field("input.plan").type == pa.string()
    plans = table.filter(pa.compute.equal(table.column("version"), 1)).column("input.plan")
    assert plans.null_count == len(plans)  # version 1 never had it: null after unification
    assert table.column("time").to_pylist() == sorted(table.column("time").to_pylist())

    # Hive layout: hour folders hold exactly the rows of that UTC hour, and pyarrow reads it.
    fs, base = storage(artifacts_url, s3_endpoint)
    files = prediction_files(artifacts_url, s3_endpoint)
    assert {f.split("/hour=")[1].split("/")[0] for f in files} == {
        hour_label(T0 + h * HOUR) for h in range(3)
    }
    for path in files:
        assert PART_NAME.match(path.rsplit("/", 1)[1]), path
        times = pq.read_table(fs.open(path), columns=["time"]).column("time").cast(pa.int64())
        assert {hour_label(ms) for ms in times.to_pylist()} == {path.split("hour=")[1][:13]}
    hive = ds.dataset(f"{base}/predictions", filesystem=fs, format="parquet", partitioning="hive")
    rows = hive.to_table(columns=["request_id", "deployment", "hour"])
    assert rows.num_rows == total
    assert set(rows.column("deployment").to_pylist()) == {"churn"}


def test_rows_appear_within_a_few_flush_intervals_without_close(
    artifacts_url: str, s3_endpoint: str | None, tmp_path: Path
):
    logger = PredictionLogger(
        artifacts_url, s3_endpoint_url=s3_endpoint, spill_dir=tmp_path / "spill", flush_interval=0.2
    )
    try:
        for i in range(50):
            logger.log("churn", columns_for(f"r{i}", T0 + i, 2), 2)
        deadline = time.monotonic() + 20
        while PredictionReader(artifacts_url, s3_endpoint_url=s3_endpoint).count("churn") < 100:
            assert time.monotonic() < deadline, f"nothing flushed in 20 s: {logger.stats()}"
            time.sleep(0.05)
        assert PredictionReader(artifacts_url, s3_endpoint_url=s3_endpoint).count("churn") == 100
        assert logger.stats()["queue_rows"] == 0
    finally:
        logger.close()


def test_close_writes_everything_still_queued_and_is_idempotent(tmp_path: Path):
    root = str(tmp_path / "artifacts")
    logger = PredictionLogger(root, spill_dir=tmp_path / "spill", flush_interval=3600)
    for i in range(300):
        logger.log("churn", columns_for(f"r{i}", T0 + i, 1 + i % 2), 1 + i % 2)
    assert (
        PredictionReader(root).count("churn") == 0
    )  # an hour-long interval: all of it is still queued
    assert logger.stats()["queue_rows"] == 450
    logger.close()
    logger.close()
    assert PredictionReader(root).count("churn") == 450
    assert logger.stats()["queue_rows"] == 0
    assert not list((tmp_path / "spill").iterdir())  # its spill folder is gone


def test_flush_writes_now_and_returns_the_rows_written(tmp_path: Path):
    root = str(tmp_path / "artifacts")
    with PredictionLogger(root, spill_dir=tmp_path / "spill", flush_interval=3600) as logger:
        logger.log("churn", columns_for("a", T0, 3), 3)
        logger.log("fraud", columns_for("b", T0 + 2 * HOUR, 2), 2)
        assert logger.flush() == 5
        assert logger.flush() == 0
        assert PredictionReader(root).count("churn") == 3
        assert PredictionReader(root).count("fraud") == 2
        assert logger.stats()["files_written"] == 2


# -- signals and kills -------------------------------------------------------------------------

CHILD_PRELUDE = """
import os, signal, sys, time
import numpy as np
from keel.predictions import PredictionLogger

def cols(rid, n, when):
    return {"request_id": [rid] * n, "time": [when] * n, "model": ["m"] * n,
            "version": [1] * n, "route": ["primary"] * n, "latency_ms": [1.0] * n,
            "row": list(range(n)), "input.x": np.random.rand(n), "input.s": ["abc" * 10] * n,
            "output.y": np.random.rand(n)}
"""

# Logs until SIGTERM; the handler is the server's shutdown path: close(), then exit.
LOG_UNTIL_SIGTERM = (
    CHILD_PRELUDE
    + """
logger = PredictionLogger(sys.argv[1], spill_dir=sys.argv[2], flush_interval=0.3)
def stop(signum, frame):
    logger.close()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
i = 0
while True:
    logger.log("term", cols(f"r{i}", 1 + i % 3, int(time.time() * 1000)), 1 + i % 3)
    i += 1
    print(i, flush=True)
"""
)

# Writes big files as fast as it can, until killed.
LOG_UNTIL_KILLED = (
    CHILD_PRELUDE
    + """
logger = PredictionLogger(sys.argv[1], spill_dir=sys.argv[2], flush_interval=0.01,
                          max_file_rows=20_000)
i = 0
while True:
    logger.log("kill", cols(f"{os.getpid()}-{i}", 200, int(time.time() * 1000)), 200)
    i += 1
    if i == 50:
        print("logging", flush=True)
"""
)


def _spawn(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigterm_handler_that_closes_the_logger_keeps_every_reported_row(tmp_path: Path):
    root = tmp_path / "artifacts"
    proc = _spawn(LOG_UNTIL_SIGTERM, root, tmp_path / "spill")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        # Let it log through several background flushes, then stop it mid-stream.
        while len(lines) < 3000 or not list(root.glob("predictions/*/*/*.parquet")):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the child logged too little in 60 s"
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=30)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    reported = int(lines[-1])  # requests whose log() returned before the signal
    table = read_predictions(str(root), "term")
    keys = keys_of(table)
    assert max(keys.values()) == 1  # nothing twice
    on_disk = {int(rid[1:]) for rid, _ in keys}
    assert set(range(reported)) <= on_disk <= set(range(reported + 1))
    for i in on_disk:  # every request whole
        assert all(keys[(f"r{i}", r)] == 1 for r in range(1 + i % 3))


@pytest.mark.slow
def test_sigkill_mid_write_leaves_only_complete_parquet_files(tmp_path: Path):
    root = tmp_path / "artifacts"
    spill = tmp_path / "spill"
    for attempt in range(3):
        proc = _spawn(LOG_UNTIL_KILLED, root, spill)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "logging", (
                proc.stderr.read() if proc.stderr else ""
            )
            deadline = time.monotonic() + 60
            while not list(root.glob("predictions/*/*/*.parquet")):
                assert time.monotonic() < deadline, "no file written in 60 s"
                time.sleep(0.01)
            time.sleep(0.1 + 0.17 * attempt)  # somewhere in the middle of the writes
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL

    everything = [p for p in (root / "predictions").rglob("*") if p.is_file()]
    assert everything
    for path in everything:  # only finished files under predictions/, and each one reads
        assert PART_NAME.match(path.name), path
        assert pq.read_table(path).num_rows > 0
    table = read_predictions(str(root), "kill")
    assert max(keys_of(table).values()) == 1
    # Each child cleared its killed predecessor's spill folder on start; the last one is left
    # until the next logger on this root finds it dead (its lock is free) and removes it.
    assert len(list(spill.glob("*/*-*"))) == 1
    PredictionLogger(str(root), spill_dir=spill).close()
    assert not list(spill.iterdir())


# -- outages: back-pressure, spill, recovery -------------------------------------------------------


def test_a_full_queue_makes_log_wait_for_the_writer_instead_of_dropping(tmp_path: Path):
    root = str(tmp_path / "artifacts")
    # Room for 20 requests; the writer drains it as log() waits (put_timeout is generous).
    with PredictionLogger(
        root, spill_dir=tmp_path / "spill", max_rows=100, put_timeout=60
    ) as logger:
        for i in range(400):
            logger.log("churn", columns_for(f"r{i}", T0, 5), 5)
            assert logger.stats()["queue_rows"] <= 100
    stats = logger.stats()
    assert stats["rows_written"] == 2000
    assert stats["rows_spilled"] == 0
    assert stats["files_written"] >= 20  # it was written in many small flushes, as room was made
    assert PredictionReader(root).count("churn") == 2000


@pytest.mark.s3
def test_full_queue_and_missing_bucket_spill_to_disk_then_land_once_the_bucket_exists(
    s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"keel-{uuid.uuid4().hex[:12]}"  # not created yet: every write fails
    root = f"s3://{bucket}/keel"
    logger = PredictionLogger(
        root,
        s3_endpoint_url=s3_server,
        spill_dir=tmp_path / "spill",
        flush_interval=0.05,
        max_rows=4,
        put_timeout=0,
    )
    try:
        for i in range(400):
            logger.log("churn", columns_for(f"r{i}", T0 + i * 1000, 2), 2)
        deadline = time.monotonic() + 60
        # Within a few failed flushes everything is on local disk, nothing only in memory.
        while (stats := logger.stats())["spilled_rows_pending"] < 800:
            assert time.monotonic() < deadline, f"rows not spilled in 60 s: {stats}"
            time.sleep(0.05)
        assert stats["rows_logged"] == stats["rows_spilled"] == 800
        assert stats["queue_rows"] == stats["pending_rows"] == stats["rows_written"] == 0
        assert stats["write_errors"] >= 1
        with pytest.raises(StorageError, match="does not exist"):
            logger.flush()

        boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        logger.flush()
        stats = logger.stats()
        assert stats["rows_written"] == 800
        assert stats["spilled_rows_pending"] == 0
    finally:
        logger.close()
    table = read_predictions(root, "churn", s3_endpoint_url=s3_server)
    assert keys_of(table) == Counter({(f"r{i}", r): 1 for i in range(400) for r in range(2)})
    assert not list((tmp_path / "spill").rglob("*.parquet"))


# A process whose root cannot be written (a file sits where the root's folder should be):
# it logs, waits until every row is in its spill folder, then dies without closing.
SPILL_AND_DIE = """
import json, os, signal, sys, time
import numpy as np
from keel.predictions import PredictionLogger

logger = PredictionLogger(sys.argv[1], spill_dir=sys.argv[2], flush_interval=0.05)
for i in range(int(sys.argv[3])):
    n = 1 + i % 2
    logger.log("churn", {"request_id": [f"r{i}"] * n, "time": [1767607200000 + i] * n,
                         "model": ["m"] * n, "version": [1] * n, "route": ["canary"] * n,
                         "latency_ms": [1.0] * n, "row": list(range(n)),
                         "input.x": np.ones(n)}, n)
while logger.stats()["spilled_rows_pending"] < logger.stats()["rows_logged"]:
    time.sleep(0.01)
print(json.dumps(logger.stats()), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_spill_files_of_a_dead_process_are_moved_into_the_dataset_by_the_next_logger(
    tmp_path: Path,
):
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    root = str(blocker / "artifacts")
    spill = tmp_path / "spill"
    proc = _spawn(SPILL_AND_DIE, root, spill, 500)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    dead = json.loads(out)
    assert dead["rows_logged"] == dead["rows_spilled"] == 750
    assert dead["write_errors"] >= 1 and dead["rows_written"] == 0

    blocker.unlink()  # the root is writable again
    logger = PredictionLogger(root, spill_dir=spill, flush_interval=3600)
    try:
        assert logger.stats()["rows_recovered"] == 750
        assert logger.flush() == 750
        assert logger.stats()["spilled_rows_pending"] == 0
    finally:
        logger.close()
    table = read_predictions(root, "churn")
    assert keys_of(table) == Counter(
        {(f"r{i}", r): 1 for i in range(500) for r in range(1 + i % 2)}
    )
    assert set(table.column("route").to_pylist()) == {"canary"}
    assert not list(spill.rglob("*.parquet"))


def test_rows_logged_after_close_are_spilled_and_written_by_the_next_logger(tmp_path: Path):
    root = str(tmp_path / "artifacts")
    spill = tmp_path / "spill"
    logger = PredictionLogger(root, spill_dir=spill)
    logger.log("churn", columns_for("before", T0, 1), 1)
    logger.close()
    logger.log("churn", columns_for("after", T0, 2), 2)  # e.g. a straggling shadow request
    assert logger.stats()["rows_spilled"] == 2
    assert PredictionReader(root).count("churn") == 1
    PredictionLogger(root, spill_dir=spill).close()
    assert keys_of(read_predictions(root, "churn")) == Counter(
        {("before", 0): 1, ("after", 0): 1, ("after", 1): 1}
    )


FORKING = """
import os, sys
from keel.predictions import PredictionLogger

def cols(rid):
    return {"request_id": [rid], "time": [1767607200000], "model": ["m"], "version": [1],
            "route": ["primary"], "latency_ms": [1.0], "row": [0]}

logger = PredictionLogger(sys.argv[1], spill_dir=sys.argv[2], flush_interval=3600)
for i in range(10):
    logger.log("forked", cols(f"parent-{i}"), 1)
pid = os.fork()
if pid == 0:
    for i in range(7):
        logger.log("forked", cols(f"child-{i}"), 1)
    logger.close()
    os._exit(0)
for i in range(5):
    logger.log("forked", cols(f"parent-late-{i}"), 1)
os.waitpid(pid, 0)
logger.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_its_own_rows_and_not_the_parents_queue(tmp_path: Path):
    root = tmp_path / "artifacts"
    done = subprocess.run(
        [sys.executable, "-c", FORKING, str(root), str(tmp_path / "spill")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    ids = Counter(read_predictions(str(root), "forked").column("request_id").to_pylist())
    expected = [f"parent-{i}" for i in range(10)] + [f"child-{i}" for i in range(7)]
    expected += [f"parent-late-{i}" for i in range(5)]
    assert ids == Counter(expected)


# -- readers: windows, pruning, feedback, changing columns -----------------------------------------------


def test_read_predictions_filters_by_time_and_opens_only_partitions_in_the_window(
    artifacts_url: str, s3_endpoint: str | None, tmp_path: Path
):
    with PredictionLogger(
        artifacts_url, s3_endpoint_url=s3_endpoint, spill_dir=tmp_path / "spill"
    ) as logger:
        for h in range(5):
            for k in range(10):  # every 6 minutes of hours T0 … T0+4h
                logger.log("churn", columns_for(f"h{h}-{k}", T0 + h * HOUR + k * 360_000, 2), 2)
    # Something that is not Parquet, in the last hour's folder: only reading that hour opens it.
    fs, base = storage(artifacts_url, s3_endpoint)
    corrupt = f"{base}/predictions/deployment=churn/hour={hour_label(T0 + 4 * HOUR)}/part-1-1-deadbeef.parquet"
    fs.pipe_file(corrupt, b"this is not parquet")

    def ids(**window: Any) -> set[str]:
        table = read_predictions(artifacts_url, "churn", s3_endpoint_url=s3_endpoint, **window)
        return set(table.column("request_id").to_pylist())

    start = dt.datetime.fromtimestamp((T0 + HOUR) / 1000, dt.UTC)
    assert ids(start=start, end=T0 + 3 * HOUR) == {f"h{h}-{k}" for h in (1, 2) for k in range(10)}
    # Inside an hour, rows are filtered by time: [T0+1h30m, T0+2h30m).
    assert ids(start=T0 + HOUR + 1_800_000, end="2026-01-05T12:30:00Z") == {
        f"h{h}-{k}" for h, ks in ((1, range(5, 10)), (2, range(5))) for k in ks
    }
    assert ids(end=T0 + HOUR) == {f"h0-{k}" for k in range(10)}
    # The corrupt file is there: reading its hour fails, naming it.
    with pytest.raises(StorageError, match="deadbeef"):
        read_predictions(artifacts_url, "churn", s3_endpoint_url=s3_endpoint, start=T0 + 4 * HOUR)

    batches = list(
        PredictionReader(artifacts_url, s3_endpoint_url=s3_endpoint).batches(
            "churn",
            start=T0,
            end=T0 + 4 * HOUR,
            columns=["request_id", "row"],
            batch_rows=7,
        )
    )
    assert all(0 < b.num_rows <= 7 for b in batches)
    assert all(b.schema.names == ["request_id", "row"] for b in batches)
    streamed = pa.Table.from_batches(batches)
    assert keys_of(streamed) == Counter(
        {(f"h{h}-{k}", r): 1 for h in range(4) for k in range(10) for r in range(2)}
    )
    empty = read_predictions(artifacts_url, "nothing-here", s3_endpoint_url=s3_endpoint)
    assert empty.num_rows == 0 and "request_id" in empty.column_names


def test_feedback_round_trip_joins_predictions_by_request_and_row(
    artifacts_url: str, s3_endpoint: str | None, tmp_path: Path
):
    with PredictionLogger(
        artifacts_url, s3_endpoint_url=s3_endpoint, spill_dir=tmp_path / "spill"
    ) as logger:
        for i in range(4):
            logger.log("churn", columns_for(f"r{i}", T0, 2), 2)
        written = logger.log_feedback(
            "churn",
            ["r0", "r0", "r1", "r2", "r3"],
            [1, 0, "churned", True, np.float64(0.25)],
            rows=[0, 1, None, None, 1],
        )
        assert written == 5
        assert logger.log_feedback("churn", [], []) == 0
        with pytest.raises(InvalidInput, match="one label per request id"):
            logger.log_feedback("churn", ["r0"], [1, 2])

    feedback = PredictionReader(artifacts_url, s3_endpoint_url=s3_endpoint).feedback("churn")
    assert feedback.schema == FEEDBACK_SCHEMA
    assert feedback.column("request_id").to_pylist() == ["r0", "r0", "r1", "r2", "r3"]
    assert feedback.column("row").to_pylist() == [0, 1, None, None, 1]
    assert feedback.column("label").to_pylist() == ["1", "0", '"churned"', "true", "0.25"]
    assert feedback.column("label_num").to_pylist() == [1.0, 0.0, None, 1.0, 0.25]
    fs, base = storage(artifacts_url, s3_endpoint)
    assert fs.find(f"{base}/feedback/deployment=churn")[0].split("/")[-2].startswith("hour=")

    predictions = read_predictions(artifacts_url, "churn", s3_endpoint_url=s3_endpoint)
    per_row = feedback.filter(pa.compute.is_valid(feedback.column("row")))
    joined = predictions.join(
        per_row.select(["request_id", "row", "label"]), ["request_id", "row"], join_type="inner"
    )
    pairs = zip(joined["request_id"].to_pylist(), joined["row"].to_pylist(), strict=True)
    assert sorted(pairs) == [
        ("r0", 0),
        ("r0", 1),
        ("r3", 1),
    ]
    whole = feedback.filter(pa.compute.is_null(feedback.column("row")))
    joined = predictions.join(
        whole.select(["request_id", "label"]), "request_id", join_type="inner"
    )
    assert joined.num_rows == 4  # both rows of r1 and of r2


def test_columns_that_change_type_between_versions_read_as_one_table(tmp_path: Path):
    root = str(tmp_path / "artifacts")
    with PredictionLogger(root, spill_dir=tmp_path / "spill", flush_interval=3600) as logger:
        v1 = columns_for("v1", T0, 2, version=1)
        v1["input.age"] = np.array([30, 31])  # ints in version 1
        v1["output.prediction"] = np.array([1, 0])
        v1["output.proba"] = np.array([[0.2, 0.8], [0.6, 0.4]])  # a list per row
        logger.log("churn", v1, 2)
        v2 = columns_for("v2", T0 + 1, 2, version=2)  # floats and strings in version 2
        v2["output.extra"] = [{"a": 1}, 5]  # Arrow cannot type this: stored as JSON text
        v2["output.proba"] = ["high", "low"]  # a list column elsewhere: no cast exists
        logger.log("churn", v2, 2)
        assert logger.flush() == 4
        assert logger.stats()["files_written"] == 2  # irreconcilable types: one file each
    table = read_predictions(root, "churn")
    assert table.schema.field("input.age").type == pa.float64()
    assert table.column("input.age").to_pylist() == [30.0, 31.0, 30.0, 31.0]
    assert table.schema.field("output.prediction").type == pa.string()
    assert table.column("output.prediction").to_pylist() == ["1", "0", "stay", "stay"]
    assert table.column("output.extra").to_pylist() == [None, None, '{"a": 1}', "5"]
    assert table.column("output.proba").to_pylist() == ["[0.2, 0.8]", "[0.6, 0.4]", "high", "low"]
    assert table.column("version").to_pylist() == [1, 1, 2, 2]
    streamed = pa.Table.from_batches(list(PredictionReader(root).batches("churn", batch_rows=1)))
    assert streamed.num_rows == 4


def test_log_rejects_malformed_requests_saying_what_to_send(tmp_path: Path):
    with PredictionLogger(str(tmp_path / "a"), spill_dir=tmp_path / "spill") as logger:
        good = columns_for("r", T0, 2)
        with pytest.raises(InvalidInput, match="missing latency_ms"):
            logger.log("churn", {k: v for k, v in good.items() if k != "latency_ms"}, 2)
        with pytest.raises(InvalidInput, match=r"'input.age' must hold one value per row \(2\)"):
            logger.log("churn", {**good, "input.age": [1, 2, 3]}, 2)
        with pytest.raises(InvalidInput, match="got a single value"):
            logger.log("churn", {**good, "model": "churn"}, 2)
        with pytest.raises(InvalidInput, match="partition keys"):
            logger.log("churn", {**good, "hour": [1, 2]}, 2)
        with pytest.raises(InvalidInput, match="deployment name"):
            logger.log("../etc", good, 2)
        with pytest.raises(InvalidInput, match="epoch milliseconds"):
            logger.log("churn", {**good, "time": ["noon", "noon"]}, 2)
        logger.log("churn", good, 0)  # nothing to log
        assert logger.stats()["rows_logged"] == 0
    with pytest.raises(InvalidInput, match="max_rows"):
        PredictionLogger(str(tmp_path / "a"), max_rows=0)
    with pytest.raises(InvalidInput, match="ISO-8601"):
        read_predictions(str(tmp_path / "a"), "churn", start="yesterday")
