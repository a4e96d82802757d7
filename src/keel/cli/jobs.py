"""``keel jobs …``: submit jobs to queues, follow them, run workers and the scheduler.

``keel jobs submit`` queues a pipeline (``module:attr``) or a command (after
``--``) with the resources it needs; ``keel jobs worker`` runs admitted jobs on
this machine (or Ray); ``keel jobs why ID`` says what a job waits for.
Queues (``keel jobs queues``) and the price table (``keel jobs prices``) are
set by an admin.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli.output import console, err, fmt_time, print_json

if TYPE_CHECKING:
    from keel.client import Client
    from keel.jobs.entities import Job

jobs_app = typer.Typer(
    help="Jobs on shared CPUs and GPUs: queues with quotas, priorities, preemption, cost.",
    no_args_is_help=True,
)

__all__ = ["jobs_app"]

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
JobArg = Annotated[int, typer.Argument(help="The job's id (see `keel jobs list`).")]


def _client() -> Client:
    from keel.client import Client

    return Client()


def _resources(job: Job) -> str:
    return job.request.describe(job.assigned_gpu_type)


# -- submit -----------------------------------------------------------------------------


@jobs_app.command("submit")
def submit_command(
    queue: Annotated[
        str, typer.Option("--queue", "-q", help="The queue to wait in.", show_default=False)
    ],
    target: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PIPELINE | -- COMMAND",
            help="A pipeline as module:attr (pipelines.train:train), or a command after -- "
            "(-- python train.py --epochs 3).",
            show_default=False,
        ),
    ] = None,
    priority: Annotated[
        str,
        typer.Option(
            help="low, normal or high: higher goes first and may preempt lower-priority jobs "
            "running on borrowed quota."
        ),
    ] = "normal",
    gpus: Annotated[int, typer.Option(help="Whole GPUs.")] = 0,
    gpu_type: Annotated[
        str | None,
        typer.Option(help="Their type (a100, l4); default: any type the queue has quota for."),
    ] = None,
    cpus: Annotated[float, typer.Option(help="CPUs (fractions allowed).")] = 1.0,
    memory: Annotated[
        str, typer.Option(help="Memory: 16Gi, 512Mi, 2G or a number of bytes.")
    ] = "0",
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds one attempt may run before it is stopped and fails."),
    ] = None,
    retries: Annotated[
        int, typer.Option(help="How many times a failed attempt is queued again.")
    ] = 0,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="A pipeline parameter as key=value (repeatable); the value is read as JSON when "
            "it parses (8, 0.5, true, [1,2]) and as a string otherwise.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="A label (default: the pipeline, or the command's first word)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Queue a pipeline or a command with the resources it needs.

    The job is checked at once: an unknown queue, a bad or negative resource, or a
    request that can never fit (more than its queue's quota and what it may borrow,
    or more than any worker's whole inventory) is refused with the reason. It is then
    admitted by the scheduler when all it asks for fits, by priority then arrival.

    Examples:

        keel jobs submit pipelines.train:train --queue team-a --gpus 1 -p lr=0.01

        keel jobs submit --queue team-a --cpus 2 --memory 4Gi -- python train.py
    """
    from keel.cli.pipeline import parse_params
    from keel.errors import InvalidInput

    args = list(target or [])
    if not args:
        raise InvalidInput(
            "give a pipeline (module:attr) or a command after -- "
            "(keel jobs submit --queue Q -- python train.py)"
        )
    # after `--` the arguments are a command, even a single one; without it one argument
    # is a pipeline (the library says what a pipeline target must look like)
    command = "--" in sys.argv[1:] or len(args) > 1
    job = _client().jobs.submit(
        args if command else args[0],
        queue=queue,
        params=parse_params(param) or None,
        name=name,
        priority=priority,
        gpus=gpus,
        gpu_type=gpu_type,
        cpus=cpus,
        memory=memory,
        timeout=timeout,
        retries=retries,
    )
    if as_json:
        print_json(job.to_dict())
        return
    console.print(
        f"Submitted job [bold]{job.id}[/bold] ({job.state}) to queue {job.queue}: "
        f"{job.name}, {job.priority_name} priority, {_resources(job)}"
    )


# -- reading jobs -----------------------------------------------------------------------


@jobs_app.command("list")
def list_command(
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")] = None,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            "-s",
            help="Only jobs in this state (repeatable): queued, admitted, running, succeeded, "
            "failed, preempted, cancelled.",
        ),
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="Only the retrains of this automation policy.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="The newest N jobs.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Jobs, newest first, with their state and what they asked for."""
    from rich.table import Table

    from keel.errors import InvalidInput

    if limit < 1:
        raise InvalidInput(f"--limit must be 1 or more, got {limit}")
    jobs = _client().jobs.list(queue=queue, states=state or None, policy=policy, limit=limit)
    if as_json:
        print_json([j.to_dict() for j in jobs])
        return
    if not jobs:
        console.print("No jobs match; submit one with `keel jobs submit`.")
        return
    table = Table("id", "name", "queue", "priority", "state", "resources", "submitted", "by")
    for job in jobs:
        table.add_row(
            str(job.id),
            job.name,
            job.queue,
            job.priority_name,
            job.state,
            _resources(job),
            fmt_time(job.submitted_at),
            job.submitted_by,
        )
    console.print(table)


@jobs_app.command("show")
def show_command(job_id: JobArg, as_json: JsonOption = False) -> None:
    """A job: what it runs and asks for, where it stands, what it used and cost, its events."""
    from rich.table import Table

    jobs = _client().jobs
    job = jobs.get(job_id)
    events = jobs.events(job_id)
    if as_json:
        print_json({**job.to_dict(), "events": [e.to_dict() for e in events]})
        return
    target = " ".join(job.command) if job.kind == "command" else job.target
    rows = [
        ("job", f"{job.id} ({job.name})"),
        ("state", f"{job.state}" + (f": {job.reason}" if job.reason else "")),
        ("queue", f"{job.queue}, {job.priority_name} priority"),
        (job.kind, target),
        ("params", json.dumps(job.params, sort_keys=True) if job.params else None),
        ("asks for", job.request.describe()),
        ("attempt", f"{job.attempt} of {job.max_retries + 1}"),
        ("timeout", None if job.timeout_s is None else f"{job.timeout_s:g}s per attempt"),
        ("submitted", f"{fmt_time(job.submitted_at)} by {job.submitted_by}"),
        (
            "placed",
            None
            if job.pool is None
            else f"pool {job.pool}"
            + (f", {job.assigned_gpu_type} devices {job.devices}" if job.devices else "")
            + (" (borrowed quota)" if job.borrowed else ""),
        ),
        ("policy", job.policy),
        ("run", job.run_id),
        (
            "model",
            None if job.model_name is None else f"{job.model_name}/{job.model_version}",
        ),
        ("ran", f"{job.seconds_run:.1f}s" if job.seconds_run else None),
        ("usage", _usage(job.usage)),
        ("cost", None if job.cost is None else f"${job.cost:.4f}"),
        ("exit code", None if job.exit_code is None else str(job.exit_code)),
    ]
    for label, value in rows:
        if value:
            console.print(f"  {label:<10} {value}", soft_wrap=True)
    table = Table("time", "from", "to", "by", "reason")
    for event in events:
        table.add_row(
            fmt_time(event.at), event.from_state or "—", event.to_state, event.actor, event.reason
        )
    console.print(table)


def _usage(usage: dict[str, Any]) -> str | None:
    from keel.jobs.resources import format_memory

    if not usage:
        return None
    parts = []
    if usage.get("cpu_percent_mean") is not None:
        parts.append(
            f"cpu {usage['cpu_percent_mean']:.0f}% mean, {usage.get('cpu_percent_peak', 0):.0f}% "
            "peak"
        )
    if usage.get("rss_peak"):
        parts.append(f"rss peak {format_memory(usage['rss_peak'])}")
    if usage.get("gpu_util_mean") is not None:
        parts.append(
            f"gpu {usage['gpu_util_mean']:.0f}% mean, {usage.get('gpu_util_peak', 0):.0f}% peak"
        )
    if usage.get("gpu_memory_peak"):
        parts.append(f"gpu memory peak {format_memory(usage['gpu_memory_peak'])}")
    return "; ".join(parts) or json.dumps(usage, sort_keys=True)


@jobs_app.command("logs")
def logs_command(
    job_id: JobArg,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep printing as the job writes, until it has ended."),
    ] = False,
) -> None:
    """A job's output (stdout and stderr, every attempt, each under a `== keel:` line).

    On the worker's machine it is read as it is written; elsewhere (or through a
    server) it is the log a worker uploads when an attempt ends.
    """
    from keel.jobs.worker import follow_job_log, job_log

    client = _client()
    job = client.jobs.get(job_id)
    if follow:
        for piece in follow_job_log(client, job):
            sys.stdout.write(piece)
            sys.stdout.flush()
        return
    text = job_log(client, job)
    if not text:
        err.print(f"job {job.id} has no output yet ({job.state})")
        return
    sys.stdout.write(text)
    sys.stdout.flush()


@jobs_app.command("why")
def why_command(job_id: JobArg, as_json: JsonOption = False) -> None:
    """What a job waits for (quota, cohort, inventory, jobs ahead), or why it is where it is."""
    from keel.jobs.remote import why

    explanation = why(_client(), job_id)
    if as_json:
        print_json(explanation.to_dict())
        return
    console.print(explanation.summary, soft_wrap=True)
    for reason in explanation.reasons:
        console.print(f"  - {reason}", soft_wrap=True)


@jobs_app.command("report")
def report_command(
    by: Annotated[
        str, typer.Option(help="Group by queue, team (the queue's team) or model.")
    ] = "queue",
    since: Annotated[
        str | None,
        typer.Option(
            help="The window's start: ISO-8601 (2026-01-01) or epoch ms; default all time."
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="The window's end: ISO-8601 or epoch ms; default now.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """GPU-hours asked for and used, idle share, right-sizing and cost, by group.

    GPU-hours used are the measured busy share of the GPU-hours jobs held; jobs whose
    GPUs were not sampled are counted apart, never guessed. Right-sizing names the
    smallest GPU type (or share of one) that would have held the measured peak.
    Cost comes from the job price table (`keel jobs prices`).
    """
    from rich.table import Table

    from keel.cli.jobs_ops import time_arg
    from keel.jobs.remote import report
    from keel.jobs.resources import format_memory

    found = report(_client(), by=by, since=time_arg(since), until=time_arg(until))
    if as_json:
        print_json(found.to_dict())
        return
    if not found.rows:
        console.print("No jobs ran in this window.")
        return
    table = Table(
        found.by, "jobs", "GPU-h asked", "GPU-h used", "idle", "peak util", "peak GPU mem",
        "fits on", "cost",
    )  # fmt: skip
    for row in [*found.rows, found.total]:
        table.add_row(
            row.group,
            str(row.jobs),
            f"{row.gpu_hours_requested:.2f}",
            f"{row.gpu_hours_used:.2f}"
            + (
                f" (+{row.gpu_hours_unmeasured:.2f} unmeasured)" if row.gpu_hours_unmeasured else ""
            ),
            "—" if row.idle_share is None else f"{row.idle_share:.0%}",
            "—" if row.gpu_util_peak is None else f"{row.gpu_util_peak:.0f}%",
            "—" if row.gpu_memory_peak is None else format_memory(row.gpu_memory_peak),
            _fits(row.fits_gpu_type, row.share),
            f"${row.cost_usd:.2f}",
        )
    console.print(table)
    for row in found.rows:
        if row.fits_gpu_type is not None or row.share is not None:
            console.print(f"{row.group}: {row.suggestion}", soft_wrap=True)


def _fits(gpu_type: str | None, share: float | None) -> str:
    """The right-sizing column: ``l4``, ``a100, 0.25 of one`` or a dash."""
    if gpu_type is None:
        return "—"
    return gpu_type + ("" if share is None or share >= 1 else f", {share:g} of one")


@jobs_app.command("cancel")
def cancel_command(
    job_id: JobArg,
    reason: Annotated[str | None, typer.Option(help="Why (recorded on its event).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a job: at once when it is queued, else its worker stops it.

    Through a server, anyone who may write cancels their own jobs; another user's
    job needs an admin.
    """
    job = _client().jobs.cancel(job_id, reason)
    if as_json:
        print_json(job.to_dict())
        return
    if job.state == "cancelled":
        console.print(f"Job {job.id} is cancelled")
    else:
        console.print(f"Job {job.id} is {job.state}; its worker was asked to stop it")


def _register_operations() -> None:
    """The operator's commands (worker, schedule, queues, prices) live in ``jobs_ops``."""
    from keel.cli import jobs_ops

    jobs_app.command("schedule")(jobs_ops.schedule_command)
    jobs_app.command("worker")(jobs_ops.worker_command)
    jobs_app.add_typer(jobs_ops.queues_app, name="queues")
    jobs_app.add_typer(jobs_ops.prices_app, name="prices")


_register_operations()
