"""Job scheduling: admission decisions with 10,000 queued jobs, and submission throughput.

What is measured
----------------
On SQLite (a fresh Keel home) and on PostgreSQL (a fresh database created on
the server ``--postgres-url`` or ``KEEL_TEST_POSTGRES_URL`` names, dropped at
the end; skipped, saying why, when neither is set or the server does not
answer), the same workload:

* **Queues and pools.** 20 queues: 8 in cohort ``research`` (a100 and l4
  quota, some with a borrowing limit or a GPU-hour budget), 6 in cohort
  ``prod`` (a100 quota), 6 CPU-only queues in no cohort; three live pools
  (two with 24 x a100 and 16 x l4 each, one CPU-only) whose inventory admits a
  few hundred jobs of the mix.
* **Seeding.** ``--jobs`` jobs (default 10,000), normal and low priority,
  spread unevenly over the queues (the deepest holds about 1,000), through
  ``JobStore.submit`` one by one (each checks the request and that it can
  ever fit, and writes the job and its event): GPU jobs typed and untyped,
  CPU-only jobs, pipelines and commands. Five cohort queues (the *lenders*)
  get no GPU jobs, so the others borrow their GPU quota. The seeding's rate
  is the one-process **submission throughput**.
* **Scheduling.** ``--cycles`` cycles or more (default 2, and until
  ``--admissions`` admission decisions were made, default 300): one *fill*
  pass of ``Scheduler.schedule()`` on an idle cluster (it admits until every
  queue's head waits); a burst of ``--burst`` high-priority GPU jobs
  (default 200) to the lenders, which take their quota back by preempting
  borrowers; ``--busy-passes`` passes on the full cluster (default 5), after
  each of which the bench does what a victim's worker does (stops it and
  requeues it); then every admitted job is moved to succeeded. Each
  ``Decision.elapsed_ms`` (the scheduler's own clock: the fit, an
  admission's fenced write, the victims' requests, and the queue heads a
  pass reads when it first offers a queue or a queue's batch of 16 runs
  out) is collected by action: ``admit``, ``wait``, ``preempt``;
  p50/p95/p99 are printed, and the ratio of the admissions' p99 to the 5 ms
  target (at most 1 meets it). A pass's wall time over its decisions adds
  the lease and the snapshot the pass reads first; its CPU time (this
  process's) is printed too, which other load on the machine disturbs
  less. ``Snapshot.fit`` alone on 500 queued jobs against the full cluster
  is timed as well: the in-memory part of a decision.
* ``Scheduler.why`` on the deepest queued job (lowest priority, last
  submitted, in the deepest queue), ``--why-repeat`` times.
* **Baseline.** One INSERT of a minimal row per write transaction into a
  scratch table, through the same store (``BEGIN IMMEDIATE`` on SQLite,
  the same engine and pool on PostgreSQL): the floor of any write Keel
  makes. Submission's rate over it shows what Keel's checks and its event
  cost. Both are measured again with ``--processes`` processes (default 2)
  writing at once, each starting at one barrier.

Figures depend on the machine and on what else runs on it; the CPU count and
the load average are printed. ``--profile`` runs the scheduling under
cProfile and prints where its time goes to stderr.

Usage::

    .venv/bin/python bench/jobs.py
    .venv/bin/python bench/jobs.py --postgres-url postgresql://postgres@127.0.0.1/postgres --json
    .venv/bin/python bench/jobs.py --jobs 2000 --admissions 100 --skip-postgres
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from typing import Any

TARGET_MS = 5.0
POSTGRES_ENV = "KEEL_TEST_POSTGRES_URL"
SCRATCH = "bench_jobs_scratch"
#: Cohort queues whose seeded jobs ask for no GPU: their GPU quota is lent, then reclaimed.
LENDERS = ("research-5", "research-6", "research-7", "prod-4", "prod-5")

POOLS: dict[str, dict[str, Any]] = {
    "cpu-a": {"cpus": 160, "memory": "640Gi"},
    "gpu-a": {
        "cpus": 192,
        "memory": "1536Gi",
        "gpus": {"a100": 24, "l4": 16},
        "gpu_memory": {"a100": "80Gi", "l4": "24Gi"},
    },
    "gpu-b": {
        "cpus": 192,
        "memory": "1536Gi",
        "gpus": {"a100": 24, "l4": 16},
        "gpu_memory": {"a100": "80Gi", "l4": "24Gi"},
    },
}


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- the workload ---------------------------------------------------------------------------------


def queue_specs() -> list[dict[str, Any]]:
    """20 queues: two cohorts of GPU queues and CPU-only queues in no cohort."""
    specs: list[dict[str, Any]] = []
    for n in range(8):
        spec: dict[str, Any] = {
            "name": f"research-{n}",
            "team": f"team-{n % 4}",
            "cohort": "research",
            "quotas": {"gpu:a100": 2, "gpu:l4": 2, "cpus": 24, "memory": "192Gi"},
        }
        if n % 3 == 0:
            spec["borrowing_limit"] = {"gpu:a100": 4, "cpus": 16}
        if n % 4 == 1:
            spec["gpu_hours_per_day"] = 500
        specs.append(spec)
    for n in range(6):
        specs.append(
            {
                "name": f"prod-{n}",
                "team": "prod",
                "cohort": "prod",
                "quotas": {"gpu:a100": 4, "cpus": 32, "memory": "256Gi"},
            }
        )
    for n in range(6):
        specs.append({"name": f"cpu-{n}", "team": "etl", "quotas": {"cpus": 24, "memory": "128Gi"}})
    return specs


def job_specs(count: int, seed: int, burst: bool = False) -> list[dict[str, Any]]:
    """``count`` submissions (keyword arguments of ``JobStore.submit``), deterministic by seed.

    Normal and low priority, GPU jobs only outside :data:`LENDERS` (so the others borrow
    the lenders' idle GPU quota); with ``burst``, high-priority GPU jobs to the lenders,
    which take their quota back by preempting the borrowers.
    """
    rng = random.Random(seed)
    queues = list(LENDERS) if burst else [q["name"] for q in queue_specs()]
    weights = [1 + (7 * n) % 5 for n in range(len(queues))]  # some queues much deeper
    specs = []
    for n in range(count):
        queue = rng.choices(queues, weights)[0]
        spec: dict[str, Any] = {
            "queue": queue,
            "priority": "high" if burst else rng.choices(["normal", "low"], [60, 40])[0],
        }
        gpu_queue = not queue.startswith("cpu-") and (burst or queue not in LENDERS)
        if gpu_queue and (burst or rng.random() < 0.5):
            gpus = rng.choice([1, 1, 1, 2])
            kind = rng.choice(["a100", "a100", None]) if queue.startswith("research") else "a100"
            spec.update(gpus=gpus, gpu_type=kind, cpus=4.0 * gpus, memory=f"{32 * gpus}Gi")
            spec["timeout"] = 3600.0
        else:
            spec.update(cpus=rng.choice([0.5, 1.0, 1.0, 2.0]), memory=rng.choice(["2Gi", "4Gi"]))
        if rng.random() < 0.5:
            spec["target"] = "pipelines.train:train"
            spec["params"] = {"lr": rng.choice([0.1, 0.01, 0.001]), "seed": n}
        else:
            spec["target"] = ["python", "etl.py", "--part", str(n)]
        spec["retries"] = rng.choice([0, 0, 1])
        specs.append(spec)
    return specs


def submit_all(jobs: Any, specs: list[dict[str, Any]]) -> list[Any]:
    out = []
    for spec in specs:
        values = dict(spec)
        out.append(jobs.submit(values.pop("target"), **values))
    return out


# -- stores ---------------------------------------------------------------------------------------


@contextmanager
def fresh_postgres(base: str) -> Iterator[str]:
    """A new database on the server ``base`` names, dropped on the way out."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from keel.store import normalize_url

    admin_url = make_url(normalize_url(base))
    name = f"keel_bench_jobs_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        from keel.store import reset_stores

        reset_stores()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def postgres_unreachable(base: str) -> str | None:
    from sqlalchemy import create_engine, text

    from keel.store import normalize_url, redact_url

    try:
        engine = create_engine(normalize_url(base), connect_args={"connect_timeout": 5})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or ["unknown error"])[0]
        return f"cannot reach {redact_url(base)}: {first}"
    return None


def scratch_table() -> Any:
    from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table

    return Table(
        SCRATCH,
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("queue", String(128), nullable=False),
        Column("at", BigInteger, nullable=False),
    )


def raw_inserts(store: Any, rows: int) -> None:
    """One minimal row per write transaction: the floor of a write through the store."""
    table = scratch_table()
    for n in range(rows):
        with store.write() as conn:
            conn.execute(table.insert().values(queue=f"q{n % 20}", at=n))


# -- concurrent writers ---------------------------------------------------------------------------


def _writer(kind: str, home: str, url: str, count: int, seed: int, barrier: Any, out: Any) -> None:
    """A child process: ``count`` submissions (or raw inserts) after every writer is ready."""
    import keel

    keel.init(home=home, store_url=url)
    client = keel.Client()
    if kind == "submit":
        specs = job_specs(count + 1, seed)
        submit_all(client.jobs, specs[:1])  # imports and the engine's first connection
        barrier.wait()
        started = time.monotonic()
        submit_all(client.jobs, specs[1:])
    else:
        raw_inserts(client.store, 1)
        barrier.wait()
        started = time.monotonic()
        raw_inserts(client.store, count)
    out.put((started, time.monotonic()))


def concurrent(kind: str, home: Path, url: str, processes: int, count: int) -> float:
    """Rows or jobs per second of ``processes`` writers, from the first start to the last end."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(processes, timeout=300), ctx.Queue()
    children = [
        ctx.Process(target=_writer, args=(kind, str(home), url, count, 1000 + n, barrier, out))
        for n in range(processes)
    ]
    for child in children:
        child.start()
    spans: list[tuple[float, float]] = []
    while len(spans) < processes:
        try:
            spans.append(out.get(timeout=1))
        except Empty:
            failed = [c.exitcode for c in children if c.exitcode]
            if failed:
                raise SystemExit(f"a {kind} writer exited with code {failed[0]}") from None
    for child in children:
        child.join()
    return processes * count / (max(e for _, e in spans) - min(s for s, _ in spans))


# -- scheduling -----------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    if len(values) == 1:
        cuts = values * 99
    else:
        cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "n": len(values),
        "p50": cuts[49],
        "p95": cuts[94],
        "p99": cuts[98],
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def beat(jobs: Any) -> None:
    """The three workers' heartbeats (a pass sees only live pools)."""
    from keel.jobs import Inventory

    for name, inventory in POOLS.items():
        jobs.heartbeat(name, "local", Inventory.from_dict(inventory), f"bench-worker-{name}")


def finish_admitted(jobs: Any) -> int:
    """Run every admitted job to success at once, freeing the cluster for the next fill."""
    from keel.jobs import Step

    now = int(time.time() * 1000)
    admitted = jobs.list(states=["admitted"], limit=None)
    for job in admitted:
        jobs.transition(
            job,
            Step("running", "bench: started", {"started_at": now - 60_000}),
            Step("succeeded", "bench: done", {"ended_at": now, "exit_code": 0}),
        )
    return len(admitted)


def stop_preempted(jobs: Any) -> int:
    """Do what a victim's worker does: stop it and requeue it (as ``keel jobs worker`` would)."""
    from keel.jobs import Step

    now = int(time.time() * 1000)
    asked = [j for j in jobs.list(states=["admitted"], limit=None) if j.preempt_requested_at]
    clear = {
        "pool": None,
        "devices": [],
        "assigned_gpu_type": None,
        "borrowed": False,
        "preempt_requested_at": None,
    }
    for job in asked:
        jobs.transition(
            job,
            Step("running", "bench: started", {"started_at": now - 60_000}),
            Step("preempted", "bench: stopped for a preemption", {"ended_at": now}),
            Step("queued", "bench: requeued after its preemption", clear),
        )
    return len(asked)


def schedule(client: Any, args: argparse.Namespace, profiler: Any = None) -> dict[str, Any]:
    """Fill and busy passes until ``args.admissions`` admissions; a burst after each fill.

    ``profiler`` (a ``cProfile.Profile``) runs during the passes only.
    """
    from keel.jobs import Scheduler

    scheduler = Scheduler(client, name="bench", lease_seconds=600)
    jobs = client.jobs
    elapsed: dict[str, list[float]] = {"admit": [], "wait": [], "preempt": [], "requeue": []}
    passes: list[dict[str, Any]] = []
    burst_seconds: list[float] = []
    fit = None
    first: list[float] = []
    rest: dict[str, list[float]] = {k: [] for k in elapsed}
    cycles = 0
    while (len(elapsed["admit"]) < args.admissions or cycles < args.cycles) and cycles < 20:
        cycles += 1
        for n in range(1 + args.busy_passes):
            beat(jobs)
            if profiler is not None:
                profiler.enable()
            started, cpu = time.perf_counter(), time.process_time()
            decisions = scheduler.schedule()
            wall_ms = (time.perf_counter() - started) * 1000
            cpu_ms = (time.process_time() - cpu) * 1000
            if profiler is not None:
                profiler.disable()
            counts: dict[str, int] = {}
            lost = sum(1 for d in decisions if d.action == "requeue")
            for at, decision in enumerate(decisions):
                elapsed[decision.action].append(decision.elapsed_ms)
                if at == lost:  # the pass's first decision (it used to read every queue's heads)
                    first.append(decision.elapsed_ms)
                else:
                    rest[decision.action].append(decision.elapsed_ms)
                counts[decision.action] = counts.get(decision.action, 0) + 1
            passes.append(
                {
                    "cycle": cycles,
                    "kind": "fill" if n == 0 else "busy",
                    "decisions": len(decisions),
                    "counts": counts,
                    "wall_ms": wall_ms,
                    "cpu_ms": cpu_ms,
                    "outside_decisions_ms": wall_ms - sum(d.elapsed_ms for d in decisions),
                }
            )
            progress(f"  pass {len(passes)} ({passes[-1]['kind']}): {counts} in {wall_ms:,.0f} ms")
            stop_preempted(jobs)
            if n == 0 and args.burst:
                progress(f"  a burst of {args.burst} high-priority jobs arrives")
                began = time.perf_counter()
                submit_all(jobs, job_specs(args.burst, args.seed + cycles, burst=True))
                burst_seconds.append(time.perf_counter() - began)
        if not elapsed["admit"]:
            raise SystemExit("the first pass admitted nothing: the workload does not fit")
        if fit is None:  # on the full cluster, as a busy pass sees it
            fit = fit_only(client, 500)
        finish_admitted(jobs)
    scheduler.release()
    fills = [p for p in passes if p["kind"] == "fill"]
    busy = [p for p in passes if p["kind"] == "busy"]
    return {
        "cycles": cycles,
        "passes": passes,
        "burst": {"jobs_per_cycle": args.burst, "seconds": burst_seconds},
        "decisions_ms": {k: percentiles(v) for k, v in elapsed.items()},
        "fit_only_ms": fit,
        "first_decision_ms": percentiles(first),
        "after_first_ms": {k: percentiles(v) for k, v in rest.items()},
        "fill_pass": {
            "admitted_mean": statistics.fmean(p["counts"].get("admit", 0) for p in fills),
            "wall_ms_per_decision": sum(p["wall_ms"] for p in fills)
            / max(1, sum(p["decisions"] for p in fills)),
            "cpu_ms_per_decision": sum(p["cpu_ms"] for p in fills)
            / max(1, sum(p["decisions"] for p in fills)),
            "outside_decisions_ms": percentiles([p["outside_decisions_ms"] for p in fills]),
        },
        "busy_pass": {
            "wall_ms": percentiles([p["wall_ms"] for p in busy]),
            "wall_ms_per_decision": sum(p["wall_ms"] for p in busy)
            / max(1, sum(p["decisions"] for p in busy)),
        },
    }


def fit_only(client: Any, count: int) -> dict[str, Any]:
    """The in-memory part of a decision: ``Snapshot.fit`` on queued jobs, no reads or writes."""
    from keel.jobs.admission import load_snapshot

    with client.store.read() as conn:
        snapshot, _ = load_snapshot(conn, int(time.time() * 1000), 3_600_000)
    queued = client.jobs.list(states=["queued"], limit=count)
    times = []
    for job in queued:
        started = time.perf_counter()
        snapshot.fit(job)
        times.append((time.perf_counter() - started) * 1000)
    return percentiles(times)


def why_deepest(client: Any, submitted: list[Any], repeat: int) -> dict[str, Any]:
    """Time ``Scheduler.why`` on the queued job with the most jobs ahead of it."""
    from keel.jobs import Scheduler

    depth: dict[str, int] = {}
    for job in submitted:
        depth[job.queue] = depth.get(job.queue, 0) + 1
    deepest = max(depth, key=lambda q: depth[q])
    job = min((j for j in submitted if j.queue == deepest), key=lambda j: (j.priority, -j.id))
    scheduler = Scheduler(client, name="bench-why")
    times, explanation = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        explanation = scheduler.why(job.id)
        times.append((time.perf_counter() - started) * 1000)
    assert explanation is not None
    return {
        "job_id": job.id,
        "queue": deepest,
        "state": explanation.state,
        "ahead": explanation.ahead,
        "summary": explanation.summary,
        "ms": percentiles(times),
    }


# -- one backend ----------------------------------------------------------------------------------


def run_backend(backend: str, url: str | None, folder: Path, args: argparse.Namespace) -> dict:
    import keel
    from keel.store import redact_url

    home = folder / ".keel"
    settings = keel.init(home=home, **({"store_url": url} if url else {}))
    store_url = settings.store_url
    client = keel.Client()
    jobs = client.jobs
    for spec in queue_specs():
        jobs.apply_queue(spec)
    beat(jobs)

    progress(f"{backend}: raw-insert baseline, {args.baseline_rows:,} transactions")
    scratch_table().create(client.store.engine)
    raw_inserts(client.store, 50)  # warm-up
    started = time.perf_counter()
    raw_inserts(client.store, args.baseline_rows)
    raw_rate = args.baseline_rows / (time.perf_counter() - started)

    progress(f"{backend}: submitting {args.jobs:,} jobs through JobStore.submit")
    specs = job_specs(args.jobs, args.seed)
    started = time.perf_counter()
    submitted = submit_all(jobs, specs)
    seed_seconds = time.perf_counter() - started

    progress(f"{backend}: scheduling")
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    scheduled = schedule(client, args, profiler)
    if profiler is not None:
        print_profile(backend, profiler)
    why = why_deepest(client, submitted, args.why_repeat)

    progress(f"{backend}: {args.processes} processes writing at once")
    many_raw = concurrent("raw", home, store_url, args.processes, args.concurrent_jobs)
    many_submit = concurrent("submit", home, store_url, args.processes, args.concurrent_jobs)

    submit_rate = args.jobs / seed_seconds
    admit_p99 = scheduled["decisions_ms"]["admit"]["p99"]
    return {
        "backend": backend,
        "store": redact_url(store_url),
        "queued_at_start": args.jobs,
        **scheduled,
        "admit_p99_over_target": None if admit_p99 is None else admit_p99 / TARGET_MS,
        "admit_p99_meets_target": admit_p99 is not None and admit_p99 <= TARGET_MS,
        "why": why,
        "submit": {
            "seed_seconds": seed_seconds,
            "jobs_per_s": submit_rate,
            "raw_rows_per_s": raw_rate,
            "over_raw": submit_rate / raw_rate,
            "processes": args.processes,
            "jobs_per_s_concurrent": many_submit,
            "raw_rows_per_s_concurrent": many_raw,
            "over_raw_concurrent": many_submit / many_raw,
        },
    }


def print_profile(backend: str, profiler: Any) -> None:
    import io
    import pstats

    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order).print_stats(18)
        print(f"[bench] {backend} scheduling profile by {order}:", file=sys.stderr)
        print(text.getvalue(), file=sys.stderr)


# -- the report -----------------------------------------------------------------------------------


def _pct(stats: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    """``p50 / p95 / p99  (n=…)`` of :func:`percentiles`' figures, times ``scale``."""
    if not stats or not stats["n"]:
        return "-"
    cells = " / ".join(f"{scale * stats[k]:.{digits}f}" for k in ("p50", "p95", "p99"))
    return f"{cells}  (n={stats['n']})"


def _get(result: dict[str, Any], path: str) -> Any:
    node: Any = result
    for key in path.split("."):
        node = node[key]
    return node


def print_table(result: dict[str, Any]) -> None:
    config = result["config"]
    sides = result["backends"]
    print(
        f"Job scheduling: {config['jobs']:,} queued jobs in 20 queues (cohorts research and "
        f"prod, 6 CPU-only queues), pools {', '.join(POOLS)}; {config['cpus']} CPUs, "
        f"Python {config['python']}, load average {config['loadavg_1m']:.2f}"
    )
    procs = config["processes"]
    # (label, path in a backend's result, format: a str.format pattern or a function)
    rows: list[tuple[str, str, Any]] = [
        ("admit decision ms p50 / p95 / p99", "decisions_ms.admit", _pct),
        ("admit p99 / 5 ms target", "admit_p99_over_target", "{:.2f}x"),
        ("wait decision ms p50 / p95 / p99", "decisions_ms.wait", _pct),
        ("preempt decision ms p50 / p95 / p99", "decisions_ms.preempt", _pct),
        (
            "first decision of a pass ms p50 / max",
            "first_decision_ms",
            lambda s: f"{s['p50']:.1f} / {s['max']:.1f}  (n={s['n']})",
        ),
        ("  admit, first of each pass left out", "after_first_ms.admit", _pct),
        ("  wait, first of each pass left out", "after_first_ms.wait", _pct),
        (
            "fit alone (in memory) us p50 / p95 / p99",
            "fit_only_ms",
            lambda s: _pct(s, 1000, 0),
        ),
        ("fill pass: admitted per pass", "fill_pass.admitted_mean", "{:.0f}"),
        ("fill pass: wall ms / decision", "fill_pass.wall_ms_per_decision", "{:.2f}"),
        ("fill pass: CPU ms / decision (this process)", "fill_pass.cpu_ms_per_decision", "{:.2f}"),
        ("fill pass: lease + snapshot ms (p50)", "fill_pass.outside_decisions_ms.p50", "{:.1f}"),
        ("busy pass: wall ms p50", "busy_pass.wall_ms.p50", "{:.1f}"),
        ("busy pass: wall ms / decision", "busy_pass.wall_ms_per_decision", "{:.2f}"),
        (
            "why, deepest job: ms p50 / p95",
            "why",
            lambda w: f"{w['ms']['p50']:.1f} / {w['ms']['p95']:.1f}  ({w['ahead']:,} ahead)",
        ),
        ("submit, 1 process: jobs/s", "submit.jobs_per_s", "{:,.0f}"),
        ("raw insert, 1 process: rows/s", "submit.raw_rows_per_s", "{:,.0f}"),
        ("submit / raw insert", "submit.over_raw", "{:.2f}x"),
        (f"submit, {procs} processes: jobs/s", "submit.jobs_per_s_concurrent", "{:,.0f}"),
        (f"raw insert, {procs} processes: rows/s", "submit.raw_rows_per_s_concurrent", "{:,.0f}"),
        (f"submit / raw insert, {procs} processes", "submit.over_raw_concurrent", "{:.2f}x"),
        ("seeding the queue, s", "submit.seed_seconds", "{:.1f}"),
    ]

    def cell(side: dict[str, Any], path: str, form: Any) -> str:
        value = _get(side, path)
        if value is None:
            return "-"
        return form.format(value) if isinstance(form, str) else str(form(value))

    names = list(sides)
    lines = [("", *names)]
    for label, path, form in rows:
        lines.append((label, *(cell(sides[n], path, form) for n in names)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    print()
    for n, line in enumerate(lines):
        cells = [f"{line[0]:<{widths[0]}}"] + [
            f"{c:>{w}}" for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    print()
    print(
        "A decision's time is Decision.elapsed_ms: the fit, an admission's fenced write, and "
        "the queue heads it reads once its queue's first ones ran out; a pass's wall time adds "
        "the lease, the snapshot and every queue's first heads."
    )
    print(
        "submit / raw insert: JobStore.submit's rate over one minimal INSERT per transaction "
        "through the same store (1 would mean Keel's checks and event cost nothing)."
    )
    for name, skipped in result["skipped"].items():
        print(f"{name} was skipped: {skipped}.")
    verdicts = "; ".join(
        f"{n}: {'met' if sides[n]['admit_p99_meets_target'] else 'MISSED'}" for n in names
    )
    print(f"Target: admission decision p99 <= {TARGET_MS:g} ms: {verdicts}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=10_000, help="queued jobs (10,000)")
    parser.add_argument(
        "--admissions", type=int, default=300, help="admission decisions to time (300)"
    )
    parser.add_argument(
        "--busy-passes", type=int, default=5, help="passes on the full cluster per cycle (5)"
    )
    parser.add_argument(
        "--burst", type=int, default=200, help="high-priority jobs arriving after each fill (200)"
    )
    parser.add_argument("--cycles", type=int, default=2, help="fill-and-busy cycles, at least (2)")
    parser.add_argument("--why-repeat", type=int, default=20, help="calls of why (20)")
    parser.add_argument(
        "--baseline-rows", type=int, default=2000, help="raw-insert transactions (2,000)"
    )
    parser.add_argument("--processes", type=int, default=2, help="concurrent writers (2)")
    parser.add_argument(
        "--concurrent-jobs", type=int, default=1000, help="submissions per writer (1,000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the workload's random seed")
    parser.add_argument(
        "--postgres-url", default=None, help=f"a PostgreSQL server (default: ${POSTGRES_ENV})"
    )
    parser.add_argument("--skip-postgres", action="store_true", help="measure SQLite only")
    parser.add_argument("--skip-sqlite", action="store_true", help="measure PostgreSQL only")
    parser.add_argument(
        "--profile", action="store_true", help="profile scheduling with cProfile (stderr)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if min(args.jobs, args.admissions, args.why_repeat, args.processes) < 1:
        parser.error("--jobs, --admissions, --why-repeat and --processes must be at least 1")
    postgres = args.postgres_url or os.environ.get(POSTGRES_ENV)
    for name in [n for n in os.environ if n.startswith("KEEL_")]:
        del os.environ[name]

    backends: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    here = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="keel-bench-jobs-") as tmp:
        os.chdir(tmp)
        try:
            if not args.skip_sqlite:
                backends["sqlite"] = run_backend("sqlite", None, Path(tmp) / "sqlite", args)
            if args.skip_postgres:
                skipped["postgres"] = "--skip-postgres"
            elif not postgres:
                skipped["postgres"] = f"give --postgres-url or set {POSTGRES_ENV}"
            elif why_not := postgres_unreachable(postgres):
                skipped["postgres"] = why_not
            else:
                with fresh_postgres(postgres) as url:
                    backends["postgres"] = run_backend("postgres", url, Path(tmp) / "pg", args)
        finally:
            from keel.store import reset_stores

            reset_stores()
            os.chdir(here)
    if not backends:
        print(f"nothing was measured: {skipped}", file=sys.stderr)
        return 1
    result = {
        "config": {
            "jobs": args.jobs,
            "queues": len(queue_specs()),
            "pools": POOLS,
            "admissions": args.admissions,
            "busy_passes": args.busy_passes,
            "cycles": args.cycles,
            "burst": args.burst,
            "processes": args.processes,
            "concurrent_jobs": args.concurrent_jobs,
            "baseline_rows": args.baseline_rows,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1m": os.getloadavg()[0],
            "target_ms": TARGET_MS,
        },
        "backends": backends,
        "skipped": skipped,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
