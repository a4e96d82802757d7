"""Gates for a model: the rules file, and evaluating a model against it.

A rules file (YAML or JSON) says what a candidate must reach::

    task: classification          # optional; inferred from the target otherwise
    metrics:                      # absolute thresholds on the holdout
      accuracy: {min: 0.85}
      log_loss: {max: 0.35}
    against:                      # versus the compared version, on the same rows
      roc_auc: {min_delta: 0.0}   # candidate - baseline >= 0
      accuracy: {min_delta: -0.01}
    slices:                       # per-slice metric and the largest gap between slices
      columns: [region]
      metric: accuracy
      min_size: 30                # smaller slices are reported, not gated
      max_gap: 0.10
    data:                         # data validation of the holdout
      max_missing_share: 0.05

For a metric where lower is better (log loss, RMSE, MAE) ``min_delta`` is the
least *improvement* too: baseline - candidate >= min_delta.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from keel.checks.metrics import (
    CLASSIFICATION_METRICS,
    HIGHER_IS_BETTER,
    REGRESSION_METRICS,
    Task,
    classification_metrics,
    infer_task,
    regression_metrics,
    unseen_classes,
)
from keel.errors import InvalidInput

__all__ = ["CheckReport", "Gate", "Rules", "evaluate", "load_rules"]

_ALL_METRICS = (*CLASSIFICATION_METRICS, *REGRESSION_METRICS)


def _metric_name(name: Any, where: str) -> str:
    if name not in _ALL_METRICS:
        raise InvalidInput(
            f"{where}: unknown metric {name!r}; expected one of {', '.join(_ALL_METRICS)}"
        )
    return str(name)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{where} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Rules:
    """Parsed gates; build with :func:`load_rules` or :meth:`from_dict`."""

    task: Task | None = None
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    against: dict[str, float] = field(default_factory=dict)
    slice_columns: tuple[str, ...] = ()
    slice_metric: str | None = None
    slice_min_size: int = 30
    slice_max_gap: float | None = None
    max_missing_share: float | None = None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Rules:
        doc = dict(doc or {})
        known = {"task", "metrics", "against", "slices", "data"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise InvalidInput(
                f"rules: unknown section(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}"
            )
        task = doc.get("task")
        if task not in (None, "classification", "regression"):
            raise InvalidInput(f"rules: task must be classification or regression, got {task!r}")
        thresholds: dict[str, dict[str, float]] = {}
        for name, spec in (doc.get("metrics") or {}).items():
            _metric_name(name, "rules.metrics")
            if not isinstance(spec, Mapping) or not spec or set(spec) - {"min", "max"}:
                raise InvalidInput(
                    f"rules.metrics.{name} must be {{min: x}} and/or {{max: y}}, got {spec!r}"
                )
            thresholds[name] = {k: _number(v, f"rules.metrics.{name}.{k}") for k, v in spec.items()}
        against: dict[str, float] = {}
        for name, spec in (doc.get("against") or {}).items():
            _metric_name(name, "rules.against")
            if not isinstance(spec, Mapping) or set(spec) != {"min_delta"}:
                raise InvalidInput(f"rules.against.{name} must be {{min_delta: x}}, got {spec!r}")
            against[name] = _number(spec["min_delta"], f"rules.against.{name}.min_delta")
        slices = doc.get("slices") or {}
        if slices and not isinstance(slices, Mapping):
            raise InvalidInput(f"rules.slices must be a mapping, got {slices!r}")
        columns = slices.get("columns", [])
        if isinstance(columns, str):
            columns = [columns]
        metric = slices.get("metric")
        if columns and metric is None:
            raise InvalidInput("rules.slices needs a metric (e.g. metric: accuracy)")
        data = doc.get("data") or {}
        missing = data.get("max_missing_share")
        return cls(
            task=task,
            thresholds=thresholds,
            against=against,
            slice_columns=tuple(str(c) for c in columns),
            slice_metric=None if metric is None else _metric_name(metric, "rules.slices.metric"),
            slice_min_size=int(slices.get("min_size", 30)),
            slice_max_gap=None
            if slices.get("max_gap") is None
            else _number(slices["max_gap"], "rules.slices.max_gap"),
            max_missing_share=None
            if missing is None
            else _number(missing, "rules.data.max_missing_share"),
        )


def load_rules(path: str | os.PathLike[str] | None) -> Rules:
    """Read a YAML or JSON rules file (``None``: no gates, just measure)."""
    if path is None:
        return Rules()
    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise InvalidInput(f"rules file {file} does not exist") from None
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"rules file {file} is not valid YAML: {exc}") from None
    if doc is not None and not isinstance(doc, Mapping):
        raise InvalidInput(
            f"rules file {file} must hold a mapping of sections, got {type(doc).__name__}"
        )
    return Rules.from_dict(doc)


@dataclass(frozen=True)
class Gate:
    """One rule's verdict."""

    name: str
    passed: bool
    value: float | None
    threshold: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": _json(self.value),
            "threshold": self.threshold,
            "detail": self.detail,
        }


def _json(value: float | None) -> float | str | None:
    if value is None:
        return None
    if math.isnan(value):
        return "NaN"
    return value


@dataclass
class CheckReport:
    """What ``keel models check`` measured and decided."""

    task: Task
    n_rows: int
    metrics: dict[str, float]
    baseline_metrics: dict[str, float] | None
    slices: dict[str, dict[str, dict[str, float]]]
    slice_gaps: dict[str, float]
    data_problems: list[str]
    gates: list[Gate]
    notes: list[str] = field(default_factory=list)
    model: str | None = None
    version: int | None = None
    against: dict[str, Any] | None = None
    #: Holdout rows whose class the model never saw (scored, and a data problem).
    unseen_class_rows: int = 0

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates) and not self.data_problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "against": self.against,
            "passed": self.passed,
            "task": self.task,
            "n_rows": self.n_rows,
            "metrics": {k: _json(v) for k, v in self.metrics.items()},
            "baseline_metrics": None
            if self.baseline_metrics is None
            else {k: _json(v) for k, v in self.baseline_metrics.items()},
            "slices": {
                col: {val: {k: _json(v) for k, v in m.items()} for val, m in per.items()}
                for col, per in self.slices.items()
            },
            "slice_gaps": {k: _json(v) for k, v in self.slice_gaps.items()},
            "data_problems": self.data_problems,
            "unseen_class_rows": self.unseen_class_rows,
            "gates": [g.to_dict() for g in self.gates],
            "notes": self.notes,
        }


def _predictions(
    model: Any, features: pd.DataFrame, task: Task
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    pred = np.asarray(model.predict(features))
    proba = classes = None
    if task == "classification":
        # The classes the model was trained on are a fact of the model, with or without
        # probabilities: they tell which holdout rows hold a class it never saw.
        classes = getattr(model, "classes_", None)
        predict_proba = getattr(model, "predict_proba", None)
        if callable(predict_proba):
            try:
                proba = np.asarray(predict_proba(features))
            except InvalidInput:  # a loaded model that gives no probabilities
                proba = None
    if pred.ndim > 1 and pred.shape[1] == 1:
        pred = pred[:, 0]
    return pred, proba, None if classes is None else np.asarray(classes)


def _measure(
    task: Task,
    y: np.ndarray,
    pred: np.ndarray,
    proba: np.ndarray | None,
    classes: np.ndarray | None,
) -> dict[str, float]:
    if task == "regression":
        return regression_metrics(y, pred)
    if proba is not None and classes is None:
        classes = np.unique(y)
        if proba.ndim == 2 and proba.shape[1] != len(classes):
            proba = None  # cannot tell which column is which class
    return classification_metrics(y, pred, proba, classes)


def evaluate(
    model: Any,
    data: pd.DataFrame,
    target: str,
    rules: Rules,
    *,
    baseline: Any = None,
    validate: Any = None,
) -> CheckReport:
    """Measure ``model`` (and ``baseline``) on ``data`` and apply ``rules``.

    Args:
        model: anything with ``predict(DataFrame)``; ``predict_proba`` and
            ``classes_`` enable ROC AUC and log loss.
        data: the holdout, with the ``target`` column.
        baseline: the model to compare with on the same rows (for ``against`` gates).
        validate: a callable raising ``InvalidInput`` when the features do not
            fit the model's signature (data validation).
    """
    if target not in data.columns:
        raise InvalidInput(
            f"target column {target!r} is not in the data; columns are {', '.join(map(str, data.columns))}"
        )
    if len(data) == 0:
        raise InvalidInput("the holdout has no rows")
    y = data[target].to_numpy()
    features = data.drop(columns=[target])
    task: Task = rules.task or infer_task(y)
    problems: list[str] = []
    notes: list[str] = []
    if validate is not None:
        try:
            validate(features)
        except InvalidInput as exc:
            problems.append(f"signature: {exc}")
    if rules.max_missing_share is not None:
        shares = data.isna().mean()
        for column, share in shares.items():
            if share > rules.max_missing_share:
                problems.append(
                    f"column {column!r} is {share:.1%} missing; the limit is {rules.max_missing_share:.1%}"
                )
    if pd.isna(y).any():
        problems.append(f"target {target!r} has {int(pd.isna(y).sum())} missing values")
    for column in rules.slice_columns:
        if column not in data.columns:
            problems.append(f"slice column {column!r} is not in the data")

    try:
        pred, proba, classes = _predictions(model, features, task)
    except Exception as exc:  # the verdict is "fails", with the model's reason
        first_line = (str(exc).strip().splitlines() or [""])[0]
        problems.append(
            f"the model could not predict on the holdout: {type(exc).__name__}: {first_line}"
        )
        unmeasured = [
            Gate(f"{name} {kind}", False, None, threshold, f"{name} was not measured")
            for name, bounds in rules.thresholds.items()
            for kind, threshold in bounds.items()
        ]
        return CheckReport(task, len(data), {}, None, {}, {}, problems, unmeasured, notes)
    if proba is not None and classes is None:
        seen = np.unique(y)
        # Without the model's class order, columns can only be matched to sorted labels.
        classes = seen if proba.ndim == 2 and proba.shape[1] == len(seen) else None
        if classes is None:
            proba = None
    unseen_rows = 0
    if task == "classification" and classes is not None:
        unseen = unseen_classes(y, classes)
        unseen_rows = sum(unseen.values())
        if unseen:
            listed = ", ".join(f"{label}: {n} rows" for label, n in list(unseen.items())[:10])
            problems.append(
                f"{unseen_rows} of {len(y)} holdout rows have a class the model was never "
                f"trained on ({listed}{', …' if len(unseen) > 10 else ''}); they are scored as "
                "wrong, with probability 0 for their class. Retrain on these classes, or leave "
                "their rows out of the holdout"
            )
    metrics = _measure(task, y, pred, proba, classes)
    if task == "classification" and proba is None:
        notes.append("the model has no predict_proba: roc_auc and log_loss were not measured")

    baseline_metrics = None
    if baseline is not None:
        b_pred, b_proba, b_classes = _predictions(baseline, features, task)
        baseline_metrics = _measure(task, y, b_pred, b_proba, b_classes)

    gates: list[Gate] = []
    for name, bounds in rules.thresholds.items():
        value = metrics.get(name)
        for kind, threshold in bounds.items():
            if value is None or math.isnan(value):
                gates.append(
                    Gate(f"{name} {kind}", False, value, threshold, f"{name} was not measured")
                )
                continue
            ok = value >= threshold if kind == "min" else value <= threshold
            op = "≥" if kind == "min" else "≤"
            gates.append(
                Gate(
                    f"{name} {kind}", ok, value, threshold, f"{name} {value:.4g} {op} {threshold:g}"
                )
            )
    for name, min_delta in rules.against.items():
        value = metrics.get(name)
        base = None if baseline_metrics is None else baseline_metrics.get(name)
        if value is None or base is None or math.isnan(value) or math.isnan(base):
            why = (
                "no baseline to compare with (pass --against ALIAS)"
                if baseline_metrics is None
                else f"{name} was not measured for both"
            )
            gates.append(Gate(f"{name} vs baseline", False, None, min_delta, why))
            continue
        delta = value - base if HIGHER_IS_BETTER[name] else base - value
        gates.append(
            Gate(
                f"{name} vs baseline",
                delta >= min_delta,
                delta,
                min_delta,
                f"{name} {value:.4g} vs {base:.4g}: improvement {delta:+.4g} (needs ≥ {min_delta:+g})",
            )
        )

    slices: dict[str, dict[str, dict[str, float]]] = {}
    gaps: dict[str, float] = {}
    if rules.slice_metric:
        for column in rules.slice_columns:
            if column not in data.columns:
                continue
            per: dict[str, dict[str, float]] = {}
            keys = data[column].astype("string").fillna("<missing>").to_numpy()
            for value in pd.unique(keys):
                mask = keys == value
                n = int(mask.sum())
                sub_proba = None if proba is None else proba[mask]
                m = _measure(task, y[mask], pred[mask], sub_proba, classes)
                per[str(value)] = {
                    "n": float(n),
                    rules.slice_metric: m.get(rules.slice_metric, float("nan")),
                }
            slices[column] = per
            eligible = [
                v[rules.slice_metric]
                for v in per.values()
                if v["n"] >= rules.slice_min_size and not math.isnan(v[rules.slice_metric])
            ]
            gap = float(max(eligible) - min(eligible)) if len(eligible) >= 2 else 0.0
            gaps[column] = gap
            if rules.slice_max_gap is not None:
                gates.append(
                    Gate(
                        f"slice gap {column}",
                        gap <= rules.slice_max_gap,
                        gap,
                        rules.slice_max_gap,
                        f"largest {rules.slice_metric} gap between {column} slices of ≥{rules.slice_min_size} rows: "
                        f"{gap:.4g} (limit {rules.slice_max_gap:g})",
                    )
                )
    return CheckReport(
        task=task,
        n_rows=len(data),
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        slices=slices,
        slice_gaps=gaps,
        data_problems=problems,
        gates=gates,
        notes=notes,
        unseen_class_rows=unseen_rows,
    )
