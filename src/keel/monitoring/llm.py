"""Monitors on prompt deployments: a window of the gateway's traces against the deployment's SLOs.

A prompt deployment (``DeploymentSpec(kind="prompt")``) serves no predictions to
profile: the gateway writes one trace per request under the deployment's name
(:mod:`keel.llm.traces`). :func:`keel.monitoring.run_monitor` on such a
deployment comes here. It reads the window's traces once (only the hour
partitions it touches, only the columns the statistics need), measures the
error rate, the p99 latency, the cost per request and the tokens per request
for the whole deployment and per prompt version, stores one monitor run like
any other (the figures in :attr:`MonitorResult.llm`, the full document in the
artifact store) and moves four alert rules through
:func:`keel.monitoring.alerts.evaluate`, with the deployment's ``fire_after``
and ``resolve_after``, so they fire and resolve with the same hysteresis as
drift alerts:

==========================  ======================  ======================================
rule                        SLO key                 fires when, over the window, …
==========================  ======================  ======================================
``llm_error_rate``          ``error_rate``          the share of requests that failed
``llm_latency_p99_ms``      ``latency_p99_ms``      the p99 latency of answered requests
``llm_cost_per_request``    ``cost_per_request``    the mean cost (USD) of a priced answer
``llm_tokens_per_request``  ``tokens_per_request``  input + output tokens per answer
==========================  ======================  ======================================

… is above the SLO. How requests are counted (what an error is, why a 429
over budget is not one) is :mod:`keel.llm.traces`'s rule. A rule resolves once
its value is back at or below :data:`CLEAR_RATIO` times its SLO, so a value
hovering at the SLO cannot make it flap.

The SLOs are the ``slo`` monitor setting (``configure_monitor(name,
slo={"latency_p99_ms": 2000})``), over :data:`DEFAULT_SLO`: the error rate is
watched out of the box (5%), because a failing upstream or prompt version is
never fine; latency, cost and tokens depend on the model and the prompt, so
they are off until set. A figure computed over fewer than ``min_requests``
requests (default 20; for cost, priced answers) judges nothing: its rule keeps
its state, as a monitor run with no traffic does. A rule whose SLO is set to ``None`` still reports its value,
and resolves if it was firing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, NotFound
from keel.monitoring.alerts import Measurement, Sink, deliver

if TYPE_CHECKING:
    from keel.client import Client
    from keel.llm.traces import TraceStats
    from keel.monitoring.monitor import MonitorResult
    from keel.monitoring.settings import MonitorSettings

__all__ = [
    "CLEAR_RATIO",
    "DEFAULT_SLO",
    "SLO_KEYS",
    "check_slo",
    "is_prompt_deployment",
    "local_run_llm_monitor",
    "slo_in_force",
]

#: The SLOs of a prompt deployment before any is set: the error rate at 5%, the rest off.
DEFAULT_SLO: dict[str, float | None] = {
    "error_rate": 0.05,
    "latency_p99_ms": None,
    "cost_per_request": None,
    "tokens_per_request": None,
    "min_requests": 20,
}
#: The keys the ``slo`` monitor setting takes.
SLO_KEYS = tuple(DEFAULT_SLO)
#: A firing rule resolves once its value is at or below this share of its SLO.
CLEAR_RATIO = 0.8


@dataclass(frozen=True)
class _Rule:
    """One alert rule: its SLO key, what it reads from the statistics, how it reads out."""

    name: str
    slo: str
    value: Callable[[TraceStats], float | None]
    base: Callable[[TraceStats], int]  # the requests the value is computed over
    spell: Callable[[float], str]
    what: str  # "<value> <what> over <base> <unit>"
    unit: str


def _ms(value: float) -> str:
    return f"{value:,.0f} ms"


_RULES = (
    _Rule(
        "llm_error_rate",
        "error_rate",
        lambda s: s.error_rate,
        lambda s: s.requests - s.over_budget,
        lambda v: f"{v:.1%}",
        "of requests failed",
        "requests (over-budget 429s left out)",
    ),
    _Rule(
        "llm_latency_p99_ms",
        "latency_p99_ms",
        lambda s: s.p99_ms,
        lambda s: s.answered,
        _ms,
        "p99 latency",
        "answered requests",
    ),
    _Rule(
        "llm_cost_per_request",
        "cost_per_request",
        lambda s: s.cost_per_request,
        lambda s: s.answered - s.unpriced,
        lambda v: f"${v:.6g}",
        "per request",
        "priced answers",
    ),
    _Rule(
        "llm_tokens_per_request",
        "tokens_per_request",
        lambda s: s.tokens_per_request,
        lambda s: s.answered,
        lambda v: f"{v:,.1f}",
        "tokens per request",
        "answered requests",
    ),
)


# -- settings ----------------------------------------------------------------------------------


def check_slo(slo: Mapping[str, Any]) -> None:
    """Raise InvalidInput unless ``slo`` maps known keys to numbers in range (or ``None``: off).

    ``error_rate`` is a share from 0 to 1; ``min_requests`` a whole number >= 1 (it cannot
    be turned off); the others are numbers >= 0.
    """
    if not isinstance(slo, Mapping):
        raise InvalidInput(f"slo must map SLO names to numbers, got {type(slo).__name__}")
    unknown = sorted(set(slo) - set(SLO_KEYS))
    if unknown:
        raise InvalidInput(
            f"unknown SLO(s) {', '.join(map(repr, unknown))}; valid: {', '.join(SLO_KEYS)}"
        )
    for key, limit in slo.items():
        if limit is None and key != "min_requests":
            continue
        number = not isinstance(limit, bool) and isinstance(limit, int | float)
        if key == "min_requests":
            if not number or limit < 1 or float(limit) != int(limit):
                raise InvalidInput(f"slo min_requests must be a whole number >= 1, got {limit!r}")
        elif not number or not math.isfinite(limit) or limit < 0:
            raise InvalidInput(f"slo {key} must be a number >= 0 or null (off), got {limit!r}")
        elif key == "error_rate" and limit > 1:
            raise InvalidInput(
                f"slo error_rate is a share of requests from 0 to 1 (0.05 is 5%), got {limit!r}"
            )


def slo_in_force(settings: MonitorSettings) -> dict[str, float | None]:
    """The deployment's SLOs: its ``slo`` setting over :data:`DEFAULT_SLO`."""
    return {**DEFAULT_SLO, **settings.slo}


def is_prompt_deployment(deployment: str, client: Client) -> bool:
    """Whether ``deployment`` is stored with ``kind="prompt"`` (its traffic is traces)."""
    from keel.serving.deployments import Deployments

    try:
        return Deployments(client).get(deployment).spec.kind == "prompt"
    except NotFound:  # logs without a stored deployment: a model served by URI
        return False


# -- one run -------------------------------------------------------------------------------------


def local_run_llm_monitor(
    deployment: str,
    client: Client,
    settings: MonitorSettings,
    start_ms: int,
    end_ms: int,
    sinks: Sequence[Sink] | None = None,
) -> MonitorResult:
    """:func:`keel.monitoring.run_monitor` for a prompt deployment, on the client's own store.

    The caller (:func:`keel.monitoring.monitor.local_run_monitor`) has checked the name
    and resolved the window ``[start_ms, end_ms)``.
    """
    from keel.llm.traces import STATS_COLUMNS, read_traces, summarize
    from keel.monitoring.monitor import MonitorResult, store_run
    from keel.store.sql import now_ms

    table = read_traces(client, deployment, start_ms, end_ms, columns=STATS_COLUMNS)
    versions = summarize(table, "version")
    overall = summarize(table, "all").get("all")
    slo = slo_in_force(settings)
    doc: dict[str, Any] = {
        "overall": None if overall is None else overall.to_dict(),
        "versions": {label: stats.to_dict() for label, stats in versions.items()},
        "slo": slo,
    }
    window_doc = {"deployment": deployment, "window_start": start_ms, "window_end": end_ms}
    # "headline" and "versions" as a model run's report has them, so MonitorResult.report()
    # answers None (there is no drift report) instead of failing.
    blob = client.artifacts.put_json(
        {
            **window_doc,
            "kind": "prompt",
            "rows": table.num_rows,
            "headline": None,
            "versions": {},
            "llm": doc,
            "settings": settings.to_dict(),
        }
    )
    result = MonitorResult(
        id=0,
        deployment=deployment,
        window_start=start_ms,
        window_end=end_ms,
        rows=table.num_rows,
        labelled_rows=0,
        share_drifted=None,
        dataset_drift=None,
        prediction_drift=None,
        drifted_columns=[],
        quality=None,
        concept_drift=None,
        failed_checks=0,
        report_digest=blob.digest,
        created_at=now_ms(),
        llm=doc,
    )
    measurements = [] if overall is None else _measurements(slo, overall, versions)
    raised = store_run(client, settings, result, None, measurements)
    extra = {**window_doc, "report_digest": blob.digest}
    result.alerts = deliver(
        client.store, raised, settings.sinks() if sinks is None else sinks, extra
    )
    return result


def _measurements(
    slo: Mapping[str, float | None], overall: TraceStats, versions: Mapping[str, TraceStats]
) -> list[Measurement]:
    """What the window measured for each rule (none judged below ``min_requests``)."""
    least = int(slo.get("min_requests") or DEFAULT_SLO["min_requests"] or 1)
    out = []
    for rule in _RULES:
        value, base = rule.value(overall), rule.base(overall)
        if value is None or base < least:
            continue  # too little traffic to judge: the state stays
        limit = slo.get(rule.slo)
        measured = f"{rule.spell(value)} {rule.what} over {base:,} {rule.unit}"
        if limit is None:
            out.append(
                Measurement(rule.name, float(value), False, True, None, f"{measured}; no SLO set")
            )
            continue
        worst = sorted(
            ((rule.value(s), label, rule.base(s)) for label, s in versions.items()),
            key=lambda item: -math.inf if item[0] is None else item[0],
            reverse=True,
        )
        shown = "; ".join(
            f"{label} {rule.spell(v)} over {n:,}" for v, label, n in worst[:3] if v is not None
        )
        out.append(
            Measurement(
                rule.name,
                float(value),
                value > limit,
                value <= limit * CLEAR_RATIO,
                float(limit),
                f"{rule.name}: {measured} (SLO {rule.spell(limit)}); by version: {shown}",
            )
        )
    return out
