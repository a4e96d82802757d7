"""Policies: what retrains a model, how its challenger is gated and rolled out, who approves.

A policy is a YAML (or JSON) document, or the same as Python objects::

    name: churn-retrain
    model: churn                  # the registered model
    deployment: churn-api         # the deployment serving it (its primary follows the alias)
    alias: champion               # the alias a challenger is promoted to
    triggers:
      - drift: {window: 1h, share: 0.3}            # share of drifted columns, or:
      - drift: {window: 1h, columns: [age, plan]}  # any of these columns drifted
      - quality: {metric: accuracy, below: 0.85, min_labels: 200, window: 1d}
      - schedule: {cron: "0 3 * * *"}
      - dataset: {name: churn-train}               # a new version of this dataset
    cooldown: 1h                  # no new trigger within this long after a cycle ends
    retrain:
      pipeline: churn_pipeline:train               # module:attr or path/file.py:attr
      params: {data: "datasets:/churn-train@latest", seed: 7}
      output: model                                # the returned key holding models:/churn/N
    gates:
      data: datasets:/churn-holdout@latest         # fresh evaluation data (or a file)
      target: churned
      rules:                                       # the rules of `keel models check`
        metrics: {roc_auc: {min: 0.8}}
        against: {roc_auc: {min_delta: 0.0}}       # no worse than the champion
      latency: {p99_ms: 50, requests: 200}         # a short load check on the candidate
    rollout:
      canary: {weight: 20, min_requests: 200, max_duration: 30m}
      promote_when: {error_rate: 0.01, p99_ratio: 1.5, prediction_drift: 0.2}
      rollback_when: {error_rate: 0.05, p99_ratio: 3.0}
    approval: {mode: auto}                         # or {mode: required}: see Approval

Every field is validated when the policy is loaded; an error names the
field, what came and what was expected. What the fields name (the model,
deployment, pipeline, datasets and columns) is resolved against the store
when the policy is applied or dry-run (:mod:`keel.automation.references`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from keel.errors import InvalidInput
from keel.validation import check_name

__all__ = [
    "Approval",
    "Canary",
    "Gates",
    "LiveCriteria",
    "Policy",
    "Retrain",
    "Rollout",
    "Trigger",
    "human_duration",
    "load_policy",
    "parse_duration",
]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
TRIGGER_KINDS = ("drift", "quality", "schedule", "dataset")
#: What monitoring measures once labels arrive (predicted labels, no probabilities).
QUALITY_METRICS = ("accuracy", "f1", "rmse", "mae", "r2")
LIVE_METRICS = ("error_rate", "p99_ratio", "p99_ms", "prediction_drift")


def parse_duration(value: Any, where: str) -> float:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"1h"``, ``"1d"``, ``"250ms"``."""
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: expected a duration like 30m or 1h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value))
        if not match:
            raise InvalidInput(
                f"{where}: expected a duration like 90s, 30m, 1h or 1d, got {value!r}"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise InvalidInput(f"{where}: a duration must be positive, got {value!r}")
    return seconds


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    return value


def _only(doc: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise InvalidInput(
            f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(allowed)}"
        )


def _number(value: Any, where: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise InvalidInput(f"{where}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def _count(value: Any, where: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{where}: expected a whole number >= {minimum}, got {value!r}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


@dataclass(frozen=True)
class Trigger:
    """One reason to retrain.

    ``kind`` is ``drift`` (``share`` of drifted columns, or any of ``columns``,
    over ``window``), ``quality`` (``metric`` ``below`` a value once
    ``min_labels`` labels arrived in ``window``), ``schedule`` (``cron``) or
    ``dataset`` (a new version of ``name``).
    """

    kind: str
    window: float | None = None
    share: float | None = None
    columns: tuple[str, ...] = ()
    metric: str | None = None
    below: float | None = None
    min_labels: int = 100
    cron: str | None = None
    dataset: str | None = None

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Trigger:
        doc = _mapping(doc, where)
        if len(doc) != 1 or next(iter(doc)) not in TRIGGER_KINDS:
            raise InvalidInput(
                f"{where}: a trigger is one of {', '.join(TRIGGER_KINDS)} with its settings, "
                f"e.g. {{drift: {{window: 1h, share: 0.3}}}}; got {dict(doc)!r}"
            )
        kind = next(iter(doc))
        body = _mapping(doc[kind], f"{where}.{kind}")
        at = f"{where}.{kind}"
        if kind == "drift":
            _only(body, ("window", "share", "columns"), at)
            columns = tuple(_text(c, f"{at}.columns") for c in body.get("columns") or ())
            share = body.get("share")
            if share is None and not columns:
                share = 0.3
            return cls(
                kind,
                window=parse_duration(body.get("window", "1h"), f"{at}.window"),
                share=None if share is None else _fraction(share, f"{at}.share"),
                columns=columns,
            )
        if kind == "quality":
            _only(body, ("metric", "below", "min_labels", "window"), at)
            if "below" not in body:
                raise InvalidInput(f"{at}: needs below: the value under which to retrain")
            metric = _text(body.get("metric", "accuracy"), f"{at}.metric")
            if metric not in QUALITY_METRICS:
                # A metric monitoring never measures would make a trigger that never fires.
                raise InvalidInput(
                    f"{at}.metric: expected one of {', '.join(QUALITY_METRICS)} (what monitoring "
                    f"measures from labels), got {metric!r}"
                )
            return cls(
                kind,
                window=parse_duration(body.get("window", "1d"), f"{at}.window"),
                metric=metric,
                below=_number(body["below"], f"{at}.below", minimum=float("-inf")),
                min_labels=_count(body.get("min_labels", 100), f"{at}.min_labels"),
            )
        if kind == "schedule":
            _only(body, ("cron",), at)
            cron = _text(body.get("cron"), f"{at}.cron")
            _check_cron(cron, f"{at}.cron")
            return cls(kind, cron=cron)
        _only(body, ("name",), at)
        return cls(kind, dataset=_text(body.get("name"), f"{at}.name"))

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "drift":
            body: dict[str, Any] = {"window": self.window}
            if self.share is not None:
                body["share"] = self.share
            if self.columns:
                body["columns"] = list(self.columns)
        elif self.kind == "quality":
            body = {
                "metric": self.metric,
                "below": self.below,
                "min_labels": self.min_labels,
                "window": self.window,
            }
        elif self.kind == "schedule":
            body = {"cron": self.cron}
        else:
            body = {"name": self.dataset}
        return {self.kind: body}

    def describe(self) -> str:
        if self.kind == "drift":
            what = (
                f"share of drifted columns >= {self.share:g}"
                if self.share is not None
                else f"any of {', '.join(self.columns)} drifted"
            )
            return f"drift over {human_duration(self.window)}: {what}"
        if self.kind == "quality":
            return (
                f"{self.metric} below {self.below:g} over {human_duration(self.window)} "
                f"(at least {self.min_labels} labels)"
            )
        if self.kind == "schedule":
            return f"schedule {self.cron}"
        return f"a new version of dataset {self.dataset}"


def _fraction(value: Any, where: str) -> float:
    number = _number(value, where)
    if number > 1:
        raise InvalidInput(f"{where}: expected a share between 0 and 1, got {value!r}")
    return number


def _check_cron(expression: str, where: str) -> None:
    try:
        from croniter import croniter
    except ImportError:  # pragma: no cover - croniter is a dependency
        raise InvalidInput("schedule triggers need croniter: pip install croniter") from None
    if not croniter.is_valid(expression):
        raise InvalidInput(
            f"{where}: {expression!r} is not a cron expression; expected five fields like "
            "'0 3 * * *' (03:00 every day)"
        )


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Retrain:
    """The pipeline that trains a challenger, its parameters, and which output is the model."""

    pipeline: str
    params: Mapping[str, Any] = field(default_factory=dict)
    output: str = "model"

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Retrain:
        doc = _mapping(doc, where)
        _only(doc, ("pipeline", "params", "output"), where)
        pipeline = _text(doc.get("pipeline"), f"{where}.pipeline")
        if ":" not in pipeline:
            raise InvalidInput(
                f"{where}.pipeline: expected module:attribute or path/file.py:attribute, "
                f"got {pipeline!r}"
            )
        params = dict(_mapping(doc.get("params"), f"{where}.params"))
        try:
            json.dumps(params)
        except (TypeError, ValueError):
            raise InvalidInput(f"{where}.params: parameters must be JSON values") from None
        return cls(pipeline, params, _text(doc.get("output", "model"), f"{where}.output"))

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "params": dict(self.params), "output": self.output}


@dataclass(frozen=True)
class Gates:
    """What a challenger must pass before it sees traffic (the rules of ``keel models check``)."""

    data: str | None = None
    target: str | None = None
    rules: Mapping[str, Any] = field(default_factory=dict)
    latency_p99_ms: float | None = None
    latency_requests: int = 200

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Gates:
        doc = _mapping(doc, where)
        _only(doc, ("data", "target", "rules", "latency"), where)
        rules = dict(_mapping(doc.get("rules"), f"{where}.rules"))
        if rules:
            from keel.checks import Rules

            try:
                Rules.from_dict(rules)
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.rules: {exc}") from None
        data = doc.get("data")
        target = doc.get("target")
        if rules and (data is None or target is None):
            raise InvalidInput(f"{where}: rules need data (the evaluation set) and target")
        latency = _mapping(doc.get("latency"), f"{where}.latency")
        _only(latency, ("p99_ms", "requests"), f"{where}.latency")
        return cls(
            data=None if data is None else _text(data, f"{where}.data"),
            target=None if target is None else _text(target, f"{where}.target"),
            rules=rules,
            latency_p99_ms=(
                None
                if latency.get("p99_ms") is None
                else _number(latency["p99_ms"], f"{where}.latency.p99_ms")
            ),
            latency_requests=_count(latency.get("requests", 200), f"{where}.latency.requests"),
        )

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"rules": dict(self.rules)}
        if self.data is not None:
            doc["data"] = self.data
        if self.target is not None:
            doc["target"] = self.target
        if self.latency_p99_ms is not None:
            doc["latency"] = {"p99_ms": self.latency_p99_ms, "requests": self.latency_requests}
        return doc


@dataclass(frozen=True)
class LiveCriteria:
    """Bounds on the canary's live metrics.

    ``error_rate``: failed requests / all requests of the canary version.
    ``p99_ratio``: the canary's p99 latency / the primary's. ``p99_ms``: the
    canary's p99 latency. ``prediction_drift``: the drift statistic between
    the canary's and the primary's predictions in the same window.
    """

    error_rate: float | None = None
    p99_ratio: float | None = None
    p99_ms: float | None = None
    prediction_drift: float | None = None

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> LiveCriteria:
        doc = _mapping(doc, where)
        _only(doc, LIVE_METRICS, where)
        return cls(**{k: _number(v, f"{where}.{k}") for k, v in doc.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def breaches(self, measured: Mapping[str, float | None]) -> list[str]:
        """``metric value > bound`` for each bound the measured values exceed."""
        out = []
        for name, bound in self.to_dict().items():
            value = measured.get(name)
            if value is not None and value > bound:
                out.append(f"{name} {value:.4g} > {bound:g}")
        return out

    def unknown(self, measured: Mapping[str, float | None]) -> list[str]:
        """Bounded metrics that could not be measured yet."""
        return [name for name in self.to_dict() if measured.get(name) is None]


@dataclass(frozen=True)
class Canary:
    weight: int = 10
    min_requests: int = 200
    max_duration: float = 1800.0

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Canary:
        doc = _mapping(doc, where)
        _only(doc, ("weight", "min_requests", "max_duration"), where)
        weight = _count(doc.get("weight", 10), f"{where}.weight")
        if weight > 99:
            raise InvalidInput(f"{where}.weight: a canary takes 1 to 99 percent, got {weight}")
        return cls(
            weight=weight,
            min_requests=_count(doc.get("min_requests", 200), f"{where}.min_requests"),
            max_duration=parse_duration(doc.get("max_duration", "30m"), f"{where}.max_duration"),
        )


@dataclass(frozen=True)
class Rollout:
    canary: Canary = field(default_factory=Canary)
    promote_when: LiveCriteria = field(
        default_factory=lambda: LiveCriteria(error_rate=0.01, p99_ratio=2.0)
    )
    rollback_when: LiveCriteria = field(
        default_factory=lambda: LiveCriteria(error_rate=0.05, p99_ratio=5.0)
    )

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Rollout:
        doc = _mapping(doc, where)
        _only(doc, ("canary", "promote_when", "rollback_when"), where)
        default = cls()
        return cls(
            canary=Canary.from_dict(doc.get("canary"), f"{where}.canary"),
            promote_when=(
                LiveCriteria.from_dict(doc["promote_when"], f"{where}.promote_when")
                if "promote_when" in doc
                else default.promote_when
            ),
            rollback_when=(
                LiveCriteria.from_dict(doc["rollback_when"], f"{where}.rollback_when")
                if "rollback_when" in doc
                else default.rollback_when
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "canary": asdict(self.canary),
            "promote_when": self.promote_when.to_dict(),
            "rollback_when": self.rollback_when.to_dict(),
        }


@dataclass(frozen=True)
class Approval:
    """``auto``: promote when the canary passes; ``required``: wait for approvals first.

    Who may approve, and how many approvals it takes, is the alias's protection
    (``keel policy protect champion --approvals 1 --role approver``); ``required``
    insists that protection exists. An ``auto`` policy on a protected alias also
    waits for the approvals the protection asks for.
    """

    mode: str = "auto"

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Approval:
        doc = _mapping(doc, where)
        _only(doc, ("mode",), where)
        mode = doc.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise InvalidInput(f"{where}.mode: expected auto or required, got {mode!r}")
        return cls(mode)


@dataclass(frozen=True)
class Policy:
    """A model's retraining, gating, rollout and approval rules (see the module docstring)."""

    name: str
    model: str
    deployment: str
    retrain: Retrain
    triggers: tuple[Trigger, ...] = ()
    alias: str = "champion"
    cooldown: float = 3600.0
    gates: Gates = field(default_factory=Gates)
    rollout: Rollout = field(default_factory=Rollout)
    approval: Approval = field(default_factory=Approval)

    def __post_init__(self) -> None:
        for label, value in (
            ("name", self.name),
            ("model", self.model),
            ("deployment", self.deployment),
        ):
            check_name(value, f"policy {label}")

    @classmethod
    def from_dict(cls, doc: Any) -> Policy:
        doc = _mapping(doc, "policy")
        _only(
            doc,
            (
                "name",
                "model",
                "deployment",
                "alias",
                "triggers",
                "cooldown",
                "retrain",
                "gates",
                "rollout",
                "approval",
            ),
            "policy",
        )
        for required in ("name", "model", "deployment", "retrain"):
            if required not in doc:
                raise InvalidInput(f"policy: missing {required}; see `keel policy apply --help`")
        triggers = doc.get("triggers") or []
        if not isinstance(triggers, list):
            raise InvalidInput(f"policy.triggers: expected a list, got {type(triggers).__name__}")
        return cls(
            name=doc["name"],
            model=doc["model"],
            deployment=doc["deployment"],
            alias=_text(doc.get("alias", "champion"), "policy.alias"),
            triggers=tuple(
                Trigger.from_dict(t, f"policy.triggers[{n}]") for n, t in enumerate(triggers)
            ),
            cooldown=parse_duration(doc.get("cooldown", "1h"), "policy.cooldown"),
            retrain=Retrain.from_dict(doc["retrain"], "policy.retrain"),
            gates=Gates.from_dict(doc.get("gates"), "policy.gates"),
            rollout=Rollout.from_dict(doc.get("rollout"), "policy.rollout"),
            approval=Approval.from_dict(doc.get("approval"), "policy.approval"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "deployment": self.deployment,
            "alias": self.alias,
            "triggers": [t.to_dict() for t in self.triggers],
            "cooldown": self.cooldown,
            "retrain": self.retrain.to_dict(),
            "gates": self.gates.to_dict(),
            "rollout": self.rollout.to_dict(),
            "approval": asdict(self.approval),
        }


def load_policy(source: str | os.PathLike[str] | Mapping[str, Any] | Policy) -> Policy:
    """A policy from a YAML/JSON file, a dict, or a :class:`Policy` (returned as is).

    Raises:
        InvalidInput: the file is missing or malformed, or a field is invalid.
    """
    if isinstance(source, Policy):
        return source
    if isinstance(source, Mapping):
        return Policy.from_dict(source)
    path = Path(source)
    if not path.is_file():
        raise InvalidInput(f"policy file {path} does not exist")
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path} is not valid YAML: {exc}") from None
    try:
        return Policy.from_dict(doc)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {exc}") from None
