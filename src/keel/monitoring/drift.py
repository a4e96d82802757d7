"""``compare``: data drift, prediction drift and data-quality checks between two tables.

::

    report = keel.monitoring.compare("train.parquet", "last_week.parquet")
    report.dataset_drift, report.share_drifted
    report.columns["age"].method, report.columns["age"].statistic
    report.to_html("drift.html")

The reference is profiled first (two passes over a file, in bounded
memory); the current data is then profiled on the reference's bin edges, so
every numeric test compares two histograms bin for bin. Each column gets
the default method for its kind and the sample sizes
(:func:`keel.monitoring.stattests.default_method`) unless ``overrides`` (or
``method``) says otherwise. The dataset drifts when the share of drifted
feature columns reaches ``drift_share``. Columns named ``output.*`` (or
listed in ``prediction_columns``) are predictions: tested the same way,
reported as prediction drift, and left out of the share.

Data-quality checks run beside the tests: columns missing or new, a type
that changed, missing values up by more than 5 points, numbers outside the
reference's range, infinities, new and vanished categories.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from keel.data.profiling.build import ProgressCallback, profile
from keel.data.profiling.profiles import CategoricalColumn, ColumnProfile, NumericColumn, Profile
from keel.errors import InvalidInput
from keel.monitoring import stattests

__all__ = ["ColumnDrift", "DriftReport", "Issue", "compare"]

#: Default share of drifted feature columns at which the whole dataset counts as drifted.
DRIFT_SHARE = 0.5
MISSING_INCREASE = 0.05
OUT_OF_RANGE_SHARE = 0.01
PREDICTION_PREFIX = "output."

Severity = Literal["fail", "warn"]


@dataclass
class ColumnDrift:
    """One column's drift verdict.

    Attributes:
        statistic: the p-value for ``ks``/``chisquare`` (drift when below
            ``threshold``), the distance for the others (drift at or above it).
        role: ``feature`` or ``prediction``.
        details: method numbers and effect sizes (KS's D, mean shift in SDs,
            new and vanished categories …).
        plot: both distributions on common bins, for the HTML report.
    """

    name: str
    kind: str
    role: str
    method: str
    statistic: float
    threshold: float
    drifted: bool
    p_value: float | None = None
    reference_count: int = 0
    current_count: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    plot: dict[str, Any] | None = None

    @property
    def tested(self) -> bool:
        """Whether both sides had values to test."""
        return not math.isnan(self.statistic)

    @property
    def statistic_kind(self) -> str:
        """``p-value`` (drift when below the threshold) or ``distance`` (at or above it)."""
        return "p-value" if self.method in stattests.TESTS else "distance"

    @property
    def drift_rule(self) -> str:
        """When the column drifts, with the threshold in force: ``p-value < 0.01`` …"""
        op = "<" if self.statistic_kind == "p-value" else "≥"
        return f"{self.statistic_kind} {op} {self.threshold:g}"

    def to_dict(self, detail: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "drifted": self.drifted,
            "method": self.method,
            "statistic": _json_float(self.statistic),
            "statistic_kind": self.statistic_kind,
            "threshold": self.threshold,
            "p_value": _json_float(self.p_value),
            "kind": self.kind,
            "role": self.role,
            "reference_count": self.reference_count,
            "current_count": self.current_count,
            "details": {k: _json_float(v) for k, v in self.details.items()},
        }
        if detail and self.plot is not None:
            doc["plot"] = self.plot
        return doc

    @classmethod
    def from_dict(cls, name: str, doc: Mapping[str, Any]) -> ColumnDrift:
        statistic = doc.get("statistic")
        return cls(
            name=name,
            kind=doc["kind"],
            role=doc.get("role", "feature"),
            method=doc["method"],
            statistic=math.nan if statistic is None else float(statistic),
            threshold=float(doc["threshold"]),
            drifted=bool(doc["drifted"]),
            p_value=doc.get("p_value"),
            reference_count=int(doc.get("reference_count", 0)),
            current_count=int(doc.get("current_count", 0)),
            details=dict(doc.get("details") or {}),
            plot=doc.get("plot"),
        )


@dataclass(frozen=True)
class Issue:
    """A data-quality finding: ``fail`` needs attention, ``warn`` is worth a look."""

    check: str
    severity: Severity
    message: str
    column: str | None = None
    value: float | None = None
    limit: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "column": self.column,
            "value": _json_float(self.value),
            "limit": self.limit,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Issue:
        return cls(
            doc["check"],
            doc["severity"],
            doc["message"],
            doc.get("column"),
            doc.get("value"),
            doc.get("limit"),
        )


@dataclass
class DriftReport:
    """The result of :func:`compare`.

    Attributes:
        columns: column name → :class:`ColumnDrift`, in the reference's order.
        drift_share: the share of drifted feature columns that makes ``dataset_drift``.
        issues: data-quality findings, failures first.
        skipped: columns not tested, with the reason.
    """

    columns: dict[str, ColumnDrift]
    drift_share: float
    reference_rows: int
    current_rows: int
    issues: list[Issue] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def features(self) -> list[ColumnDrift]:
        """Tested feature columns (the share's denominator)."""
        return [c for c in self.columns.values() if c.role == "feature" and c.tested]

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, c in self.columns.items() if c.drifted]

    @property
    def share_drifted(self) -> float:
        """Drifted feature columns over tested feature columns (0 when none was tested)."""
        features = self.features
        return sum(c.drifted for c in features) / len(features) if features else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.features) and self.share_drifted >= self.drift_share

    @property
    def prediction_drift(self) -> bool | None:
        """Whether any prediction column drifted; ``None`` when there were none to test."""
        predictions = [c for c in self.columns.values() if c.role == "prediction" and c.tested]
        return any(c.drifted for c in predictions) if predictions else None

    @property
    def failed_checks(self) -> list[Issue]:
        """The data-quality findings of severity ``fail``."""
        return [i for i in self.issues if i.severity == "fail"]

    @property
    def quality_ok(self) -> bool:
        """Whether no data-quality check failed (``keel drift --fail-on-quality``)."""
        return not self.failed_checks

    def to_dict(self, detail: bool = False) -> dict[str, Any]:
        """The JSON shape ``keel drift --json`` prints; ``detail`` adds the plot data."""
        return {
            "dataset_drift": self.dataset_drift,
            "share_drifted": self.share_drifted,
            "drift_share": self.drift_share,
            "number_of_columns": len(self.features),
            "number_drifted": sum(c.drifted for c in self.features),
            "drifted_columns": self.drifted_columns,
            "prediction_drift": self.prediction_drift,
            "quality_ok": self.quality_ok,
            "failed_checks": len(self.failed_checks),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "columns": {n: c.to_dict(detail) for n, c in self.columns.items()},
            "issues": [i.to_dict() for i in self.issues],
            "skipped": dict(self.skipped),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DriftReport:
        """Read what :meth:`to_dict` wrote (a stored monitor report, say)."""
        return cls(
            columns={n: ColumnDrift.from_dict(n, c) for n, c in doc["columns"].items()},
            drift_share=float(doc["drift_share"]),
            reference_rows=int(doc["reference_rows"]),
            current_rows=int(doc["current_rows"]),
            issues=[Issue.from_dict(i) for i in doc.get("issues", [])],
            skipped=dict(doc.get("skipped") or {}),
        )

    def to_html(self, path: str | os.PathLike[str], title: str | None = None) -> None:
        """Write the self-contained HTML report (see :func:`keel.monitoring.write_html`)."""
        from keel.monitoring.report import write_html

        write_html(self, path, title=title)

    def __repr__(self) -> str:
        return (
            f"<DriftReport dataset_drift={self.dataset_drift} "
            f"share_drifted={self.share_drifted:.3f} drifted={self.drifted_columns} "
            f"failed_checks={len(self.failed_checks)}>"
        )


def _json_float(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# -- compare ------------------------------------------------------------------------------------


def compare(
    reference: Any,
    current: Any,
    *,
    columns: Sequence[str] | None = None,
    overrides: Mapping[str, str | Mapping[str, Any]] | None = None,
    method: str | None = None,
    threshold: float | None = None,
    drift_share: float = DRIFT_SHARE,
    prediction_columns: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    executor: str = "local",
    progress: ProgressCallback | None = None,
) -> DriftReport:
    """Compare ``current`` with ``reference``, column by column.

    Args:
        reference: a :class:`Profile`, or data :func:`~keel.monitoring.profile` reads
            (DataFrame, Arrow table, Parquet/CSV path).
        current: the same kinds; data is profiled on the reference's bin edges.
        columns: the columns to compare (default: every column of the reference).
        overrides: per column, a method name or ``{"method": ..., "threshold": ...}``.
        method: one method for every column it applies to (others keep their default).
        threshold: the threshold for ``method`` (needs ``method``: a p-value and a
            distance are not on one scale).
        drift_share: share of drifted feature columns that makes the dataset drift.
        prediction_columns: columns holding model outputs (default: names ``output.*``).
        categorical: numeric columns to treat as categories.
        executor: ``local`` or ``ray`` (large Parquet inputs, split by row group).
        progress: ``progress(stage, rows_done, total)`` after each chunk read.

    Raises:
        InvalidInput: an unknown column or method, a method that does not fit a
            column's kind, a threshold out of range, an unreadable input.
    """
    _check_share(drift_share)
    if threshold is not None and method is None:
        raise InvalidInput(
            "threshold= needs method=: a p-value threshold and a distance threshold are "
            "different things. Set both, or use overrides= per column"
        )
    if method is not None and method not in stattests.METHODS:
        raise InvalidInput(
            f"unknown drift method {method!r}; use one of {', '.join(sorted(stattests.METHODS))}"
        )
    if threshold is not None:
        _check_threshold(method or "", threshold, "threshold")
    ref = profile(
        reference, columns=columns, categorical=categorical, executor=executor, progress=progress
    )
    if columns is not None:
        ref = ref.select(columns)
    wanted = ref.names
    plan = _plan(ref, overrides or {}, method, threshold)
    cur, new_columns = _profile_current(current, ref, wanted, columns, executor, progress)
    roles = _roles(wanted, prediction_columns)

    results: dict[str, ColumnDrift] = {}
    issues: list[Issue] = []
    skipped = dict(ref.skipped)
    for name in wanted:
        ref_col = ref.columns[name]
        cur_col = cur.columns.get(name)
        if cur_col is None and cur.rows == 0 and name in cur.skipped:
            # No rows, so no type to compare (a header-only CSV reads as text): "empty" says it.
            skipped[name] = "no rows in the current data"
            continue
        if cur_col is None:
            reason = cur.skipped.get(name)
            if reason is None:
                issues.append(
                    Issue(
                        "missing_column", "fail", f"{name!r} is missing from the current data", name
                    )
                )
                skipped[name] = "missing from the current data"
            else:
                issues.append(Issue("type_change", "fail", f"{name!r}: {reason}", name))
                skipped[name] = reason
            continue
        results[name] = _test_column(ref_col, cur_col, roles[name], plan.get(name))
        issues.extend(_quality(ref_col, cur_col))
    for name in new_columns:
        issues.append(
            Issue(
                "new_column", "warn", f"{name!r} is in the current data but not the reference", name
            )
        )
    if cur.rows == 0:
        issues.append(Issue("empty", "fail", "the current data has no rows"))
    issues.sort(key=lambda i: (i.severity != "fail", i.column or "", i.check))
    return DriftReport(results, drift_share, ref.rows, cur.rows, issues, skipped)


def _profile_current(
    current: Any,
    ref: Profile,
    wanted: list[str],
    columns: Sequence[str] | None,
    executor: str,
    progress: ProgressCallback | None,
) -> tuple[Profile, list[str]]:
    if isinstance(current, Profile):
        present = [c for c in wanted if c in current.columns or c in current.skipped]
        new = [] if columns is not None else [c for c in current.columns if c not in ref.columns]
        selected = Profile(
            current.rows,
            {c: current.columns[c] for c in present if c in current.columns},
            {c: r for c, r in current.skipped.items() if c in wanted},
        )
        return selected, new
    from keel.data.profiling.sources import open_source

    source = open_source(current)
    available = set(source.columns)
    present = [c for c in wanted if c in available]
    new = [] if columns is not None else [c for c in source.columns if c not in ref.columns]
    new = [c for c in new if c not in ref.skipped]
    cur = profile(source, columns=present, bins_from=ref, executor=executor, progress=progress)
    return cur, new


def _roles(names: list[str], prediction_columns: Sequence[str] | None) -> dict[str, str]:
    if prediction_columns is None:
        return {n: "prediction" if n.startswith(PREDICTION_PREFIX) else "feature" for n in names}
    given = [prediction_columns] if isinstance(prediction_columns, str) else prediction_columns
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise InvalidInput(
            f"prediction_columns names {', '.join(map(repr, unknown))}, which the reference "
            f"does not have; its columns are {', '.join(names)}"
        )
    return {n: "prediction" if n in given else "feature" for n in names}


def _check_share(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise InvalidInput(f"drift_share must be a number in (0, 1], got {value!r}")


def _check_threshold(method: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidInput(f"{where} must be a positive number, got {value!r}")
    if method in stattests.TESTS and not value < 1:
        raise InvalidInput(
            f"{where} of {method!r} is a p-value (the false-alarm rate), so it must be "
            f"between 0 and 1, got {value!r}"
        )
    return float(value)


def _plan(
    ref: Profile,
    overrides: Mapping[str, str | Mapping[str, Any]],
    method: str | None,
    threshold: float | None,
) -> dict[str, tuple[str, float | None]]:
    """Per column, the (method, threshold) chosen by the caller; absent means the default."""
    if not isinstance(overrides, Mapping):
        raise InvalidInput(
            "overrides must map column names to a method or {'method': ..., 'threshold': ...}, "
            f"got {type(overrides).__name__}"
        )
    plan: dict[str, tuple[str, float | None]] = {}
    if method is not None:
        for name, col in ref.columns.items():
            if col.kind in stattests.METHODS[method]:
                plan[name] = (method, threshold)
    for name, spec in overrides.items():
        col = ref[name]
        if isinstance(spec, str):
            spec = {"method": spec}
        if not isinstance(spec, Mapping) or not set(spec) <= {"method", "threshold"}:
            raise InvalidInput(
                f"override for {name!r} must be a method name or a dict with 'method' and/or "
                f"'threshold', got {spec!r}"
            )
        chosen = spec.get("method") or plan.get(name, (None, None))[0]
        if chosen is None:  # a threshold alone applies to the default method, whatever n is
            raise InvalidInput(
                f"override for {name!r} gives a threshold without a method; name the method "
                "it belongs to (a p-value and a distance differ)"
            )
        stattests.check_method(str(chosen), col.kind, name)
        limit = spec.get("threshold")
        plan[name] = (
            str(chosen),
            None
            if limit is None
            else _check_threshold(str(chosen), limit, f"threshold of {name!r}"),
        )
    return plan


def _test_column(
    ref: ColumnProfile, cur: ColumnProfile, role: str, chosen: tuple[str, float | None] | None
) -> ColumnDrift:
    method, limit = chosen or (stattests.default_method(ref.kind, ref.count, cur.count), None)
    threshold = stattests.DEFAULT_THRESHOLDS[method] if limit is None else limit
    if ref.count == 0 or cur.count == 0:
        side = "reference" if ref.count == 0 else "current data"
        return ColumnDrift(
            ref.name,
            ref.kind,
            role,
            method,
            math.nan,
            threshold,
            False,
            None,
            ref.count,
            cur.count,
            {"reason": f"no values in the {side}"},
        )
    result = stattests.run_test(method, ref, cur, threshold)
    return ColumnDrift(
        ref.name,
        ref.kind,
        role,
        result.method,
        result.statistic,
        result.threshold,
        result.drifted,
        result.p_value,
        ref.count,
        cur.count,
        {**result.details, **stattests.describe_shift(ref, cur)},
        stattests.plot_data(ref, cur),
    )


def _quality(ref: ColumnProfile, cur: ColumnProfile) -> list[Issue]:
    issues: list[Issue] = []
    name = ref.name
    if cur.rows:
        ref_share = ref.missing / ref.rows if ref.rows else 0.0
        cur_share = cur.missing / cur.rows
        if cur_share - ref_share > MISSING_INCREASE:
            issues.append(
                Issue(
                    "missing_share",
                    "fail",
                    f"{name!r}: {cur_share:.1%} of values are missing, "
                    f"{ref_share:.1%} in the reference",
                    name,
                    cur_share,
                    round(ref_share + MISSING_INCREASE, 6),
                )
            )
    if isinstance(ref, NumericColumn) and isinstance(cur, NumericColumn) and cur.count:
        outside = int(cur.counts[0] + cur.counts[-1]) if ref.count else 0
        share = outside / cur.count
        # Beyond the reference's extremes by chance: about 2/(n+1) of new values.
        limit = max(OUT_OF_RANGE_SHARE, 10 / (ref.count + 1))
        if share > limit:
            issues.append(
                Issue(
                    "out_of_range",
                    "fail",
                    f"{name!r}: {share:.1%} of values fall outside the reference's range "
                    f"[{ref.min:.6g}, {ref.max:.6g}] (current range [{cur.min:.6g}, {cur.max:.6g}])",
                    name,
                    share,
                    limit,
                )
            )
        if cur.infinite and not ref.infinite:
            issues.append(
                Issue(
                    "infinite",
                    "warn",
                    f"{name!r}: {cur.infinite} infinite value(s); the reference had none",
                    name,
                    float(cur.infinite),
                )
            )
    if isinstance(ref, CategoricalColumn) and isinstance(cur, CategoricalColumn):
        shift = stattests.describe_shift(ref, cur)
        new = shift.get("new_categories")
        if new:
            shown = ", ".join(repr(v) for v in list(new)[:5])
            issues.append(
                Issue(
                    "new_categories",
                    "warn",
                    f"{name!r}: {len(new)} value(s) the reference never had ({shown}"
                    f"{', …' if len(new) > 5 else ''}), {shift['new_share']:.1%} of rows",
                    name,
                    shift["new_share"],
                )
            )
        vanished = shift.get("vanished_categories")
        if vanished:
            shown = ", ".join(repr(v) for v in vanished[:5])
            issues.append(
                Issue(
                    "vanished_categories",
                    "warn",
                    f"{name!r}: {len(vanished)} common reference value(s) absent now ({shown})",
                    name,
                    float(len(vanished)),
                )
            )
    return issues
