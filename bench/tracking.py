"""Keel vs MLflow tracking, side by side, on SQLite: run lifecycle, logging and run search.

What is measured
----------------
Run start and end: ``L`` empty runs, ``start_run()`` then ``end_run()`` with
nothing logged, each timed alone (median and p90 per run, after 10 untimed
runs), first in a folder that is no git work tree, then inside one: a
repository of ``--repo-files`` committed files with one uncommitted edit, so
both tools record a commit (Keel also a digest of the uncommitted changes).
This is what a sweep of many short runs pays on top of its logging.

Workload A, logging: ``R`` runs x 10 params x 5 metrics x ``S`` steps, written
the way users write it, one ``log_metric(key, value, step=step)`` call per
point through the fluent API (``keel.start_run`` / ``keel.log_param`` /
``keel.log_metric`` and the same ``mlflow.*`` calls). The clock runs from the
first ``start_run`` to the end of the last run, so Keel's buffered points are
really written (``end_run`` flushes). After timing, the stored points are
counted (``Client.count_metric_points`` for Keel, ``get_metric_history`` for
MLflow) and the benchmark fails if any is missing. A second line writes the
same runs with the client API, one ``log_batch`` per run carrying all of its
points and params (``create_run`` + ``log_batch`` + ``set_terminated``): the
fastest path MLflow offers, as a reference.

Short-run sweep: workload A again with ``--sweep-runs`` runs of
``--sweep-steps`` steps (default 20 x 50): the common case of a
hyperparameter sweep, where starting, ending and logging params weigh as
much as the points.

Workload B, search: ``N`` runs in one experiment, each with 10 params (numbers
and strings) and 5 metrics, created with each tool's bulk client path
(``create_run`` + ``log_batch``, runs left RUNNING: status plays no part in
the search; setup time is printed, not compared). Then a
filtered, ordered search returning a pandas DataFrame is timed ``K`` times
after one untimed warm-up call (median and p90, nearest rank):

* ``metrics.m0 > 0.5 and params.p1 = 'rf'`` by ``metrics.m1 DESC``, top 100
  (a leaderboard), and the same returning every matching row (about 1,000);
* ``metrics.m0 > 0.5 and params.p1 != 'rf'``, every matching row (about
  4,000 of 10,000);
* Keel only (MLflow's filter language has no OR): a filter with OR and
  parentheses.

Both tools get identical data (seeded per run) and each search's row count
and sum of ``metrics.m1`` are compared between the tools as a sanity check.

How it runs
-----------
Each tool runs in its own subprocess (a "worker": this same file with
``--worker``) against a fresh SQLite database in its own temporary folder,
which is also the worker's working directory (so neither tool finds a git
repository to record) and holds its artifacts. Keel runs under the current
interpreter; MLflow under ``--mlflow-python`` (default
``.venv-mlflow/bin/python`` next to this repository's ``bench/`` folder),
because MLflow's pins clash with Keel's. ``KEEL_*`` and ``MLFLOW_*`` variables
are not passed on; MLflow gets telemetry off and logging at WARNING. The
workers run one after the other, never at the same time. If the MLflow
interpreter is missing or cannot ``import mlflow``, Keel's figures are
printed alone.

Usage::

    make bench                      # creates .venv-mlflow (pip install mlflow), then runs this
    python bench/tracking.py        # from the dev venv: .venv/bin/python bench/tracking.py
    python bench/tracking.py --runs 5 --steps 50 --search-runs 1000 --repeat 5 --json

The default run takes about 15 minutes on 2 cores, nearly all of it MLflow's:
each of its ``log_metric`` calls is a transaction (about 3 ms), and creating
the 10,000 runs to search takes it over 4 minutes (progress goes to stderr).
Other processes on the machine move every figure; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    REPO,
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

RESULT_MARKER = "KEEL_BENCH_RESULT "
N_PARAMS = 10
N_METRICS = 5
METRIC_KEYS = tuple(f"m{k}" for k in range(N_METRICS))
MODELS = ("rf", "gb", "lr", "mlp", "svm")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
LOG_EXPERIMENT = "bench-logging"
BATCH_EXPERIMENT = "bench-logging-batch"
SEARCH_EXPERIMENT = "bench-search"
FILTER = "metrics.m0 > 0.5 and params.p1 = 'rf'"
WIDE_FILTER = "metrics.m0 > 0.5 and params.p1 != 'rf'"
ORDER_BY = "metrics.m1 DESC"
OR_FILTER = "(params.p1 = 'rf' OR params.p1 = 'gb') AND (metrics.m0 > 0.9 OR params.p0 < 0.001)"
TOP_N = 100
ALL_ROWS = 100_000
LIFECYCLE_WARMUP = 10
SWEEP_EXPERIMENT = "bench-sweep"
LIFECYCLE_EXPERIMENT = "bench-lifecycle"

#: name -> (description, filter, max_results, tools that support it)
QUERIES: dict[str, tuple[str, str, int, tuple[str, ...]]] = {
    "top100": (f"filter + order, top {TOP_N}", FILTER, TOP_N, ("keel", "mlflow")),
    "all": ("filter + order, all matches", FILTER, ALL_ROWS, ("keel", "mlflow")),
    "all_wide": ("wider filter + order, all ~4,000", WIDE_FILTER, ALL_ROWS, ("keel", "mlflow")),
    "or_top100": (f"OR + parentheses, top {TOP_N}", OR_FILTER, TOP_N, ("keel",)),
}

Result = dict[str, Any]


# -- data both tools log ---------------------------------------------------------


def run_params(index: int) -> dict[str, Any]:
    """The 10 params of run ``index``: numbers and strings, the same for both tools."""
    rng = random.Random(index)
    return {
        "p0": round(10 ** rng.uniform(-4, -1), 6),  # learning rate
        "p1": rng.choice(MODELS),
        "p2": rng.randint(2, 16),  # max depth
        "p3": rng.choice(OPTIMIZERS),
        "p4": rng.choice((32, 64, 128, 256)),  # batch size
        "p5": round(rng.uniform(0.0, 0.5), 3),  # dropout
        "p6": rng.randrange(50, 1000, 50),  # estimators
        "p7": rng.choice(("true", "false")),  # early stopping
        "p8": rng.randrange(2**31),  # seed
        "p9": f"v{rng.randint(1, 20)}",  # dataset version
    }


def run_metrics(index: int) -> dict[str, float]:
    """The 5 final metric values of run ``index`` (seeded apart from its params)."""
    rng = random.Random(1_000_003 * (index + 1))
    return {key: rng.random() for key in METRIC_KEYS}


def point_value(run: int, metric: int, step: int) -> float:
    """A loss-like curve; cheap so that logging, not the data, is what is timed."""
    return 1.0 / (1.0 + step + metric) + 0.001 * run


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timings(call: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    """Run ``call`` once untimed (warm-up), then ``repeat`` times timed; seconds and last result."""
    result = call()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def summarize(seconds: Sequence[float]) -> Result:
    ordered = sorted(seconds)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]  # nearest rank
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": p90 * 1000,
        "min_ms": ordered[0] * 1000,
        "samples": len(ordered),
    }


def lifecycle(start: Callable[[], Any], end: Callable[[], Any], runs: int) -> Result:
    """Time ``runs`` empty runs one by one, after ``LIFECYCLE_WARMUP`` untimed ones."""
    seconds = []
    for n in range(LIFECYCLE_WARMUP + runs):
        began = time.perf_counter()
        start()
        end()
        if n >= LIFECYCLE_WARMUP:
            seconds.append(time.perf_counter() - began)
    return summarize(seconds)


def make_repo(root: Path, files: int) -> Path:
    """A git work tree of ``files`` committed source files and one uncommitted edit."""
    root.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "bench@example.com")
    git("config", "user.name", "bench")
    (root / ".gitignore").write_text("__pycache__/\n*.log\n")
    for n in range(files):
        package = root / f"pkg{n % 10}"
        package.mkdir(exist_ok=True)
        (package / f"module{n}.py").write_text(f"VALUE = {n}\n" * 20)
    git("add", ".")
    git("commit", "-qm", "bench")
    (root / "pkg0" / "module0.py").write_text("VALUE = -1\n")
    # Ages the files past Keel's racy window (3 s), as in a checkout edited a while ago.
    time.sleep(3.5)
    return root


def frame_check(frame: Any) -> Result:
    """Row count and sum of ``metrics.m1`` of a search result, to compare the tools."""
    rows = len(frame)
    total = float(frame["metrics.m1"].sum()) if rows else 0.0
    return {"rows": rows, "m1_sum": round(total, 6)}


def throughput(points: int, seconds: float) -> Result:
    return {"points": points, "seconds": seconds, "points_per_s": points / seconds}


def verify(tool: str, what: str, stored: int, expected: int) -> None:
    if stored != expected:
        raise SystemExit(
            f"{tool} {what}: {stored} metric points stored, expected {expected}; "
            "the throughput figure would be a lie"
        )


def search_progress(tool: str, done: int, total: int, started: float) -> None:
    if done % 1000 == 0 or done == total:
        elapsed = time.perf_counter() - started
        eta = elapsed / done * (total - done)
        progress(
            f"  {tool}: {done:,}/{total:,} runs created, {elapsed:.0f}s elapsed, ~{eta:.0f}s to go"
        )


# -- Keel worker ---------------------------------------------------------------


def keel_worker(args: argparse.Namespace, tmp: Path) -> Result:
    import keel
    from keel.tracking.entities import Metric

    keel.init(
        home=tmp / "home",
        store_url=f"sqlite:///{(tmp / 'keel.db').as_posix()}",
        artifacts_url=str(tmp / "artifacts"),
    )
    client = keel.Client()
    result: Result = {"tool": "keel", "version": keel.__version__}
    runs, steps = args.runs, args.steps
    expected = runs * N_METRICS * steps

    def per_point(experiment: str, runs: int, steps: int, what: str) -> Result:
        keel.set_experiment(experiment)  # creates the experiment: not timed
        expected = runs * N_METRICS * steps
        progress(f"keel: {what}, {runs} runs x {steps} steps = {expected:,} points")
        run_ids = []
        start = time.perf_counter()
        for r in range(runs):
            with keel.start_run() as run:
                run_ids.append(run.id)
                for key, value in run_params(r).items():
                    keel.log_param(key, value)
                for step in range(steps):
                    for m, key in enumerate(METRIC_KEYS):
                        keel.log_metric(key, point_value(r, m, step), step=step)
        seconds = time.perf_counter() - start
        verify("keel", what, sum(client.count_metric_points(i) for i in run_ids), expected)
        return throughput(expected, seconds)

    # Run start and end, outside and inside a git work tree.
    keel.set_experiment(LIFECYCLE_EXPERIMENT)  # creates the database: not timed
    progress(f"keel: {args.lifecycle_runs} empty runs, then as many in a git repository")
    last: list[Any] = []

    def start_run() -> None:
        last[:] = [keel.start_run()]

    result["lifecycle"] = lifecycle(start_run, keel.end_run, args.lifecycle_runs)
    os.chdir(make_repo(tmp / "repo", args.repo_files))
    result["lifecycle_git"] = lifecycle(start_run, keel.end_run, args.lifecycle_runs)
    state = client.get_environment(last[0].id)
    if not (state["git_commit"] and state["git_dirty"]):
        raise SystemExit(f"keel recorded no dirty git state inside the repository: {state}")
    os.chdir(tmp)

    # Workload A: per-point fluent logging; then the short-run sweep.
    result["per_point"] = per_point(LOG_EXPERIMENT, runs, steps, "per-point logging")
    result["sweep"] = per_point(
        SWEEP_EXPERIMENT, args.sweep_runs, args.sweep_steps, "short-run sweep"
    )

    # Workload A, reference: one log_batch per run with all of its points.
    progress("keel: log_batch per run")
    experiment_id = client.create_experiment(BATCH_EXPERIMENT)
    run_ids = []
    start = time.perf_counter()
    for r in range(runs):
        info = client.create_run(experiment_id, capture=False)
        run_ids.append(info.id)
        stamp = now_ms()
        metrics = [
            Metric(key, point_value(r, m, step), step, stamp)
            for step in range(steps)
            for m, key in enumerate(METRIC_KEYS)
        ]
        client.log_batch(info.id, metrics=metrics, params=run_params(r))
        client.set_terminated(info.id)
    seconds = time.perf_counter() - start
    verify("keel", "log_batch", sum(client.count_metric_points(i) for i in run_ids), expected)
    result["batch"] = throughput(expected, seconds)

    if args.skip_search:
        return result

    # Workload B: search.
    total = args.search_runs
    progress(f"keel: creating {total:,} runs to search")
    experiment_id = client.create_experiment(SEARCH_EXPERIMENT)
    keel.set_experiment(SEARCH_EXPERIMENT)
    start = time.perf_counter()
    for r in range(total):
        info = client.create_run(experiment_id, capture=False)
        stamp = now_ms()
        final = [Metric(k, v, 0, stamp) for k, v in run_metrics(r).items()]
        client.log_batch(info.id, metrics=final, params=run_params(r))
        search_progress("keel", r + 1, total, start)
    setup = time.perf_counter() - start
    queries: Result = {}
    for name, (_, filter_string, max_results, _tools) in QUERIES.items():

        def call(f: str = filter_string, n: int = max_results) -> Any:
            return keel.search_runs(
                f, order_by=[ORDER_BY], max_results=n, experiment_names=[SEARCH_EXPERIMENT]
            )

        seconds_list, frame = timings(call, args.repeat)
        queries[name] = {**summarize(seconds_list), **frame_check(frame)}
    result["search"] = {"runs": total, "setup_seconds": setup, "queries": queries}
    return result


# -- MLflow worker ---------------------------------------------------------------


def mlflow_worker(args: argparse.Namespace, tmp: Path) -> Result:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    artifacts = (tmp / "artifacts").as_uri()
    result: Result = {"tool": "mlflow", "version": mlflow.__version__}
    runs, steps = args.runs, args.steps
    expected = runs * N_METRICS * steps

    def stored_points(run_ids: Sequence[str]) -> int:
        return sum(
            len(client.get_metric_history(run_id, key)) for run_id in run_ids for key in METRIC_KEYS
        )

    def params_of(index: int) -> list[Any]:
        return [Param(k, str(v)) for k, v in run_params(index).items()]

    def per_point(experiment: str, runs: int, steps: int, what: str) -> Result:
        experiment_id = client.create_experiment(experiment, artifact_location=artifacts)
        mlflow.set_experiment(experiment_id=experiment_id)
        expected = runs * N_METRICS * steps
        progress(f"mlflow: {what}, {runs} runs x {steps} steps = {expected:,} points")
        run_ids = []
        start = time.perf_counter()
        for r in range(runs):
            with mlflow.start_run() as run:
                run_ids.append(run.info.run_id)
                for key, value in run_params(r).items():
                    mlflow.log_param(key, value)
                for step in range(steps):
                    for m, key in enumerate(METRIC_KEYS):
                        mlflow.log_metric(key, point_value(r, m, step), step=step)
            if (r + 1) % 5 == 0 or r + 1 == runs:
                progress(f"  mlflow: {r + 1}/{runs} runs, {time.perf_counter() - start:.0f}s")
        seconds = time.perf_counter() - start
        verify("mlflow", what, stored_points(run_ids), expected)
        return throughput(expected, seconds)

    # Run start and end, outside and inside a git work tree.
    progress("mlflow: creating the database")
    experiment_id = client.create_experiment(LIFECYCLE_EXPERIMENT, artifact_location=artifacts)
    mlflow.set_experiment(experiment_id=experiment_id)
    progress(f"mlflow: {args.lifecycle_runs} empty runs, then as many in a git repository")
    last: list[Any] = []

    def start_run() -> None:
        last[:] = [mlflow.start_run()]

    result["lifecycle"] = lifecycle(start_run, mlflow.end_run, args.lifecycle_runs)
    os.chdir(make_repo(tmp / "repo", args.repo_files))
    result["lifecycle_git"] = lifecycle(start_run, mlflow.end_run, args.lifecycle_runs)
    tags = client.get_run(last[0].info.run_id).data.tags
    if "mlflow.source.git.commit" not in tags:
        progress("  mlflow recorded no git commit inside the repository (is GitPython installed?)")
    os.chdir(tmp)

    # Workload A: per-point fluent logging; then the short-run sweep.
    result["per_point"] = per_point(LOG_EXPERIMENT, runs, steps, "per-point logging")
    result["sweep"] = per_point(
        SWEEP_EXPERIMENT, args.sweep_runs, args.sweep_steps, "short-run sweep"
    )

    # Workload A, reference: one log_batch per run with all of its points.
    progress("mlflow: log_batch per run")
    experiment_id = client.create_experiment(BATCH_EXPERIMENT, artifact_location=artifacts)
    run_ids = []
    start = time.perf_counter()
    for r in range(runs):
        run_id = client.create_run(experiment_id).info.run_id
        run_ids.append(run_id)
        stamp = now_ms()
        metrics = [
            Metric(key, point_value(r, m, step), stamp, step)
            for step in range(steps)
            for m, key in enumerate(METRIC_KEYS)
        ]
        client.log_batch(run_id, metrics=metrics, params=params_of(r))
        client.set_terminated(run_id)
    seconds = time.perf_counter() - start
    verify("mlflow", "log_batch", stored_points(run_ids), expected)
    result["batch"] = throughput(expected, seconds)

    if args.skip_search:
        return result

    # Workload B: search.
    total = args.search_runs
    progress(f"mlflow: creating {total:,} runs to search (the slow part)")
    experiment_id = client.create_experiment(SEARCH_EXPERIMENT, artifact_location=artifacts)
    start = time.perf_counter()
    for r in range(total):
        run_id = client.create_run(experiment_id).info.run_id
        stamp = now_ms()
        final = [Metric(k, v, stamp, 0) for k, v in run_metrics(r).items()]
        client.log_batch(run_id, metrics=final, params=params_of(r))
        search_progress("mlflow", r + 1, total, start)
    setup = time.perf_counter() - start
    queries: Result = {}
    for name, (_, filter_string, max_results, tools) in QUERIES.items():
        if "mlflow" not in tools:
            continue

        def call(f: str = filter_string, n: int = max_results) -> Any:
            return mlflow.search_runs(
                experiment_ids=[experiment_id], filter_string=f, order_by=[ORDER_BY], max_results=n
            )

        seconds_list, frame = timings(call, args.repeat)
        queries[name] = {**summarize(seconds_list), **frame_check(frame)}
    result["search"] = {"runs": total, "setup_seconds": setup, "queries": queries}
    return result


WORKERS: dict[str, Callable[[argparse.Namespace, Path], Result]] = {
    "keel": keel_worker,
    "mlflow": mlflow_worker,
}


def run_worker(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{args.worker}-"))
    try:
        os.chdir(tmp)
        if args.worker == "mlflow":
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(tmp / 'mlflow.db').as_posix()}"
        result = WORKERS[args.worker](args, tmp)
        result["python"] = platform.python_version()
        print(RESULT_MARKER + json.dumps(result), flush=True)
    finally:
        os.chdir(REPO)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


# -- driver ------------------------------------------------------------------------


def run_child(python: str, tool: str, args: argparse.Namespace) -> Result:
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        tool,
        "--runs",
        str(args.runs),
        "--steps",
        str(args.steps),
        "--search-runs",
        str(args.search_runs),
        "--repeat",
        str(args.repeat),
        "--sweep-runs",
        str(args.sweep_runs),
        "--sweep-steps",
        str(args.sweep_steps),
        "--lifecycle-runs",
        str(args.lifecycle_runs),
        "--repo-files",
        str(args.repo_files),
    ]
    if args.skip_search:
        command.append("--skip-search")
    env = clean_env(
        MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true",
        MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false",
        MLFLOW_ENABLE_ASYNC_LOGGING="false",
    )
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout)
        raise SystemExit(f"the {tool} worker failed (exit code {done.returncode}); see above")
    result: Result = json.loads(lines[-1][len(RESULT_MARKER) :])
    return result


def ratios(keel: Result, mlflow: Result | None) -> Result:
    """Keel/MLflow for throughput, MLflow/Keel for latency: above 1 means Keel is faster."""
    out: Result = {}
    for line in ("lifecycle", "lifecycle_git"):
        value = ratio(dig(keel, line, "median_ms"), dig(mlflow, line, "median_ms"), False)
        if value is not None:
            out[f"{line}_median_ms_mlflow_over_keel"] = value
    for line in ("per_point", "batch", "sweep"):
        value = ratio(dig(keel, line, "points_per_s"), dig(mlflow, line, "points_per_s"), True)
        if value is not None:
            out[f"{line}_points_per_s_keel_over_mlflow"] = value
    value = ratio(
        dig(keel, "per_point", "points_per_s"), dig(mlflow, "batch", "points_per_s"), True
    )
    if value is not None:
        out["keel_per_point_over_mlflow_batch"] = value
    for name in QUERIES:
        for stat in ("median_ms", "p90_ms"):
            value = ratio(
                dig(keel, "search", "queries", name, stat),
                dig(mlflow, "search", "queries", name, stat),
                False,
            )
            if value is not None:
                out[f"search_{name}_{stat}_mlflow_over_keel"] = value
    return out


def print_table(
    args: argparse.Namespace, keel: Result, mlflow: Result | None, skipped: str | None
) -> None:
    table = Table()
    for line, label in (
        ("lifecycle", "empty start_run + end_run"),
        ("lifecycle_git", f"  the same in a git repo ({args.repo_files} files)"),
    ):
        for stat in ("median_ms", "p90_ms"):
            k, m = dig(keel, line, stat), dig(mlflow, line, stat)
            table.add(
                f"{label}, {stat[:-3]} ms", fmt(k, 2), fmt(m, 2), fmt_ratio(ratio(k, m, False))
            )
    for line, label in (
        ("per_point", "per-point log_metric, points/s"),
        ("batch", "client log_batch per run, points/s"),
        ("sweep", "short-run sweep, points/s"),
    ):
        k, m = dig(keel, line, "points_per_s"), dig(mlflow, line, "points_per_s")
        table.add(label, fmt(k), fmt(m), fmt_ratio(ratio(k, m, True)))
        table.add(
            "  wall time, s",
            fmt(dig(keel, line, "seconds"), 2),
            fmt(dig(mlflow, line, "seconds"), 2),
        )
    k = dig(keel, "per_point", "points_per_s")
    m = dig(mlflow, "batch", "points_per_s")
    table.add("keel per-point vs mlflow log_batch", "", "", fmt_ratio(ratio(k, m, True)))
    if "search" in keel:
        table.add(
            "search setup (not compared), s",
            fmt(dig(keel, "search", "setup_seconds"), 1),
            fmt(dig(mlflow, "search", "setup_seconds"), 1),
        )
        for name, (label, _filter, _n, _tools) in QUERIES.items():
            kq = dig(keel, "search", "queries", name)
            mq = dig(mlflow, "search", "queries", name)
            for stat in ("median_ms", "p90_ms"):
                kv, mv = dig(kq, stat), dig(mq, stat)
                table.add(
                    f"{label}, {stat[:-3]} ms",
                    fmt(kv, 1),
                    fmt(mv, 1),
                    fmt_ratio(ratio(kv, mv, False)),
                )
            table.add("  rows returned", fmt(dig(kq, "rows")), fmt(dig(mq, "rows")))

    print(
        f"Tracking on SQLite, {os.cpu_count()} CPUs, Python {keel['python']}"
        + (f" (mlflow: Python {mlflow['python']})" if mlflow else "")
    )
    print(
        f"Run start + end: {args.lifecycle_runs} empty runs each, timed one by one; in a git "
        f"repository of {args.repo_files} files with an uncommitted edit"
    )
    print(
        f"A: {args.runs:,} runs x {N_PARAMS} params x {N_METRICS} metrics x {args.steps:,} "
        f"steps = {args.runs * N_METRICS * args.steps:,} points, one call per point"
    )
    print(
        f"Sweep: {args.sweep_runs:,} runs x {N_PARAMS} params x {N_METRICS} metrics x "
        f"{args.sweep_steps:,} steps, as A"
    )
    if "search" in keel:
        print(
            f"B: {keel['search']['runs']:,} runs; filter {FILTER!r} by {ORDER_BY!r}; "
            f"wider filter {WIDE_FILTER!r}; OR filter {OR_FILTER!r}"
        )
    print()
    table.print(f"keel {keel['version']}", f"mlflow {mlflow['version']}" if mlflow else "mlflow")
    print_verdicts(targets(keel, mlflow), "MLflow", skipped)


def targets(keel: Result, mlflow: Result | None) -> dict[str, bool | None]:
    """The issue's goals: met (True), missed (False) or not measured (None)."""
    found = ratios(keel, mlflow)
    lifecycle_ms = dig(keel, "lifecycle", "median_ms")
    goals: dict[str, bool | None] = {
        "start + end <= 2 ms": None if lifecycle_ms is None else lifecycle_ms <= 2
    }
    for line, label in (("per_point", "per-point"), ("sweep", "short-run sweep")):
        value = found.get(f"{line}_points_per_s_keel_over_mlflow")
        goals[f"{label} >= 100x MLflow"] = None if value is None else value >= 100
    for name, label in (("top100", "top-100 search"), ("all_wide", "~4,000-row search")):
        median = dig(keel, "search", "queries", name, "median_ms")
        goals[f"{label} median < 100 ms"] = None if median is None else median < 100
    return goals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="runs in workload A (default 20)")
    parser.add_argument("--steps", type=int, default=200, help="steps per metric (default 200)")
    parser.add_argument(
        "--search-runs", type=int, default=10_000, help="runs to search (default 10000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=15, help="timed repetitions per search (default 15)"
    )
    parser.add_argument(
        "--mlflow-python",
        type=Path,
        default=None,
        help="interpreter with mlflow installed (default .venv-mlflow/bin/python)",
    )
    parser.add_argument(
        "--sweep-runs", type=int, default=20, help="runs in the short-run sweep (default 20)"
    )
    parser.add_argument(
        "--sweep-steps", type=int, default=50, help="steps per metric in the sweep (default 50)"
    )
    parser.add_argument(
        "--lifecycle-runs",
        type=int,
        default=100,
        help="empty runs timed for start + end, per setting (default 100)",
    )
    parser.add_argument(
        "--repo-files",
        type=int,
        default=200,
        help="files in the git repository of the start + end figure (default 200)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--skip-search", action="store_true", help="run workload A only")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    counts = (
        args.runs,
        args.steps,
        args.search_runs,
        args.repeat,
        args.sweep_runs,
        args.sweep_steps,
        args.lifecycle_runs,
        args.repo_files,
    )
    if min(counts) < 1:
        parser.error(
            "every count (--runs, --steps, --search-runs, --repeat, --sweep-*, ...) must be at least 1"
        )
    if args.worker:
        return run_worker(args)

    keel = run_child(sys.executable, "keel", args)
    mlflow_python = peer_python(".venv-mlflow", args.mlflow_python)
    skipped = peer_unavailable(mlflow_python, ".venv-mlflow", "mlflow")
    mlflow = None
    if skipped is None:
        assert mlflow_python is not None
        mlflow = run_child(str(mlflow_python), "mlflow", args)
    else:
        progress(f"MLflow skipped: {skipped}")

    def combined() -> Result:
        return {
            "config": {
                "runs": args.runs,
                "steps": args.steps,
                "search_runs": None if args.skip_search else args.search_runs,
                "repeat": args.repeat,
                "cpus": os.cpu_count(),
                "sweep_runs": args.sweep_runs,
                "sweep_steps": args.sweep_steps,
                "lifecycle_runs": args.lifecycle_runs,
                "repo_files": args.repo_files,
                "filter": FILTER,
                "wide_filter": WIDE_FILTER,
                "order_by": ORDER_BY,
                "or_filter": OR_FILTER,
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
        search_mismatches(keel, mlflow, list(QUERIES)),
    )


if __name__ == "__main__":
    sys.exit(main())
