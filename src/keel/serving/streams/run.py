"""Starting a consumer: ``keel stream DEPLOYMENT --source URL --sink URL``.

:func:`open_source` and :func:`open_sink` pick the transport by the URL's
scheme (``redis://``/``rediss://``, ``nats://``/``tls://``); :func:`stream`
loads the deployment, opens the prediction logs, serves ``/metrics`` if
asked, and runs a :class:`~keel.serving.streams.consumer.StreamConsumer`
until SIGTERM or SIGINT (or ``stop``), finishing the batch in hand and
acknowledging it before it returns.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from keel.errors import InvalidInput
from keel.serving.streams.base import Sink, Source
from keel.serving.streams.consumer import StreamConsumer, StreamStats

__all__ = ["default_group", "open_sink", "open_source", "stream"]

_SCHEMES = "redis://, rediss://, nats:// or tls://"


def _scheme(url: str, role: str) -> str:
    from keel.store import redact_url

    scheme = urlsplit(url).scheme.lower() if isinstance(url, str) and "://" in url else ""
    if scheme not in ("redis", "rediss", "nats", "tls"):
        raise InvalidInput(
            f"{role} must be a {_SCHEMES} URL (e.g. redis://127.0.0.1:6379/0?stream=events), "
            f"got {redact_url(str(url))!r}"
        )
    return scheme


def default_group(deployment: str) -> str:
    """``keel-<deployment>``, with what a JetStream consumer name cannot hold as ``_``."""
    return "keel-" + re.sub(r"[^A-Za-z0-9_-]", "_", deployment)


def open_source(url: str, *, group: str, consumer: str | None = None) -> Source:
    """The source ``url`` names (nothing is connected until the first read).

    Args:
        url: ``redis://host:6379/0?stream=events`` or ``nats://host:4222?subject=events.>``.
        group: the consumer group (Redis) or durable consumer (JetStream).
        consumer: this consumer's name in a Redis group (default ``<hostname>-<pid>``).

    Raises:
        InvalidInput: an unsupported scheme or a malformed parameter.
    """
    if _scheme(url, "--source") in ("redis", "rediss"):
        from keel.serving.streams.redis import RedisSource, default_consumer

        return RedisSource(url, group=group, consumer=consumer or default_consumer())
    from keel.serving.streams.nats import NatsSource

    if consumer is not None:
        raise InvalidInput(
            "--consumer names a consumer of a Redis group; JetStream consumers of one "
            "--group share one durable consumer and need no name"
        )
    return NatsSource(url, group=group)


def open_sink(url: str, role: str = "--sink") -> Sink:
    """The sink ``url`` names (nothing is connected until the first write).

    Raises:
        InvalidInput: an unsupported scheme or a malformed parameter.
    """
    if _scheme(url, role) in ("redis", "rediss"):
        from keel.serving.streams.redis import RedisSink

        return RedisSink(url, role)
    from keel.serving.streams.nats import NatsSink

    return NatsSink(url, role)


def dead_letter_url(source_url: str, source: Source, group: str) -> str:
    """Where poison events go without ``--dead-letter``: next to the source.

    Redis: the stream ``<source stream>:dead-letter`` on the source's server.
    JetStream: the subject ``dead-letter.<group>`` in the stream ``DEAD-LETTER-<group>``
    (created if missing) on the source's server.
    """
    parts = urlsplit(source_url)
    if parts.scheme.lower() in ("redis", "rediss"):
        query = urlencode({"stream": f"{source.name}:dead-letter"})
    else:
        query = urlencode({"subject": f"dead-letter.{group}", "stream": f"DEAD-LETTER-{group}"})
    return parts._replace(query=query, fragment="").geturl()


@contextlib.contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (in the main thread; elsewhere the caller stops us)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stream(
    target: str,
    source: str,
    sink: str,
    *,
    dead_letter: str | None = None,
    batch_size: int = 500,
    group: str | None = None,
    consumer: str | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    commit_interval: float = 1.0,
    runtime: str = "auto",
    trust: Sequence[str] = (),
    allow_pickle: bool = False,
    stop: threading.Event | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
) -> StreamStats:
    """Answer ``target``'s events from ``source`` into ``sink`` until stopped.

    Args:
        target: a deployment name, or a model URI such as ``models:/churn@champion``.
        source: the events' URL (see :func:`open_source`).
        sink: the outputs' URL (see :func:`open_sink`).
        dead_letter: where poison events go (default: next to the source, see
            :func:`dead_letter_url`).
        batch_size: the most events read and predicted at once.
        group: the consumer group (default ``keel-<deployment>``).
        consumer: this consumer's name in a Redis group (default ``<hostname>-<pid>``;
            give a restarted consumer the same name to take back its pending events at once).
        metrics_port: serve Prometheus ``/metrics`` on this port of ``metrics_host``.
        commit_interval: seconds between log flushes and acknowledgements.
        runtime: ``auto``, ``native``, ``onnx`` or ``treelite`` (see :mod:`keel.models.runtimes`).
        trust: names the model loader trusts beyond its built-in list (``--trust``).
        allow_pickle: load models stored as pickles.
        stop: set it to stop (default: SIGTERM and SIGINT set it, in the main thread).
        on_start: called once the models are loaded, with what the consumer runs.

    Returns:
        what the consumer did.

    Raises:
        InvalidInput: a bad URL, flag or target; NotFound: an unknown deployment.
    """
    from keel.config import get_settings
    from keel.predictions import ERRORS, PredictionLogger, PredictionReader
    from keel.serving.runtime import describe, served_by
    from keel.serving.server import runtime_for_target
    from keel.serving.streams.metrics import StreamMetrics

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"--batch must be a whole number >= 1, got {batch_size!r}")
    if metrics_port is not None and not 0 < metrics_port < 65536:
        raise InvalidInput(f"--metrics-port must be a port from 1 to 65535, got {metrics_port}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before any model library starts OpenMP
    settings = get_settings()
    runs = runtime_for_target(target, trust=trust, allow_pickle=allow_pickle, runtime=runtime)
    group = group or default_group(runs.name)
    src = open_source(source, group=group, consumer=consumer)
    out = open_sink(sink, "--sink")
    dead = open_sink(dead_letter or dead_letter_url(source, src, group), "--dead-letter")
    root, endpoint = settings.artifacts_url, settings.s3_endpoint_url
    closing: list[Any] = [src, out, dead]
    server = None
    stop = stop or threading.Event()
    try:
        for end in (src, out, dead):  # a wrong URL or a broker that is down fails now, once
            end.connect()
        table = runs.table  # load now: a model that cannot load fails before any event is read
        primary = table.primary.signature
        if primary is not None and primary.inputs.is_tensor:
            raise InvalidInput(
                f"{table.primary.model_name}/{table.primary.version} takes tensors; keel stream "
                "answers models whose signature has columns (one value per column in each event)"
            )
        # The consumer flushes at each commit; the writer's own interval only bounds a queue.
        logger = PredictionLogger(root, s3_endpoint_url=endpoint, flush_interval=60.0)
        closing.append(logger)
        errors = PredictionLogger(
            root, s3_endpoint_url=endpoint, flush_interval=60.0, dataset=ERRORS
        )
        closing.append(errors)
        metrics = StreamMetrics(runs.name, logger)
        if metrics_port is not None:
            from prometheus_client import start_http_server

            server, _ = start_http_server(
                metrics_port, addr=metrics_host, registry=metrics.registry
            )
        consumer_obj = StreamConsumer(
            runs,
            src,
            out,
            dead,
            logger=logger,
            reader=PredictionReader(root, s3_endpoint_url=endpoint),
            error_logger=errors,
            metrics=metrics,
            batch_size=batch_size,
            commit_interval=commit_interval,
        )
        if on_start is not None:
            on_start(
                {
                    "deployment": runs.name,
                    "serves": describe(table),
                    "served_by": served_by(table),
                    "source": src.url,
                    "sink": out.url,
                    "dead_letter": dead.url,
                    "group": group,
                    "consumer": getattr(src, "consumer", None),
                    "batch": batch_size,
                    "metrics": None
                    if metrics_port is None
                    else f"http://{metrics_host}:{metrics_port}/metrics",
                }
            )
        runs.start()
        with _signals(stop):
            return consumer_obj.run(stop)
    finally:
        runs.stop()
        for item in closing:  # the loggers last: they flush what is left
            item.close()
        if server is not None:
            server.shutdown()
            server.server_close()
