"""Batch scoring throughput: ``keel predict`` native and compiled (ONNX) vs the model alone.

What is measured
----------------
A ``HistGradientBoostingClassifier`` (scikit-learn defaults, 100 trees) is
fitted on breast_cancer's 569 rows x 30 features, stored with
``keel.log_model`` in a fresh Keel home, registered as ``bench``, compiled
with ``keel.models.compile.compile_version("bench", 1, to="onnx", data=X)``
(what ``keel models compile bench 1 --to onnx`` runs; it must pass parity on
the input example and the 569 rows, or the benchmark stops saying why), and
scored on ``--rows`` rows (default 1,000,000) resampled from the data set
with replacement:

* **floor**: ``model.predict(X)`` on the whole data set already in memory as
  one NumPy array: no file, no checks, nothing written. No batch job running
  this model natively can beat it by more than what the model's own speed
  allows, so it is the reference.
* **keel native**: ``predict_file("models:/bench/1", "rows.parquet",
  "native.parquet", runtime="native")``, the function ``keel predict
  models:/bench/1 rows.parquet -o native.parquet --runtime native`` calls,
  with ``--chunk-rows`` rows per chunk (default 100,000), timed from the call
  to its return: loading and verifying the model from the artifact store,
  reading the Parquet file chunk by chunk, enforcing the signature on every
  chunk, predicting with scikit-learn, and writing the output file
  (atomically).
* **keel onnx**: the same call with ``runtime="onnx"`` (``keel predict …
  --runtime onnx``) to another output file: the compiled form, run by
  onnxruntime, loaded by its folder manifest from the same store.

``--threads N`` caps the native model's OpenMP threads for the floor and keel
native (through threadpoolctl); on a busy machine a parallel ``predict``
waits at every tree for its slowest thread, which penalizes many short calls
more than one long one, so compare with ``--threads 1`` when the machine is
shared. It does not reach onnxruntime, whose own pool keeps one thread per
physical core.

The three run alternately ``--repeat`` times (default 3) in this process,
after one untimed warm-up of each; the median of each is reported with the
ratios keel native/floor (above 1 means Keel's chunked scoring beat one big
``predict`` call), keel onnx/keel native and keel onnx/floor, and the ratios
of the best runs, which other load on the machine disturbs less. Each run's
CPU time (``time.process_time``: every thread of this process, OpenMP's and
onnxruntime's, spinning ones included) gives rows per CPU-second, which
other work on the machine disturbs less than wall time. Both output
files are checked against the floor's predictions: the benchmark exits 1 if
a single native prediction differs, or if the ONNX predictions agree on
fewer rows than compilation's parity threshold (99.9%); the count of
differing rows is printed either way. Figures depend on the machine and on
what else runs on it; the CPU count and the 1-minute load average are
printed.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timed(what: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = what()
    return time.perf_counter() - start, out


def summary(rows: int, seconds: list[float], cpu: list[float]) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {
        "seconds": seconds,
        "median_seconds": median,
        "rows_per_s": rows / median,
        "cpu_seconds": cpu,
        "rows_per_cpu_s": rows / statistics.median(cpu),
    }


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import numpy as np
    import sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    import keel
    from keel.errors import KeelError
    from keel.models.compile import THRESHOLD, compile_version
    from keel.scoring import predict_file

    keel.init(home=folder / ".keel")
    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    # Fitted on an array, as the floor calls it; the package's signature still names columns.
    model = HistGradientBoostingClassifier(random_state=0).fit(x.to_numpy(), y)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=x.head())
    version = keel.register_model(info.uri, "bench")
    uri = f"models:/bench/{version}"

    progress(f"compiling models:/bench/{version} to ONNX and checking parity on the data set")
    try:
        compile_seconds, compiled = timed(lambda: compile_version("bench", version, data=x))
    except KeelError as exc:
        raise SystemExit(f"the ONNX compilation did not pass, nothing was timed: {exc}") from None
    report = compiled.report

    progress(f"writing {args.rows:,} rows to Parquet")
    frame = x.sample(n=args.rows, replace=True, random_state=0).reset_index(drop=True)
    source = folder / "rows.parquet"
    frame.to_parquet(source, index=False)
    array = frame.to_numpy()
    del frame
    outputs = {"native": folder / "native.parquet", "onnx": folder / "onnx.parquet"}

    def floor() -> Any:
        return model.predict(array)

    def keel_run(runtime: str) -> Callable[[], dict[str, Any]]:
        def score() -> dict[str, Any]:
            stats = predict_file(
                uri, source, outputs[runtime], chunk_rows=args.chunk_rows, runtime=runtime
            )
            if stats["runtime"] != runtime:
                raise SystemExit(
                    f"predict_file(runtime={runtime!r}) ran {stats['runtime']!r}: "
                    f"{stats['runtime_reason']}"
                )
            return stats

        return score

    runs: dict[str, Callable[[], Any]] = {
        "floor": floor,
        "native": keel_run("native"),
        "onnx": keel_run("onnx"),
    }
    progress("warming up")
    expected = floor()
    runs["native"]()
    runs["onnx"]()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    stats: dict[str, Any] = {}
    for i in range(args.repeat):
        progress(f"round {i + 1} of {args.repeat}")
        for name, what in runs.items():
            cpu_before = (
                time.process_time()
            )  # every thread of this process: OpenMP's, onnxruntime's
            took, stats[name] = timed(what)
            cpu[name].append(time.process_time() - cpu_before)
            seconds[name].append(took)

    import pyarrow.parquet as pq

    def differing(runtime: str) -> int:
        scored = pq.read_table(outputs[runtime], columns=["prediction"]).column(0).to_numpy()
        return int(np.sum(scored != expected)) if len(scored) == len(expected) else args.rows

    result: dict[str, Any] = {
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
            "loadavg_1m": os.getloadavg()[0],
        },
        "compile": {
            "seconds": compile_seconds,
            "rows": report["rows"],
            "class_agreement": report["class_agreement"],
            "max_abs_diff": report["max_abs_diff"],
            "size_bytes": report["size_bytes"],
            "converter": report["converter"],
        },
        "floor": summary(args.rows, seconds["floor"], cpu["floor"]),
        "native": {
            **summary(args.rows, seconds["native"], cpu["native"]),
            "chunks": stats["native"]["chunks"],
            "output_bytes": outputs["native"].stat().st_size,
            "mismatched_predictions": differing("native"),
        },
        "onnx": {
            **summary(args.rows, seconds["onnx"], cpu["onnx"]),
            "chunks": stats["onnx"]["chunks"],
            "output_bytes": outputs["onnx"].stat().st_size,
            "mismatched_predictions": differing("onnx"),
            "runtime_reason": stats["onnx"]["runtime_reason"],
        },
        "parity_threshold": THRESHOLD,
    }
    floor_s, native_s, onnx_s = seconds["floor"], seconds["native"], seconds["onnx"]
    result["ratios"] = {
        "native_over_floor": statistics.median(floor_s) / statistics.median(native_s),
        "onnx_over_native": statistics.median(native_s) / statistics.median(onnx_s),
        "onnx_over_floor": statistics.median(floor_s) / statistics.median(onnx_s),
        "best_native_over_best_floor": min(floor_s) / min(native_s),
        "best_onnx_over_best_native": min(native_s) / min(onnx_s),
        "best_onnx_over_best_floor": min(floor_s) / min(onnx_s),
        "onnx_over_native_per_cpu_s": result["onnx"]["rows_per_cpu_s"]
        / result["native"]["rows_per_cpu_s"],
    }
    return result


def print_table(result: dict[str, Any]) -> None:
    config = result["config"]
    chunks = f"{result['native']['chunks']} chunks"
    labels = {
        "floor": "model.predict(X), X in memory (floor)",
        "native": f"keel predict --runtime native, Parquet -> Parquet, {chunks}",
        "onnx": f"keel predict --runtime onnx, Parquet -> Parquet, {chunks}",
    }
    rows = [("", "rows/s", "median s", "rows/CPU-s", "runs, s")]
    for key, label in labels.items():
        line = result[key]
        rows.append(
            (
                label,
                f"{line['rows_per_s']:,.0f}",
                f"{line['median_seconds']:.2f}",
                f"{line['rows_per_cpu_s']:,.0f}",
                " ".join(f"{s:.2f}" for s in line["seconds"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    threads = f" ({config['threads']} model threads)" if config["threads"] else ""
    print(
        f"Batch scoring, {config['rows']:,} rows x {config['features']} features, "
        f"{config['model']}, chunks of {config['chunk_rows']:,} rows; "
        f"{config['cpus']} CPUs{threads}, Python {config['python']}, "
        f"scikit-learn {config['sklearn']}, load average {config['loadavg_1m']:.2f}"
    )
    compiled = result["compile"]
    converter = compiled["converter"]
    print(
        f"onnx: compiled with {converter['name']} {converter['version']} in "
        f"{compiled['seconds']:.1f} s, passed parity on {compiled['rows']} rows "
        f"(classes agree on {100 * compiled['class_agreement']:.2f}%, "
        f"max |Δp| {compiled['max_abs_diff']:.1e}), {compiled['size_bytes'] / 1024:,.0f} KiB"
    )
    print()
    for n, row in enumerate(rows):
        print(
            f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
            f"{row[3]:>{widths[3]}}  {row[4]:<{widths[4]}}".rstrip()
        )
        if n == 0:
            print("-" * (sum(widths) + 8))
    print()
    r = result["ratios"]
    print(
        f"keel native / floor: {r['native_over_floor']:.2f}x on the medians, "
        f"{r['best_native_over_best_floor']:.2f}x best run against best run "
        "(above 1 means predict_file was faster)"
    )
    print(
        f"keel onnx / keel native: {r['onnx_over_native']:.2f}x on the medians, "
        f"{r['best_onnx_over_best_native']:.2f}x best against best"
    )
    print(
        f"keel onnx / floor: {r['onnx_over_floor']:.2f}x on the medians, "
        f"{r['best_onnx_over_best_floor']:.2f}x best against best"
    )
    print(
        f"keel onnx / keel native, rows per CPU-second: {r['onnx_over_native_per_cpu_s']:.2f}x "
        "(CPU time of every thread of the process, spinning ones included)"
    )
    print(
        f"Predictions that differ from the floor's: native {result['native']['mismatched_predictions']:,}, "
        f"onnx {result['onnx']['mismatched_predictions']:,} of {config['rows']:,} rows."
    )
    met = r["native_over_floor"] >= 0.8
    print(f"Target: keel native >= 0.8x the floor: {'met' if met else 'MISSED'}.")


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
    native_off = result["native"]["mismatched_predictions"]
    onnx_off = result["onnx"]["mismatched_predictions"]
    failed = False
    if native_off:
        print(f"MISMATCH: {native_off} native predictions differ from the floor's", file=sys.stderr)
        failed = True
    if onnx_off > (1 - result["parity_threshold"]) * args.rows:
        print(
            f"MISMATCH: {onnx_off} ONNX predictions differ from the floor's, more than "
            f"compilation's parity threshold ({result['parity_threshold']:.1%} agreement) allows",
            file=sys.stderr,
        )
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
