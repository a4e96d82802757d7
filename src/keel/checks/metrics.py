"""Evaluation metrics, vectorized with NumPy (no scikit-learn needed at run time).

Classification: accuracy, F1 (binary: the positive class; multiclass: macro),
ROC AUC (binary; multiclass: one-vs-rest macro) and log loss — the last two
need class probabilities. Regression: RMSE, MAE, R².

Every row is scored. A row whose true class the model never saw (it has no
probability column) counts as a probability of 0 for that class: log loss
clips it to the machine epsilon of the probabilities' dtype, exactly as
``sklearn.metrics.log_loss`` does with ``labels`` naming every class, and
ROC AUC becomes one-vs-rest macro over the union of the model's classes and
the true labels, the unseen class scored 0 on every row (so its own AUC is
0.5: the model cannot rank what it does not know). Dropping those rows
instead would let a model that never learned a class pass a log-loss gate.
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
    "unseen_classes",
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


def unseen_classes(y_true: np.ndarray, classes: np.ndarray) -> dict[Any, int]:
    """Each true label that is not among ``classes``, with its row count (missing labels aside).

    Labels come in sorted order where they compare, else in order of first appearance.
    """
    import pandas as pd

    y = pd.Series(np.asarray(y_true).ravel().tolist(), dtype=object)
    outside = y[~y.isin(pd.Index(np.asarray(classes).tolist())) & y.notna()]
    counts = outside.value_counts(sort=False)
    try:
        counts = counts.sort_index()
    except TypeError:  # labels of mixed types: keep the order they came in
        pass
    return {label: int(n) for label, n in counts.items()}


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None = None,
    classes: np.ndarray | None = None,
) -> dict[str, float]:
    """Accuracy and F1 from labels; ROC AUC and log loss when ``proba`` is given.

    Rows whose true label is not in ``classes`` are scored, not dropped (see the
    module docstring): their class joins the labels with a probability of 0.

    Args:
        proba: shape (n, k) probabilities, columns in the order of ``classes``.
        classes: the class labels of ``proba``'s columns (default: sorted labels seen).
    """
    import pandas as pd

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    known = (
        np.asarray(classes) if classes is not None else np.unique(np.concatenate([y_true, y_pred]))
    )
    unseen = list(unseen_classes(y_true, known))
    labels = np.asarray([*known.tolist(), *unseen], dtype=object) if unseen else known
    result = {"accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")}
    if len(labels) == 2:
        result["f1"] = _f1(y_true, y_pred, labels[1])
    else:  # macro over the classes that occur, as sklearn's f1_score(average="macro")
        occurring = [
            label for label in labels if np.any(y_true == label) or np.any(y_pred == label)
        ]
        result["f1"] = float(np.mean([_f1(y_true, y_pred, label) for label in occurring or labels]))
    if proba is not None:
        p = np.asarray(proba)
        if p.dtype.kind != "f":
            p = p.astype(np.float64)
        if p.ndim == 1:
            p = np.column_stack([1 - p, p])
        if unseen:  # the model's probability of a class it never saw is 0
            p = np.column_stack([p, np.zeros((len(p), len(unseen)), dtype=p.dtype)])
        true_index = pd.Index(labels.tolist()).get_indexer(y_true.tolist())
        scored = true_index >= 0  # all rows but those with a missing label
        if len(labels) == 2:
            result["roc_auc"] = roc_auc_binary(true_index[scored] == 1, p[scored, 1])
        else:
            aucs = [
                roc_auc_binary(true_index[scored] == i, p[scored, i]) for i in range(len(labels))
            ]
            result["roc_auc"] = float(np.nanmean(aucs)) if not all(np.isnan(aucs)) else float("nan")
        # As sklearn.metrics.log_loss: clip to [eps, 1 - eps] for the probabilities' dtype.
        eps = np.finfo(p.dtype).eps
        clipped = np.clip(p[scored, true_index[scored]], eps, 1 - eps)
        result["log_loss"] = float(-np.mean(np.log(clipped))) if scored.any() else float("nan")
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
