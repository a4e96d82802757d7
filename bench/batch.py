"""Batch scoring throughput: ``keel.scoring.predict_file`` vs the model alone.

What is measured
----------------
A ``HistGradientBoostingClassifier`` (scikit-learn defaults, 100 trees) is
fitted on breast_cancer's 569 rows x 30 features, stored with
``keel.log_model`` in a fresh Keel home, and scored on ``--rows`` rows
(default 1,000,000) resampled from the data set with replacement:

* **floor**: ``model.predict(X)`` on the whole data set already in memory as
  one NumPy array: no file, no checks, nothing written. No batch job can beat
  it by more than what the model's own speed allows, so it is the reference.
* **keel**: ``predict_file(uri, "rows.parquet", "scores.parquet")`` with
  ``--chunk-rows`` rows per chunk (default 100,000), timed from the call to its
  return: loading and verifying the model from the artifact store, reading the
  Parquet file chunk by chunk, enforcing the signature on every chunk,
  predicting, and writing the output file (atomically).

``--threads N`` caps the model's OpenMP threads for both sides (through
threadpoolctl); on a busy machine a parallel ``predict`` waits at every
tree for its slowest thread, which penalizes many short calls more than one
long one, so compare with ``--threads 1`` when the machine is shared.

The two run alternately ``--repeat`` times (default 3) in this process, after
one untimed warm-up of each; the median of each is reported with the ratio
keel/floor (above 1 means Keel's chunked scoring beat one big ``predict``
call), and the ratio of the best runs, which other load on the machine
disturbs less. The output is checked against the floor's predictions and the
benchmark exits 1 if a single prediction differs. Figures depend on the
machine and on what else runs on it; the CPU count is printed.

Usage::

    python bench/batch.py                       # from the dev venv: .venv/bin/python bench/batch.py
    python bench/batch.py --rows 2000000 --chunk-rows 50000 --repeat 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import numpy as np
    import sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    import keel
    from keel.scoring import predict_file

    keel.init(home=folder / ".keel")
    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    # Fitted on an array, as the floor calls it; the package's signature still names columns.
    model = HistGradientBoostingClassifier(random_state=0).fit(x.to_numpy(), y)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=x.head())

    progress(f"writing {args.rows:,} rows to Parquet")
    frame = x.sample(n=args.rows, replace=True, random_state=0).reset_index(drop=True)
    source = folder / "rows.parquet"
    frame.to_parquet(source, index=False)
    array = frame.to_numpy()
    del frame
    output = folder / "scores.parquet"

    def floor() -> Any:
        return model.predict(array)

    def keel_run() -> Any:
        return predict_file(info.uri, source, output, chunk_rows=args.chunk_rows)

    progress("warming up")
    expected = floor()
    keel_run()
    floor_s: list[float] = []
    keel_s: list[float] = []
    for i in range(args.repeat):
        progress(f"round {i + 1} of {args.repeat}")
        start = time.perf_counter()
        floor()
        floor_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        stats = keel_run()
        keel_s.append(time.perf_counter() - start)

    import pyarrow.parquet as pq

    scored = pq.read_table(output, columns=["prediction"]).column(0).to_numpy()
    mismatches = int(np.sum(scored != expected)) if len(scored) == len(expected) else -1
    floor_median, keel_median = statistics.median(floor_s), statistics.median(keel_s)
    return {
        "config": {
            "rows": args.rows,
            "features": int(array.shape[1]),
            "chunk_rows": args.chunk_rows,
            "repeat": args.repeat,
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "python": platform.python_version(),
            "sklearn": sklearn.__version__,
            "keel": keel.__version__,
            "model": "HistGradientBoostingClassifier(random_state=0)",
        },
        "floor": {
            "seconds": floor_s,
            "median_seconds": floor_median,
            "rows_per_s": args.rows / floor_median,
        },
        "keel": {
            "seconds": keel_s,
            "median_seconds": keel_median,
            "rows_per_s": args.rows / keel_median,
            "chunks": stats["chunks"],
            "output_bytes": output.stat().st_size,
        },
        "ratio_keel_over_floor": floor_median / keel_median,
        "ratio_best_keel_over_best_floor": min(floor_s) / min(keel_s),
        "mismatched_predictions": mismatches,
    }


def print_table(result: dict[str, Any]) -> None:
    config = result["config"]
    rows = [
        ("", "rows/s", "median s", "runs, s"),
        (
            "model.predict(X), X in memory (floor)",
            f"{result['floor']['rows_per_s']:,.0f}",
            f"{result['floor']['median_seconds']:.2f}",
            " ".join(f"{s:.2f}" for s in result["floor"]["seconds"]),
        ),
        (
            f"keel predict_file Parquet -> Parquet, {result['keel']['chunks']} chunks",
            f"{result['keel']['rows_per_s']:,.0f}",
            f"{result['keel']['median_seconds']:.2f}",
            " ".join(f"{s:.2f}" for s in result["keel"]["seconds"]),
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    threads = f" ({config['threads']} model threads)" if config["threads"] else ""
    print(
        f"Batch scoring, {config['rows']:,} rows x {config['features']} features, "
        f"{config['model']}, chunks of {config['chunk_rows']:,} rows; "
        f"{config['cpus']} CPUs{threads}, Python {config['python']}, "
        f"scikit-learn {config['sklearn']}"
    )
    print()
    for n, row in enumerate(rows):
        print(
            f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
            f"{row[3]:<{widths[3]}}".rstrip()
        )
        if n == 0:
            print("-" * (sum(widths) + 6))
    print()
    ratio = result["ratio_keel_over_floor"]
    best = result["ratio_best_keel_over_best_floor"]
    print(
        f"keel / floor: {ratio:.2f}x on the medians, {best:.2f}x best run against best run "
        "(above 1 means predict_file was faster)"
    )
    print(f"Target: keel >= 0.8x the floor: {'met' if ratio >= 0.8 else 'MISSED'}.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to score (1,000,000)")
    parser.add_argument(
        "--chunk-rows", type=int, default=100_000, help="predict_file's chunk_rows (100,000)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="cap the model's OpenMP/BLAS threads for both sides (default: the libraries' own)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if min(args.rows, args.chunk_rows, args.repeat, args.threads or 1) < 1:
        parser.error("--rows, --chunk-rows, --repeat and --threads must be at least 1")
    for name in [n for n in os.environ if n.startswith("KEEL_")]:
        del os.environ[name]
    here = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        os.chdir(tmp)  # no git repository to record with the run
        try:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=args.threads):
                result = run(args, Path(tmp))
        finally:
            from keel.tracking import fluent

            fluent._shutdown()
            os.chdir(here)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    if result["mismatched_predictions"]:
        print(
            f"MISMATCH: {result['mismatched_predictions']} predictions differ from the floor's",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
