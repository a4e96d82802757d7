"""Keel vs DVC on a folder of many files: first snapshot and no-change status.

What is measured
----------------
A generated folder of ``--small`` files of 2 KB (20 folders) plus
``--large`` files of 1 MB (random bytes, so nothing deduplicates), by
default 20,000 + 400 (about 440 MB):

* **first snapshot**: ``dvc add data`` against ``keel data add data``, each a
  fresh command-line process on an empty cache (both copy the bytes into
  their cache: this filesystem has no reflinks, and neither is told to
  hardlink);
* **no-change status**: ``dvc status`` against ``keel data status data``
  right after, median of ``--repeat`` runs, as command-line processes
  (interpreter start-up and imports included) and in-process
  (``dvc.repo.Repo().status()`` against ``keel.data.status()``, the library
  call alone, after one warm-up call);
* for information, Keel's first snapshot with ``--link hardlink,copy`` into
  another home (no bytes copied; files become read-only).

Both tools see the same files with the same page-cache state (DVC runs
first; the folder was just written). DVC runs from ``.venv-dvc``
(``make bench-venvs``); if it is missing, Keel's figures print alone.

Usage::

    .venv/bin/python bench/data.py                      # the issue's sizes
    .venv/bin/python bench/data.py --small 2000 --large 40 --repeat 5 --json
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

from _common import REPO, clean_env, peer_python, peer_unavailable

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


def run_keel(work: Path, repeat: int) -> dict[str, float]:
    env = clean_env(KEEL_HOME=str(work / ".keel"))
    timed([*KEEL, "init"], work, env)  # like `dvc init`: not part of the snapshot
    say("keel data add …")
    add = timed([*KEEL, "data", "add", "data"], work, env)
    say(f"  {add:.2f} s; keel data status …")
    status = median_of([*KEEL, "data", "status", "data"], work, env, repeat)
    library = in_process(sys.executable, KEEL_IN_PROCESS, work, env, repeat)
    startup = median_of([*KEEL, "--version"], work, env, repeat)
    (work / "hardlinked").mkdir()
    hard_env = clean_env(KEEL_HOME=str(work / "hardlinked" / ".keel"))
    timed([*KEEL, "init", "hardlinked"], work, hard_env)
    say("keel data add --link hardlink,copy …")
    hardlink = timed([*KEEL, "data", "add", "data", "--link", "hardlink,copy"], work, hard_env)
    return {
        "add_s": add,
        "status_cli_s": status,
        "status_library_s": library,
        "cli_startup_s": startup,
        "add_hardlink_s": hardlink,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--small", type=int, default=20_000, help="2 KB files (default 20000)")
    parser.add_argument("--large", type=int, default=400, help="1 MB files (default 400)")
    parser.add_argument("--repeat", type=int, default=3, help="status runs per tool (median)")
    parser.add_argument("--dvc-python", type=Path, default=None, help="DVC's interpreter")
    parser.add_argument("--dir", type=Path, default=None, help="where to generate (a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    python = peer_python(".venv-dvc", args.dvc_python)
    skipped = peer_unavailable(python, ".venv-dvc", "dvc")
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

    result: dict[str, Any] = {
        "files": args.small + args.large,
        "bytes": size,
        "keel": keel,
        "dvc": dvc,
        "dvc_skipped": skipped,
    }
    if dvc:
        result["ratios"] = {
            "add": dvc["add_s"] / keel["add_s"],
            "status_cli": dvc["status_cli_s"] / keel["status_cli_s"],
            "status_library": dvc["status_library_s"] / keel["status_library_s"],
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"\n{result['files']:,} files, {size / 1e6:,.0f} MB  (Keel {REPO.name}, one run; the machine is shared)"
    )
    rows = [
        ("first snapshot (CLI)", "add_s", "add", 5),
        ("no-change status (CLI)", "status_cli_s", "status_cli", 10),
        ("no-change status (library call)", "status_library_s", "status_library", 10),
    ]
    print(f"{'':34}{'Keel':>10}{'DVC':>10}{'Keel faster':>14}  target")
    for label, key, ratio_key, target in rows:
        d = f"{dvc[key]:.3f}" if dvc else "—"
        r = f"{result['ratios'][ratio_key]:.1f}x" if dvc else "—"
        print(f"{label:34}{keel[key]:>10.3f}{d:>10}{r:>14}  ≥{target}x")
    print(f"keel CLI start-up alone (keel --version): {keel['cli_startup_s']:.3f} s")
    print(f"keel first snapshot with --link hardlink,copy: {keel['add_hardlink_s']:.3f} s")
    if skipped:
        print(f"DVC was skipped: {skipped}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
