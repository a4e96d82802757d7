"""``keel jobs worker|schedule`` and ``keel jobs queues|prices``: the operator's commands.

A worker runs admitted jobs on this machine or Ray; the scheduler admits them;
an admin sets queues (quotas, cohorts, budgets) and the price table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli.output import console, err, fmt_time, print_json

if TYPE_CHECKING:
    from keel.client import Client
    from keel.jobs.entities import Queue
    from keel.jobs.scheduler import Decision

__all__ = ["prices_app", "queues_app", "schedule_command", "time_arg", "worker_command"]

queues_app = typer.Typer(
    help="Queues: quotas per resource, cohorts that lend idle quota, GPU-hour budgets.",
    no_args_is_help=True,
)
prices_app = typer.Typer(
    help="What a GPU, CPU or GiB of memory costs per hour, from a start time; rows are only added.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _client() -> Client:
    from keel.client import Client

    return Client()


def time_arg(value: str | None) -> str | int | None:
    """Epoch ms as a number, ISO-8601 text as it is (the library reads both)."""
    if value is not None and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


# -- the scheduler ----------------------------------------------------------------------


def schedule_command(
    once: Annotated[
        bool, typer.Option("--once", help="One pass, then exit (for cron or a test).")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between passes when running on.")] = 2.0,
    as_json: JsonOption = False,
) -> None:
    """Run the scheduler: admit queued jobs that fit, preempt borrowers for higher priority.

    Workers run the scheduler themselves (one at a time, under a lease), so this is
    for a store with no worker yet, cron, or to see its decisions. It works on the
    metadata store (KEEL_STORE_URL), not through a server.
    """
    from keel.errors import InvalidInput
    from keel.jobs.remote import require_store
    from keel.jobs.scheduler import Scheduler

    if interval <= 0:
        raise InvalidInput(f"--interval must be a positive number of seconds, got {interval}")
    client = _client()
    require_store(client, "a scheduler")
    scheduler = Scheduler(client)
    try:
        while True:
            if not scheduler.acquire():
                err.print("another scheduler holds the lease; it makes the decisions")
                decisions: list[Decision] = []
            else:
                decisions = scheduler.schedule()
            if as_json:
                print_json([d.to_dict() for d in decisions])
            else:
                _print_decisions(decisions, quiet=not once)
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        scheduler.release()


def _print_decisions(decisions: list[Decision], *, quiet: bool = False) -> None:
    if not decisions and not quiet:
        console.print("Nothing to decide: no queued job could move.")
    for decision in decisions:
        console.print(
            f"job {decision.job_id}: [bold]{decision.action}[/bold] — {decision.reason}",
            soft_wrap=True,
        )


# -- the worker -------------------------------------------------------------------------


def worker_command(
    executor: Annotated[
        str,
        typer.Option(
            help="local: a subprocess per attempt on this machine; ray: a Ray task per attempt "
            "(cluster from the ray_address setting)."
        ),
    ] = "local",
    pool: Annotated[
        str | None,
        typer.Option(
            help="This worker's pool name (default: the host name); one live worker each."
        ),
    ] = None,
    inventory: Annotated[
        Path | None,
        typer.Option(
            help="Declare what this worker offers (YAML or JSON: cpus, memory, gpus by type, "
            "gpu_memory) instead of discovering it (CPUs, memory, NVML's GPUs)."
        ),
    ] = None,
    gpu_samples: Annotated[
        Path | None,
        typer.Option(
            help="Replay GPU readings from a recorded JSON-lines file instead of reading NVML "
            '({"device": 0, "util": 37.0, "memory": 21474836480} a line), to try it without GPUs.'
        ),
    ] = None,
    ray_gpu_type: Annotated[
        str | None,
        typer.Option(
            help="Ray only: the type of GPUs Ray knows no accelerator type for (default: gpu)."
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option(help="Seconds between SIGTERM and SIGKILL when a job is stopped.")
    ] = 10.0,
    poll: Annotated[float, typer.Option(help="Seconds between two turns of the loop.")] = 1.0,
    sample: Annotated[
        float, typer.Option(help="Seconds between two samples of a running job's use.")
    ] = 2.0,
    max_seconds: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run on).")
    ] = None,
    no_schedule: Annotated[
        bool,
        typer.Option(
            "--no-schedule",
            help="Do not run scheduler passes here (another worker or `keel jobs schedule` does).",
        ),
    ] = False,
) -> None:
    """Run the jobs admitted to this worker's pool until stopped (Ctrl-C or SIGTERM).

    Each turn it heartbeats its pool, runs a scheduler pass when it holds the
    scheduler's lease, starts admitted jobs with exactly their GPUs in
    CUDA_VISIBLE_DEVICES, samples CPU, memory and GPUs, and stops jobs that are
    cancelled, preempted or past their timeout (SIGTERM, then SIGKILL after --grace).
    Stopping the worker stops its jobs and requeues them. It works on the metadata
    store (KEEL_STORE_URL), not through a server.
    """
    import signal
    import socket
    import threading

    from keel.errors import InvalidInput
    from keel.jobs.remote import require_store
    from keel.jobs.worker import Worker

    for label, value in (("--grace", grace), ("--poll", poll), ("--sample", sample)):
        if value <= 0:
            raise InvalidInput(f"{label} must be a positive number of seconds, got {value}")
    client = _client()
    require_store(client, "a worker")
    runner: Any
    if executor == "local":
        from keel.jobs.executors.local import LocalExecutor

        runner = LocalExecutor(inventory_file=inventory)
    elif executor == "ray":
        from keel.jobs.executors.ray import RayExecutor

        if inventory is not None:
            raise InvalidInput(
                "--inventory is for the local executor; a Ray worker offers what its cluster has"
            )
        runner = RayExecutor(gpu_types=ray_gpu_type, grace_seconds=grace)
    else:
        raise InvalidInput(f"--executor must be local or ray, got {executor!r}")
    offered = runner.inventory()
    reader: Any = None
    if gpu_samples is not None:
        from keel.jobs.sampling import RecordedGpuReader

        reader = RecordedGpuReader(gpu_samples)
    elif offered.gpus and executor == "local":
        from keel.jobs.sampling import NvmlReader

        reader = NvmlReader()
    name = pool or socket.gethostname().split(".")[0]
    worker = Worker(
        client,
        runner,
        pool=name,
        grace_seconds=grace,
        poll_seconds=poll,
        sample_seconds=sample,
        gpu_reader=reader,
        schedule=not no_schedule,
    )
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    gpus = ", ".join(f"{len(d)}x{k}" for k, d in offered.gpus.items()) or "no GPUs"
    console.print(
        f"Worker on pool [bold]{name}[/bold] ({runner.name}): {offered.cpus:g} cpus, "
        f"{_quota_text({'memory': float(offered.memory)})}, {gpus}; Ctrl-C stops it and "
        "requeues its jobs",
        soft_wrap=True,
    )
    try:
        worker.run(stop_event=stop, max_seconds=max_seconds)
    finally:
        runner.close()
    console.print(f"Worker on pool {name} stopped")


# -- queues -----------------------------------------------------------------------------


def _quota_text(vector: dict[str, float] | None) -> str:
    from keel.jobs.resources import format_memory

    if not vector:
        return "—"
    return ", ".join(
        f"{k} {format_memory(v) if k == 'memory' else f'{v:g}'}" for k, v in vector.items()
    )


def _print_queue(queue: Queue) -> None:
    console.print(f"queue [bold]{queue.name}[/bold] (revision {queue.revision})")
    console.print(f"  team             {queue.team or '—'}")
    console.print(f"  cohort           {queue.cohort or '—'}")
    console.print(f"  quotas           {_quota_text(queue.quotas)}")
    console.print(f"  borrowing limit  {_quota_text(queue.borrowing_limit)}")
    hours = "—" if queue.gpu_hours_per_day is None else f"{queue.gpu_hours_per_day:g}"
    console.print(f"  GPU-hours/day    {hours}")
    console.print(f"  updated          {fmt_time(queue.updated_at)} by {queue.updated_by}")


@queues_app.command("apply")
def queues_apply_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="A queue file (YAML or JSON): name, quotas (cpus, memory, gpu:<type>), and "
            "optionally team, cohort, borrowing_limit, gpu_hours_per_day."
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Create or replace a queue (audited; an admin's, through a server).

    Jobs admitted under the old quotas keep running; admission uses the new ones.

    Example file:

        name: team-a
        team: vision
        cohort: research
        quotas: {gpu:a100: 2, cpus: 16, memory: 64Gi}
        borrowing_limit: {gpu:a100: 2}
        gpu_hours_per_day: 40
    """
    queue = _client().jobs.apply_queue(file)
    if as_json:
        print_json(queue.to_dict())
        return
    console.print(f"Applied queue [bold]{queue.name}[/bold] (revision {queue.revision})")


@queues_app.command("list")
def queues_list_command(as_json: JsonOption = False) -> None:
    """Every queue with its quotas and cohort."""
    from rich.table import Table

    queues = _client().jobs.list_queues()
    if as_json:
        print_json([q.to_dict() for q in queues])
        return
    if not queues:
        console.print("No queues; create one with `keel jobs queues apply FILE`.")
        return
    table = Table("queue", "team", "cohort", "quotas", "borrowing limit", "GPU-h/day")
    for q in queues:
        table.add_row(
            q.name,
            q.team or "—",
            q.cohort or "—",
            _quota_text(q.quotas),
            _quota_text(q.borrowing_limit),
            "—" if q.gpu_hours_per_day is None else f"{q.gpu_hours_per_day:g}",
        )
    console.print(table)


@queues_app.command("show")
def queues_show_command(
    name: Annotated[str, typer.Argument(help="The queue's name.")], as_json: JsonOption = False
) -> None:
    """One queue."""
    queue = _client().jobs.get_queue(name)
    if as_json:
        print_json(queue.to_dict())
        return
    _print_queue(queue)


# -- prices -----------------------------------------------------------------------------


@prices_app.command("set")
def prices_set_command(
    resource: Annotated[
        str,
        typer.Argument(
            help="gpu:<type> (per GPU-hour), cpus (per CPU-hour) or memory (per GiB-hour)."
        ),
    ],
    per_hour: Annotated[float, typer.Argument(help="USD per hour of one unit.")],
    starts_at: Annotated[
        str | None,
        typer.Option(
            "--starts-at",
            help="When it applies from: ISO-8601 (2026-01-01T00:00:00Z) or epoch ms; default now.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a price row (audited; an admin's, through a server); earlier rows keep their time."""
    from keel.jobs.prices import JobPrices
    from keel.store.sql import iso_ms

    price = JobPrices(_client()).set(resource, per_hour, starts_at=time_arg(starts_at))
    if as_json:
        print_json(price.to_dict())
        return
    console.print(f"{price.resource}: ${price.per_hour:g} per hour from {iso_ms(price.starts_at)}")


@prices_app.command("list")
def prices_list_command(
    resource: Annotated[str | None, typer.Option("--resource", help="One resource's rows.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every price row, by resource and start time."""
    from rich.table import Table

    from keel.jobs.prices import JobPrices
    from keel.store.sql import iso_ms

    prices = JobPrices(_client()).list(resource)
    if as_json:
        print_json([p.to_dict() for p in prices])
        return
    if not prices:
        console.print("No job prices; add one with `keel jobs prices set RESOURCE PER_HOUR`.")
        return
    table = Table("resource", "USD per hour", "from", "added by")
    for p in prices:
        table.add_row(p.resource, f"{p.per_hour:g}", iso_ms(p.starts_at), p.created_by)
    console.print(table)
