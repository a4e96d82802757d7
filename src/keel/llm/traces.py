"""Reading the LLM gateway's traces back: windows of rows, and per-version statistics.

The gateway writes one trace row per request (:func:`keel.predictions.trace_row`)
in the ``traces`` dataset, partitioned by the prompt deployment that routed it
(or the gateway's own name) and by hour. :func:`read_traces` reads a window
of those rows; :func:`trace_stats` reduces a window to one :class:`TraceStats`
per prompt version (or per route, or for the whole window). Both read only
the hour partitions the window touches and only the columns they need, and
compute with Arrow and NumPy over whole columns.

How a request is counted, by its HTTP ``status`` (one rule, shared by the
monitor and the canary judgement):

- **answered**: below 400. Latency, time to first token, tokens per request,
  cost per request and cache hits describe these only: a failure's latency
  and tokens say nothing about what the version costs when it works, and
  mixing them in would make a failing version look fast and cheap.
- **error**: 500 and above (the upstream failed after retries and fallbacks,
  or the gateway did), or no status at all (nothing says it was answered).
  These are the version's failures.
- **over budget**: 429. The gateway refused the request before sending it
  upstream because a caller or team ran out of budget: not the version's
  fault, so it is neither an error nor in the error rate's denominator.
- **rejected**: any other 4xx (a malformed body, a missing variable, a bad
  token). Counted, and in the error rate's denominator, but not errors.

``error_rate`` is ``errors / (requests - over_budget)``. Percentiles are
NumPy's (linear interpolation), as the canary measurement of model
deployments computes them. A trace whose ``cost_usd`` is null was not priced
(no price covered its model at its time): the answered ones are counted in
``unpriced`` and left out of ``cost_per_request``, never read as free.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import InvalidInput

if TYPE_CHECKING:
    from keel.artifacts.backends import Backend
    from keel.client import Client
    from keel.predictions import PredictionReader

__all__ = [
    "GROUPINGS",
    "STATS_COLUMNS",
    "TraceStats",
    "read_traces",
    "summarize",
    "trace_stats",
]

#: How :func:`trace_stats` can split a window: by ``model/version`` (``support/3``), by
#: route (``primary``, ``canary``, ``direct``), or not at all (one key, ``all``).
GROUPINGS = ("version", "route", "all")

#: The trace columns :func:`summarize` reads.
STATS_COLUMNS = (
    "model",
    "version",
    "route",
    "latency_ms",
    "status",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cache_hit",
    "ttft_ms",
)

_OVER_BUDGET = 429
_QUANTILES = (0.50, 0.95, 0.99)


@dataclass(frozen=True)
class TraceStats:
    """What one group of traces did in a window (see the module docstring for the counting).

    Attributes:
        requests: every trace in the group.
        answered: requests answered (status below 400).
        errors: requests that failed (status 500 and above, or none).
        over_budget: requests refused with 429 for a budget (not errors).
        rejected: requests refused with another 4xx (not errors).
        error_rate: ``errors / (requests - over_budget)``; ``None`` when that is 0.
        p50_ms, p95_ms, p99_ms: latency quantiles of the answered requests (``None``: none).
        ttft_p50_ms: median time to first token of the answered requests.
        input_tokens, output_tokens: totals over every request.
        tokens_per_request: input plus output tokens per answered request.
        cost_usd: the total priced cost of every request.
        cost_per_request: the mean cost of the answered requests that were priced.
        cache_hits: answered requests served from the gateway's cache.
        unpriced: answered requests with no cost (no price covered their model).
    """

    requests: int
    answered: int
    errors: int
    over_budget: int
    rejected: int
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    ttft_p50_ms: float | None
    input_tokens: int
    output_tokens: int
    tokens_per_request: float | None
    cost_usd: float
    cost_per_request: float | None
    cache_hits: int
    unpriced: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_traces(
    client_or_root: Client | str | os.PathLike[str] | Backend,
    deployment: str,
    since_ms: Any = None,
    until_ms: Any = None,
    *,
    columns: Sequence[str] | None = None,
    s3_endpoint_url: str | None = None,
) -> pa.Table:
    """The traces of ``deployment`` with ``since_ms <= time < until_ms``, oldest first.

    Args:
        client_or_root: a client with its own store (its artifact root is read), or the
            root the gateway writes to: a folder, ``s3://bucket/prefix`` or a backend.
        deployment: the partition: a prompt deployment's name, or the gateway's ``name``.
        since_ms: inclusive lower bound: epoch ms, a datetime (naive = UTC) or ISO-8601
            text (default: the oldest).
        until_ms: exclusive upper bound, the same kinds (default: none).
        columns: the columns to return (default: all); one never logged reads as nulls.
        s3_endpoint_url: the S3-compatible endpoint of a root given as ``s3://``.

    Raises:
        InvalidInput: a malformed name, bound or column; a client of ``keel server``.
        StorageError, BackendUnavailable: the traces cannot be read.
    """
    from keel.predictions import TRACES

    reader = _reader(client_or_root, s3_endpoint_url)
    return reader.read(deployment, start=since_ms, end=until_ms, columns=columns, dataset=TRACES)


def trace_stats(
    client_or_root: Client | str | os.PathLike[str] | Backend,
    deployment: str,
    since_ms: Any,
    until_ms: Any = None,
    by: str = "version",
    *,
    s3_endpoint_url: str | None = None,
) -> dict[str, TraceStats]:
    """Statistics of ``deployment``'s traces in ``[since_ms, until_ms)``, per group.

    Args:
        client_or_root: as :func:`read_traces`.
        deployment: the partition: a prompt deployment's name, or the gateway's ``name``.
        since_ms: inclusive lower bound (epoch ms, a datetime or ISO-8601 text).
        until_ms: exclusive upper bound (default: none).
        by: ``version`` (keys ``support/3``: the prompt and its version, or the requested
            model and 0), ``route`` (``primary``, ``canary``, ``direct``) or ``all``
            (one key, ``all``).
        s3_endpoint_url: the S3-compatible endpoint of a root given as ``s3://``.

    Returns:
        One :class:`TraceStats` per group that has traces in the window (none: empty),
        versions in name then number order.

    Raises:
        InvalidInput: a malformed name or bound, an unknown ``by``, a client of ``keel server``.
        StorageError, BackendUnavailable: the traces cannot be read.
    """
    _check_by(by)
    table = read_traces(
        client_or_root,
        deployment,
        since_ms,
        until_ms,
        columns=STATS_COLUMNS,
        s3_endpoint_url=s3_endpoint_url,
    )
    return summarize(table, by)


def summarize(table: pa.Table, by: str = "version") -> dict[str, TraceStats]:
    """:class:`TraceStats` per group of a table of traces holding :data:`STATS_COLUMNS`.

    For callers that read a window once and need it cut several ways (the monitor
    reports per version and for the whole deployment from one read).

    Raises:
        InvalidInput: an unknown ``by``, or a table without one of the columns.
    """
    _check_by(by)
    missing = [c for c in STATS_COLUMNS if c not in table.column_names]
    if missing:
        raise InvalidInput(
            f"a table of traces needs the columns {', '.join(STATS_COLUMNS)}; "
            f"missing {', '.join(missing)}: read it with read_traces(columns=STATS_COLUMNS)"
        )
    if table.num_rows == 0:
        return {}
    columns = _Columns.of(table)
    labels, codes = _groups(table, by)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(labels) + 1))
    out = {label: columns.stats(order[bounds[k] : bounds[k + 1]]) for k, label in enumerate(labels)}
    return dict(sorted(out.items(), key=lambda item: _sort_key(item[0], by)))


# -- machinery -------------------------------------------------------------------------------


def _check_by(by: object) -> None:
    if by not in GROUPINGS:
        raise InvalidInput(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")


def _reader(
    client_or_root: Client | str | os.PathLike[str] | Backend, s3_endpoint_url: str | None
) -> PredictionReader:
    from keel.predictions import PredictionReader

    if isinstance(client_or_root, os.PathLike):
        client_or_root = os.fspath(client_or_root)
    if isinstance(client_or_root, str):
        return PredictionReader(client_or_root, s3_endpoint_url=s3_endpoint_url)
    from keel.artifacts.backends import Backend

    if isinstance(client_or_root, Backend):
        return PredictionReader(client_or_root)
    from keel.transport.http import HttpTransport

    if isinstance(client_or_root.transport, HttpTransport):
        # This process's artifact root is not where the gateway writes for that server:
        # reading it would answer "no traffic" instead of the truth.
        raise InvalidInput(
            "traces are read from the artifact root the gateway writes to, and a client of "
            "keel server has none of its own: run the monitor on the server (keel monitor "
            "run DEPLOYMENT), or pass that root (KEEL_ARTIFACTS_URL) instead of the client"
        )
    conf = client_or_root.settings
    return PredictionReader(conf.artifacts_url, s3_endpoint_url=conf.s3_endpoint_url)


def _numbers(table: pa.Table, name: str, fill: float | None = None) -> np.ndarray:
    """A column as float64 (nulls NaN, or ``fill``), whatever type the files unified to."""
    column = pc.cast(table.column(name), pa.float64())
    if fill is not None:
        column = pc.fill_null(column, fill)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


@dataclass(frozen=True)
class _Columns:
    """The columns statistics need, as NumPy arrays over the whole table."""

    status: np.ndarray  # float: NaN where a row has none
    latency: np.ndarray
    ttft: np.ndarray
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    cost: np.ndarray  # NaN where unpriced
    cache: np.ndarray

    @classmethod
    def of(cls, table: pa.Table) -> _Columns:
        cache = pc.fill_null(pc.cast(table.column("cache_hit"), pa.bool_()), False)
        return cls(
            status=_numbers(table, "status"),
            latency=_numbers(table, "latency_ms"),
            ttft=_numbers(table, "ttft_ms"),
            tokens_in=_numbers(table, "input_tokens", 0).astype(np.int64),
            tokens_out=_numbers(table, "output_tokens", 0).astype(np.int64),
            cost=_numbers(table, "cost_usd"),
            cache=np.asarray(cache.to_numpy(zero_copy_only=False), dtype=bool),
        )

    def stats(self, rows: np.ndarray) -> TraceStats:
        status = self.status[rows]
        known = ~np.isnan(status)
        over = known & (status == _OVER_BUDGET)
        errors = ~known | (status >= 500)
        answered = known & (status < 400)
        rejected = known & (status >= 400) & (status < 500) & ~over
        requests = len(rows)
        judged = requests - int(over.sum())
        n_answered = int(answered.sum())
        latency = self.latency[rows][answered]
        latency = latency[np.isfinite(latency)]
        quantiles: list[float | None] = [None] * len(_QUANTILES)
        if len(latency):
            quantiles = [float(q) for q in np.quantile(latency, _QUANTILES)]
        ttft = self.ttft[rows][answered]
        ttft = ttft[np.isfinite(ttft)]
        tokens_in, tokens_out = self.tokens_in[rows], self.tokens_out[rows]
        cost = self.cost[rows]
        priced = ~np.isnan(cost)
        answered_priced = answered & priced
        return TraceStats(
            requests=requests,
            answered=n_answered,
            errors=int(errors.sum()),
            over_budget=int(over.sum()),
            rejected=int(rejected.sum()),
            error_rate=float(errors.sum() / judged) if judged else None,
            p50_ms=quantiles[0],
            p95_ms=quantiles[1],
            p99_ms=quantiles[2],
            ttft_p50_ms=float(np.median(ttft)) if len(ttft) else None,
            input_tokens=int(tokens_in.sum()),
            output_tokens=int(tokens_out.sum()),
            tokens_per_request=(
                float((tokens_in[answered].sum() + tokens_out[answered].sum()) / n_answered)
                if n_answered
                else None
            ),
            cost_usd=float(cost[priced].sum()),
            cost_per_request=(
                float(cost[answered_priced].mean()) if answered_priced.any() else None
            ),
            cache_hits=int((self.cache[rows] & answered).sum()),
            unpriced=int((answered & ~priced).sum()),
        )


def _groups(table: pa.Table, by: str) -> tuple[list[str], np.ndarray]:
    """Each group's label, and each row's group number."""
    if by == "all":
        return ["all"], np.zeros(table.num_rows, dtype=np.int64)
    if by == "route":
        keys = pc.fill_null(pc.cast(table.column("route"), pa.string()), "")
    else:
        model = pc.fill_null(pc.cast(table.column("model"), pa.string()), "")
        version = pc.fill_null(
            pc.cast(pc.cast(table.column("version"), pa.int64()), pa.string()), "0"
        )
        keys = pc.binary_join_element_wise(model, version, "/")
    if isinstance(keys, pa.ChunkedArray):  # one dictionary for the whole table, not per chunk
        keys = keys.combine_chunks()
    encoded = pc.dictionary_encode(keys)
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    return [str(label) for label in encoded.dictionary.to_pylist()], codes


def _sort_key(label: str, by: str) -> tuple[str, int]:
    if by != "version":
        return label, 0
    name, _, number = label.rpartition("/")
    return name, int(number) if number.isdigit() else 0
