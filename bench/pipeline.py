"""Re-running a fully cached 10-step pipeline: Keel's overhead, and DVC's ``repro`` beside it.

What is measured
----------------
A chain of ``--steps`` steps (default 10), each adding a column to a small
DataFrame (``--rows`` rows). After one run fills the cache, every re-run
serves all steps from it, so its whole time is overhead: loading the
pipeline, hashing the steps' code, looking up the cache keys, and recording
the pipeline run with one nested run per (cached) step and its lineage.

* Keel, in-process: ``keel.pipelines.run_pipeline`` called ``--repeat``
  times after the filling run (median);
* Keel, command line: ``keel pipeline run flow.py:flow`` (median), which
  adds interpreter start-up and importing pandas;
* DVC, for reference: the same chain as 10 stages of a ``dvc.yaml``, each a
  small script, and ``dvc repro`` once everything is up to date (median).
  DVC records no runs; the comparison is of what a user waits for.

DVC runs from ``.venv-dvc`` (``make bench-venvs``); without it Keel's
figures print alone.

Usage::

    .venv/bin/python bench/pipeline.py
    .venv/bin/python bench/pipeline.py --steps 10 --repeat 9 --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from _common import clean_env, peer_python, peer_unavailable

KEEL = [sys.executable, "-m", "keel.cli.main"]


def keel_flow(steps: int, rows: int) -> str:
    body = [
        "import numpy as np",
        "import pandas as pd",
        "import keel",
        "",
        "@keel.step",
        "def source(rows: int):",
        "    return pd.DataFrame({'x': np.arange(rows, dtype='float64')})",
        "",
    ]
    for i in range(1, steps):
        body += [
            "@keel.step",
            f"def step{i}(df):",
            f"    return df.assign(c{i}=df['x'] * {i})",
            "",
        ]
    body += ["@keel.pipeline", f"def flow(rows: int = {rows}):", "    df = source(rows)"]
    body += [f"    df = step{i}(df)" for i in range(1, steps)]
    body += ["    return {'columns': len(df.columns) if False else 0, 'frame': df}", ""]
    return "\n".join(body).replace("len(df.columns) if False else 0", "0")


KEEL_IN_PROCESS = """
import json, statistics, sys, time
from keel.pipelines import run_pipeline
run_pipeline("flow.py:flow")  # imports and code digests warm; the cache is already full
times = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    run = run_pipeline("flow.py:flow")
    times.append(time.perf_counter() - t)
    assert all(s.cached for s in run.steps), [s.node for s in run.steps if not s.cached]
print(json.dumps(times))
"""

DVC_STAGE = textwrap.dedent(
    """
    import sys
    i = int(sys.argv[1])
    if i == 0:
        lines = ["x"] + [str(float(r)) for r in range(int(sys.argv[2]))]
    else:
        with open(f"out{i - 1}.csv") as f:
            lines = [line.rstrip("\\n") + "," + ("c%d" % i if n == 0 else str(float(line.split(",")[0]) * i)) for n, line in enumerate(f)]
    with open(f"out{i}.csv", "w") as f:
        f.write("\\n".join(lines) + "\\n")
    """
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def run_keel(work: Path, steps: int, rows: int, repeat: int) -> dict[str, float]:
    (work / "flow.py").write_text(keel_flow(steps, rows))
    env = clean_env(KEEL_HOME=str(work / ".keel"))
    timed([*KEEL, "init"], work, env)
    say("keel: filling the cache …")
    first = timed([*KEEL, "pipeline", "run", "flow.py:flow"], work, env)
    done = subprocess.run(
        [sys.executable, "-c", KEEL_IN_PROCESS, str(repeat)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"in-process re-run failed:\n{done.stderr}")
    library = statistics.median(json.loads(done.stdout.strip().splitlines()[-1]))
    say("keel: cached re-runs from the command line …")
    cli = statistics.median(
        timed([*KEEL, "pipeline", "run", "flow.py:flow"], work, env) for _ in range(repeat)
    )
    startup = statistics.median(
        timed([sys.executable, "-c", "import keel.cli.main, pandas"], work, env)
        for _ in range(repeat)
    )
    return {
        "first_run_cli_s": first,
        "cached_library_s": library,
        "cached_cli_s": cli,
        "cli_imports_s": startup,
    }


def run_dvc(python: Path, work: Path, steps: int, rows: int, repeat: int) -> dict[str, float]:
    (work / "stage.py").write_text(DVC_STAGE)
    stages: dict[str, Any] = {}
    for i in range(steps):
        deps = ["stage.py"] + ([f"out{i - 1}.csv"] if i else [])
        extra = f" {rows}" if i == 0 else ""
        stages[f"s{i}"] = {
            "cmd": f"{python} stage.py {i}{extra}",
            "deps": deps,
            "outs": [f"out{i}.csv"],
        }
    (work / "dvc.yaml").write_text(json.dumps({"stages": stages}, indent=1))  # YAML reads JSON
    env = clean_env(DVC_NO_ANALYTICS="1")
    dvc = [str(python), "-m", "dvc"]
    for cmd in (
        ["git", "init", "-q"],
        [*dvc, "init", "-q"],
        [*dvc, "config", "core.analytics", "false"],
    ):
        subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True)
    say("dvc: filling the cache …")
    first = timed([*dvc, "repro"], work, env)
    say("dvc: up-to-date repro …")
    cached = statistics.median(timed([*dvc, "repro"], work, env) for _ in range(repeat))
    return {"first_run_cli_s": first, "cached_cli_s": cached}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dvc-python", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    python = peer_python(".venv-dvc", args.dvc_python)
    skipped = peer_unavailable(python, ".venv-dvc", "dvc")
    base = Path(tempfile.mkdtemp(prefix="keel-bench-pipeline-"))
    try:
        (base / "keel").mkdir()
        keel = run_keel(base / "keel", args.steps, args.rows, args.repeat)
        dvc = None
        if not skipped:
            (base / "dvc").mkdir()
            dvc = run_dvc(python, base / "dvc", args.steps, args.rows, args.repeat)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result: dict[str, Any] = {"steps": args.steps, "keel": keel, "dvc": dvc, "dvc_skipped": skipped}
    if dvc:
        result["ratio_cached_cli"] = dvc["cached_cli_s"] / keel["cached_cli_s"]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"\n{args.steps}-step pipeline, fully cached re-run (one run; the machine is shared)")
    print(f"  keel, library call (overhead; target < 0.5 s)  {keel['cached_library_s']:.3f} s")
    print(
        f"  keel pipeline run (command line)             {keel['cached_cli_s']:.3f} s"
        f"   of which importing keel's CLI and pandas {keel['cli_imports_s']:.3f} s"
    )
    if dvc:
        print(f"  dvc repro, up to date (command line)          {dvc['cached_cli_s']:.3f} s")
        print(f"  keel faster from the command line: {result['ratio_cached_cli']:.1f}x")
    else:
        print(f"  DVC was skipped: {skipped}.")
    verdict = "met" if keel["cached_library_s"] < 0.5 else "NOT met"
    print(f"  target (< 0.5 s of overhead): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
