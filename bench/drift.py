"""Data drift, Keel vs Evidently: the same job on the same files, in one run.

What is measured
----------------
The job: read two Parquet tables (``--rows`` rows x 25 columns each: 20
numeric, 5 categorical; made by ``bench/drift_data.py``, where 5 numeric
columns of the current table are shifted by 0.25 sd and one categorical
column is re-weighted) and decide, column by column, which drifted, with each
tool's default tests:

* **keel**: ``keel.monitoring.compare(reference_path, current_path)``, which
  reads the files in chunks;
* **evidently**: ``pandas.read_parquet`` of both files, then
  ``Report([DataDriftPreset()]).run(current_data=..., reference_data=...)``
  with Evidently 0.7 from its own virtualenv (``.venv-evidently``: it needs
  pandas < 3, Keel's environment has pandas 3).

Each tool runs in its own subprocess (this file with ``--worker``). The
worker imports its libraries, then times the job with ``perf_counter`` and
reports the process's peak resident memory (``VmHWM``) at the end, which
includes the interpreter and the imports (their RSS before the job is printed
too). The job time excludes starting Python and importing; that is printed
separately as the process's wall time. Each worker also reports the columns
it flagged, and the run checks them against the columns the generator moved.

Targets we hold Keel to (printed, never asserted by the test suite): Keel's
job time <= 1/20 of Evidently's, Keel's peak memory <= 1/3 of Evidently's,
and exactly the moved columns flagged.

``--scale`` adds the scale check: 10 million rows x 25 columns per table
(``--scale-rows``), written in chunks, profiled and compared by Keel in a
subprocess whose peak memory must stay under 1 GB. The two files take about
3.5 GB of disk in the temporary folder.

The machine is shared and small (2 cores): treat absolute figures as rough and
compare the ratios within one run.

    python bench/drift.py                         # 200,000 rows, Keel vs Evidently
    python bench/drift.py --scale                 # plus 10M rows through Keel
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import clean_env, peer_python, peer_unavailable

HERE = Path(__file__).resolve()


# -- workers (run in their own process) ------------------------------------------------------------


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM).

    Not ``ru_maxrss``: Linux carries that across ``exec`` from the parent, so a
    worker started by a driver that just generated the data would report the
    driver's peak.
    """
    with open("/proc/self/status") as status:
        for text in status:
            if text.startswith("VmHWM:"):
                return int(text.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def keel_worker(reference: str, current: str, html: str | None) -> dict[str, Any]:
    import scipy.special  # noqa: F401  (imported outside the timer, as Evidently's imports are)

    from keel.monitoring import compare

    imported_mb = _peak_mb()
    start = time.perf_counter()
    report = compare(reference, current)
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "peak_mb": _peak_mb(),
        "imported_mb": imported_mb,
        "flagged": sorted(report.drifted_columns),
        "methods": sorted({c.method for c in report.columns.values()}),
        "rows": report.reference_rows,
    }
    if html:
        start = time.perf_counter()
        report.to_html(html)
        result["html_seconds"] = time.perf_counter() - start
    return result


def evidently_worker(reference: str, current: str) -> dict[str, Any]:
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    imported_mb = _peak_mb()
    start = time.perf_counter()
    ref = pd.read_parquet(reference)
    cur = pd.read_parquet(current)
    snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    seconds = time.perf_counter() - start
    flagged, methods = [], set()
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        method, threshold, value = config["method"], config["threshold"], float(metric["value"])
        methods.add(method)
        # p-value tests drift below the threshold, distances at or above it.
        if (value < threshold) if "p_value" in method else (value >= threshold):
            flagged.append(config["column"])
    return {
        "seconds": seconds,
        "peak_mb": _peak_mb(),
        "imported_mb": imported_mb,
        "flagged": sorted(flagged),
        "methods": sorted(methods),
        "rows": len(ref),
    }


# -- the driver ----------------------------------------------------------------------------------------


def run_worker(python: Path, kind: str, *args: str) -> dict[str, Any]:
    started = time.perf_counter()
    out = subprocess.run(
        [str(python), str(HERE), "--worker", kind, *args],
        capture_output=True,
        text=True,
        env=clean_env(OMP_NUM_THREADS="2"),
        timeout=3600,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the {kind} worker failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def line(name: str, r: dict[str, Any]) -> str:
    return (
        f"  {name:<10} job {r['seconds']:8.2f} s   process {r['process_seconds']:7.2f} s   "
        f"peak RSS {r['peak_mb']:7.0f} MB (after imports {r['imported_mb']:.0f} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Keel vs Evidently on data drift.")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--evidently-python", type=Path, default=None)
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--scale", action="store_true", help="also profile 10M rows with Keel")
    parser.add_argument("--scale-rows", type=int, default=10_000_000)
    parser.add_argument("--html", action="store_true", help="also time Keel's HTML report")
    parser.add_argument("--worker", choices=["keel", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "keel":
        html = args.paths[2] if len(args.paths) > 2 else None
        print(json.dumps(keel_worker(args.paths[0], args.paths[1], html)))
        return
    if args.worker == "evidently":
        print(json.dumps(evidently_worker(args.paths[0], args.paths[1])))
        return

    from drift_data import drifted_columns, write_pair

    expected = sorted(drifted_columns())
    with tempfile.TemporaryDirectory(prefix="keel-bench-drift-") as tmp:
        folder = Path(tmp)
        print(f"generating 2 x {args.rows:,} rows x 25 columns …", flush=True)
        ref, cur = write_pair(folder / "data", args.rows)
        html = [str(folder / "report.html")] if args.html else []
        keel = run_worker(Path(sys.executable), "keel", str(ref), str(cur), *html)
        evidently = None
        reason = "skipped (--skip-evidently)" if args.skip_evidently else None
        if reason is None:
            python = peer_python(".venv-evidently", args.evidently_python)
            reason = peer_unavailable(python, ".venv-evidently", "evidently, pandas")
            if reason is None:
                assert python is not None
                evidently = run_worker(python, "evidently", str(ref), str(cur))

        print(f"\nDrift on 2 x {args.rows:,} rows x 25 columns (expected to flag {len(expected)})")
        print(line("keel", keel))
        print(
            f"             methods {', '.join(keel['methods'])}; flagged {', '.join(keel['flagged'])}"
        )
        if "html_seconds" in keel:
            print(f"             HTML report written in {keel['html_seconds']:.2f} s")
        print(f"  keel flags exactly the moved columns: {keel['flagged'] == expected}")
        if evidently is None:
            print(f"  evidently  {reason}")
        else:
            print(line("evidently", evidently))
            print(
                f"             methods {', '.join(evidently['methods'])}; "
                f"flagged {', '.join(evidently['flagged'])}"
            )
            print(
                f"  evidently flags exactly the moved columns: {evidently['flagged'] == expected}"
            )
            speed = evidently["seconds"] / keel["seconds"]
            memory = keel["peak_mb"] / evidently["peak_mb"]
            print(
                f"\n  job time: Keel is {speed:.1f}x faster (target >= 20x); peak memory: "
                f"Keel uses {memory:.2f} of Evidently's (target <= 0.33)"
            )

        if args.scale:
            print(f"\ngenerating 2 x {args.scale_rows:,} rows x 25 columns …", flush=True)
            for path in (ref, cur):
                os.remove(path)
            big_ref, big_cur = write_pair(folder / "big", args.scale_rows)
            size = (big_ref.stat().st_size + big_cur.stat().st_size) / 1e9
            big = run_worker(Path(sys.executable), "keel", str(big_ref), str(big_cur))
            print(f"Scale: 2 x {args.scale_rows:,} rows x 25 columns ({size:.1f} GB of Parquet)")
            print(line("keel", big))
            print(f"  flags exactly the moved columns: {big['flagged'] == expected}")
            print(f"  peak memory under 1 GB: {big['peak_mb'] < 1024}")


if __name__ == "__main__":
    main()
