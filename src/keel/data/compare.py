"""Comparing two dataset versions: their files, their schemas and their profiles.

:func:`keel.data.diff` lists the files added, removed and changed between two
versions; for table versions people also want to know how the *table* moved:
columns added, dropped or retyped, and for each column in both, how its
statistics shifted (rows, missing values, mean, min and max, distinct values).
:func:`compare_versions` answers all three from what the catalog stores (the
manifests and the profiles), without reading a row of data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from keel.data.catalog import DatasetVersion
from keel.data.client import DataClient
from keel.data.manifest import Diff, diff_manifests, read_manifest
from keel.data.profiling.profiles import CategoricalColumn, NumericColumn, Profile

__all__ = ["ColumnShift", "SchemaChange", "VersionComparison", "compare_versions"]


@dataclass(frozen=True)
class SchemaChange:
    """A column added, removed or whose type changed from one version to the next."""

    column: str
    change: str  # "added", "removed" or "retyped"
    old_type: str | None = None
    new_type: str | None = None


@dataclass(frozen=True)
class ColumnShift:
    """How one column's statistics moved (``old`` and ``new`` are the profiles' summaries).

    Attributes:
        column: the column's name.
        kind: ``numeric`` or ``categorical`` (in the newer version).
        old: the older version's summary (``rows``, ``missing``, ``min`` …), or None if absent.
        new: the newer version's summary, or None if absent.
        mean_shift_sd: numeric columns: the mean's move in the older version's standard
            deviations (None when it cannot be told).
        new_values: categorical columns: values the newer version has and the older had not
            (only when the older version's value counts are complete).
    """

    column: str
    kind: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    mean_shift_sd: float | None = None
    new_values: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether any statistic differs."""
        return self.old != self.new


@dataclass(frozen=True)
class VersionComparison:
    """What changed from version ``a`` to version ``b`` (see :func:`compare_versions`)."""

    a: DatasetVersion
    b: DatasetVersion
    files: Diff
    schema: list[SchemaChange]
    columns: list[ColumnShift]

    @property
    def rows_added(self) -> int | None:
        """``b``'s rows minus ``a``'s, for table versions."""
        if self.a.num_rows is None or self.b.num_rows is None:
            return None
        return self.b.num_rows - self.a.num_rows


def _schema_changes(
    old: list[dict[str, Any]] | None, new: list[dict[str, Any]] | None
) -> list[SchemaChange]:
    before = {c["name"]: str(c["type"]) for c in old or []}
    after = {c["name"]: str(c["type"]) for c in new or []}
    changes = [SchemaChange(n, "removed", old_type=t) for n, t in before.items() if n not in after]
    for name, kind in after.items():
        if name not in before:
            changes.append(SchemaChange(name, "added", new_type=kind))
        elif before[name] != kind:
            changes.append(SchemaChange(name, "retyped", before[name], kind))
    return changes


def _shift(name: str, old: Any, new: Any) -> ColumnShift:
    present = new if new is not None else old
    shift: float | None = None
    new_values: list[str] = []
    if isinstance(old, NumericColumn) and isinstance(new, NumericColumn):
        if old.count and new.count and old.std > 0:
            moved = (new.mean - old.mean) / old.std
            shift = moved if math.isfinite(moved) else None
    elif (
        isinstance(old, CategoricalColumn)
        and isinstance(new, CategoricalColumn)
        and old.other == 0  # the older counts are complete: a value missing there is new
    ):
        new_values = [v for v in new.categories if v not in old.categories][:20]
    return ColumnShift(
        name,
        present.kind,
        None if old is None else old.summary(),
        None if new is None else new.summary(),
        shift,
        new_values,
    )


def compare_versions(data: DataClient, a: str, b: str) -> VersionComparison:
    """How version ``b`` differs from version ``a`` (references such as ``churn@1``).

    Args:
        data: the data part of a client (``data_part(client.transport)``).
        a: the older version.
        b: the newer version.

    Raises:
        NotFound: a reference names no version.
    """
    old, new = data.get_version(a), data.get_version(b)
    files = diff_manifests(
        read_manifest(data.artifacts, old.digest, None),
        read_manifest(data.artifacts, new.digest, None),
    )
    old_doc, new_doc = data.get_profile(a), data.get_profile(b)
    columns: list[ColumnShift] = []
    if old_doc is not None or new_doc is not None:
        before = Profile.from_dict(old_doc).columns if old_doc is not None else {}
        after = Profile.from_dict(new_doc).columns if new_doc is not None else {}
        for name in dict.fromkeys([*after, *before]):
            columns.append(_shift(name, before.get(name), after.get(name)))
    return VersionComparison(old, new, files, _schema_changes(old.schema, new.schema), columns)
