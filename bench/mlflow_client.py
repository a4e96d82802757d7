"""The unmodified mlflow client against ``keel server`` and against ``mlflow server``, side by side.

What is measured
----------------
The same MLflow script (``bench/server.py``'s MLflow worker, run by the mlflow
client in its own virtualenv) is pointed first at ``mlflow server`` and then at
``keel server``, both on SQLite with a local artifact folder and the same
number of uvicorn workers. Keel's server has token auth on; the client sends the
token as ``MLFLOW_TRACKING_TOKEN``. Only the server changes: the client, the
calls and the data are the same, so the ratios are what a team gains by pointing
``MLFLOW_TRACKING_URI`` at Keel without changing a line.

* **per-call log_metric**: ``mlflow.log_metric(key, value, step=step)`` in a
  loop, one request per call (what most training scripts do).
* **log_batch**: ``MlflowClient.log_batch`` of ``P`` points per call, each into
  a fresh run, after one untimed warm-up call.
* **search_runs**: ``N`` runs with 10 params and 5 metrics each, created through
  the server by the same client (setup time printed, not compared), then
  ``search_runs`` with a filter and an order, timed ``K`` times: the top 100 and
  every match (paged). Row counts and the sum of ``m1`` are compared between the
  servers.

Usage::

    make .venv-mlflow/.installed
    .venv/bin/python bench/mlflow_client.py                # a few minutes on 2 cores
    .venv/bin/python bench/mlflow_client.py --search-runs 500 --json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _common import (
    Result,
    Table,
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
from server import keel_server, mlflow_server, progress, run_mlflow

#: Issue 14's goal: the client's per-call log_metric at least this many times faster on Keel.
PER_CALL_TARGET = 10.0
SEARCHES = ("top100", "all")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batch-size", type=int, default=1000, help="points per log_batch (1000)")
    parser.add_argument("--batches", type=int, default=20, help="timed log_batch calls (20)")
    parser.add_argument(
        "--calls", type=int, default=500, help="per-call log_metric calls per server (500)"
    )
    parser.add_argument(
        "--search-runs", type=int, default=1000, help="runs to search; 0 skips (1000)"
    )
    parser.add_argument("--repeat", type=int, default=10, help="timed repetitions per search (10)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server (1)")
    parser.add_argument(
        "--mlflow-python",
        type=Path,
        default=None,
        help="interpreter with mlflow installed (default .venv-mlflow/bin/python)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.batches, args.calls, args.repeat, args.workers) < 1:
        parser.error("--batch-size, --batches, --calls, --repeat and --workers must be >= 1")
    if args.search_runs < 0 or args.batch_size > 1000:
        parser.error("--search-runs must be >= 0 and --batch-size at most 1000 (MLflow's limit)")
    # what the MLflow worker of bench/server.py reads
    args.mlflow_calls = args.calls
    args.search_setup = "server"
    return args


def ratios(keel: Result, mlflow: Result) -> Result:
    return {
        "per_call": ratio(
            dig(keel, "per_point", "points_per_s"), dig(mlflow, "per_point", "points_per_s"), True
        ),
        "log_batch": ratio(
            dig(keel, "batch", "points_per_s"), dig(mlflow, "batch", "points_per_s"), True
        ),
        **{
            f"search_{name}": ratio(
                dig(keel, "search", "queries", name, "median_ms"),
                dig(mlflow, "search", "queries", name, "median_ms"),
                False,
            )
            for name in SEARCHES
        },
    }


def print_table(keel: Result, mlflow: Result, speedups: Result) -> None:
    table = Table()
    table.add(
        "per-call log_metric, calls/s",
        fmt(dig(keel, "per_point", "points_per_s")),
        fmt(dig(mlflow, "per_point", "points_per_s")),
        fmt_ratio(speedups["per_call"]),
    )
    table.add(
        "log_batch, points/s",
        fmt(dig(keel, "batch", "points_per_s")),
        fmt(dig(mlflow, "batch", "points_per_s")),
        fmt_ratio(speedups["log_batch"]),
    )
    for name in SEARCHES:
        rows = dig(keel, "search", "queries", name, "rows")
        table.add(
            f"search_runs {name} ({fmt(rows)} rows), median ms",
            fmt(dig(keel, "search", "queries", name, "median_ms"), 1),
            fmt(dig(mlflow, "search", "queries", name, "median_ms"), 1),
            fmt_ratio(speedups[f"search_{name}"]),
        )
    table.print("mlflow client -> keel server", "-> mlflow server")
    notes = [
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; the same "
        "mlflow client and calls against each server."
    ]
    per_call = speedups["per_call"]
    print_verdicts(
        {
            f"per-call log_metric >= {PER_CALL_TARGET:g}x": None
            if per_call is None
            else per_call >= PER_CALL_TARGET
        },
        "mlflow server",
        None,
        notes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    python = peer_python(".venv-mlflow", args.mlflow_python)
    missing = peer_unavailable(python, ".venv-mlflow", "mlflow")
    if missing is not None:
        raise SystemExit(f"this benchmark drives the mlflow client: {missing}")
    assert python is not None
    root = Path(tempfile.mkdtemp(prefix="bench-mlflow-client-"))
    try:
        progress("the mlflow client against mlflow server")
        with mlflow_server(root / "mlflow", python, args.workers) as server:
            mlflow = run_mlflow(python, server, root / "mlflow", args)
        progress("the mlflow client against keel server")
        with keel_server(root / "keel", auth=True, workers=args.workers) as server:
            keel = run_mlflow(python, server, root / "keel", args, token=server.token)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    speedups = ratios(keel, mlflow)

    def combined() -> Result:
        return {
            "config": {
                "batch_size": args.batch_size,
                "batches": args.batches,
                "calls": args.calls,
                "search_runs": args.search_runs,
                "repeat": args.repeat,
                "workers": args.workers,
                "cpus": os.cpu_count(),
            },
            "keel": keel,
            "mlflow": mlflow,
            "ratios": speedups,
        }

    return finish(
        args.json,
        combined,
        lambda: print_table(keel, mlflow, speedups),
        search_mismatches(keel, mlflow, SEARCHES),
    )


if __name__ == "__main__":
    sys.exit(main())
