"""``keel stream``: answer a deployment's events from Redis Streams or NATS JetStream."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keel.cli.output import console, print_json


def stream_command(
    deployment: Annotated[
        str,
        typer.Argument(help="A deployment name, or a model URI such as models:/churn@champion."),
    ],
    source: Annotated[
        str,
        typer.Option(
            help="Where events come from: redis://HOST:6379/0?stream=events or "
            "nats://HOST:4222?subject=events.> (see above).",
            show_default=False,
        ),
    ],
    sink: Annotated[
        str,
        typer.Option(
            help="Where outputs go: redis://HOST:6379/0?stream=predictions or "
            "nats://HOST:4222?subject=predictions.",
            show_default=False,
        ),
    ],
    dead_letter: Annotated[
        str | None,
        typer.Option(
            help="Where poison events go, with the error (a sink URL). Default: the Redis "
            "stream <source stream>:dead-letter, or the JetStream subject dead-letter.<group> "
            "(stream DEAD-LETTER-<group>), on the source's server.",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[
        int, typer.Option(help="Most events read and predicted at once (a micro-batch).")
    ] = 500,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus /metrics on this port: consumer lag, events answered and "
            "dead-lettered, batch latency.",
            show_default=False,
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            help="Consumer group (Redis) or durable consumer (JetStream); consumers of one "
            "group share the events. Default: keel-<deployment>.",
            show_default=False,
        ),
    ] = None,
    consumer: Annotated[
        str | None,
        typer.Option(
            help="This consumer's name in a Redis group, unique among the running ones "
            "(default <hostname>-<pid>). Restart a consumer with the same name to take back "
            "its pending events at once; others' are claimed after the source's claim_idle.",
            show_default=False,
        ),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(
            help="What runs each version: auto (its compiled form if one passed parity in "
            "`keel models compile`, else the native package), native, onnx or treelite.",
        ),
    ] = "auto",
    trust: Annotated[
        list[str] | None,
        typer.Option(
            "--trust",
            help="A type or function the models may need beyond the built-in trusted list; "
            "it can run code when the model loads. Repeatable.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print what runs, and at the end what was done, as JSON objects."
        ),
    ] = False,
) -> None:
    """Answer a deployment's events from a stream, with the validation, routing and logging of HTTP.

    [bold]Events[/bold]: each is one JSON object, the inputs of one row: {"mean radius": 17.9, ...}, or {"id": "order-17", "inputs": {...}} to carry an id of your own. In Redis the JSON is the entry's field data (XADD events * data '{...}'); in JetStream it is the message.

    [bold]Outputs[/bold]: {"event_id", "request_id", "id" (if the event had one), "model", "version", "route", "prediction"}. The request id, <stream>:<event id>, is the prediction log's (labels join on it).

    [bold]Redis source[/bold]: redis://[:PASSWORD@]HOST:6379/DB?stream=NAME, with &field=data (the entry field), &start=0 or $ (where a new group starts), &claim_idle=60 (seconds before another consumer's pending events are claimed).

    [bold]NATS source[/bold]: nats://HOST:4222?subject=SUBJECT, with &stream=NAME, &ack_wait=30 (seconds before JetStream redelivers), &max_ack_pending=20000.

    [bold]Redis sink[/bold]: redis://HOST:6379/DB?stream=NAME, with &window=600 (seconds a redelivered event's output replaces the first) and &maxlen=N (trim). [bold]NATS sink[/bold]: nats://HOST:4222?subject=SUBJECT, with &stream=NAME (created if missing) and &window=120: outputs carry Nats-Msg-Id = request id, so JetStream drops a second output within its duplicate window.

    An event is acknowledged only after its output is in the sink and its prediction-log row is written. Poison events (not JSON, or refused by the model's signature) go to the dead-letter sink, with the error, and are acknowledged. SIGTERM or Ctrl-C finishes the batch in hand, acknowledges it and exits 0.
    """
    from keel.errors import InvalidInput
    from keel.models.runtimes import RUNTIMES
    from keel.models.trust import check_names
    from keel.serving.streams import stream

    if runtime not in RUNTIMES:
        raise InvalidInput(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if batch < 1:
        raise InvalidInput(f"--batch must be at least 1, got {batch}")

    def started(info: dict[str, Any]) -> None:
        if as_json:
            print_json({"event": "started", **info})
            return
        console.print(
            f"Streaming {info['deployment']} ({info['serves']}) from {info['source']} to "
            f"{info['sink']}",
            soft_wrap=True,
        )
        for line in info["served_by"]:
            console.print(f"  {line}", soft_wrap=True)
        who = info["group"] if info["consumer"] is None else f"{info['group']}/{info['consumer']}"
        console.print(
            f"  group {who}, batches of {info['batch']}, dead letters to {info['dead_letter']}",
            soft_wrap=True,
        )
        if info["metrics"]:
            console.print(f"  metrics on {info['metrics']}", soft_wrap=True)

    stats = stream(
        deployment,
        source,
        sink,
        dead_letter=dead_letter,
        batch_size=batch,
        group=group,
        consumer=consumer,
        metrics_port=metrics_port,
        runtime=runtime,
        trust=check_names(trust),
        on_start=started,
    )
    if as_json:
        print_json({"event": "stopped", **stats.to_dict()})
    else:
        console.print(
            f"Stopped: {stats.answered} events answered, {stats.dead_lettered} dead-lettered, "
            f"{stats.commits} commits"
        )
