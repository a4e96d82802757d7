"""Drift and quality over time: consecutive windows of a deployment's log, each against its reference.

:func:`drift_timeline` cuts ``[start, end)`` into windows of one length and
does for each what a monitor run does for its window, without storing
anything or moving an alert: it splits the rows by the model version that
served them, profiles each version's ``input.*`` and ``output.*`` columns on
the bin edges of that version's reference profile, and compares them with
:func:`keel.monitoring.drift.compare` under the deployment's monitor settings
(columns, per-column overrides, drift share). Each window shows the version
with the most drift (the monitor's headline), or the one version asked for.
Where labels arrived as feedback, each window's labelled rows are scored as the
served version's package records its task (:func:`keel.monitoring.quality.window_quality`).

One pass over the log: every batch is split by window and version, so memory
is one batch plus a profile (histograms and a bounded sample) per window and
version. Read-only, so a page may call it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from keel.client import Client
    from keel.data.profiling.profiles import Profile
    from keel.monitoring.drift import DriftReport
    from keel.monitoring.settings import MonitorSettings

__all__ = ["DEFAULT_WINDOWS", "MAX_WINDOWS", "DriftTimeline", "DriftWindow", "drift_timeline"]

#: Windows a timeline has when no window length is given.
DEFAULT_WINDOWS = 24
#: The most windows one timeline may have.
MAX_WINDOWS = 200
#: How far back a timeline without ``start`` looks for the log's first row.
LOOK_BACK_MS = 7 * 86_400_000


@dataclass
class DriftWindow:
    """One window of the timeline.

    Attributes:
        rows: prediction rows in the window (of every version, or of the one asked for).
        version: the ``model/N`` whose drift the window shows (``None``: none was compared).
        report: that version's drift against its reference.
        served: rows per ``model/N`` in the window.
        unreferenced: versions that served the window without a reference profile.
        quality: ``{"task", "rows", "metrics"}`` of the labelled rows, or ``None``.
    """

    start: int
    end: int
    rows: int = 0
    version: str | None = None
    report: DriftReport | None = None
    served: dict[str, int] = field(default_factory=dict)
    unreferenced: list[str] = field(default_factory=list)
    quality: dict[str, Any] | None = None


@dataclass
class DriftTimeline:
    """Consecutive windows of one length over ``[start, end)``, oldest first."""

    deployment: str
    start: int
    end: int
    window_ms: int
    version: int | None
    windows: list[DriftWindow]

    @property
    def columns(self) -> list[str]:
        """Every tested column of any window, features first, in the references' order."""
        names: dict[str, str] = {}
        for window in self.windows:
            if window.report is not None:
                for name, column in window.report.columns.items():
                    names.setdefault(name, column.role)
        return sorted(names, key=lambda n: names[n] != "feature")

    @property
    def labelled(self) -> bool:
        """Whether any window has labelled rows."""
        return any(w.quality for w in self.windows)


class _Served:
    """One version's rows in one window: a profile on its reference's edges, keys for labels."""

    def __init__(self, schema: pa.Schema, reference: Profile | None) -> None:
        from keel.data.profiling.build import Profiler
        from keel.models.reference import INPUT_PREFIX, OUTPUT_PREFIX

        logged = [n for n in schema.names if n.startswith((INPUT_PREFIX, OUTPUT_PREFIX))]
        self.profiler = Profiler(schema, columns=logged, bins_from=reference)
        self.keys: list[pa.Table] = []


def drift_timeline(
    deployment: str,
    client: Client,
    *,
    start: Any = None,
    end: Any = None,
    window: Any = None,
    version: int | None = None,
) -> DriftTimeline:
    """Drift (and quality, once labelled) of each window of the deployment's log.

    Args:
        deployment: whose logs to read.
        client: a client with its own store and artifact root (``caller.client`` on a server).
        start: the first window's start (default: the first row of the last 7 days,
            rounded down to a whole window).
        end: the exclusive end (default: just after the last row).
        window: each window's length, as :func:`keel.monitoring.parse_window` reads it
            (default: the span cut into :data:`DEFAULT_WINDOWS`, in whole seconds).
        version: show only the rows this model version served.

    Raises:
        InvalidInput: a malformed name, bound, window or version; more than
            :data:`MAX_WINDOWS` windows.
        NotFound: no such deployment (see :mod:`keel.monitoring.names`).
        StorageError, BackendUnavailable: the logs cannot be read.
    """
    from keel.monitoring.names import require_deployment
    from keel.monitoring.settings import get_monitor_settings, parse_window
    from keel.predictions import PredictionReader, check_deployment, to_ms
    from keel.store.sql import now_ms

    check_deployment(deployment)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise InvalidInput(f"version must be a whole number of at least 1, got {version!r}")
    span = parse_window(window) if window is not None else None
    start_ms, end_ms = to_ms(start, "start"), to_ms(end, "end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise InvalidInput(f"end ({end!r}) must come after start ({start!r})")
    require_deployment(deployment, client)
    conf = client.settings
    reader = PredictionReader(conf.artifacts_url, s3_endpoint_url=conf.s3_endpoint_url)
    if start_ms is None or end_ms is None:
        first, last = _time_span(reader, deployment, start_ms, end_ms, now_ms())
        if first is None or last is None:  # no rows: one empty window says so
            end_ms = end_ms if end_ms is not None else now_ms()
            start_ms = start_ms if start_ms is not None else end_ms - (span or 3_600_000)
            return DriftTimeline(
                deployment, start_ms, end_ms, end_ms - start_ms, version,
                [DriftWindow(start_ms, end_ms)],
            )  # fmt: skip
        end_ms = end_ms if end_ms is not None else last + 1
        if span is None:
            base = start_ms if start_ms is not None else first
            span = max(1_000, math.ceil((end_ms - base) / DEFAULT_WINDOWS / 1_000) * 1_000)
        if start_ms is None:
            start_ms = first - first % span  # windows on whole multiples of their length
    if span is None:
        span = max(1_000, math.ceil((end_ms - start_ms) / DEFAULT_WINDOWS / 1_000) * 1_000)
    count = math.ceil((end_ms - start_ms) / span)
    if count > MAX_WINDOWS:
        raise InvalidInput(
            f"a window of {span / 1000:g}s cuts {(end_ms - start_ms) / 1000:g}s of log into "
            f"{count} windows; at most {MAX_WINDOWS}: choose a longer window or a shorter range"
        )
    windows = [
        DriftWindow(start_ms + k * span, min(end_ms, start_ms + (k + 1) * span))
        for k in range(count)
    ]
    settings = get_monitor_settings(deployment, client=client)
    feedback = reader.feedback(deployment)
    facts = _Facts(client)
    served: dict[tuple[int, str, int], _Served] = {}
    for batch in reader.batches(deployment, start=start_ms, end=end_ms):
        if version is not None:
            batch = batch.filter(pc.equal(batch.column("version"), version))
        if not batch.num_rows:
            continue
        slot = pa.array((batch.column("time").cast(pa.int64()).to_numpy() - start_ms) // span)
        keyed = pa.table({"w": slot, "m": batch.column("model"), "v": batch.column("version")})
        groups = keyed.group_by(["w", "m", "v"]).aggregate([])
        for w, model, number in zip(
            *(groups.column(c).to_pylist() for c in ("w", "m", "v")), strict=True
        ):
            if model is None or number is None:
                continue
            mask = pc.and_(
                pc.equal(slot, w),
                pc.and_(
                    pc.equal(batch.column("model"), model),
                    pc.equal(batch.column("version"), number),
                ),
            )
            part = batch.filter(mask)
            entry = served.get((w, model, number))
            if entry is None:
                entry = served[(w, model, number)] = _Served(
                    batch.schema, facts.reference(model, number)
                )
            entry.profiler.add(part)
            if feedback.num_rows:
                entry.keys.append(_keys(part))
    for (w, model, number), entry in sorted(served.items()):
        label = f"{model}/{number}"
        target = windows[w]
        target.rows += entry.profiler.rows
        target.served[label] = entry.profiler.rows
        reference = facts.reference(model, number)
        if reference is None:
            if facts.registered(model, number):
                target.unreferenced.append(label)
            continue
        report = _compare(entry, reference, settings)
        shown = target.report
        if shown is None or (report.share_drifted, entry.profiler.rows) > (
            shown.share_drifted,
            target.served.get(target.version or "", 0),
        ):
            target.version, target.report = label, report
    if feedback.num_rows:
        for w, target in enumerate(windows):
            target.quality = _window_quality(
                [(m, v, e) for (k, m, v), e in served.items() if k == w], feedback, facts
            )
    return DriftTimeline(deployment, start_ms, end_ms, span, version, windows)


def _time_span(
    reader: Any, deployment: str, start: int | None, end: int | None, now: int
) -> tuple[int | None, int | None]:
    """The first and last row's time in the range (the last 7 days when it is open)."""
    low = start if start is not None else (end if end is not None else now) - LOOK_BACK_MS
    times = reader.read(deployment, start=low, end=end, columns=["time"]).column("time")
    if len(times) == 0:
        return None, None
    values = times.cast(pa.int64())
    return int(pc.min(values).as_py()), int(pc.max(values).as_py())


class _Facts:
    """What the registry says about each served version, asked once per version."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._facts: dict[tuple[str, int], tuple[bool, Profile | None, dict[str, Any] | None]] = {}

    def _get(self, model: str, version: int) -> tuple[bool, Profile | None, dict[str, Any] | None]:
        from keel.models.reference import pinned_metadata, recorded_task
        from keel.monitoring.reference import get_reference

        key = (model, version)
        if key not in self._facts:
            try:
                mv = self.client.get_model_version(model, version)
            except NotFound:  # a version deleted or never registered (a runs:/ URI served)
                self._facts[key] = (False, None, None)
            else:
                reference = get_reference(model, version, client=self.client)
                metadata = pinned_metadata(self.client.artifacts, mv.manifest_digest) or {}
                self._facts[key] = (True, reference, recorded_task(metadata))
        return self._facts[key]

    def registered(self, model: str, version: int) -> bool:
        return self._get(model, version)[0]

    def reference(self, model: str, version: int) -> Profile | None:
        return self._get(model, version)[1]

    def task(self, model: str, version: int) -> dict[str, Any] | None:
        return self._get(model, version)[2]


def _compare(entry: _Served, reference: Profile, settings: MonitorSettings) -> DriftReport:
    """The window's profile against the reference, as a monitor run compares them."""
    from keel.monitoring.monitor import compare_window

    return compare_window(entry.profiler.result(), reference, settings)


def _keys(part: pa.RecordBatch) -> pa.Table:
    """What labels join on, and the prediction they score."""
    from keel.models.reference import OUTPUT_PREFIX

    outputs = [n for n in part.schema.names if n.startswith(OUTPUT_PREFIX)]
    name = f"{OUTPUT_PREFIX}prediction" if f"{OUTPUT_PREFIX}prediction" in outputs else None
    name = name or (outputs[0] if outputs else None)
    prediction = part.column(name) if name else pa.nulls(part.num_rows)
    return pa.table(
        {
            "request_id": part.column("request_id"),
            "row": part.column("row"),
            "time": part.column("time"),
            "prediction": prediction,
        }
    )


def _window_quality(
    entries: list[tuple[str, int, _Served]], feedback: pa.Table, facts: _Facts
) -> dict[str, Any] | None:
    """Quality of the window's labelled rows, scored as the busiest version's task says."""
    from keel.monitoring.quality import join_labels, window_quality

    known = [(m, v, e) for m, v, e in entries if e.keys and facts.task(m, v) is not None]
    if not known:
        return None
    main = max(known, key=lambda item: item[2].profiler.rows)
    task = facts.task(main[0], main[1]) or {}
    scored = [
        (m, v, e) for m, v, e in known if (facts.task(m, v) or {}).get("type") == task["type"]
    ]
    classes: list[Any] | None = []
    for m, v, _ in scored:
        listed = (facts.task(m, v) or {}).get("classes")
        if listed is None or classes is None:
            classes = None
            continue
        classes.extend(c for c in listed if c not in classes)
    keys = pa.concat_tables([t for _, _, e in scored for t in e.keys], promote_options="permissive")
    labelled = join_labels(keys, feedback)
    measured = window_quality(labelled, None, task=str(task["type"]), classes=classes)
    if measured is None:
        return None
    doc = measured.to_dict()
    doc["metrics"] = {k: v for k, v in doc["metrics"].items() if v is not None and np.isfinite(v)}
    return doc
