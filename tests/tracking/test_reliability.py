"""What survives a kill, an exit, and several processes writing at once.

A process exiting and threads sharing one run are what any client sees: those tests run
on each mode (``any_env``: SQLite, PostgreSQL, and through keel server). The others stay
on the local stores and say why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import keel
from _support.cli import keel_environ

# A child that logs one point a millisecond forever, printing its run id first.
LOG_FOREVER = """
import sys, time, keel
keel.init(home=sys.argv[1], store_url=sys.argv[2], flush_interval=float(sys.argv[3]))
run = keel.start_run(name="victim")
print(run.id, flush=True)
step = 0
while True:
    keel.log_metric("x", float(step), step=step)
    step += 1
    time.sleep(0.001)
"""

# A child that logs as fast as it can. Every 10 ms it appends to a ledger how many
# points log_metric has accepted by then, with the time: write(2) outlives SIGKILL.
LOG_FLAT_OUT = """
import os, sys, time, keel
keel.init(home=sys.argv[1], store_url=sys.argv[2], flush_interval=float(sys.argv[3]))
run = keel.start_run(name="flat-out")
ledger = os.open(sys.argv[4], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
print(run.id, flush=True)
step = 0
next_entry = 0.0
while True:
    keel.log_metric("x", float(step), step=step)
    step += 1
    now = time.time()
    if now >= next_entry:
        os.write(ledger, f"{now!r} {step}\\n".encode())
        next_entry = now + 0.01
"""

# Keeps one core busy, so the logger and its flusher share what is left.
BUSY = "while True: pass"

# A child that logs N points and a param and exits without ending its run.
LOG_AND_EXIT = """
import sys, keel
keel.init(home=sys.argv[1], flush_interval=60)  # the store or server: from KEEL_* (keel_environ)
keel.start_run(name="exits")
keel.log_param("p", 1)
for step in range(int(sys.argv[2])):
    keel.log_metric("y", step * 0.5)
print(keel.active_run().id, flush=True)
"""

# A writer competing with others on one SQLite file.
COMPETE = """
import sys, keel
keel.init(home=sys.argv[1], store_url=sys.argv[2], flush_interval=0.02)
keel.set_experiment("shared")
with keel.start_run(name=f"writer-{sys.argv[4]}") as run:
    for step in range(int(sys.argv[3])):
        keel.log_metric("loss", 1.0 / (step + 1))
        keel.log_metric("acc", step / 1e4)
        if step % 500 == 0:
            keel.set_tag(f"checkpoint-{step}", str(step))
            keel.log_param(f"p{step}", step)
print(run.id, flush=True)
"""


def _spawn(script: str, *args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_sigkill_loses_at_most_the_last_flush_interval(keel_env, tmp_path: Path):
    # local: kills the writer mid-transaction on the store itself, which a server would hold
    interval = 1.0
    proc = _spawn(LOG_FOREVER, keel_env.home, keel_env.store_url, interval)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert len(run_id) == 32, proc.stderr.read() if proc.stderr else ""
        client = keel.Client()
        deadline = time.time() + 60
        while client.count_metric_points(run_id) == 0:  # the first flush has landed
            assert time.time() < deadline, "no flush within 60 s"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        time.sleep(2.3)  # let it run past a few more flushes, then kill mid-interval
        killed_at_ms = time.time() * 1000
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    history = keel.Client().get_metric_history(run_id, "x")
    steps = [m.step for m in history]
    # What survived is an unbroken prefix: no holes, no duplicates, no torn batch.
    assert steps == list(range(len(steps)))
    assert [m.value for m in history] == [float(s) for s in steps]
    lost_ms = killed_at_ms - history[-1].timestamp
    # At most one interval, plus slack for the flush itself and scheduling.
    assert lost_ms <= interval * 1000 + 750, f"lost the last {lost_ms:.0f} ms of points"
    assert keel.Client().get_run(run_id).info.status == "RUNNING"


def _read_ledger(path: Path) -> list[tuple[float, int]]:
    entries = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line cut by the kill is skipped
            entries.append((float(parts[0]), int(parts[1])))
    return entries


@pytest.mark.slow
def test_sigkill_under_load_loses_at_most_the_last_interval_and_the_flush_under_way(
    keel_env, tmp_path: Path
):
    """Logging flat out on a busy machine: back-pressure keeps the loss bound.

    The bound, from the child's own ledger: every point it had handed to
    log_metric by two intervals before the kill (one interval of buffering,
    one for the flush under way) is in the store.
    """
    # local: kills the writer mid-transaction on the store itself, which a server would hold
    interval = 1.0
    ledger = tmp_path / "ledger"
    hog = subprocess.Popen([sys.executable, "-c", BUSY])
    proc = _spawn(LOG_FLAT_OUT, keel_env.home, keel_env.store_url, interval, ledger)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert len(run_id) == 32, proc.stderr.read() if proc.stderr else ""
        client = keel.Client()
        deadline = time.time() + 60
        while client.count_metric_points(run_id) == 0:  # the first flush has landed
            assert time.time() < deadline, "no flush within 60 s"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        time.sleep(6 * interval)  # how long it runs, not what passes: that is the ledger's
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        for child in (proc, hog):
            if child.poll() is None:
                child.kill()
                child.wait()
    entries = _read_ledger(ledger)
    handed = max(count for _, count in entries)
    due = max((count for at, count in entries if at <= killed_at - 2 * interval), default=0)
    assert due > 0, "the child logged for less than two intervals"
    history = keel.Client().get_metric_history(run_id, "x")
    stored = len(history)
    # What survived is an unbroken prefix: no holes, no duplicates, no torn batch.
    assert [m.step for m in history] == list(range(stored))
    rate = handed / (entries[-1][0] - entries[0][0])
    assert stored >= due, (
        f"lost {handed - stored} of {handed} points ({(handed - stored) / rate:.1f} s at "
        f"{rate:,.0f} points/s); the {handed - due} logged in the last two intervals may go"
    )


def test_interpreter_exit_flushes_and_finishes_the_run(any_env):
    proc = _spawn(LOG_AND_EXIT, any_env.home, 2500, env=keel_environ(any_env))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run = keel.Client().get_run(out.strip())
    assert run.info.status == "FINISHED"
    assert run.params == {"p": "1"}
    assert keel.Client().count_metric_points(run.id) == 2500
    assert run.metrics["y"] == 2499 * 0.5


@pytest.mark.slow
def test_four_processes_logging_to_one_sqlite_file_lose_nothing(sqlite_env):
    # local: about SQLite's file lock under writers in several processes
    points = 4000
    procs = [_spawn(COMPETE, sqlite_env.home, sqlite_env.store_url, points, n) for n in range(4)]
    run_ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "locked" not in err.lower()
        run_ids.append(out.strip())
    client = keel.Client()
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert client.count_metric_points(run_id) == 2 * points
        assert len(run.tags) == points // 500 and len(run.params) == points // 500
        assert run.metrics["loss"] == pytest.approx(1.0 / points)
    assert client.count_metric_points() == 4 * 2 * points


def test_threads_logging_to_one_run_lose_nothing(any_env):
    import threading

    with keel.start_run() as run:

        def work(n: int) -> None:
            for step in range(2000):
                keel.log_metric(f"t{n}", float(step), step=step)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    client = keel.Client()
    assert client.count_metric_points(run.id) == 8000
    for n in range(4):
        assert [m.step for m in client.get_metric_history(run.id, f"t{n}")] == list(range(2000))


def test_flush_blocked_by_a_locked_database_keeps_points_and_retries(tmp_path: Path):
    """Another process holds SQLite's write lock past the busy timeout: nothing is lost."""
    # local: holds SQLite's write lock and reads through WAL meanwhile
    import sqlite3

    settings = keel.init(home=tmp_path / ".keel", busy_timeout=0.2, flush_interval=0.05)
    with keel.start_run() as run:
        keel.flush()
        blocker = sqlite3.connect(
            settings.store_url.removeprefix("sqlite:///"), isolation_level=None
        )
        blocker.execute("BEGIN EXCLUSIVE")
        for step in range(300):
            keel.log_metric("m", float(step))
        time.sleep(0.6)  # several background flushes fail on the lock meanwhile
        assert keel.Client().count_metric_points(run.id) == 0  # WAL readers still read
        blocker.execute("ROLLBACK")
        blocker.close()
    history = keel.Client().get_metric_history(run.id, "m")
    assert [m.step for m in history] == list(range(300))
