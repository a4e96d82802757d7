"""``keel lineage show``: walk what was made from what."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keel.cli.output import console, print_json

app = typer.Typer(help="Trace data, runs, code and models up- or downstream.", no_args_is_help=True)


def _label(node: Any) -> str:
    attrs = node.attributes
    if node.kind == "run":
        role = attrs.get("role", "run")
        name = attrs.get("name", "?")
        return f"{node.uri}  [dim]{role} {name!r} {attrs.get('status', '')}[/dim]"
    if node.kind == "dataset" and attrs.get("digest"):
        return f"{node.uri}  [dim]{attrs.get('dataset_kind', '')} {attrs['digest'][:12]}[/dim]"
    return node.uri


@app.command("show")
def show_command(
    uri: Annotated[
        str,
        typer.Argument(
            help="datasets:/name@3, runs:/<id>, models:/name/5 (or @alias), artifacts:/<digest> "
            "or code:/<digest>."
        ),
    ],
    upstream: Annotated[
        bool, typer.Option("--upstream", help="What URI was made from (the default).")
    ] = False,
    downstream: Annotated[
        bool, typer.Option("--downstream", help="What was made from URI.")
    ] = False,
    depth: Annotated[
        int | None, typer.Option(help="Stop after this many hops (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show the lineage of a dataset version, run, model version, output or code digest."""
    from keel.errors import InvalidInput
    from keel.pipelines import lineage

    if upstream and downstream:
        raise InvalidInput("choose one of --upstream and --downstream")
    walk = lineage.downstream if downstream else lineage.upstream
    graph = walk(uri, depth=depth)
    if as_json:
        print_json(graph.to_dict())
        return
    from rich.tree import Tree

    towards = "src" if graph.direction == "upstream" else "dst"
    away = "dst" if towards == "src" else "src"
    children: dict[str, list[Any]] = {}
    for edge in graph.edges:
        children.setdefault(getattr(edge, away), []).append(edge)
    root = graph.nodes[graph.root]
    tree = Tree(f"[bold]{_label(root)}[/bold]  [dim]({graph.direction})[/dim]")
    shown: set[str] = {graph.root}

    def grow(branch: Tree, uri: str) -> None:
        for edge in children.get(uri, []):
            other = getattr(edge, towards)
            tag = edge.relation + (f" {edge.label}" if edge.label else "")
            if other in shown:
                branch.add(f"[dim]{tag}:[/dim] {other} [dim](see above)[/dim]")
                continue
            shown.add(other)
            grow(branch.add(f"[dim]{tag}:[/dim] {_label(graph.nodes[other])}"), other)

    grow(tree, graph.root)
    console.print(tree)
    if len(graph.nodes) == 1:
        console.print(f"[dim]nothing recorded {graph.direction} of {graph.root}[/dim]")
