"""Keel's control plane against ``mlflow server``: tracking through a server, side by side.

What is measured
----------------
Every figure goes through a real server process on a free loopback port:
``keel server`` (SQLite store, local artifact folder, token auth on) and
``mlflow server --backend-store-uri sqlite:///…`` (MLflow 3.x, in its own
virtualenv). Both get the same number of uvicorn workers (``--workers``).

* **log_batch**: ``B`` timed calls of one ``log_batch`` carrying ``P`` points
  (5 metrics x ``P/5`` steps), each into a fresh run (created outside the
  clock), after one untimed warm-up call. Points/s is all points over the
  summed call time; the median call is printed too.
* **per-point logging**: the way users write a training loop, one
  ``log_metric(key, value, step=step)`` call per point. Keel's fluent API
  buffers points and flushes them in batches (through the server: batched
  requests); the clock runs from ``start_run`` to the end of ``end_run``, so
  every point has reached the server. MLflow's ``mlflow.log_metric`` is one
  request per call. Both counts of stored points are checked afterwards.
* **search**: ``N`` runs in one experiment, each with 10 params and 5 metrics
  (the data of ``bench/tracking.py``), then ``filter`` by ``order`` timed ``K``
  times after one warm-up call (median and p90): the top 100, and every
  matching run (paged, 1,000 a page). The runs are written with each tool's
  own library straight into its server's SQLite file (``--search-setup
  server`` writes them through the servers instead: several times slower,
  and only the search is compared). Setup time is printed, not compared; row
  counts and the sum of ``m1`` are compared between the tools.
* **auth overhead** (Keel only): a second ``keel server --no-auth`` on its own
  store, measured first, while both stores are fresh and alike. The same
  small requests go to both servers, interleaved so that drift hits both
  alike: ``GET /whoami`` (plain HTTP), ``get_run`` and a 10-point
  ``log_batch`` (``keel.Client``). The p50 difference is what authentication
  costs (a token's hash is cached by the server).

How it runs
-----------
This process (Keel's virtualenv) starts the servers as child processes, each
in a temporary folder of its own, and drives Keel with ``keel.Client`` and the
fluent API configured with ``server_url`` and ``token``. MLflow is driven by
this same file run with ``--worker mlflow`` under ``--mlflow-python`` (default
``.venv-mlflow/bin/python`` beside the repository; ``make .venv-mlflow/.installed``
creates it), which prints its figures as JSON. ``KEEL_*`` and ``MLFLOW_*``
variables are not passed on. If MLflow is missing, Keel's figures print alone.

Usage::

    make bench-server
    python bench/server.py                       # from the dev venv: .venv/bin/python
    python bench/server.py --search-runs 1000 --batches 10 --json

The default run takes a few minutes on 2 cores, most of it creating the
10,000 runs to search (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    Table,
    clean_env,
    dig,
    finish,
    fmt,
    fmt_ratio,
    peer_python,
    peer_unavailable,
    print_verdicts,
    ratio,
    search_mismatches,
)
from tracking import FILTER, METRIC_KEYS, ORDER_BY, run_metrics, run_params

RESULT_MARKER = "KEEL_BENCH_RESULT "
BATCH_EXPERIMENT = "bench-server-batch"
POINT_EXPERIMENT = "bench-server-points"
SEARCH_EXPERIMENT = "bench-server-search"
AUTH_EXPERIMENT = "bench-server-auth"
TOP_N = 100
PAGE = 1000
READY_TIMEOUT = 120.0

Result = dict[str, Any]


# -- shared helpers (both interpreters: standard library only) ---------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def point_value(batch: int, metric: int, step: int) -> float:
    """A loss-like curve; cheap so that logging, not the data, is what is timed."""
    return 1.0 / (1.0 + step + metric) + 0.001 * batch


def batch_points(size: int) -> list[tuple[str, int]]:
    """(key, step) of the ``size`` points of one batch: 5 metrics over ``size / 5`` steps."""
    return [(METRIC_KEYS[i % len(METRIC_KEYS)], i // len(METRIC_KEYS)) for i in range(size)]


def summarize(seconds: Sequence[float]) -> Result:
    """Median, p90 (nearest rank) and minimum in milliseconds."""
    ordered = sorted(seconds)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": p90 * 1000,
        "min_ms": ordered[0] * 1000,
        "samples": len(ordered),
    }


def timed(call: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """``call`` once untimed (warm-up), then ``repeat`` times timed; seconds and last result."""
    result = call()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def check_stored(tool: str, what: str, stored: int, expected: int) -> None:
    if stored != expected:
        raise SystemExit(
            f"{tool} {what}: {stored} metric points stored, expected {expected}; "
            "the throughput figure would be a lie"
        )


def creation_progress(tool: str, done: int, total: int, started: float) -> None:
    if done % 1000 == 0 or done == total:
        elapsed = time.perf_counter() - started
        eta = elapsed / done * (total - done)
        progress(f"  {tool}: {done:,}/{total:,} runs, {elapsed:.0f}s elapsed, ~{eta:.0f}s to go")


def free_port() -> int:
    """A loopback port nothing listens on now (released at once: start the server on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- MLflow worker (runs under the mlflow virtualenv) ------------------------------------------


def mlflow_worker(args: argparse.Namespace) -> Result:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    url = args.url
    mlflow.set_tracking_uri(url)
    client = MlflowClient(tracking_uri=url)
    result: Result = {"tool": "mlflow", "version": mlflow.__version__}
    layout = batch_points(args.batch_size)

    def stored(run_id: str, keys: Sequence[str]) -> int:
        return sum(len(client.get_metric_history(run_id, key)) for key in keys)

    # log_batch of P points, one fresh run per call
    progress(f"mlflow: {args.batches} x log_batch of {args.batch_size:,} points")
    experiment_id = client.create_experiment(BATCH_EXPERIMENT)
    seconds = []
    run_ids = []
    for b in range(args.batches + 1):
        run_id = client.create_run(experiment_id).info.run_id
        stamp = now_ms()
        metrics = [Metric(k, point_value(b, i % 5, s), stamp, s) for i, (k, s) in enumerate(layout)]
        start = time.perf_counter()
        client.log_batch(run_id, metrics=metrics)
        if b:  # the first call warms up
            seconds.append(time.perf_counter() - start)
            run_ids.append(run_id)
    check_stored(
        "mlflow",
        "log_batch",
        sum(stored(r, METRIC_KEYS) for r in run_ids),
        args.batches * args.batch_size,
    )
    result["batch"] = batch_figures(seconds, args.batch_size)

    # per-call log_metric with the fluent API: one request per call
    calls = args.mlflow_calls
    progress(f"mlflow: {calls:,} per-call log_metric")
    mlflow.set_experiment(POINT_EXPERIMENT)
    start = time.perf_counter()
    with mlflow.start_run() as run:
        for step in range(calls):
            mlflow.log_metric("loss", point_value(0, 0, step), step=step)
    elapsed = time.perf_counter() - start
    check_stored("mlflow", "per-call", stored(run.info.run_id, ["loss"]), calls)
    result["per_point"] = {"points": calls, "seconds": elapsed, "points_per_s": calls / elapsed}

    if args.search_runs:
        result["search"] = mlflow_search(args, client)
    return result


def mlflow_search(args: argparse.Namespace, client: Any) -> Result:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    # Straight into the server's SQLite file by default: only the search below is compared,
    # and through the server the setup takes several times longer.
    direct = client
    if args.search_setup == "direct":
        direct = MlflowClient(tracking_uri=f"sqlite:///{args.db}")
    total = args.search_runs
    progress(f"mlflow: creating {total:,} runs to search ({args.search_setup})")
    experiment_id = direct.create_experiment(SEARCH_EXPERIMENT)
    start = time.perf_counter()
    for r in range(total):
        run_id = direct.create_run(experiment_id).info.run_id
        stamp = now_ms()
        direct.log_batch(
            run_id,
            metrics=[Metric(k, v, stamp, 0) for k, v in run_metrics(r).items()],
            params=[Param(k, str(v)) for k, v in run_params(r).items()],
        )
        creation_progress("mlflow", r + 1, total, start)
    setup = time.perf_counter() - start

    def top() -> list[Any]:
        return list(
            client.search_runs([experiment_id], FILTER, order_by=[ORDER_BY], max_results=TOP_N)
        )

    def every() -> list[Any]:
        runs: list[Any] = []
        token = None
        while True:
            page = client.search_runs(
                [experiment_id], FILTER, order_by=[ORDER_BY], max_results=PAGE, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    queries: Result = {}
    for name, call in (("top100", top), ("all", every)):
        seconds, runs = timed(call, args.repeat)
        m1 = sum(run.data.metrics["m1"] for run in runs)
        queries[name] = {**summarize(seconds), "rows": len(runs), "m1_sum": round(m1, 6)}
    return {"runs": total, "setup_seconds": setup, "queries": queries}


def batch_figures(seconds: Sequence[float], size: int) -> Result:
    total = sum(seconds)
    return {
        "points": size * len(seconds),
        "seconds": total,
        "points_per_s": size * len(seconds) / total,
        **summarize(seconds),
    }


def run_worker(args: argparse.Namespace) -> int:
    result = mlflow_worker(args)
    result["python"] = platform.python_version()
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


# -- servers -----------------------------------------------------------------------------------------


@dataclass
class Server:
    """A server child process: its base URL and, for Keel with auth, the admin token."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    token: str | None = None
    store_url: str | None = None
    artifacts_url: str | None = None


def _wait_ready(server: Server, path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(
                f"{server.name} exited with {server.process.returncode}:\n"
                + server.log.read_text(errors="replace")[-3000:]
            )
        try:
            with urllib.request.urlopen(server.url + path, timeout=1.0) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{server.name} was not ready in {READY_TIMEOUT:.0f} s; see {server.log}")


@contextmanager
def running(
    name: str, command: Sequence[str], port: int, folder: Path, ready_path: str, **env: str
) -> Iterator[Server]:
    """Run ``command`` in its own process group until the block ends, once ``ready_path`` answers."""
    log = folder / "server.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            list(command),
            cwd=folder,
            env=clean_env(**env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # uvicorn workers are children: stop the whole group
        )
    server = Server(name, f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(server, ready_path)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def keel_executable() -> list[str]:
    script = Path(sys.executable).parent / "keel"
    if script.exists():
        return [str(script)]
    raise SystemExit(f"no `keel` command beside {sys.executable}: pip install -e . first")


@contextmanager
def keel_server(folder: Path, *, auth: bool, workers: int) -> Iterator[Server]:
    folder.mkdir(parents=True)
    store = f"sqlite:///{(folder / 'keel.db').as_posix()}"
    env = {"KEEL_HOME": str(folder / "home")}
    token = None
    if auth:
        made = subprocess.run(
            [*keel_executable(), "server", "init-admin", "--store", store, "--json"],
            cwd=folder,
            env=clean_env(**env),
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            raise SystemExit(f"keel server init-admin failed: {made.stderr.strip()}")
        token = str(json.loads(made.stdout)["token"])
    port = free_port()
    command = [
        *keel_executable(), "server", "start", "--port", str(port), "--store", store,
        "--artifacts", str(folder / "artifacts"), "--workers", str(workers),
        *([] if auth else ["--no-auth"]),
    ]  # fmt: skip
    name = "keel server" + ("" if auth else " --no-auth")
    with running(name, command, port, folder, "/ready", **env) as server:
        server.token = token
        server.store_url = store
        server.artifacts_url = str(folder / "artifacts")
        yield server


@contextmanager
def mlflow_server(folder: Path, python: Path, workers: int) -> Iterator[Server]:
    folder.mkdir(parents=True)
    port = free_port()
    command = [
        str(python), "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{(folder / 'mlflow.db').as_posix()}",
        "--default-artifact-root", (folder / "artifacts").as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    with running("mlflow server", command, port, folder, "/health") as server:
        yield server


def run_mlflow(
    python: Path, server: Server, folder: Path, args: argparse.Namespace, token: str | None = None
) -> Result:
    """Run this file's MLflow worker (the mlflow client) against ``server``; its figures.

    ``token`` is sent as ``MLFLOW_TRACKING_TOKEN``: the mlflow client against ``keel server``.
    """
    command = [
        str(python), str(Path(__file__).resolve()), "--worker", "mlflow",
        "--url", server.url, "--db", (folder / "mlflow.db").as_posix(),
        "--batch-size", str(args.batch_size), "--batches", str(args.batches),
        "--mlflow-calls", str(args.mlflow_calls), "--search-runs", str(args.search_runs),
        "--repeat", str(args.repeat), "--search-setup", args.search_setup,
    ]  # fmt: skip
    env = clean_env(
        MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true",
        MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false",
        MLFLOW_ENABLE_ASYNC_LOGGING="false",
        **({"MLFLOW_TRACKING_TOKEN": token} if token else {}),
    )
    done = subprocess.run(
        command, cwd=folder, stdout=subprocess.PIPE, text=True, env=env, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout)
        raise SystemExit(f"the mlflow worker failed (exit code {done.returncode}); see above")
    result: Result = json.loads(lines[-1][len(RESULT_MARKER) :])
    return result


# -- Keel side (this process) -----------------------------------------------------------------


def keel_client(server: Server, home: Path) -> Any:
    from keel import Client
    from keel.config import load_settings

    return Client(load_settings(home, server_url=server.url, token=server.token))


def keel_batch(args: argparse.Namespace, client: Any) -> Result:
    from keel.tracking.entities import Metric

    progress(f"keel: {args.batches} x log_batch of {args.batch_size:,} points")
    layout = batch_points(args.batch_size)
    experiment_id = client.create_experiment(BATCH_EXPERIMENT)
    seconds = []
    run_ids = []
    for b in range(args.batches + 1):
        run_id = client.create_run(experiment_id, capture=False).id
        stamp = now_ms()
        metrics = [Metric(k, point_value(b, i % 5, s), s, stamp) for i, (k, s) in enumerate(layout)]
        start = time.perf_counter()
        client.log_batch(run_id, metrics=metrics)
        if b:
            seconds.append(time.perf_counter() - start)
            run_ids.append(run_id)
    check_stored(
        "keel",
        "log_batch",
        sum(client.count_metric_points(r) for r in run_ids),
        args.batches * args.batch_size,
    )
    return batch_figures(seconds, args.batch_size)


def keel_per_point(args: argparse.Namespace, server: Server, home: Path, client: Any) -> Result:
    import keel

    points = args.points
    progress(f"keel: {points:,} per-point log_metric (fluent, buffered)")
    keel.init(home=home, server_url=server.url, token=server.token)
    keel.set_experiment(POINT_EXPERIMENT)
    start = time.perf_counter()
    with keel.start_run() as run:
        for step in range(points):
            keel.log_metric("loss", point_value(0, 0, step), step=step)
    elapsed = time.perf_counter() - start
    check_stored("keel", "per-point", client.count_metric_points(run.id), points)
    return {"points": points, "seconds": elapsed, "points_per_s": points / elapsed}


def keel_buffered(args: argparse.Namespace, client: Any) -> Result:
    """Per-point adds to the fluent API's :class:`MetricBuffer`, flushed to the server."""
    from keel.tracking.buffer import MetricBuffer

    points = args.points
    progress(f"keel: {points:,} per-point adds to the metric buffer, flushed to the server")
    experiment_id = client.get_or_create_experiment(POINT_EXPERIMENT).id
    run_id = client.create_run(experiment_id, capture=False).id
    start = time.perf_counter()
    buffer = MetricBuffer(client.write_metric_rows, interval=client.settings.flush_interval)
    for step in range(points):
        buffer.add((run_id, "loss", step, now_ms(), point_value(0, 0, step)))
    buffer.close()
    elapsed = time.perf_counter() - start
    check_stored("keel", "buffered", client.count_metric_points(run_id), points)
    return {"points": points, "seconds": elapsed, "points_per_s": points / elapsed}


def keel_search(args: argparse.Namespace, server: Server, home: Path, client: Any) -> Result:
    from keel import Client
    from keel.config import load_settings
    from keel.tracking.entities import Metric

    total = args.search_runs
    writer = client
    if args.search_setup == "direct":
        # the server's own SQLite file, through Keel's library (the server is idle meanwhile)
        writer = Client(
            load_settings(home, store_url=server.store_url, artifacts_url=server.artifacts_url)
        )
    progress(f"keel: creating {total:,} runs to search ({args.search_setup})")
    experiment_id = writer.create_experiment(SEARCH_EXPERIMENT)
    start = time.perf_counter()
    for r in range(total):
        run_id = writer.create_run(experiment_id, capture=False).id
        stamp = now_ms()
        writer.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, stamp) for k, v in run_metrics(r).items()],
            params=run_params(r),
        )
        creation_progress("keel", r + 1, total, start)
    setup = time.perf_counter() - start

    def top() -> list[Any]:
        return list(client.search_runs([experiment_id], FILTER, [ORDER_BY], max_results=TOP_N))

    def every() -> list[Any]:
        runs: list[Any] = []
        token = None
        while True:
            page = client.search_runs(
                [experiment_id], FILTER, [ORDER_BY], max_results=PAGE, page_token=token
            )
            runs.extend(page.runs)
            token = page.next_page_token
            if not token:
                return runs

    queries: Result = {}
    for name, call in (("top100", top), ("all", every)):
        seconds, runs = timed(call, args.repeat)
        m1 = sum(run.metrics["m1"] for run in runs)
        queries[name] = {**summarize(seconds), "rows": len(runs), "m1_sum": round(m1, 6)}
    return {"runs": total, "setup_seconds": setup, "queries": queries}


def keel_auth_overhead(
    args: argparse.Namespace, with_auth: Server, without: Server, home: Path
) -> Result:
    """p50 of the same small requests on a server with auth and one with ``--no-auth``."""
    import httpx

    from keel.tracking.entities import Metric

    clients = {
        "auth": keel_client(with_auth, home / "auth"),
        "no_auth": keel_client(without, home / "no-auth"),
    }
    raw = {
        "auth": httpx.Client(
            base_url=f"{with_auth.url}/api/v1",
            headers={"authorization": f"Bearer {with_auth.token}"},
        ),
        "no_auth": httpx.Client(base_url=f"{without.url}/api/v1"),
    }
    run_ids = {}
    for side, client in clients.items():
        experiment_id = client.get_or_create_experiment(AUTH_EXPERIMENT).id
        run_ids[side] = client.create_run(experiment_id, capture=False).id
    steps = {"auth": 0, "no_auth": 0}

    def whoami(side: str) -> None:
        raw[side].get("/whoami").raise_for_status()

    def get_run(side: str) -> None:
        clients[side].get_run(run_ids[side])

    def small_batch(side: str) -> None:
        step = steps[side]
        steps[side] += 1
        stamp = now_ms()
        clients[side].log_batch(
            run_ids[side], metrics=[Metric(k, 0.5, step, stamp) for k in METRIC_KEYS * 2]
        )

    requests: dict[str, Callable[[str], None]] = {
        "whoami": whoami,
        "get_run": get_run,
        "log_batch_10": small_batch,
    }
    progress(f"keel: auth overhead, {args.auth_requests:,} of each request on each server")
    out: Result = {}
    try:
        for name, call in requests.items():
            samples: dict[str, list[float]] = {"auth": [], "no_auth": []}
            for side in samples:  # warm-up: connections, caches
                for _ in range(20):
                    call(side)
            for i in range(args.auth_requests):
                # alternate which side goes first, so neither always follows the other
                order = ("auth", "no_auth") if i % 2 == 0 else ("no_auth", "auth")
                for side in order:
                    start = time.perf_counter()
                    call(side)
                    samples[side].append(time.perf_counter() - start)
            auth, plain = summarize(samples["auth"]), summarize(samples["no_auth"])
            out[name] = {
                "auth": auth,
                "no_auth": plain,
                "p50_overhead_ms": auth["median_ms"] - plain["median_ms"],
            }
    finally:
        for http in raw.values():
            http.close()
    return out


def measured(result: Result, name: str, call: Callable[[], Result]) -> None:
    """``result[name] = call()``; a Keel error (a route the server lacks) is recorded instead.

    One missing piece then costs its own figure, not the whole run.
    """
    from keel.errors import KeelError

    try:
        result[name] = call()
    except KeelError as exc:
        progress(f"keel: {name} not measured: {type(exc).__name__}: {exc}")
        result.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"


def run_keel(args: argparse.Namespace, root: Path) -> Result:
    import keel

    result: Result = {
        "tool": "keel",
        "version": keel.__version__,
        "python": platform.python_version(),
    }
    home = root / "client"
    with keel_server(root / "keel-auth", auth=True, workers=args.workers) as server:
        if args.auth_requests:
            # first, while both stores are fresh and alike: only authentication differs
            with keel_server(root / "keel-no-auth", auth=False, workers=args.workers) as plain:
                measured(result, "auth", lambda: keel_auth_overhead(args, server, plain, home))
        client = keel_client(server, home / "main")
        measured(result, "batch", lambda: keel_batch(args, client))
        try:
            measured(
                result, "per_point", lambda: keel_per_point(args, server, home / "fluent", client)
            )
        finally:
            keel.init(home=home / "fluent")  # end the fluent API's session with the server
        if "per_point" not in result:
            # The fluent API's own path is what the issue asks for; while it cannot reach a
            # server, time the machinery it runs on (the buffer and its batched flushes).
            measured(result, "per_point_buffer", lambda: keel_buffered(args, client))
        if args.search_runs:
            measured(result, "search", lambda: keel_search(args, server, home / "setup", client))
    return result


# -- report ---------------------------------------------------------------------------------------


def ratios(keel: Result, mlflow: Result | None) -> Result:
    """Keel/MLflow for throughput, MLflow/Keel for latency: above 1 means Keel is faster."""
    out: Result = {}
    for line, baseline in (
        ("batch", "batch"),
        ("per_point", "per_point"),
        ("per_point_buffer", "per_point"),
    ):
        value = ratio(dig(keel, line, "points_per_s"), dig(mlflow, baseline, "points_per_s"), True)
        if value is not None:
            out[f"{line}_points_per_s_keel_over_mlflow"] = value
    for name in ("top100", "all"):
        for stat in ("median_ms", "p90_ms"):
            value = ratio(
                dig(keel, "search", "queries", name, stat),
                dig(mlflow, "search", "queries", name, stat),
                False,
            )
            if value is not None:
                out[f"search_{name}_{stat}_mlflow_over_keel"] = value
    return out


def targets(keel: Result, mlflow: Result | None) -> dict[str, bool | None]:
    """The issue's goals: met (True), missed (False) or not measured (None)."""
    found = ratios(keel, mlflow)
    batch = found.get("batch_points_per_s_keel_over_mlflow")
    per_point = found.get("per_point_points_per_s_keel_over_mlflow")
    median = dig(keel, "search", "queries", "top100", "median_ms")
    overheads = [v["p50_overhead_ms"] for v in (dig(keel, "auth") or {}).values()]
    return {
        "log_batch >= 20x mlflow": None if batch is None else batch >= 20,
        "per-point >= 100x mlflow per-call": None if per_point is None else per_point >= 100,
        "search top-100 median < 100 ms": None if median is None else median < 100,
        "auth p50 overhead <= 1 ms": None if not overheads else max(overheads) <= 1.0,
    }


def print_table(
    args: argparse.Namespace, keel: Result, mlflow: Result | None, skipped: str | None
) -> None:
    table = Table()
    table.add(
        f"log_batch of {args.batch_size:,} points, points/s",
        fmt(dig(keel, "batch", "points_per_s")),
        fmt(dig(mlflow, "batch", "points_per_s")),
        fmt_ratio(
            ratio(dig(keel, "batch", "points_per_s"), dig(mlflow, "batch", "points_per_s"), True)
        ),
    )
    table.add(
        "  median call, ms",
        fmt(dig(keel, "batch", "median_ms"), 1),
        fmt(dig(mlflow, "batch", "median_ms"), 1),
    )
    table.add(
        "per-point log_metric, points/s",
        fmt(dig(keel, "per_point", "points_per_s")),
        fmt(dig(mlflow, "per_point", "points_per_s")),
        fmt_ratio(
            ratio(
                dig(keel, "per_point", "points_per_s"),
                dig(mlflow, "per_point", "points_per_s"),
                True,
            )
        ),
    )
    table.add(
        "  points (wall time, s)",
        f"{fmt(dig(keel, 'per_point', 'points'))} ({fmt(dig(keel, 'per_point', 'seconds'), 2)})",
        f"{fmt(dig(mlflow, 'per_point', 'points'))} ({fmt(dig(mlflow, 'per_point', 'seconds'), 2)})"
        if mlflow
        else "-",
    )
    if "per_point_buffer" in keel:
        table.add(
            "  keel metric buffer alone, points/s",
            fmt(dig(keel, "per_point_buffer", "points_per_s")),
            "",
            fmt_ratio(
                ratio(
                    dig(keel, "per_point_buffer", "points_per_s"),
                    dig(mlflow, "per_point", "points_per_s"),
                    True,
                )
            ),
        )
    if "search" in keel:
        table.add(
            "search setup (not compared), s",
            fmt(dig(keel, "search", "setup_seconds"), 1),
            fmt(dig(mlflow, "search", "setup_seconds"), 1),
        )
        for name, label in (("top100", f"top {TOP_N}"), ("all", "all matches")):
            kq = dig(keel, "search", "queries", name)
            mq = dig(mlflow, "search", "queries", name)
            for stat in ("median_ms", "p90_ms"):
                kv, mv = dig(kq, stat), dig(mq, stat)
                table.add(
                    f"search {label}, {stat[:-3]} ms",
                    fmt(kv, 1),
                    fmt(mv, 1),
                    fmt_ratio(ratio(kv, mv, False)),
                )
            table.add("  rows returned", fmt(dig(kq, "rows")), fmt(dig(mq, "rows")))
    for name, figures in (dig(keel, "auth") or {}).items():
        table.add(
            f"auth: {name} p50 ms, on / off",
            f"{figures['auth']['median_ms']:.2f} / {figures['no_auth']['median_ms']:.2f}",
            "",
            f"+{figures['p50_overhead_ms']:.2f} ms",
        )

    print(
        f"Tracking through a server on SQLite, {os.cpu_count()} CPUs, {args.workers} worker(s) "
        f"each, Python {keel['python']}"
        + (f" (mlflow: Python {mlflow['python']})" if mlflow else "")
    )
    if "search" in keel:
        print(f"Search: {keel['search']['runs']:,} runs; filter {FILTER!r} by {ORDER_BY!r}")
    print()
    table.print(f"keel {keel['version']}", f"mlflow {mlflow['version']}" if mlflow else "mlflow")
    notes = [
        f"Keel's {name} figure was not measured: {error}"
        for name, error in (keel.get("errors") or {}).items()
    ]
    print_verdicts(targets(keel, mlflow), "MLflow", skipped, notes)


# -- driver ----------------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batch-size", type=int, default=1000, help="points per log_batch (1000)")
    parser.add_argument("--batches", type=int, default=30, help="timed log_batch calls (30)")
    parser.add_argument(
        "--points", type=int, default=50_000, help="Keel per-point log_metric calls (50000)"
    )
    parser.add_argument(
        "--mlflow-calls", type=int, default=300, help="MLflow per-call log_metric calls (300)"
    )
    parser.add_argument(
        "--search-runs", type=int, default=10_000, help="runs to search; 0 skips (10000)"
    )
    parser.add_argument("--repeat", type=int, default=15, help="timed repetitions per search (15)")
    parser.add_argument(
        "--search-setup",
        choices=("direct", "server"),
        default="direct",
        help="write the runs to search straight into each server's SQLite file with the "
        "tool's own library (direct, default), or through the servers (server, slower)",
    )
    parser.add_argument(
        "--auth-requests",
        type=int,
        default=1000,
        help="requests of each kind per server for the auth overhead; 0 skips (1000)",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server (1)")
    parser.add_argument(
        "--mlflow-python",
        type=Path,
        default=None,
        help="interpreter with mlflow installed (default .venv-mlflow/bin/python)",
    )
    parser.add_argument("--skip-mlflow", action="store_true", help="measure Keel alone")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--worker", choices=["mlflow"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.batch_size, args.batches, args.points, args.mlflow_calls, args.repeat) < 1:
        parser.error("--batch-size, --batches, --points, --mlflow-calls and --repeat must be >= 1")
    if min(args.search_runs, args.auth_requests) < 0 or args.workers < 1:
        parser.error("--search-runs and --auth-requests must be >= 0, --workers >= 1")
    if args.batch_size > 1000:
        parser.error("--batch-size is at most 1000: MLflow's log_batch takes no more metrics")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        return run_worker(args)

    root = Path(tempfile.mkdtemp(prefix="bench-server-"))
    try:
        mlflow: Result | None = None
        skipped: str | None = "--skip-mlflow" if args.skip_mlflow else None
        if skipped is None:
            python = peer_python(".venv-mlflow", args.mlflow_python)
            skipped = peer_unavailable(python, ".venv-mlflow", "mlflow")
            if skipped is None:
                assert python is not None
                with mlflow_server(root / "mlflow", python, args.workers) as server:
                    mlflow = run_mlflow(python, server, root / "mlflow", args)
            else:
                progress(f"MLflow skipped: {skipped}")
        keel = run_keel(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def combined() -> Result:
        return {
            "config": {
                "batch_size": args.batch_size,
                "batches": args.batches,
                "points": args.points,
                "mlflow_calls": args.mlflow_calls,
                "search_runs": args.search_runs,
                "search_setup": args.search_setup,
                "repeat": args.repeat,
                "auth_requests": args.auth_requests,
                "workers": args.workers,
                "cpus": os.cpu_count(),
                "filter": FILTER,
                "order_by": ORDER_BY,
            },
            "keel": keel,
            "mlflow": mlflow,
            "mlflow_skipped": skipped,
            "ratios": ratios(keel, mlflow),
            "targets": targets(keel, mlflow),
        }

    return finish(
        args.json,
        combined,
        lambda: print_table(args, keel, mlflow, skipped),
        search_mismatches(keel, mlflow, ["top100", "all"]),
    )


if __name__ == "__main__":
    sys.exit(main())
