"""Evaluation metrics, vectorized with NumPy (no scikit-learn needed at run time).

Classification: accuracy, F1 (binary: the positive class; multiclass: macro),
ROC AUC (binary; multiclass: one-vs-rest macro) and log loss — the last two
need class probabilities. Regression: RMSE, MAE, R².
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

__all__ = [
    "CLASSIFICATION_METRICS",
    "HIGHER_IS_BETTER",
    "REGRESSION_METRICS",
    "Task",
    "classification_metrics",
    "infer_task",
    "regression_metrics",
    "roc_auc_binary",
]

Task = Literal["classification", "regression"]
CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
HIGHER_IS_BETTER = {
    "accuracy": True,
    "f1": True,
    "roc_auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}
_MAX_CLASSES = 50


def infer_task(target: np.ndarray) -> Task:
    """Classification for bool, text and integer targets with few values; else regression."""
    values = np.asarray(target)
    if values.dtype.kind in "bOUS":
        return "classification"
    if values.dtype.kind in "iu" and len(np.unique(values)) <= _MAX_CLASSES:
        return "classification"
    if values.dtype.kind == "f":
        finite = values[~np.isnan(values)]
        if len(finite) and np.all(finite == np.round(finite)) and len(np.unique(finite)) <= 2:
            return "classification"
    return "regression"


def roc_auc_binary(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic with average ranks for ties."""
    y = np.asarray(y_true).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = np.asarray(score)[order]
    ranks = np.empty(len(score), dtype=float)
    # Average rank within each run of tied scores.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _f1(y_true: np.ndarray, y_pred: np.ndarray, label: Any) -> float:
    tp = np.sum((y_pred == label) & (y_true == label))
    fp = np.sum((y_pred == label) & (y_true != label))
    fn = np.sum((y_pred != label) & (y_true == label))
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else 0.0


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None = None,
    classes: np.ndarray | None = None,
) -> dict[str, float]:
    """Accuracy and F1 from labels; ROC AUC and log loss when ``proba`` is given.

    Args:
        proba: shape (n, k) probabilities, columns in the order of ``classes``.
        classes: the class labels of ``proba``'s columns (default: sorted labels seen).
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels = (
        np.asarray(classes) if classes is not None else np.unique(np.concatenate([y_true, y_pred]))
    )
    result = {"accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")}
    if len(labels) == 2:
        result["f1"] = _f1(y_true, y_pred, labels[1])
    else:
        result["f1"] = float(np.mean([_f1(y_true, y_pred, label) for label in labels]))
    if proba is not None:
        p = np.asarray(proba, dtype=float)
        if p.ndim == 1:
            p = np.column_stack([1 - p, p])
        index = {label: i for i, label in enumerate(labels.tolist())}
        true_index = np.array([index.get(v, -1) for v in y_true.tolist()])
        known = true_index >= 0
        if len(labels) == 2:
            result["roc_auc"] = roc_auc_binary(true_index[known] == 1, p[known, 1])
        else:
            aucs = [roc_auc_binary(true_index[known] == i, p[known, i]) for i in range(len(labels))]
            result["roc_auc"] = float(np.nanmean(aucs)) if not all(np.isnan(aucs)) else float("nan")
        clipped = np.clip(p[known, true_index[known]], 1e-15, 1.0)
        result["log_loss"] = float(-np.mean(np.log(clipped))) if known.any() else float("nan")
    return result


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² (NaN when the target is constant)."""
    y = np.asarray(y_true, dtype=float)
    pred = np.asarray(y_pred, dtype=float).reshape(len(y), -1)[:, 0]
    err = pred - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan"),
    }
