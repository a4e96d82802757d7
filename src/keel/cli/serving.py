"""``keel deploy …``, ``keel serve`` and ``keel predictions label``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli.output import console, fmt_time, print_json

deploy_app = typer.Typer(
    help="Create, change, inspect and roll back deployments.", no_args_is_help=True
)
predictions_app = typer.Typer(help="Work with logged predictions.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
CanaryOption = Annotated[
    list[str] | None,
    typer.Option(
        "--canary", help="Extra route with a weight, e.g. churn/5:10 (10% of traffic). Repeatable."
    ),
]
ShadowOption = Annotated[
    str | None,
    typer.Option(
        help="A version that gets a copy of every request, e.g. churn/6; its answers are only logged."
    ),
]
BatchingOption = Annotated[
    str | None, typer.Option(help="Micro-batching, e.g. max_size=32,max_latency_ms=5.")
]
FeaturesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--features",
        help="Features the model's inputs are completed with from the online store, e.g. "
        "driver_stats:conv_rate,fares:fare_per_km; requests then send only the join keys "
        "and request data. Comma-separated or repeated.",
    ),
]


def _print_status(status: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(f"[bold]{status['name']}[/bold]  revision {status['revision']}")
    table = Table("role", "route", "weight", "serves version", "problem")
    for r in status["routes"]:
        weight = f"{r['weight']}%" if r["role"] == "route" else "copy"
        table.add_row(r["role"], r["label"], weight, str(r["version"] or "—"), r["problem"] or "")
    console.print(table)
    batching = status["spec"]["batching"]
    if batching:
        console.print(
            f"  batching: max_size={batching['max_size']}, max_latency_ms={batching['max_latency_ms']}"
        )
    features = status["spec"].get("features")
    if features:
        console.print(f"  features: {', '.join(features)}", soft_wrap=True)


@deploy_app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="Deployment name (used in URLs).")],
    model: Annotated[
        str | None,
        typer.Option(help="Primary model: churn@champion (follows the alias) or churn/3."),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            help="Primary prompt instead of a model: support@production. The gateway splits "
            "requests for prompts:/support@production over this deployment's routes."
        ),
    ] = None,
    canary: CanaryOption = None,
    shadow: ShadowOption = None,
    batching: BatchingOption = None,
    features: FeaturesOption = None,
    comment: Annotated[str | None, typer.Option(help="Why; kept with the revision.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a deployment (revision 1) of a model, or of a prompt for the LLM gateway."""
    from keel.errors import InvalidInput
    from keel.serving.deployments import Deployments, build_spec

    if (model is None) == (prompt is None):
        raise InvalidInput("give exactly one of --model NAME@ALIAS and --prompt NAME@ALIAS")
    deployments = Deployments()
    kind = "model" if prompt is None else "prompt"
    primary = model or prompt
    assert primary is not None
    spec = build_spec(primary, canary, shadow, batching, kind, features)
    deployments.create(name, spec, comment)
    status = deployments.status(name)
    print_json(status) if as_json else _print_status(status)


@deploy_app.command("update")
def update_command(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    model: Annotated[str | None, typer.Option(help="New primary model reference.")] = None,
    canary: CanaryOption = None,
    shadow: ShadowOption = None,
    batching: BatchingOption = None,
    no_canary: Annotated[
        bool, typer.Option("--no-canary", help="Remove the canary routes.")
    ] = False,
    no_shadow: Annotated[bool, typer.Option("--no-shadow", help="Remove the shadow.")] = False,
    no_batching: Annotated[bool, typer.Option("--no-batching", help="Stop batching.")] = False,
    features: FeaturesOption = None,
    no_features: Annotated[
        bool,
        typer.Option("--no-features", help="Stop reading features: requests send every input."),
    ] = False,
    comment: Annotated[str | None, typer.Option(help="Why; kept with the revision.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Write a new revision changing only what is given; running servers pick it up."""
    from keel.serving.deployments import Deployments

    deployments = Deployments()
    deployments.update(
        name,
        model=model,
        canary=canary,
        shadow=shadow,
        batching=batching,
        clear_canary=no_canary,
        clear_shadow=no_shadow,
        clear_batching=no_batching,
        comment=comment,
        features=features,
        clear_features=no_features,
    )
    status = deployments.status(name)
    print_json(status) if as_json else _print_status(status)


@deploy_app.command("rollback")
def rollback_command(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    to: Annotated[
        int | None, typer.Option(help="Revision to restore (default: the one before).")
    ] = None,
    comment: Annotated[str | None, typer.Option(help="Why; kept with the revision.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Restore the previous revision's spec as a new revision (one call, audited)."""
    from keel.serving.deployments import Deployments

    deployments = Deployments()
    done = deployments.rollback(name, to, comment)
    status = deployments.status(name)
    if as_json:
        print_json(status)
    else:
        console.print(f"{name}: {done.comment}")
        _print_status(status)


@deploy_app.command("status")
def status_command(
    name: Annotated[str, typer.Argument(help="Deployment name.")], as_json: JsonOption = False
) -> None:
    """Routes, weights and the versions they serve right now."""
    from keel.serving.deployments import Deployments

    status = Deployments().status(name)
    print_json(status) if as_json else _print_status(status)


@deploy_app.command("history")
def history_command(
    name: Annotated[str, typer.Argument(help="Deployment name.")], as_json: JsonOption = False
) -> None:
    """Every revision, oldest first."""
    from rich.table import Table

    from keel.serving.deployments import Deployments

    history = Deployments().history(name)
    if as_json:
        print_json(
            [
                {**d.to_dict(), "created_at": d.created_at, "created_by": d.created_by}
                for d in history
            ]
        )
        return
    table = Table("revision", "time", "by", "routes", "shadow", "comment")
    for d in history:
        routes = ", ".join(f"{r.label} {r.weight}%" for r in d.spec.routes)
        table.add_row(
            str(d.revision),
            fmt_time(d.created_at),
            d.created_by,
            routes,
            d.spec.shadow.label if d.spec.shadow else "",
            d.comment or "",
        )
    console.print(table)


@deploy_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """List deployments."""
    from rich.table import Table

    from keel.serving.deployments import Deployments

    deployments = Deployments().all()
    if as_json:
        print_json([d.to_dict() for d in deployments])
        return
    table = Table("name", "revision", "routes")
    for d in deployments:
        table.add_row(
            d.name, str(d.revision), ", ".join(f"{r.label} {r.weight}%" for r in d.spec.routes)
        )
    console.print(table)


def serve_command(
    target: Annotated[
        str,
        typer.Argument(help="A deployment name, or a model URI such as models:/churn@champion."),
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not log predictions.")] = False,
    trust: Annotated[
        list[str] | None,
        typer.Option(
            "--trust",
            help="A type or function the models may need beyond the built-in trusted list, "
            "e.g. mymodule.my_function; it can run code when the model loads. Repeatable.",
        ),
    ] = None,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="Inference needs a token with scope 'predict', feedback one with 'feedback' "
            "(checked by the server in KEEL_SERVER_URL, else in the local store; cached 5 s).",
        ),
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve /metrics on this port instead of --port (one worker)."),
    ] = None,
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle",
            help="Load models stored as pickles (MLflow's cloudpickle format); unpickling can "
            "run code, so only for models whose author you trust. `keel models convert` "
            "makes them safe instead.",
        ),
    ] = False,
    runtime: Annotated[
        str,
        typer.Option(
            help="What runs each version: auto (its compiled form if one passed parity in "
            "`keel models compile`, else the native package), native, onnx or treelite.",
        ),
    ] = "auto",
    grpc_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve the Open Inference Protocol v2 over gRPC on this port (KServe's "
            "grpc_predict_v2.proto, as tritonclient's gRPC client speaks it), from the same "
            "models, logs and metrics; one worker.",
        ),
    ] = None,
) -> None:
    """Serve a deployment over HTTP: Open Inference Protocol v2, /invocations, KServe v1, /metrics."""
    from keel.errors import InvalidInput
    from keel.models.runtimes import RUNTIMES
    from keel.models.trust import check_names
    from keel.serving.runtime import Runtime, served_by
    from keel.serving.server import serve

    if workers < 1:
        raise InvalidInput(f"--workers must be at least 1, got {workers}")
    if runtime not in RUNTIMES:
        raise InvalidInput(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")

    def announce(loaded: Runtime) -> None:
        for line in served_by(loaded.table):
            console.print(line, soft_wrap=True, highlight=False)

    console.print(
        f"Serving {target} on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''})"
    )
    if auth:
        from keel.config import get_settings

        server = get_settings().server_url
        checker = f"keel server at {server}" if server else "the local store"
        console.print(f"Tokens required (predict, feedback scopes), checked by {checker}")
    if metrics_port is not None:
        console.print(f"Metrics on http://{host}:{metrics_port}/metrics")
    if grpc_port is not None:
        console.print(f"v2 gRPC on {host}:{grpc_port}")
    serve(
        target,
        host=host,
        port=port,
        workers=workers,
        log_predictions=not no_log,
        trust=check_names(trust),
        auth=auth,
        metrics_port=metrics_port,
        allow_pickle=allow_pickle,
        runtime=runtime,
        announce=announce,
        grpc_port=grpc_port,
    )


@predictions_app.command("label")
def label_command(
    deployment: Annotated[str, typer.Argument(help="Deployment the predictions came from.")],
    file: Annotated[
        Path, typer.Argument(help="CSV or Parquet with request_id, label and optionally row.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Attach labels that arrived later to logged predictions (joined by request id)."""
    from keel.config import get_settings
    from keel.predictions import PredictionLogger
    from keel.predictions.feedback import read_label_file

    labels = read_label_file(file)
    settings = get_settings()
    logger = PredictionLogger(settings.artifacts_url, s3_endpoint_url=settings.s3_endpoint_url)
    try:
        written = logger.log_feedback(deployment, labels.request_ids, labels.labels, labels.rows)
    finally:
        logger.close()
    if as_json:
        print_json({"deployment": deployment, "labels": written})
    else:
        console.print(f"Stored {written} labels for {deployment}")
