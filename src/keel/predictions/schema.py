"""The rows of the logs: what a prediction, an error and a label row hold, defined once.

A **prediction row** is one row of one served request: the fixed columns of
:data:`PREDICTION_COLUMNS` (:func:`request_columns` builds them), then the
request's inputs as ``input.<name>`` and the model's outputs as
``output.<name>`` (:data:`INPUT_PREFIX`, :data:`OUTPUT_PREFIX`), typed as the
caller gave them.

An **error row** is one request a model version failed, in the ``errors``
dataset: the fixed columns (``row`` is 0), then :data:`ERROR_COLUMNS`: how
many rows the request had, the HTTP status it got and the error message.
:func:`error_row` builds one, so the server and the readers agree on it.

A **trace row** is one request through the LLM gateway, in the ``traces``
dataset: the fixed columns (``model`` and ``version`` name the prompt and its
version, or the requested model and 0; ``row`` is 0), then
:data:`TRACE_COLUMNS`: who asked, where it went, tokens, time to first token,
status, cache hit, cost and the guardrails' verdicts. The message bodies are
``input.messages`` and ``output.text`` (JSON text), absent where a route keeps
no bodies.
:func:`trace_row` builds one.

A **feedback row** (:data:`FEEDBACK_SCHEMA`) is a label that arrived later,
joined to predictions by request id and row.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from keel.errors import InvalidInput

__all__ = [
    "DATASETS",
    "ERRORS",
    "ERROR_COLUMNS",
    "ERROR_MESSAGE_CHARS",
    "FEEDBACK",
    "FEEDBACK_SCHEMA",
    "INPUT_PREFIX",
    "OUTPUT_PREFIX",
    "PARTITION_KEYS",
    "PREDICTIONS",
    "PREDICTION_COLUMNS",
    "TRACES",
    "TRACE_COLUMNS",
    "UTC_MS",
    "check_column_name",
    "check_dataset",
    "error_row",
    "request_columns",
    "trace_row",
]

#: The dataset of served predictions.
PREDICTIONS = "predictions"
#: The dataset of requests a model version failed.
ERRORS = "errors"
#: The dataset of requests through the LLM gateway, one row each.
TRACES = "traces"
#: The datasets a logger can append to: served predictions, requests a model version
#: failed, and the LLM gateway's traces.
DATASETS = (PREDICTIONS, ERRORS, TRACES)
#: The dataset of labels that arrived after the predictions.
FEEDBACK = "feedback"

#: The type of every ``time`` column: milliseconds since the epoch, in UTC.
UTC_MS = pa.timestamp("ms", tz="UTC")

#: The prefix of a request's input columns: ``input.<name>``.
INPUT_PREFIX = "input."
#: The prefix of a model's output columns: ``output.prediction``, ``output.0``, ``output.<name>``.
OUTPUT_PREFIX = "output."

#: The columns every prediction row has, with their stored types, in file order.
PREDICTION_COLUMNS: dict[str, pa.DataType] = {
    "request_id": pa.string(),
    "time": UTC_MS,
    "model": pa.string(),
    "version": pa.int64(),
    "route": pa.string(),
    "latency_ms": pa.float64(),
    "row": pa.int64(),
}

#: The columns an error row has after :data:`PREDICTION_COLUMNS`: the request's row count,
#: the status it was answered with, and the error message (at most
#: :data:`ERROR_MESSAGE_CHARS` characters).
ERROR_COLUMNS: dict[str, pa.DataType] = {
    "rows": pa.int64(),
    "status": pa.int64(),
    "error": pa.string(),
}
#: The columns a trace row has after :data:`PREDICTION_COLUMNS`, in file order.
#: ``cost_usd`` is null when no price covers the model at the request's time;
#: ``tokens_estimated`` is true when the upstream reported no usage and the gateway
#: counted the tokens itself; ``ttft_ms`` is the time to the first streamed byte
#: (the whole latency when not streamed). ``guardrails`` is the JSON text of the list of
#: guardrail verdicts the request met (each a ``Verdict.to_dict()`` plus ``part``: which
#: text it read), null when no guardrail ran; traces written before the column existed
#: read it as null.
TRACE_COLUMNS: dict[str, pa.DataType] = {
    "caller": pa.string(),
    "team": pa.string(),
    "endpoint": pa.string(),
    "provider": pa.string(),
    "upstream_model": pa.string(),
    "status": pa.int64(),
    "error": pa.string(),
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "tokens_estimated": pa.bool_(),
    "ttft_ms": pa.float64(),
    "cache_hit": pa.bool_(),
    "attempts": pa.int64(),
    "cost_usd": pa.float64(),
    "guardrails": pa.string(),
}

#: Longest error message kept in an error row: enough to diagnose, never a payload dump.
ERROR_MESSAGE_CHARS = 500

#: Columns of a feedback file: ``row`` null means every row of the request;
#: ``label`` is the JSON text of the label, ``label_num`` the label as a
#: number (booleans as 0/1) or null.
FEEDBACK_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int64()),
        ("label", pa.string()),
        ("label_num", pa.float64()),
        ("time", UTC_MS),
    ]
)

#: The Hive partition keys of the folders: a column so named would clash with them.
PARTITION_KEYS = frozenset({"deployment", "hour"})


def check_column_name(name: object) -> None:
    """Raise InvalidInput unless ``name`` can name a logged column."""
    if not isinstance(name, str) or not name or name in PARTITION_KEYS:
        raise InvalidInput(
            f"column name {name!r} is not allowed: names are non-empty strings other "
            f"than {', '.join(sorted(PARTITION_KEYS))} (partition keys)"
        )


def check_dataset(dataset: object) -> str:
    """``dataset`` if it is one of :data:`DATASETS`, else InvalidInput."""
    if dataset not in DATASETS:
        raise InvalidInput(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    assert isinstance(dataset, str)
    return dataset


def request_columns(
    *,
    request_id: str,
    time_ms: int,
    model: str,
    version: int,
    route: str,
    latency_ms: float,
    n: int,
) -> dict[str, Any]:
    """The :data:`PREDICTION_COLUMNS` of one request's ``n`` rows, in file order.

    Args:
        request_id: the request's id.
        time_ms: when it was answered, in epoch milliseconds.
        model: the registered model that answered.
        version: the version that answered.
        route: the route that sent it there (``primary``, ``canary``, ``shadow`` …).
        latency_ms: how long the answer took.
        n: the rows in the request; ``row`` numbers them from 0.
    """
    return {
        "request_id": [request_id] * n,
        "time": [time_ms] * n,
        "model": [model] * n,
        "version": [version] * n,
        "route": [route] * n,
        "latency_ms": [latency_ms] * n,
        "row": list(range(n)),
    }


def error_row(
    *,
    request_id: str,
    time_ms: int,
    model: str,
    version: int,
    route: str,
    latency_ms: float,
    rows: int,
    status: int,
    error: str,
) -> dict[str, Any]:
    """The columns of one error row, ready for ``PredictionLogger(dataset=ERRORS).log(..., 1)``.

    Args:
        request_id: the failed request's id.
        time_ms: when it failed, in epoch milliseconds.
        model: the registered model that failed it.
        version: the version that failed it.
        route: the route that sent it there (``primary``, ``canary`` …).
        latency_ms: how long the failure took.
        rows: the rows the request held.
        status: the HTTP status it was answered with.
        error: the error message; cut to :data:`ERROR_MESSAGE_CHARS` characters.
    """
    columns = request_columns(
        request_id=request_id,
        time_ms=time_ms,
        model=model,
        version=version,
        route=route,
        latency_ms=latency_ms,
        n=1,
    )
    return {
        **columns,
        "rows": [rows],
        "status": [status],
        "error": [error[:ERROR_MESSAGE_CHARS]],
    }


def trace_row(
    *,
    request_id: str,
    time_ms: int,
    model: str,
    version: int,
    route: str,
    latency_ms: float,
    caller: str,
    team: str | None,
    endpoint: str,
    provider: str | None,
    upstream_model: str | None,
    status: int,
    error: str | None,
    input_tokens: int,
    output_tokens: int,
    tokens_estimated: bool,
    ttft_ms: float | None,
    cache_hit: bool,
    attempts: int,
    cost_usd: float | None,
    messages: str | None = None,
    output: str | None = None,
    guardrails: str | None = None,
) -> dict[str, Any]:
    """The columns of one trace row, ready for ``PredictionLogger(dataset=TRACES).log(..., 1)``.

    ``model``/``version`` name the prompt and its version (or the requested model and 0);
    ``route`` is ``primary``, ``canary``, ``direct`` or ``declared`` (the caller named the
    prompt version it rendered, with ``x-keel-prompt``); ``messages`` and ``output`` are
    the bodies as JSON text, left out (``None``) where the route keeps no bodies;
    ``guardrails`` is the JSON text of the verdicts, ``None`` when no guardrail ran.
    """
    columns = request_columns(
        request_id=request_id,
        time_ms=time_ms,
        model=model,
        version=version,
        route=route,
        latency_ms=latency_ms,
        n=1,
    )
    row = {
        **columns,
        "caller": [caller],
        "team": [team],
        "endpoint": [endpoint],
        "provider": [provider],
        "upstream_model": [upstream_model],
        "status": [status],
        "error": [None if error is None else error[:ERROR_MESSAGE_CHARS]],
        "input_tokens": [input_tokens],
        "output_tokens": [output_tokens],
        "tokens_estimated": [tokens_estimated],
        "ttft_ms": [ttft_ms],
        "cache_hit": [cache_hit],
        "attempts": [attempts],
        "cost_usd": [cost_usd],
        "guardrails": [guardrails],
    }
    if messages is not None:
        row[INPUT_PREFIX + "messages"] = [messages]
    if output is not None:
        row[OUTPUT_PREFIX + "text"] = [output]
    return row
