"""Model quality once labels arrive, and concept drift on the error stream.

:func:`join_labels` joins a window's predictions with the labels sent as
feedback (by request id, and row when the label names one; the newest label
wins). :func:`window_quality` scores them as the model version's recorded
task says — never as the label values look (a 3-class classifier's labels
``0, 1, 2`` are classes, not numbers to regress): accuracy and F1 (macro
over the classes for more than two) for a classifier, RMSE, MAE and R² for a
regressor, with :mod:`keel.checks.metrics`. A regressor's rows whose label or
prediction is not a number cannot be scored; they are counted and reported
as excluded, never dropped silently.

:class:`PageHinkley` watches the error stream — 1 for a wrong class, or the
absolute error divided by the first 30 errors' mean for regression — for a
rise in its mean. It is the Page-Hinkley test exactly as ``river``
implements it (``river.drift.PageHinkley(mode="up")``, same parameters, same
detections; a test checks this), but vectorized: the fading cumulative sum is
a first-order linear filter (``scipy.signal.lfilter``) and its running minimum
``numpy.minimum.accumulate``, so a window of errors costs a few array passes
instead of a Python call per error. Its whole state is four numbers, stored
as JSON with each monitor run, so detection continues across windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import InvalidInput

__all__ = ["TASKS", "PageHinkley", "WindowQuality", "join_labels", "window_quality"]

_SCALE_WARMUP = 30  # regression errors averaged to fix the detector's unit


@dataclass
class PageHinkley:
    """Page-Hinkley test for an increase in a stream's mean (river's ``mode="up"``).

    Attributes:
        min_instances: values seen (since the last detection) before it may signal.
        delta: the magnitude of change tolerated.
        threshold: λ, how far the cumulative sum may rise above its minimum.
        alpha: forgetting factor of the cumulative sum.
        n, mean, total, minimum: the running state.
        scale: divides every value (fixed from the first values for regression).
    """

    min_instances: int = 30
    delta: float = 0.005
    threshold: float = 50.0
    alpha: float = 1 - 0.0001
    n: int = 0
    mean: float = 0.0
    total: float = 0.0
    minimum: float = math.inf
    scale: float = 1.0

    def update(self, values: np.ndarray) -> list[int]:
        """Feed values in order; return the indices at which a change was detected.

        After a detection the test starts over from the next value, as river's does.
        """
        from scipy.signal import lfilter

        x = np.asarray(values, dtype=np.float64) / self.scale
        detections: list[int] = []
        offset = 0
        while offset < len(x):
            part = x[offset:]
            count = self.n + np.arange(1, len(part) + 1)
            mean = (self.mean * self.n + np.cumsum(part)) / count
            deviation = part - mean - self.delta
            # total_t = alpha * total_{t-1} + deviation_t, started from the stored total.
            total, _ = lfilter([1.0], [1.0, -self.alpha], deviation, zi=[self.alpha * self.total])
            minimum = np.minimum(np.minimum.accumulate(total), self.minimum)
            alarm = (count >= self.min_instances) & (total - minimum > self.threshold)
            hits = np.flatnonzero(alarm)
            if not len(hits):
                self.n = int(count[-1])
                self.mean, self.total = float(mean[-1]), float(total[-1])
                self.minimum = float(minimum[-1])
                return detections
            at = int(hits[0])
            detections.append(offset + at)
            self.n, self.mean, self.total, self.minimum = 0, 0.0, 0.0, math.inf
            offset += at + 1
        return detections

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["minimum"] = None if math.isinf(self.minimum) else self.minimum
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> PageHinkley:
        if not doc:
            return cls()
        values = dict(doc)
        values["minimum"] = math.inf if values.get("minimum") is None else values["minimum"]
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


TASKS = ("classification", "regression")


@dataclass(frozen=True)
class WindowQuality:
    """Quality of one window's labelled predictions.

    Attributes:
        task: ``classification`` or ``regression``, as the model version records it.
        rows: labelled predictions scored.
        metrics: accuracy/F1, or RMSE/MAE/R².
        errors: the error stream of the scored rows, ordered by prediction time.
        scored: per labelled row, whether it was scored (``errors`` holds those rows).
        excluded: labelled rows that could not be scored, by reason.
    """

    task: str
    rows: int
    metrics: dict[str, float]
    errors: np.ndarray
    scored: np.ndarray | None = None
    excluded: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "task": self.task,
            "rows": self.rows,
            "metrics": {k: (None if math.isnan(v) else v) for k, v in self.metrics.items()},
        }
        if self.excluded:
            doc["excluded"] = dict(self.excluded)
        return doc


def join_labels(predictions: pa.Table, feedback: pa.Table) -> pa.Table:
    """``predictions`` (``request_id``, ``row``, ``time``, ``prediction``) with a ``label``
    column where feedback exists, keeping only labelled rows.

    A label with a ``row`` applies to that row of its request; one without applies to
    every row of the request; a row label beats a request label, and newer beats older.
    """
    if feedback.num_rows == 0 or predictions.num_rows == 0:
        empty = predictions.slice(0, 0)
        return empty.append_column("label", pa.array([], pa.string()))
    labels = _label_values(feedback)
    newest_first = pc.sort_indices(feedback, sort_keys=[("time", "descending")])
    fb = pa.table(
        {
            "request_id": feedback.column("request_id"),
            "row": feedback.column("row"),
            "label": labels,
        }
    ).take(newest_first)
    by_row = _first_per_key(fb.filter(pc.is_valid(fb.column("row"))), ["request_id", "row"])
    by_request = _first_per_key(
        fb.filter(pc.is_null(fb.column("row"))).drop_columns(["row"]), ["request_id"]
    )
    joined = predictions.join(by_row, ["request_id", "row"], join_type="left outer")
    joined = joined.join(
        by_request.rename_columns(["request_id", "request_label"]),
        "request_id",
        join_type="left outer",
    )
    label = pc.coalesce(joined.column("label"), joined.column("request_label"))
    joined = joined.drop_columns(["label", "request_label"]).append_column("label", label)
    joined = joined.filter(pc.is_valid(joined.column("label")))
    # Joins do not keep order: sort by time (ties by request and row, so it is deterministic).
    order = [("time", "ascending"), ("request_id", "ascending"), ("row", "ascending")]
    return joined.take(pc.sort_indices(joined, sort_keys=order))


def _first_per_key(table: pa.Table, keys: list[str]) -> pa.Table:
    """The first row of each key (the table is newest first): Arrow's ordered ``first``."""
    if table.num_rows == 0:
        return table
    others = [c for c in table.column_names if c not in keys]
    grouped = table.group_by(keys, use_threads=False).aggregate([(c, "first") for c in others])
    columns = {c: grouped.column(f"{c}_first") for c in others}
    columns.update({k: grouped.column(k) for k in keys})
    return pa.table(columns).select(table.column_names)


def _label_values(feedback: pa.Table) -> pa.Array:
    """Labels as text: a number's value, or a JSON string without its quotes."""
    numbers = feedback.column("label_num")
    text = feedback.column("label")
    quoted = pc.and_(pc.starts_with(text, '"'), pc.ends_with(text, '"'))
    unquoted = pc.if_else(quoted, pc.utf8_slice_codeunits(text, 1, -1), text)
    as_number = pc.cast(numbers, pa.string())
    return pc.if_else(
        pc.is_valid(numbers), _plain_numbers(numbers, as_number), unquoted
    ).combine_chunks()


def _plain_numbers(numbers: Any, as_text: Any) -> Any:
    # 1.0 and 1 are the same class: spell whole numbers without the decimal point.
    whole = pc.equal(numbers, pc.floor(numbers))
    return pc.if_else(
        whole, pc.cast(pc.cast(numbers, pa.int64(), safe=False), pa.string()), as_text
    )


def window_quality(
    labelled: pa.Table,
    detector: PageHinkley | None = None,
    *,
    task: str,
    classes: Sequence[Any] | None = None,
) -> WindowQuality | None:
    """Metrics of a window's labelled predictions (``prediction`` and ``label`` columns).

    Args:
        labelled: what :func:`join_labels` returned.
        detector: for regression, its ``scale`` is fixed from the first errors it ever sees.
        task: ``classification`` or ``regression``: the model version's, never guessed.
        classes: a classifier's class labels, as it records them: F1 is taken over
            them (binary F1 for the second of two, macro otherwise).

    Returns:
        ``None`` when nothing is labelled.

    Raises:
        InvalidInput: ``task`` is not one of :data:`TASKS`.
    """
    from keel.checks.metrics import classification_metrics, regression_metrics

    if task not in TASKS:
        raise InvalidInput(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if labelled.num_rows == 0:
        return None
    prediction = labelled.column("prediction")
    if task == "regression":
        truth = _numbers(labelled.column("label"))
        guess = _numbers(prediction)
        scored = ~(np.isnan(truth) | np.isnan(guess))
        excluded: dict[str, int] = {}
        if not scored.all():
            excluded["label or prediction is not a number"] = int((~scored).sum())
        truth, guess = truth[scored], guess[scored]
        if not len(truth):
            return WindowQuality(task, 0, {}, np.empty(0), scored, excluded)
        metrics = regression_metrics(truth, guess)
        errors = np.abs(guess - truth)
        if detector is not None and detector.n == 0 and detector.scale == 1.0:
            head = errors[:_SCALE_WARMUP]
            mean = float(head.mean()) if len(head) else 0.0
            detector.scale = mean if mean > 0 else 1.0
        return WindowQuality(task, len(truth), metrics, errors, scored, excluded)
    # Classes compare as text, spelled as the labels are (1.0 and 1 are one class).
    truth_text = labelled.column("label").to_numpy(zero_copy_only=False).astype(str)
    guess_text = _text(prediction)
    known = None if classes is None else _text(pa.array(list(classes)))
    metrics = classification_metrics(truth_text, guess_text, classes=known)
    errors = (truth_text != guess_text).astype(np.float64)
    return WindowQuality(task, labelled.num_rows, metrics, errors, np.ones(len(errors), bool))


def _numbers(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Values as floats; what is not a number (text, null) becomes NaN."""
    values = _as_floats(column)
    if values is not None:
        return values
    import pandas as pd

    text = pc.cast(column, pa.string()).to_numpy(zero_copy_only=False)
    return np.asarray(pd.to_numeric(pd.Series(text), errors="coerce"), dtype=np.float64)


def _as_floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    try:
        values = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def _text(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Class values as text, spelled as labels are: whole numbers without ``.0``,
    booleans as ``1``/``0`` (feedback stores a ``true`` label as the number 1)."""
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int64())
    if pa.types.is_floating(column.type):
        numbers = pc.cast(column, pa.float64())
        return np.asarray(
            _plain_numbers(numbers, pc.cast(numbers, pa.string())).to_numpy(zero_copy_only=False)
        ).astype(str)
    return np.asarray(pc.cast(column, pa.string()).to_numpy(zero_copy_only=False)).astype(str)
