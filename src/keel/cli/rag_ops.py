"""``keel rag eval``, ``status``, ``watch`` and ``check``: retrieval quality and freshness.

``keel rag eval`` exits 0 when every gate passed, 1 when a gate failed (each
failed gate is printed on stderr, one line each, with its measured value and how
far off it was), and 2 when the eval could not run as asked (a bad ``k``, gate or
question set, an unknown index, alias or dataset), as ``keel evals run`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli.output import console, err, fmt_value, print_json
from keel.cli.progress import progress_bar
from keel.monitoring.windows import WINDOW_FORMS

if TYPE_CHECKING:
    from keel.client import Client
    from keel.llm.rag.evaluation import RetrievalEval
    from keel.llm.rag.freshness import Freshness
    from keel.monitoring.indexes import IndexCheck, IndexWatch

__all__ = ["check_command", "eval_command", "status_command", "watch_command"]

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
#: Exit status when the eval could not run as asked (as for a command-line usage error).
USAGE_ERROR = 2


def _usage_error(exc: Exception) -> typer.Exit:
    from rich.markup import escape

    err.print(f"[bold red]error:[/bold red] {escape(' '.join(str(exc).split()))}", highlight=False)
    return typer.Exit(USAGE_ERROR)


# -- eval ----------------------------------------------------------------------------------------


def eval_command(
    index: Annotated[
        str, typer.Argument(help="The candidate: NAME@ALIAS or rag:/NAME/VERSION (or @ALIAS).")
    ],
    questions: Annotated[
        str,
        typer.Option(
            "--set",
            help='The question set: datasets:/NAME@VERSION, JSONL lines {"question": ..., '
            '"sources": ["path", ...]}.',
        ),
    ],
    against: Annotated[
        str | None,
        typer.Option(
            help="Also evaluate this alias or version of the same index (e.g. production), "
            "or any index reference, on the same questions, and compare.",
            show_default=False,
        ),
    ] = None,
    k: Annotated[
        int, typer.Option("--k", "-k", help="Chunks retrieved per question (1-1000).")
    ] = 10,
    gate: Annotated[
        list[str] | None,
        typer.Option(
            "--gate",
            "-g",
            help="A gate, repeatable: 'METRIC >= X' or 'METRIC <= X' on recall@K, mrr@K, "
            "ndcg@K, hit_rate@K, latency_p95_ms; 'diff.recall@10 >= -0.02' is no worse than "
            "--against by more than 0.02.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar on stderr (default: when stderr is a terminal).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Score an index version's retrieval on labelled questions: recall@k, MRR, nDCG; gate it.

    A retrieved chunk is relevant when its source document is one of the question's
    sources; each document counts once, at the rank of its first chunk. Exits 1 if a
    gate fails.
    """
    from rich.markup import escape

    from keel.client import Client
    from keel.errors import UserError
    from keel.llm.rag.evaluation import evaluate_retrieval

    try:
        with progress_bar("questions", "questions", enabled=progress) as bar:
            result = evaluate_retrieval(
                Client(),
                index,
                questions,
                k=k,
                against=against,
                gates=gate or None,
                progress=bar.stage,
            )
    except UserError as exc:
        raise _usage_error(exc) from None
    if as_json:
        print_json(result.to_dict())
    else:
        _print_eval(result)
    for failed in result.failed_gates():
        err.print(
            f"[bold red]gate failed:[/bold red] {escape(failed.name)}: {escape(failed.detail)}",
            highlight=False,
        )
    raise typer.Exit(0 if result.passed else 1)


def _print_eval(result: RetrievalEval) -> None:
    from rich.markup import escape
    from rich.table import Table

    from keel.llm.rag.evaluation import retrieval_metrics

    m = result.metrics
    title = f"Retrieval eval of [bold]{escape(result.index)}[/bold]"
    if result.against is not None:
        title += f" against [bold]{escape(result.against)}[/bold]"
    console.print(f"{title} on {escape(result.questions)} ({int(m['questions'])} questions)")
    table = Table(show_edge=False, pad_edge=False)
    columns = ["metric", "candidate"]
    if result.against is not None:
        columns += ["against", "diff", "95% interval"]
    for column in columns:
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name in retrieval_metrics(result.k):
        row = [name, f"{m[name]:.4f}"]
        diff = result.diffs.get(name)
        if result.against is not None and diff is not None:
            row += [
                f"{m[f'against.{name}']:.4f}",
                f"{m[f'diff.{name}']:+.4f}",
                f"[{diff.ci_low:+.3f}, {diff.ci_high:+.3f}]",
            ]
        table.add_row(*row)
    console.print(table)
    console.print(
        f"query latency p50 {fmt_value(m['latency_p50_ms'])} ms, "
        f"p95 {fmt_value(m['latency_p95_ms'])} ms"
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    for g in result.gates:
        mark = "[green]pass[/green]" if g.passed else "[bold red]FAIL[/bold red]"
        console.print(f"  {mark}  {escape(g.name)}  ({escape(g.detail)})")
    colour = "green" if result.passed else "bold red"
    console.print(f"[{colour}]{escape(result.summary())}[/{colour}]")


# -- status, watch, check ------------------------------------------------------------------------


def _print_freshness(freshness: Freshness) -> None:
    from rich.markup import escape

    colour = "red" if freshness.overdue else "yellow" if freshness.stale else "green"
    console.print(
        f"[{colour}]{freshness.state}[/{colour}]  {escape(freshness.summary())}", soft_wrap=True
    )
    for kind in ("added", "changed", "removed"):
        paths: list[str] = getattr(freshness, kind)
        if paths:
            more = freshness.counts[kind] - len(paths)
            shown = ", ".join(paths) + (f" and {more} more" if more > 0 else "")
            console.print(f"  {kind:<8} {escape(shown)}", soft_wrap=True)
    if freshness.other_files:
        console.print(f"  {freshness.other_files} other file(s) changed, none an index reads")
    if freshness.stale:
        console.print(f"  rebuild: {escape(freshness.rebuild_command)}", soft_wrap=True)


def _watch_of(client: Client, ref: str) -> IndexWatch | None:
    """The alias's watch, where the store is reachable (a version or a server client: none)."""
    from keel.errors import InvalidInput
    from keel.monitoring.indexes import get_index_watch

    try:
        return get_index_watch(ref, client=client)
    except InvalidInput:
        return None


def status_command(
    index: Annotated[
        str | None,
        typer.Argument(help="NAME@ALIAS or rag:/NAME/VERSION (default: every watched alias)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Say whether an index is fresh or stale: documents changed in its source since, its age.

    An alias's staleness counts once it is older than its watch's max age (see
    `keel rag watch`).
    """
    from keel.client import Client
    from keel.llm.rag.freshness import index_freshness
    from keel.monitoring.indexes import list_index_watches

    client = Client()
    if index is None:
        watches = list_index_watches(client=client)
        found = [index_freshness(client, w.index, max_age=w.max_age) for w in watches]
        if as_json:
            print_json([f.to_dict() for f in found])
            return
        if not found:
            console.print("No index alias is watched: keel rag watch NAME@ALIAS --max-age 7d")
        for freshness in found:
            _print_freshness(freshness)
        return
    watch = _watch_of(client, index)
    freshness = index_freshness(client, index, max_age=0.0 if watch is None else watch.max_age)
    if as_json:
        doc = freshness.to_dict()
        doc["watch"] = None if watch is None else watch.to_dict()
        print_json(doc)
        return
    _print_freshness(freshness)


def _print_watch(watch: IndexWatch) -> None:
    from rich.markup import escape

    from keel.llm.rag.freshness import human_age

    state = f"revision {watch.revision}" if watch.watched else "not watched: the defaults"
    console.print(f"[bold]{escape(watch.index)}[/bold] ({state})")
    console.print(f"  max age        {human_age(watch.max_age)}")
    console.print(
        f"  fire after     {watch.fire_after} check(s); resolve after {watch.resolve_after}"
    )
    if watch.webhook_url:
        secret = f" (signed with ${watch.webhook_secret_env})" if watch.webhook_secret_env else ""
        console.print(f"  webhook        {escape(watch.webhook_url)}{secret}")
    if watch.command:
        console.print(f"  command        {escape(watch.command)}")


def watch_command(
    index: Annotated[
        str | None, typer.Argument(help="The alias to watch, NAME@ALIAS (default: list them).")
    ] = None,
    max_age: Annotated[
        str | None,
        typer.Option(
            help=f"How long the index may lag its source before index_stale fires, {WINDOW_FORMS}"
            " (0: at once).",
            show_default=False,
        ),
    ] = None,
    fire_after: Annotated[int | None, typer.Option(help="Overdue checks before firing.")] = None,
    resolve_after: Annotated[
        int | None, typer.Option(help="Fresh checks before resolving.")
    ] = None,
    webhook: Annotated[str | None, typer.Option(help="POST alerts to this URL.")] = None,
    webhook_secret_env: Annotated[
        str | None, typer.Option(help="NAME of the variable holding the HMAC secret.")
    ] = None,
    command: Annotated[
        str | None, typer.Option(help="Shell command run with each alert's JSON on stdin.")
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Stop watching the alias.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Watch an index alias for staleness (`keel rag check` raises index_stale); audited.

    With no option, show how the alias is watched; with no alias, list the watched ones.
    """
    from rich.markup import escape

    from keel.client import Client
    from keel.monitoring.indexes import (
        get_index_watch,
        list_index_watches,
        unwatch_index,
        watch_index,
    )

    client = Client()
    if index is None:
        watches = list_index_watches(client=client)
        if as_json:
            print_json([w.to_dict() for w in watches])
            return
        if not watches:
            console.print("No index alias is watched: keel rag watch NAME@ALIAS --max-age 7d")
        for watch in watches:
            _print_watch(watch)
        return
    if remove:
        removed = unwatch_index(index, client=client)
        if as_json:
            print_json(removed.to_dict())
            return
        console.print(f"{escape(removed.index)} is no longer watched")
        return
    changes: dict[str, Any] = {
        key: value
        for key, value in (
            ("max_age", max_age),
            ("fire_after", fire_after),
            ("resolve_after", resolve_after),
            ("webhook_url", webhook),
            ("webhook_secret_env", webhook_secret_env),
            ("command", command),
        )
        if value is not None
    }
    if changes:
        watch = watch_index(index, client=client, **changes)
    else:
        watch = get_index_watch(index, client=client)
    print_json(watch.to_dict()) if as_json else _print_watch(watch)


def _print_check(check: IndexCheck) -> None:
    from rich.markup import escape

    if check.freshness is None:
        console.print(f"[red]error[/red]  {escape(check.index)}: {escape(str(check.error))}")
        return
    _print_freshness(check.freshness)
    for alert in check.alerts:
        colour = "red" if alert.state == "firing" else "green"
        console.print(
            f"  [{colour}]{alert.state}[/{colour}] {escape(alert.message)}", soft_wrap=True
        )


def check_command(
    index: Annotated[
        str | None, typer.Argument(help="The alias to check, NAME@ALIAS (default: every watched).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check index aliases' freshness: raise index_stale for overdue ones, resolve fresh ones.

    Run it from cron or CI, as `keel monitor run` is for deployments.
    """
    from keel.client import Client
    from keel.monitoring.indexes import check_index, check_indexes

    client = Client()
    checks = check_indexes(client=client) if index is None else [check_index(index, client=client)]
    if as_json:
        print_json([c.to_dict() for c in checks])
        return
    if not checks:
        console.print("No index alias is watched: keel rag watch NAME@ALIAS --max-age 7d")
    for check in checks:
        _print_check(check)
