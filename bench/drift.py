"""Data drift, Keel vs Evidently: the same job on the same files, in one run.

What is measured
----------------
The job: read two Parquet tables (``--rows`` rows x 25 columns each: 20
numeric, 5 categorical; made by ``bench/drift_data.py``: location shifts, a
scale shift, a re-weighted category, a new category and a KS trap) and
decide, column by column, which drifted, with each tool's default tests:

* **keel CLI**: ``keel drift reference.parquet current.parquet --json`` as a
  user runs it, a whole process (interpreter start-up, imports, reading,
  printing), median of ``--repeat`` runs; its peak memory from one more run
  that reports the process's ``VmHWM`` at exit;
* **keel library**: ``keel.monitoring.compare(reference_path, current_path)``
  in a worker process, timed alone (imports excluded);
* **evidently**: ``pandas.read_parquet`` of both files, then
  ``Report([DataDriftPreset()]).run(current_data=..., reference_data=...)``
  with Evidently 0.7 from its own virtualenv (``.venv-evidently``: it needs
  pandas < 3, Keel's environment has pandas 3). Its *job* is the reading and
  the report (imports excluded); its *process* is the whole worker, start-up
  and imports included.

Each worker reports its process's peak resident memory (``VmHWM``, which,
unlike ``ru_maxrss``, does not carry the parent's peak across ``exec``) and
the columns it flagged, checked against the columns the generator moved
(the KS trap must not be flagged). ``keel drift --help`` is timed too (median
of ``--repeat`` runs).

Targets we hold Keel to (printed, never asserted by the test suite): the CLI's
whole process at least 20x faster than Evidently's job (the strictest reading:
Evidently's start-up and imports are not counted), the CLI's peak memory at
most 1/3 of Evidently's, ``keel drift --help`` within 0.1 s, and exactly the
moved columns flagged.

``--scale`` adds the scale check: 10 million rows x 25 columns per table
(``--scale-rows``), written in chunks, profiled and compared by Keel in a
subprocess whose peak memory must stay under 1 GB. The two files take about
3.5 GB of disk in the temporary folder.

The machine is shared and small (2 cores): treat absolute figures as rough and
compare the ratios within one run; the load average is printed with them.

    python bench/drift.py                         # 150,000 rows, Keel vs Evidently
    python bench/drift.py --scale                 # plus 10M rows through Keel
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, clean_env, fmt_ratio, peer_python, peer_unavailable, print_verdicts

HERE = Path(__file__).resolve()
SPEED_TARGET = 20.0
MEMORY_TARGET = 1 / 3
HELP_TARGET_S = 0.1

# Runs Keel's command line in this interpreter and writes the process's peak memory
# (VmHWM) to argv[1] as it exits: the same process as the `keel` script, measurable.
CLI_PEAK = """
import atexit, sys
out = sys.argv[1]
def report():
    with open("/proc/self/status") as status, open(out, "w") as f:
        f.write(next(t.split()[1] for t in status if t.startswith("VmHWM:")))
atexit.register(report)
sys.argv = ["keel", *sys.argv[2:]]
from keel.cli.main import main
sys.exit(main())
"""


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
    # Imported outside the timer, as Evidently's imports are (small samples test with
    # Kolmogorov-Smirnov and chi-square, which load scipy.special when first used).
    import scipy.special  # noqa: F401

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


def keel_command() -> list[str]:
    """The ``keel`` script of this interpreter's environment (what users run)."""
    script = Path(sys.executable).with_name("keel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "keel.cli.main"]


def wall_seconds(command: list[str], cwd: Path, repeat: int) -> list[float]:
    """Wall time of each of ``repeat`` runs of ``command`` (after one warm-up run)."""
    times = []
    for i in range(repeat + 1):
        started = time.perf_counter()
        out = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, env=clean_env(), check=False
        )
        elapsed = time.perf_counter() - started
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
        if i:
            times.append(elapsed)
    return times


def run_cli(reference: Path, current: Path, repeat: int) -> dict[str, Any]:
    """``keel drift … --json`` and ``keel drift --help``: wall times and the drift run's peak."""
    folder = reference.parent
    drift = [reference.name, current.name, "--json"]
    runs = wall_seconds([*keel_command(), "drift", *drift], folder, repeat)
    helps = wall_seconds([*keel_command(), "drift", "--help"], folder, repeat)
    peak_file = folder / "cli-peak.txt"
    out = subprocess.run(
        [sys.executable, "-c", CLI_PEAK, str(peak_file), "drift", *drift],
        cwd=folder,
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"keel drift failed:\n{out.stderr[-3000:]}")
    report = json.loads(out.stdout)
    return {
        "seconds": statistics.median(runs),
        "runs": runs,
        "help_seconds": statistics.median(helps),
        "peak_mb": int(peak_file.read_text()) / 1024,
        "flagged": sorted(report["drifted_columns"]),
    }


def line(name: str, r: dict[str, Any]) -> str:
    return (
        f"  {name:<10} job {r['seconds']:8.2f} s   process {r['process_seconds']:7.2f} s   "
        f"peak RSS {r['peak_mb']:7.0f} MB (after imports {r['imported_mb']:.0f} MB)"
    )


def report_table(
    cli: dict[str, Any], keel: dict[str, Any], evidently: dict[str, Any] | None
) -> Table:
    """Seconds and MB side by side; the speedup is Evidently's figure over Keel's."""
    ev: dict[str, Any] = evidently or {}

    def ratio(a: float | None, b: float | None) -> str:
        return fmt_ratio(a / b) if a and b else "-"

    def sec(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f} s"

    table = Table()
    table.add(
        "keel drift CLI (whole process) vs Evidently job",
        sec(cli["seconds"]),
        sec(ev.get("seconds")),
        ratio(ev.get("seconds"), cli["seconds"]),
    )
    table.add(
        "keel drift CLI vs Evidently process (both whole)",
        sec(cli["seconds"]),
        sec(ev.get("process_seconds")),
        ratio(ev.get("process_seconds"), cli["seconds"]),
    )
    table.add(
        "library compare() vs Evidently job",
        sec(keel["seconds"]),
        sec(ev.get("seconds")),
        ratio(ev.get("seconds"), keel["seconds"]),
    )
    table.add(
        "peak memory, keel drift CLI vs Evidently",
        f"{cli['peak_mb']:.0f} MB",
        "-" if not ev else f"{ev['peak_mb']:.0f} MB",
        ratio(ev.get("peak_mb"), cli["peak_mb"]),
    )
    table.add(
        "peak memory, library worker vs Evidently",
        f"{keel['peak_mb']:.0f} MB",
        "-" if not ev else f"{ev['peak_mb']:.0f} MB",
        ratio(ev.get("peak_mb"), keel["peak_mb"]),
    )
    table.add("keel drift --help (goal 0.1 s)", sec(cli["help_seconds"]), "", "")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description="Keel vs Evidently on data drift.")
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--repeat", type=int, default=5, help="CLI runs to take the median of")
    parser.add_argument("--evidently-python", type=Path, default=None)
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--scale", action="store_true", help="also profile 10M rows with Keel")
    parser.add_argument("--scale-rows", type=int, default=10_000_000)
    parser.add_argument("--html", action="store_true", help="also time Keel's HTML report")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
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

    from drift_data import KS_TRAP, drifted_columns, write_pair

    expected = sorted(drifted_columns())
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="keel-bench-drift-") as tmp:
        folder = Path(tmp)
        print(f"generating 2 x {args.rows:,} rows x 25 columns …", file=sys.stderr, flush=True)
        ref, cur = write_pair(folder / "data", args.rows)
        html = [str(folder / "report.html")] if args.html else []
        cli = run_cli(ref, cur, args.repeat)
        keel = run_worker(Path(sys.executable), "keel", str(ref), str(cur), *html)
        evidently = None
        reason = "skipped (--skip-evidently)" if args.skip_evidently else None
        if reason is None:
            python = peer_python(".venv-evidently", args.evidently_python)
            reason = peer_unavailable(python, ".venv-evidently", "evidently, pandas")
            if reason is None:
                assert python is not None
                evidently = run_worker(python, "evidently", str(ref), str(cur))
        big = _scale(args, folder, ref, cur, expected) if args.scale else None
    load_after = os.getloadavg()[0]

    if args.json:
        doc = {"rows": args.rows, "cli": cli, "keel": keel, "evidently": evidently, "scale": big}
        doc["load_average"] = [load_before, load_after]
        print(json.dumps(doc, indent=2))
        return
    print(f"\nDrift on 2 x {args.rows:,} rows x 25 columns (expected to flag {len(expected)})")
    print(line("keel", keel))
    print(
        f"             methods {', '.join(keel['methods'])}; flagged {', '.join(keel['flagged'])}"
    )
    if "html_seconds" in keel:
        print(f"             HTML report written in {keel['html_seconds']:.2f} s")
    if evidently is not None:
        print(line("evidently", evidently))
        print(
            f"             methods {', '.join(evidently['methods'])}; "
            f"flagged {', '.join(evidently['flagged'])}"
        )
    cli_runs = ", ".join(f"{t:.3f}" for t in cli["runs"])
    print(f"  keel drift CLI runs: {cli_runs} s (median {cli['seconds']:.3f} s)\n")
    report_table(cli, keel, evidently).print("keel", "evidently")

    exact = cli["flagged"] == expected and keel["flagged"] == expected
    notes = [
        f"{os.cpu_count()} CPUs, load average {load_before:.2f} before, {load_after:.2f} after.",
        f"Keel flags exactly the moved columns (CLI and library): {exact}; "
        f"the KS trap ({KS_TRAP}) flagged by Keel: {KS_TRAP in keel['flagged']}"
        + ("" if evidently is None else f", by Evidently: {KS_TRAP in evidently['flagged']}"),
    ]
    if evidently is not None:
        notes.append(
            f"Evidently flags exactly the moved columns: {evidently['flagged'] == expected}."
        )
    speed = evidently["seconds"] / cli["seconds"] if evidently else None
    memory = cli["peak_mb"] / evidently["peak_mb"] if evidently else None
    print_verdicts(
        {
            f"keel drift CLI >= {SPEED_TARGET:g}x faster than Evidently's job": None
            if speed is None
            else speed >= SPEED_TARGET,
            "CLI peak memory <= 1/3 of Evidently's": None
            if memory is None
            else memory <= MEMORY_TARGET,
            f"keel drift --help <= {HELP_TARGET_S:g} s": cli["help_seconds"] <= HELP_TARGET_S,
            "exactly the moved columns flagged": exact,
        },
        "evidently",
        None if evidently is not None else reason,
        notes,
    )
    if big is not None:
        print(f"\nScale: 2 x {args.scale_rows:,} rows x 25 columns ({big['gb']:.1f} GB of Parquet)")
        print(line("keel", big))
        print(f"  flags exactly the moved columns: {big['flagged'] == expected}")
        print(f"  peak memory under 1 GB: {big['peak_mb'] < 1024}")


def _scale(
    args: argparse.Namespace, folder: Path, ref: Path, cur: Path, expected: list[str]
) -> dict[str, Any]:
    from drift_data import write_pair

    print(f"generating 2 x {args.scale_rows:,} rows x 25 columns …", file=sys.stderr, flush=True)
    for path in (ref, cur):
        os.remove(path)
    big_ref, big_cur = write_pair(folder / "big", args.scale_rows)
    size = (big_ref.stat().st_size + big_cur.stat().st_size) / 1e9
    big = run_worker(Path(sys.executable), "keel", str(big_ref), str(big_cur))
    big["gb"] = size
    return big


if __name__ == "__main__":
    main()
