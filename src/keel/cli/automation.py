"""``keel policy apply|show|enable|disable`` and ``keel automation run|tick|status|history``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli.governance import policy_app
from keel.cli.output import console, err, fmt_time, print_json

automation_app = typer.Typer(
    help="The controller that runs policies: retrain, gate, canary, promote or roll back.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
PolicyArg = Annotated[str, typer.Argument(help="Policy name.")]

__all__ = ["automation_app", "policy_app"]


@policy_app.command("apply")
def apply_command(
    file: Annotated[Path, typer.Argument(help="Policy file (YAML or JSON).")],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Validate the policy and resolve what it names; store nothing."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create or replace an automation policy from a YAML file.

    A policy names the model and its deployment, the triggers that retrain it
    (drift, quality, schedule, a new dataset version), the pipeline that
    retrains, the gates, the canary rollout and the approval rule; see the
    README section "The closed loop". A prompt policy names a prompt and its
    prompt deployment instead: new prompt versions are gated by evals against
    the alias, canaried on the gateway and promoted or rolled back; see "LLM
    applications". Every field is checked, and every name
    it uses (model, deployment, pipeline and its parameters, datasets,
    evaluation data and its columns) resolved, before anything is stored; one
    error lists all that do not, with the closest existing names.
    """
    from keel.automation import PolicyStore, load_policy
    from keel.automation.references import resolve_references
    from keel.client import Client

    if dry_run:
        policy = load_policy(file)
        resolve_references(policy, Client())
        if as_json:
            print_json(policy.to_dict())
        else:
            console.print(f"{file}: policy {policy.name!r} is valid")
            _print_policy(policy)
        return
    policy, revision = PolicyStore().apply(file)
    if as_json:
        print_json({"name": policy.name, "revision": revision, "policy": policy.to_dict()})
        return
    console.print(f"Applied policy [bold]{policy.name}[/bold] (revision {revision})")
    _print_policy(policy)


@policy_app.command("show")
def show_command(name: PolicyArg, as_json: JsonOption = False) -> None:
    """Show a policy and where its cycle stands."""
    from keel.automation import PolicyStore

    store = PolicyStore()
    policy = store.get(name)
    state = store.state(name)
    if as_json:
        print_json({"policy": policy.to_dict(), "state": state.to_dict()})
        return
    _print_policy(policy)
    console.print(
        f"  state      {state.state}"
        + (
            f" (candidate {policy.model}/{state.candidate_version})"
            if state.candidate_version
            else ""
        )
    )


@policy_app.command("enable")
def enable_command(name: PolicyArg) -> None:
    """Let the controller act on a policy again."""
    from keel.automation import PolicyStore

    PolicyStore().set_enabled(name, True)
    console.print(f"Policy {name!r} is enabled")


@policy_app.command("disable")
def disable_command(name: PolicyArg) -> None:
    """Stop the controller from starting cycles for a policy (a cycle in progress stays)."""
    from keel.automation import PolicyStore

    PolicyStore().set_enabled(name, False)
    console.print(f"Policy {name!r} is disabled")


def _print_policy(policy: Any) -> None:
    console.print(f"  {policy.kind:<11}{policy.model} (promotes {policy.alias})")
    if not policy.is_index:
        console.print(f"  deployment {policy.deployment}")
    for trigger in policy.triggers:
        console.print(f"  trigger    {trigger.describe()}")
    if policy.retrain is not None:
        console.print(f"  retrain    {policy.retrain.pipeline} → output {policy.retrain.output!r}")
    if policy.gates.evals is not None:
        evals = policy.gates.evals
        console.print(f"  gates      evals on {evals.dataset}: {'; '.join(evals.gates)}")
    if policy.gates.retrieval is not None:
        retrieval = policy.gates.retrieval
        console.print(
            f"  gates      retrieval@{retrieval.k} on {retrieval.questions}: "
            f"{'; '.join(retrieval.gates)}"
        )
    if not policy.is_index:
        canary = policy.rollout.canary
        console.print(
            f"  rollout    canary {canary.weight}% until {canary.min_requests} requests; "
            f"promote when {policy.rollout.promote_when.to_dict() or 'always'}; "
            f"roll back when {policy.rollout.rollback_when.to_dict() or 'never'}"
        )
    console.print(f"  approval   {policy.approval.mode}")


@automation_app.command("tick")
def tick_command(
    policy: Annotated[
        list[str] | None, typer.Option("--policy", "-p", help="Only this policy (repeatable).")
    ] = None,
    executor: Annotated[str, typer.Option(help="Pipeline executor: local or ray.")] = "local",
    as_json: JsonOption = False,
) -> None:
    """Evaluate every enabled policy once and act (for cron or CI); prints what it decided.

    Exits 1 when a cycle ended in failure during the tick (retrain_failed,
    gate_failed or rolled_back), so cron and CI notice.
    """
    from keel.automation import Controller

    results = Controller(executor=executor).tick(policy or None)
    if as_json:
        print_json([r.to_dict() for r in results])
    else:
        _print_results(results)
    failed = [r.policy for r in results if r.failed]
    if failed:
        err.print(f"a cycle ended in failure: {', '.join(failed)} (see `keel automation history`)")
        raise typer.Exit(1)


@automation_app.command("run")
def run_command(
    interval: Annotated[float, typer.Option(help="Seconds between ticks.")] = 30.0,
    executor: Annotated[str, typer.Option(help="Pipeline executor: local or ray.")] = "local",
) -> None:
    """Run the controller until interrupted: a tick every --interval seconds.

    Any number of controllers may run against one store: each policy is worked
    on by one of them at a time (a lease), and a controller killed mid-cycle is
    picked up by the next one.
    """
    from keel.automation import Controller

    if interval <= 0:
        from keel.errors import InvalidInput

        raise InvalidInput(f"--interval must be a positive number of seconds, got {interval}")
    console.print(f"Automation controller running; a tick every {interval:g}s (Ctrl-C stops)")
    try:
        Controller(executor=executor).run(interval, on_tick=_print_results)
    except KeyboardInterrupt:
        err.print("stopped")


def _print_results(results: list[Any]) -> None:
    for result in results:
        if result.skipped:
            console.print(f"{result.policy}: skipped ({result.skipped})")
            continue
        for event in result.events:
            console.print(
                f"{fmt_time(event.at)}  {event.policy}  [bold]{event.kind}[/bold]  "
                f"{event.model}{'' if event.version is None else f'/{event.version}'}  "
                f"{event.reason}",
                soft_wrap=True,
            )
        if not result.events:
            console.print(f"{result.policy}: {result.after}, {result.waiting or 'nothing to do'}")


@automation_app.command("status")
def status_command(as_json: JsonOption = False) -> None:
    """Every policy with its state and candidate."""
    from rich.table import Table

    from keel.automation import PolicyStore

    rows = PolicyStore().list()
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No automation policies; create one with `keel policy apply FILE`.")
        return
    table = Table("policy", "model", "deployment", "state", "candidate", "enabled", "revision")
    for row in rows:
        table.add_row(
            row["name"],
            row["model"],
            row["deployment"],
            row["state"],
            "—" if row["candidate_version"] is None else str(row["candidate_version"]),
            "yes" if row["enabled"] else "no",
            str(row["revision"]),
        )
    console.print(table)


@automation_app.command("history")
def history_command(
    policy: Annotated[str | None, typer.Option("--policy", "-p", help="Only this policy.")] = None,
    kind: Annotated[
        list[str] | None, typer.Option("--kind", "-k", help="Only these event kinds.")
    ] = None,
    limit: Annotated[int | None, typer.Option("-n", help="Only the newest N events.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The controller's decisions, oldest first, each with its reason.

    Kinds: triggered, retrain_started, retrain_finished, retrain_failed,
    gate_passed, gate_failed, canary_started, approval_requested, promoted,
    rolled_back, resumed.
    """
    from rich.table import Table

    from keel.automation import history

    events = history(policy, kinds=tuple(kind) if kind else None, limit=limit)
    if as_json:
        print_json([e.to_dict() for e in events])
        return
    if not events:
        console.print("No automation events yet.")
        return
    table = Table("time", "policy", "event", "model", "reason")
    for event in events:
        table.add_row(
            fmt_time(event.at),
            event.policy,
            event.kind,
            event.model + ("" if event.version is None else f"/{event.version}"),
            event.reason,
        )
    console.print(table)
