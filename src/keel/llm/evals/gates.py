"""Eval gates: bounds on an eval's metrics, in the vocabulary of ``keel models check``.

A model's rules file bounds metrics with ``{min: x}`` / ``{max: y}`` and a
comparison with ``{min_delta: d}``; an eval's gates are the same three kinds
of bound, on the eval's metrics, and their verdicts are the same
:class:`keel.checks.Gate` records. So a gate can be written as a rules mapping
(as a policy's YAML does)::

    metrics: {similarity: {min: 0.8}, latency_p95_ms: {max: 2000}}
    against: {similarity: {min_delta: -0.02}}      # candidate - compared >= -0.02

or, on the command line, one bound per ``--gate``::

    similarity >= 0.8                  # a scorer's mean ("mean(similarity) >= 0.8" too)
    similarity.pass_rate >= 0.9        # share of cases at or above the scorer's threshold
    failures <= 0                      # calls that failed
    latency_p95_ms <= 2000
    diff.similarity >= -0.02           # paired mean difference against --against
    similarity - against.similarity >= -0.02   # the same, spelled out

Only ``>=`` (a minimum) and ``<=`` (a maximum) exist, as in the rules file.
The metric must be one the eval measures: gates are checked against the
scorers before any call is made, and a gate on ``against.``/``diff.`` metrics
needs ``--against``. A metric that was not measured (no cost reported) fails
its gate, saying so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from keel.checks import Gate
from keel.errors import InvalidInput

__all__ = ["Bound", "GateSpec", "decide", "parse_gate", "parse_gates"]

#: Gates as given: bound texts (``"similarity >= 0.8"``) or a rules mapping.
GateSpec = Sequence[str] | Mapping[str, Any] | None

_GATE_RE = re.compile(
    r"^\s*(?P<lhs>.+?)\s*(?P<op>>=|<=|≥|≤|==|=|>|<|!=)\s*"
    r"(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_MEAN_RE = re.compile(r"^mean\(\s*([^()\s]+)\s*\)$")
_DIFF_RE = re.compile(r"^([A-Za-z_][\w\-.]*)\s*-\s*against\.([A-Za-z_][\w\-.]*)$")
_METRIC_RE = re.compile(r"^[A-Za-z_][\w\-.]*$")
_EXAMPLES = "'similarity >= 0.8', 'failures <= 0' or 'diff.similarity >= -0.02'"


@dataclass(frozen=True)
class Bound:
    """One gate: ``metric`` must be at least (``min``) or at most (``max``) ``value``."""

    metric: str
    kind: Literal["min", "max"]
    value: float

    @property
    def text(self) -> str:
        return f"{self.metric} {'>=' if self.kind == 'min' else '<='} {self.value:g}"


def _metric(lhs: str, where: str) -> str:
    text = lhs.strip()
    mean = _MEAN_RE.match(text)
    if mean:
        text = mean.group(1)
    diff = _DIFF_RE.match(text)
    if diff:
        if diff.group(1) != diff.group(2):
            raise InvalidInput(
                f"{where}: a difference compares a metric with the same one of --against "
                f"('similarity - against.similarity'), got {lhs!r}"
            )
        text = f"diff.{diff.group(1)}"
    if not _METRIC_RE.match(text):
        raise InvalidInput(f"{where}: {lhs!r} is not a metric name; write e.g. {_EXAMPLES}")
    return text


def parse_gate(text: str) -> Bound:
    """A bound from ``"METRIC >= NUMBER"`` or ``"METRIC <= NUMBER"``.

    Raises:
        InvalidInput: another operator or shape; the message shows valid gates.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"a gate is text like {_EXAMPLES}; got {text!r}")
    match = _GATE_RE.match(text)
    if not match:
        raise InvalidInput(
            f"gate {text!r} is not METRIC >= NUMBER or METRIC <= NUMBER; e.g. {_EXAMPLES}"
        )
    op = match.group("op")
    if op not in (">=", "<=", "≥", "≤"):
        raise InvalidInput(
            f"gate {text!r}: the operator must be >= (a minimum) or <= (a maximum), got {op!r}"
        )
    kind: Literal["min", "max"] = "min" if op in (">=", "≥") else "max"
    return Bound(_metric(match.group("lhs"), f"gate {text!r}"), kind, float(match.group("num")))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{where} must be a number, got {value!r}")
    return float(value)


def _from_rules(doc: Mapping[str, Any]) -> list[Bound]:
    unknown = sorted(set(doc) - {"metrics", "against"})
    if unknown:
        raise InvalidInput(
            f"eval gates: unknown section(s) {', '.join(map(str, unknown))}; expected metrics, against"
        )
    bounds: list[Bound] = []
    for name, spec in (doc.get("metrics") or {}).items():
        if not isinstance(spec, Mapping) or not spec or set(spec) - {"min", "max"}:
            raise InvalidInput(
                f"gates.metrics.{name} must be {{min: x}} and/or {{max: y}}, got {spec!r}"
            )
        metric = _metric(str(name), f"gates.metrics.{name}")
        for kind in ("min", "max"):
            if kind in spec:
                bounds.append(
                    Bound(metric, kind, _number(spec[kind], f"gates.metrics.{name}.{kind}"))
                )
    for name, spec in (doc.get("against") or {}).items():
        if not isinstance(spec, Mapping) or set(spec) != {"min_delta"}:
            raise InvalidInput(f"gates.against.{name} must be {{min_delta: x}}, got {spec!r}")
        metric = _metric(str(name), f"gates.against.{name}")
        delta = _number(spec["min_delta"], f"gates.against.{name}.min_delta")
        bounds.append(Bound(f"diff.{metric}", "min", delta))
    return bounds


def parse_gates(gates: GateSpec) -> list[Bound]:
    """Bounds from gate texts, or from a rules mapping (``metrics:`` / ``against:``)."""
    if gates is None:
        return []
    if isinstance(gates, Mapping):
        return _from_rules(gates)
    if isinstance(gates, str):
        return [parse_gate(gates)]
    return [parse_gate(g) for g in gates]


def check_bounds(bounds: Sequence[Bound], known: Collection[str], *, against: bool) -> None:
    """Refuse a gate on a metric the eval will not measure, before anything is sent.

    Raises:
        InvalidInput: the message lists the metrics the eval measures.
    """
    for bound in bounds:
        compared = bound.metric.startswith(("against.", "diff."))
        if compared and not against:
            raise InvalidInput(
                f"gate {bound.text!r} compares with another version: pass --against ALIAS "
                "(e.g. --against production)"
            )
        if bound.metric not in known:
            listed = ", ".join(
                sorted(k for k in known if against or not k.startswith(("against.", "diff.")))
            )
            raise InvalidInput(
                f"gate {bound.text!r}: this eval measures no {bound.metric!r}; its metrics are {listed}"
            )


def decide(bounds: Sequence[Bound], metrics: Mapping[str, float]) -> list[Gate]:
    """Each bound's verdict on the measured ``metrics``."""
    verdicts = []
    for bound in bounds:
        value = metrics.get(bound.metric)
        if value is None or math.isnan(value):
            verdicts.append(
                Gate(bound.text, False, None, bound.value, f"{bound.metric} was not measured")
            )
            continue
        if bound.kind == "min":
            passed, gap, op = value >= bound.value, bound.value - value, "<"
        else:
            passed, gap, op = value <= bound.value, value - bound.value, ">"
        if passed:
            detail = (
                f"{bound.metric} {value:.4g} {'≥' if bound.kind == 'min' else '≤'} {bound.value:g}"
            )
        else:
            detail = f"{bound.metric} {value:.4g} {op} {bound.value:g} (off by {gap:.4g})"
        verdicts.append(Gate(bound.text, passed, value, bound.value, detail))
    return verdicts
