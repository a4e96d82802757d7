"""Keel vs DVC on a folder of many files: first snapshot and no-change status.

What is measured
----------------
A generated folder of ``--small`` files of 2 KB (20 folders) plus
``--large`` files of 1 MB (random bytes, so nothing deduplicates), by
default 20,000 + 400 (about 440 MB):

* **first snapshot**: ``dvc add data`` against ``keel data add data``, each a
  fresh command-line process on an empty cache (both copy the bytes into
  their cache: this filesystem has no reflinks, and neither is told to
  hardlink). Keel's figure includes making every object durable (fsynced,
  with the folders holding them) before the version is recorded; DVC does
  not fsync what it adds;
* **no-change status**: ``dvc status`` against ``keel data status data``
  right after, median of ``--repeat`` runs, as command-line processes
  (interpreter start-up and imports included) and in-process
  (``dvc.repo.Repo().status()`` against ``keel.data.status()``, the library
  call alone, after one warm-up call);
* start-up alone: ``keel --version`` and ``keel data --help``, median of
  ``--repeat`` (at least five) command-line runs, against the issue's goals
  (0.06 s and 0.1 s; no peer);
* a check, not a timing: after a one-byte in-place edit that keeps a file's
  size, ``keel data status`` must report that file changed;
* for information, Keel's first snapshot with ``--link hardlink,copy`` into
  another home (no bytes copied; files become read-only).

Every row prints as a ratio (the peer's time over Keel's, or the goal over
Keel's time for start-up), with the 1-minute load average before and after:
the machine is shared, and a busy one slows both tools unevenly.

Both tools see the same files with the same page-cache state (DVC runs
first; the folder was just written). DVC runs from ``.venv-dvc``
(``make bench-venvs``); if it is missing, Keel's figures print alone.

Usage::

    .venv/bin/python bench/data.py                      # the issue's sizes
    .venv/bin/python bench/data.py --small 2000 --large 40 --repeat 5 --json
    .venv/bin/python bench/data.py --no-dvc                # Keel alone
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, Table, clean_env, fmt_ratio, peer_python, peer_unavailable, print_verdicts

KEEL = [sys.executable, "-m", "keel.cli.main"]

KEEL_IN_PROCESS = """
import json, statistics, sys, time
import keel.data
keel.data.status("data")
times = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    (report,) = keel.data.status("data")
    times.append(time.perf_counter() - t)
    assert report.clean and report.hashed == 0, report.to_dict()
print(json.dumps(times))
"""

DVC_IN_PROCESS = """
import json, sys, time
from dvc.repo import Repo
repo = Repo(".")
assert repo.status() == {}
times = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    result = repo.status()
    times.append(time.perf_counter() - t)
    assert result == {}, result
print(json.dumps(times))
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generate(root: Path, small: int, large: int) -> int:
    """Write the folder; return its size in bytes."""
    per_folder = max(1, small // 20)
    total = 0
    for i in range(small):
        folder = root / "small" / f"{i // per_folder:02}"
        if i % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06}.bin").write_bytes(os.urandom(2048))
        total += 2048
    (root / "large").mkdir(parents=True, exist_ok=True)
    for i in range(large):
        (root / "large" / f"{i:04}.bin").write_bytes(os.urandom(1 << 20))
        total += 1 << 20
    return total


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def median_of(cmd: list[str], cwd: Path, env: dict[str, str], repeat: int) -> float:
    return statistics.median(timed(cmd, cwd, env) for _ in range(repeat))


def in_process(python: str, script: str, cwd: Path, env: dict[str, str], repeat: int) -> float:
    done = subprocess.run(
        [python, "-c", script, str(repeat)], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"in-process status failed:\n{done.stderr}")
    return statistics.median(json.loads(done.stdout.strip().splitlines()[-1]))


def run_dvc(python: Path, work: Path, repeat: int) -> dict[str, float]:
    env = clean_env(DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="bench", GIT_COMMITTER_NAME="bench")
    dvc = [str(python), "-m", "dvc"]
    for cmd in (
        ["git", "init", "-q"],
        [*dvc, "init", "-q"],
        [*dvc, "config", "core.analytics", "false"],
    ):
        subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True)
    say("dvc add …")
    add = timed([*dvc, "add", "data"], work, env)
    say(f"  {add:.2f} s; dvc status …")
    status = median_of([*dvc, "status"], work, env, repeat)
    library = in_process(str(python), DVC_IN_PROCESS, work, env, repeat)
    return {"add_s": add, "status_cli_s": status, "status_library_s": library}


def sees_one_byte_edit(work: Path, env: dict[str, str]) -> bool:
    """Edit one byte of a file in place (same size, same inode); status must report it."""
    victim = next(iter(sorted((work / "data" / "small").rglob("*.bin"))))
    with open(victim, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    done = subprocess.run(
        [*KEEL, "data", "status", "data", "--json"], cwd=work, env=env, capture_output=True
    )
    if done.returncode != 0:
        raise SystemExit(f"keel data status failed after the edit:\n{done.stderr.decode()}")
    (report,) = json.loads(done.stdout)
    return bool(report["changed"] == [victim.relative_to(work / "data").as_posix()])


def run_keel(work: Path, repeat: int) -> dict[str, Any]:
    env = clean_env(KEEL_HOME=str(work / ".keel"))
    timed([*KEEL, "init"], work, env)  # like `dvc init`: not part of the snapshot
    say("keel data add …")
    add = timed([*KEEL, "data", "add", "data"], work, env)
    say(f"  {add:.2f} s; keel data status …")
    status = median_of([*KEEL, "data", "status", "data"], work, env, repeat)
    library = in_process(sys.executable, KEEL_IN_PROCESS, work, env, repeat)
    say("keel --version, keel data --help …")
    version = median_of([*KEEL, "--version"], work, env, max(repeat, 5))
    data_help = median_of([*KEEL, "data", "--help"], work, env, max(repeat, 5))
    edit_seen = sees_one_byte_edit(work, env)
    (work / "hardlinked").mkdir()
    hard_env = clean_env(KEEL_HOME=str(work / "hardlinked" / ".keel"))
    timed([*KEEL, "init", "hardlinked"], work, hard_env)
    say("keel data add --link hardlink,copy …")
    hardlink = timed([*KEEL, "data", "add", "data", "--link", "hardlink,copy"], work, hard_env)
    return {
        "add_s": add,
        "status_cli_s": status,
        "status_library_s": library,
        "version_s": version,
        "data_help_s": data_help,
        "status_sees_one_byte_edit": edit_seen,
        "add_hardlink_s": hardlink,
    }


#: The issue's goals: peer/Keel ratios, and start-up times in seconds (no peer).
RATIO_GOALS = {"add": 5.0, "status_cli": 10.0, "status_library": 10.0}
STARTUP_GOALS = {"version": 0.06, "data_help": 0.1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--small", type=int, default=20_000, help="2 KB files (default 20000)")
    parser.add_argument("--large", type=int, default=400, help="1 MB files (default 400)")
    parser.add_argument("--repeat", type=int, default=3, help="status runs per tool (median)")
    parser.add_argument("--dvc-python", type=Path, default=None, help="DVC's interpreter")
    parser.add_argument("--dir", type=Path, default=None, help="where to generate (a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-dvc", action="store_true", help="measure Keel alone")
    args = parser.parse_args(argv)

    python = peer_python(".venv-dvc", args.dvc_python)
    skipped = "--no-dvc was given" if args.no_dvc else peer_unavailable(python, ".venv-dvc", "dvc")
    load_before = os.getloadavg()[0]
    base = Path(tempfile.mkdtemp(prefix="keel-bench-data-", dir=args.dir))
    try:
        dvc_work, keel_work = base / "dvc", base / "keel"
        say(f"generating {args.small:,} x 2 KB + {args.large:,} x 1 MB files …")
        size = generate(dvc_work / "data", args.small, args.large)
        # The same bytes for Keel: hardlinked copies of the folder, so both read the same pages.
        shutil.copytree(dvc_work / "data", keel_work / "data", copy_function=os.link)
        dvc = None if skipped else run_dvc(python, dvc_work, args.repeat)  # type: ignore[arg-type]
        keel = run_keel(keel_work, args.repeat)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load_after = os.getloadavg()[0]

    ratios: dict[str, float | None] = {
        key: (dvc[f"{key}_s"] / keel[f"{key}_s"]) if dvc else None for key in RATIO_GOALS
    }
    ratios.update({key: goal / keel[f"{key}_s"] for key, goal in STARTUP_GOALS.items()})
    result: dict[str, Any] = {
        "files": args.small + args.large,
        "bytes": size,
        "keel": keel,
        "dvc": dvc,
        "dvc_skipped": skipped,
        "ratios": ratios,
        "goals": {**RATIO_GOALS, **{f"{k}_s": v for k, v in STARTUP_GOALS.items()}},
        "loadavg_1m": {"before": load_before, "after": load_after},
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"\n{result['files']:,} files, {size / 1e6:,.0f} MB  (Keel {REPO.name}, one run; "
        f"{os.cpu_count()} CPUs, load average {load_before:.2f} before, {load_after:.2f} after)"
    )
    table = Table()
    rows = [
        ("keel data add vs dvc add (CLI)", "add"),
        ("keel data status vs dvc status (CLI)", "status_cli"),
        ("data status, library call", "status_library"),
    ]
    for label, key in rows:
        peer = f"{dvc[f'{key}_s']:.3f} s" if dvc else "-"
        table.add(
            f"{label}  (goal ≥{RATIO_GOALS[key]:.0f}x)",
            f"{keel[f'{key}_s']:.3f} s",
            peer,
            fmt_ratio(ratios[key]),
        )
    for label, key in (("keel --version", "version"), ("keel data --help", "data_help")):
        goal = STARTUP_GOALS[key]
        table.add(
            f"{label}  (goal ≤{goal} s; ratio goal/keel)",
            f"{keel[f'{key}_s']:.3f} s",
            f"goal {goal} s",
            fmt_ratio(ratios[key]),
        )
    table.print("Keel", "DVC")
    targets: dict[str, bool | None] = {}
    for key, goal in RATIO_GOALS.items():
        ratio = ratios[key]
        targets[f"{key} ≥{goal:.0f}x"] = None if ratio is None else ratio >= goal
    for key, limit in STARTUP_GOALS.items():
        targets[f"{key} ≤{limit} s"] = keel[f"{key}_s"] <= limit
    targets["status sees a one-byte edit"] = keel["status_sees_one_byte_edit"]
    notes = [f"keel first snapshot with --link hardlink,copy: {keel['add_hardlink_s']:.3f} s"]
    print_verdicts(targets, "DVC", skipped, notes)
    return 0 if keel["status_sees_one_byte_edit"] else 1


if __name__ == "__main__":
    sys.exit(main())
