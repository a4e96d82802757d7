"""Data: datasets, their versions, a version's schema and profile, and diffs between versions.

The pages call the data part of the caller's client
(:func:`keel.data.client.data_part`), as the API's data routes do, and check
what those check: ``read`` on some resource (datasets have no scope of their
own). A version's page draws the stored profile: per column its counts and
statistics, and its histogram as small bars; the diff page draws
:func:`keel.data.compare.compare_versions`.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse

from keel.data.client import DataClient, data_part
from keel.data.compare import compare_versions
from keel.data.profiling.profiles import NumericColumn, Profile, rebin
from keel.errors import InvalidInput, KeelError
from keel.server.context import Caller
from keel.server.ui.render import PageCaller, failed, render
from keel.validation import MAX_NAME_CHARS

__all__ = ["histogram", "router"]

#: Bars a numeric column's histogram is drawn with.
BARS = 24
#: Categories a categorical column's chart shows (the most frequent).
TOP = 10

router = APIRouter(include_in_schema=False)

DatasetName = Annotated[str, Path(max_length=MAX_NAME_CHARS)]


def _data(caller: Caller) -> DataClient:
    # what the API's data routes check first (keel.server.routes.data)
    caller.require_somewhere("read", "reading datasets needs it")
    return data_part(caller.client.transport)


def _version_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"a dataset version is a number from 1, got {text!r}")
    return int(text)


def histogram(column: NumericColumn, bars: int = BARS) -> list[dict[str, Any]]:
    """``column``'s histogram on ``bars`` equal-width bins from its min to its max.

    The stored bins hold equal shares of the rows (their widths differ), so drawn as
    they are every bar would be as tall; re-binned on equal widths a bar's height is
    the density people expect. Each bar: ``low``, ``high``, ``count``, ``height`` (0 to 100).
    """
    if column.count == 0:
        return []
    low, high = column.min, column.max
    if not high > low:
        return [{"low": low, "high": high, "count": column.count, "height": 100.0}]
    edges = np.linspace(low, high, bars + 1)
    moved = rebin(column, edges)
    # nothing lies below the min or above the max: what re-binning puts there (the share
    # of the outermost stored bins beyond the edges) belongs to the outermost bars
    counts = moved[1:-1].copy()
    counts[0] += moved[0]
    counts[-1] += moved[-1]
    top = max(int(counts.max()), 1)
    return [
        {
            "low": float(edges[i]),
            "high": float(edges[i + 1]),
            "count": int(counts[i]),
            "height": 100.0 * int(counts[i]) / top,
        }
        for i in range(bars)
    ]


def _columns(doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per column: its summary, kind-specific counts, and what to draw."""
    if doc is None:
        return []
    profile = Profile.from_dict(doc)
    shown = []
    for name, column in profile.columns.items():
        entry: dict[str, Any] = {"name": name, **column.summary()}
        if isinstance(column, NumericColumn):
            entry["count"] = column.count
            entry["infinite"] = column.infinite
            entry["bars"] = histogram(column)
        else:
            entry["count"] = column.count
            top = list(column.categories.items())[:TOP]
            most = max((c for _, c in top), default=1)
            entry["bars"] = [{"value": v, "count": c, "width": 100.0 * c / most} for v, c in top]
            entry["other"] = column.other + sum(c for _, c in list(column.categories.items())[TOP:])
        shown.append(entry)
    return shown


@router.get("/data")
def datasets_page(caller: PageCaller) -> HTMLResponse:
    """Every dataset with its latest version and how many versions it has."""
    try:
        data = _data(caller)
        latest = data.list_datasets()
        counts = {v.name: len(data.list_versions(v.name)) for v in latest}
    except KeelError as exc:
        return failed(exc)
    return render("data.html", title="Data", user=caller.user, datasets=latest, counts=counts)


@router.get("/data/{name}")
def dataset_page(name: DatasetName, caller: PageCaller) -> HTMLResponse:
    """A dataset's versions, newest first: digest, time, rows, files and the run that made it."""
    try:
        versions = _data(caller).list_versions(name)
    except KeelError as exc:
        return failed(exc)
    return render(
        "dataset.html", title=f"Dataset {name}", user=caller.user, dataset=name,
        versions=list(reversed(versions)),
    )  # fmt: skip


@router.get("/data/{name}/versions/{number}")
def version_page(name: DatasetName, number: str, caller: PageCaller) -> HTMLResponse:
    """A version's facts, schema and profile (per-column statistics with histograms)."""
    try:
        data = _data(caller)
        ref = f"{name}@{_version_number(number)}"
        version = data.get_version(ref)
        profile = data.get_profile(ref)
    except KeelError as exc:
        return failed(exc)
    return render(
        "dataset_version.html",
        title=version.uri,
        user=caller.user,
        version=version,
        rows=None if profile is None else profile["rows"],
        skipped=(profile or {}).get("skipped") or {},
        columns=_columns(profile),
    )


@router.get("/data/{name}/diff")
def diff_page(
    name: DatasetName,
    caller: PageCaller,
    a: Annotated[str | None, Query(max_length=20)] = None,
    b: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    """What changed from version ``a`` to version ``b``: files, schema, rows and statistics.

    Without ``a`` and ``b`` it compares the two newest versions.
    """
    try:
        data = _data(caller)
        if a is None or b is None:
            versions = data.list_versions(name)
            if len(versions) < 2 and (a is None and b is None):
                raise InvalidInput(
                    f"dataset {name!r} has one version only; there is nothing to compare"
                )
            newest = versions[-1].version
            a = a if a is not None else str(newest - 1 if b is None else 1)
            b = b if b is not None else str(newest)
        first, second = _version_number(a), _version_number(b)
        found = compare_versions(data, f"{name}@{first}", f"{name}@{second}")
    except KeelError as exc:
        return failed(exc)
    return render(
        "dataset_diff.html",
        title=f"{name}: {first} → {second}",
        user=caller.user,
        dataset=name,
        diff=found,
        changed=[c for c in found.columns if c.changed],
        unchanged=[c.column for c in found.columns if not c.changed],
    )
