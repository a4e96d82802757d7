"""Monitors on deployments: a window of prediction logs against the reference, as a time series.

:func:`run_monitor` reads the prediction logs of ``[end - window, end)``
batch by batch (only the hour partitions the window touches), splits the
rows by the model version that served them, and profiles each version's
``input.*`` and ``output.*`` columns on the bin edges of that version's
reference profile — one pass, memory bounded by a batch. It then compares
each version with its reference (data drift, prediction drift, data
quality), joins the labels sent as feedback to compute quality and feed the
change detector, stores one row in ``monitor_runs`` (the full report goes to
the artifact store), moves the alert rules (see :mod:`keel.monitoring.alerts`)
and sends what fired or resolved to the sinks.

Facts come from the model versions, never from the traffic: quality is
scored as the version's package records its task (a classifier and its
classes, or a regressor); labelled rows of a version that records none are
counted as excluded, not scored as a guess. A registered version served
without a reference profile is not compared; it raises the ``no_reference``
alert, which names the command that gives it one.

Settings are per deployment, stored and audited (see
:mod:`keel.monitoring.settings`); without any, the defaults apply.

A deployment that declares features also has its served feature values
compared with the offline store's at request time, on a sample of the window
(:mod:`keel.monitoring.skew`): the skew rate per feature is stored with the run
and alerts as ``skew:<view>:<feature>``.

A prompt deployment (``kind="prompt"``) has traces, not predictions: its
monitor runs measure error rate, latency, cost and tokens against its SLOs
instead (:mod:`keel.monitoring.llm`), stored and alerted the same way.

Through ``keel server`` a monitor runs on the server (one request,
:mod:`keel.server.routes.monitoring`): it holds the store and reads the
prediction logs under its own artifact root. The serving processes must
therefore log to that root — the same folder or S3 prefix as the server's
``KEEL_ARTIFACTS_URL`` — which is the supported layout.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import select

from keel.data.profiling.build import Profiler
from keel.data.profiling.profiles import Profile
from keel.models.reference import INPUT_PREFIX, OUTPUT_PREFIX, pinned_metadata, recorded_task
from keel.monitoring.alerts import Alert, Measurement, Sink, deliver, evaluate
from keel.monitoring.clients import resolve_client
from keel.monitoring.drift import DriftReport, compare
from keel.monitoring.llm import is_prompt_deployment, local_run_llm_monitor
from keel.monitoring.names import require_deployment
from keel.monitoring.quality import PageHinkley, join_labels, window_quality
from keel.monitoring.reference import get_reference, reference_command
from keel.monitoring.settings import MonitorSettings, get_monitor_settings, parse_window
from keel.monitoring.skew import feature_skew, skew_measurements

if TYPE_CHECKING:
    from keel.client import Client


__all__ = ["MonitorResult", "monitor_history", "run_monitor"]

_QUALITY_BAND = 0.02  # a quality alert clears 2% past its threshold
_LOWER_IS_BETTER = {"rmse", "mae", "log_loss"}


# -- results ---------------------------------------------------------------------------------------


@dataclass
class MonitorResult:
    """One monitor run over one window.

    Attributes:
        share_drifted: of the version with the most drift; ``None`` when no version
            that served the window has a reference profile.
        drifted_columns: that version's drifted columns (inputs and outputs).
        versions: per ``model/version``: rows, whether it had a reference, its share.
        quality: ``{"task", "rows", "metrics"}`` when labels arrived, else ``None``.
        concept_drift: whether the change detector fired in this window (``None``
            without labels).
        alerts: what this run raised or resolved (empty in :func:`monitor_history`).
        llm: of a prompt deployment, the window's trace statistics (``overall``, per
            ``versions``) and the ``slo`` in force (see :mod:`keel.monitoring.llm`);
            ``None`` for a model deployment.
        skew: of a deployment with features, the served values against the offline
            store's (:class:`keel.monitoring.skew.SkewReport` as a dict); else ``None``.
    """

    id: int
    deployment: str
    window_start: int
    window_end: int
    rows: int
    labelled_rows: int
    share_drifted: float | None
    dataset_drift: bool | None
    prediction_drift: bool | None
    drifted_columns: list[str]
    quality: dict[str, Any] | None
    concept_drift: bool | None
    failed_checks: int
    report_digest: str | None
    created_at: int
    versions: dict[str, Any] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    llm: dict[str, Any] | None = None
    skew: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        def iso(ms: int) -> str:
            return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()

        return {
            "id": self.id,
            "deployment": self.deployment,
            "window_start": iso(self.window_start),
            "window_end": iso(self.window_end),
            "rows": self.rows,
            "labelled_rows": self.labelled_rows,
            "share_drifted": self.share_drifted,
            "dataset_drift": self.dataset_drift,
            "prediction_drift": self.prediction_drift,
            "drifted_columns": self.drifted_columns,
            "quality": self.quality,
            "concept_drift": self.concept_drift,
            "failed_checks": self.failed_checks,
            "report_digest": self.report_digest,
            "versions": self.versions,
            "alerts": [a.to_dict() for a in self.alerts],
            "created_at": iso(self.created_at),
            "llm": self.llm,
            "skew": self.skew,
        }

    def report(
        self, version: str | None = None, *, client: Client | None = None
    ) -> DriftReport | None:
        """The full drift report of ``version`` (``model/N``; default: the headline one)."""
        if self.report_digest is None:
            return None
        doc = resolve_client(client).artifacts.get_json(self.report_digest)
        key = version or doc.get("headline")
        entry = doc["versions"].get(key) if key else None
        if entry is None or entry.get("report") is None:
            return None
        return DriftReport.from_dict(entry["report"])


def _result(row: Any) -> MonitorResult:
    stored = json.loads(row.quality) if row.quality else {}
    llm = stored.pop("llm", None)  # a prompt deployment's figures share the quality column
    skew = stored.pop("skew", None)  # and so do a feature deployment's skew rates
    return MonitorResult(
        id=row.id,
        deployment=row.deployment,
        window_start=row.window_start,
        window_end=row.window_end,
        rows=row.rows,
        labelled_rows=row.labelled_rows,
        share_drifted=row.share_drifted,
        dataset_drift=row.dataset_drift,
        prediction_drift=row.prediction_drift,
        drifted_columns=json.loads(row.drifted_columns),
        quality=stored or None,
        concept_drift=row.concept_drift,
        failed_checks=row.failed_checks,
        report_digest=row.report_digest,
        created_at=row.created_at,
        llm=llm,
        skew=skew,
    )


def monitor_history(
    deployment: str, limit: int | None = None, *, client: Client | None = None
) -> list[MonitorResult]:
    """The deployment's monitor runs, newest window first.

    Raises:
        NotFound: no such deployment (see :mod:`keel.monitoring.names`).
    """
    from keel.monitoring.part import monitoring_part

    return monitoring_part(resolve_client(client)).monitor_history(deployment, limit)


def local_monitor_history(
    deployment: str, limit: int | None, client: Client
) -> list[MonitorResult]:
    """:func:`monitor_history` on the client's own metadata store."""
    from keel.store import schema as s

    require_deployment(deployment, client)
    query = (
        select(s.monitor_runs)
        .where(s.monitor_runs.c.deployment == deployment)
        .order_by(s.monitor_runs.c.window_end.desc(), s.monitor_runs.c.id.desc())
    )
    if limit:
        query = query.limit(limit)
    with client.store.read() as conn:
        return [_result(row) for row in conn.execute(query)]


# -- one run ---------------------------------------------------------------------------------------


class _Version:
    """What the window holds for one model version: a profile, and keys for labels.

    Attributes:
        registered: the version is in the registry (a ``runs:/`` URI served is not).
        reference: its reference profile, if it has one.
        task: what its package records (``{"type", "classes"}``), or ``None``.
    """

    def __init__(self, model: str, version: int, schema: pa.Schema, client: Client) -> None:
        self.model, self.version = model, version
        self.registered, self.reference, self.task = self._facts(client)
        logged = [n for n in schema.names if n.startswith((INPUT_PREFIX, OUTPUT_PREFIX))]
        self.profiler = Profiler(schema, columns=logged, bins_from=self.reference)
        self.keys: list[pa.Table] = []
        self.report: DriftReport | None = None

    def _facts(self, client: Client) -> tuple[bool, Profile | None, dict[str, Any] | None]:
        from keel.errors import NotFound

        try:
            mv = client.get_model_version(self.model, self.version)
        except NotFound:  # a version deleted or never registered (a runs:/ URI served)
            return False, None, None
        reference = get_reference(self.model, self.version, client=client)
        metadata = pinned_metadata(client.artifacts, mv.manifest_digest) or {}
        return True, reference, recorded_task(metadata)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.version}"

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.profiler.rows,
            "reference": self.reference is not None,
            "share_drifted": None if self.report is None else self.report.share_drifted,
            "drifted_columns": [] if self.report is None else self.report.drifted_columns,
        }


def _prediction_column(schema: pa.Schema) -> str | None:
    outputs = [n for n in schema.names if n.startswith(OUTPUT_PREFIX)]
    if f"{OUTPUT_PREFIX}prediction" in outputs:
        return f"{OUTPUT_PREFIX}prediction"
    return outputs[0] if outputs else None


def _scan(
    batches: Any, client: Client, keep_keys: bool
) -> tuple[dict[tuple[str, int], _Version], int]:
    versions: dict[tuple[str, int], _Version] = {}
    rows = 0
    for batch in batches:
        rows += batch.num_rows
        pairs = (
            pa.table({"m": batch.column("model"), "v": batch.column("version")})
            .group_by(["m", "v"])
            .aggregate([])
        )
        prediction = _prediction_column(batch.schema) if keep_keys else None
        for model, version in zip(
            pairs.column("m").to_pylist(), pairs.column("v").to_pylist(), strict=True
        ):
            if model is None or version is None:
                continue
            mask = pc.and_(
                pc.equal(batch.column("model"), model), pc.equal(batch.column("version"), version)
            )
            part = batch.filter(mask)
            entry = versions.get((model, version))
            if entry is None:
                entry = versions[(model, version)] = _Version(model, version, batch.schema, client)
            entry.profiler.add(part)
            if prediction is not None:
                entry.keys.append(
                    pa.table(
                        {
                            "request_id": part.column("request_id"),
                            "row": part.column("row"),
                            "time": part.column("time"),
                            "prediction": part.column(prediction),
                        }
                    )
                )
    return versions, rows


def _columns_for(settings: MonitorSettings, reference: Profile) -> list[str] | None:
    if settings.columns is None:
        return None
    chosen = []
    for name in settings.columns:
        for candidate in (name, INPUT_PREFIX + name):
            if candidate in reference.columns:
                chosen.append(candidate)
                break
    outputs = [n for n in reference.columns if n.startswith(OUTPUT_PREFIX)]
    return chosen + [n for n in outputs if n not in chosen]


def _overrides_for(settings: MonitorSettings, reference: Profile) -> dict[str, Any]:
    mapped = {}
    for name, spec in settings.overrides.items():
        for candidate in (name, INPUT_PREFIX + name):
            if candidate in reference.columns:
                mapped[candidate] = spec
                break
    return mapped


def _compare_version(entry: _Version, settings: MonitorSettings) -> DriftReport | None:
    if entry.reference is None:
        return None
    return compare_window(entry.profiler.result(), entry.reference, settings)


def compare_window(current: Profile, reference: Profile, settings: MonitorSettings) -> DriftReport:
    """One window's profile of served rows against the version's reference, as monitors compare.

    The monitor's chosen columns and per-column overrides name features as the model
    does (``age``); they are matched to the logged columns (``input.age``) here, and the
    outputs are always compared. Every view of drift over windows (a monitor run, the
    UI's heatmap) compares through this one function.
    """
    # Columns another version logged are all null here: not this version's schema.
    current.columns = {
        n: c for n, c in current.columns.items() if n in reference.columns or c.count > 0
    }
    return compare(
        reference,
        current,
        columns=_columns_for(settings, reference),
        overrides=_overrides_for(settings, reference),
        drift_share=settings.drift_share,
    )


def run_monitor(
    deployment: str,
    *,
    window: Any = None,
    end: Any = None,
    client: Client | None = None,
    sinks: Sequence[Sink] | None = None,
) -> MonitorResult:
    """Compare the deployment's last window of predictions with its reference; store; alert.

    Through ``keel server`` the server runs it over the prediction logs under its
    artifact root (see the module docstring), and its alerts go to the sinks the
    deployment's settings name.

    Args:
        deployment: the deployment whose prediction logs to read.
        window: the window's length (default: the deployment's setting, ``1h``).
        end: the window's exclusive end: a datetime (naive = UTC), epoch ms or
            ISO-8601 text (default: now).
        sinks: where alerts go besides the store (default: from the settings); only
            on a client with its own store (sinks are objects of this process).

    Raises:
        InvalidInput: a malformed deployment name, window or end; ``sinks`` through
            ``keel server``.
        NotFound: no such deployment (see :mod:`keel.monitoring.names`).
        StorageError, BackendUnavailable: the logs or the store cannot be read.
    """
    from keel.monitoring.part import monitoring_part

    part = monitoring_part(resolve_client(client))
    return part.run_monitor(deployment, window=window, end=end, sinks=sinks)


def local_run_monitor(
    deployment: str,
    client: Client,
    *,
    window: Any = None,
    end: Any = None,
    sinks: Sequence[Sink] | None = None,
) -> MonitorResult:
    """:func:`run_monitor` on the client's own store and artifact root."""
    from keel.predictions import PredictionReader, check_deployment, to_ms
    from keel.store.sql import now_ms

    check_deployment(deployment)
    require_deployment(deployment, client)
    settings = get_monitor_settings(deployment, client=client)
    span = parse_window(settings.window if window is None else window)
    end_ms = to_ms(end, "end") if end is not None else now_ms()
    assert end_ms is not None
    start_ms = end_ms - span
    if is_prompt_deployment(deployment, client):  # its traffic is the gateway's traces
        return local_run_llm_monitor(deployment, client, settings, start_ms, end_ms, sinks)
    conf = client.settings
    root, endpoint = conf.artifacts_url, conf.s3_endpoint_url

    # 1. One pass over the window, split by the version that served each row.
    reader = PredictionReader(root, s3_endpoint_url=endpoint)
    feedback = reader.feedback(deployment)
    batches = reader.batches(deployment, start=start_ms, end=end_ms)
    versions, rows = _scan(batches, client, keep_keys=feedback.num_rows > 0)

    # 2. Each version against its own reference; the one with the most drift is the headline.
    for entry in versions.values():
        entry.report = _compare_version(entry, settings)
    compared = [e for e in versions.values() if e.report is not None]
    headline = max(compared, key=lambda e: (_share(e), e.profiler.rows), default=None)
    reports = [e.report for e in compared if e.report is not None]

    # 3. Labels: quality, and the change detector continuing from the previous run.
    previous = _latest_run(client, deployment)
    quality, labelled_rows, detections, detector = _quality(
        versions.values(), feedback, previous, end_ms
    )

    # 4. Served features against the offline store at request time (declared features only).
    skew = feature_skew(client, deployment, start_ms, end_ms, sample=settings.skew_sample)

    # 5. Store the run and move the alerts in one transaction; then tell the sinks.
    window_doc = {"deployment": deployment, "window_start": start_ms, "window_end": end_ms}
    blob = client.artifacts.put_json(
        _finite(
            {
                **window_doc,
                "rows": rows,
                "headline": None if headline is None else headline.label,
                "versions": {
                    e.label: {
                        "model": e.model,
                        "version": e.version,
                        "rows": e.profiler.rows,
                        "reference": e.reference is not None,
                        "report": None if e.report is None else e.report.to_dict(detail=True),
                    }
                    for e in versions.values()
                },
                "quality": quality,
                "detections": len(detections),
                "skew": None if skew is None else skew.to_dict(),
                "settings": settings.to_dict(),
            }
        )
    )
    top = None if headline is None else headline.report
    flags = [r.prediction_drift for r in reports if r.prediction_drift is not None]
    result = MonitorResult(
        id=0,
        deployment=deployment,
        window_start=start_ms,
        window_end=end_ms,
        rows=rows,
        labelled_rows=labelled_rows,
        share_drifted=None if top is None else top.share_drifted,
        dataset_drift=None if top is None else top.dataset_drift,
        prediction_drift=any(flags) if flags else None,
        drifted_columns=[] if top is None else top.drifted_columns,
        quality=quality,
        concept_drift=None if not quality or not quality["rows"] else bool(detections),
        failed_checks=sum(1 for r in reports for i in r.issues if i.severity == "fail"),
        report_digest=blob.digest,
        created_at=now_ms(),
        versions={e.label: e.summary() for e in versions.values()},
        skew=None if skew is None else _finite(skew.to_dict()),
    )
    unreferenced = [e for e in versions.values() if e.registered and e.reference is None]
    measurements = _measurements(settings, result, reports, detections)
    measurements += skew_measurements(skew, settings.skew_rate)
    if versions:  # no traffic says nothing about references: the rule's state stays
        measurements.append(_no_reference(unreferenced))
    raised = store_run(client, settings, result, detector, measurements)
    extra = {**window_doc, "report_digest": blob.digest}
    result.alerts = deliver(
        client.store, raised, settings.sinks() if sinks is None else sinks, extra
    )
    return result


def _share(entry: _Version) -> float:
    return 0.0 if entry.report is None else entry.report.share_drifted


def _quality(
    versions: Iterable[_Version],
    feedback: pa.Table,
    previous: _Previous | None,
    end_ms: int,
) -> tuple[dict[str, Any] | None, int, list[int], dict[str, Any] | None]:
    """Quality of the labelled rows and the detector's detections and new state.

    The task is the one the versions record (that of the version that served the
    most rows, when they differ); labelled rows of a version recording another
    task, or none, are counted under ``excluded``.
    """
    state = None if previous is None else previous.detector
    keyed = [entry for entry in versions if entry.keys]
    if not keyed:
        return None, 0, [], state
    known = [e for e in keyed if e.task is not None]
    main = max(known, key=lambda e: e.profiler.rows, default=None)
    task = None if main is None or main.task is None else str(main.task["type"])
    scored = [e for e in known if e.task is not None and e.task["type"] == task]
    excluded: dict[str, int] = {}
    for entry in keyed:
        if entry in scored:
            continue
        count = _labelled(entry.keys, feedback).num_rows
        if count:
            why = "records no task" if entry.task is None else f"is a {entry.task['type']} model"
            excluded[f"{entry.label} {why}"] = count
    others = sum(excluded.values())  # labelled rows of versions not scored
    detector = PageHinkley.from_dict(state)
    measured = labelled = None
    if task is not None:
        labelled = _labelled([t for e in scored for t in e.keys], feedback)
        measured = window_quality(labelled, detector, task=task, classes=_classes(scored))
    if measured is None or labelled is None:
        if not others:
            return None, 0, [], state
        return {"task": task, "rows": 0, "metrics": {}, "excluded": excluded}, others, [], state
    detections: list[int] = []
    late = previous is not None and end_ms < previous.window_end  # an older window: no feed
    if measured.rows and not late:
        errors = measured.errors
        if previous is not None:  # overlapping windows: feed each error once
            times = labelled.column("time").cast(pa.int64()).to_numpy()
            if measured.scored is not None:
                times = times[measured.scored]
            errors = errors[times >= previous.window_end]
        detections = detector.update(errors)
        state = detector.to_dict()
    doc = measured.to_dict()
    if excluded or measured.excluded:
        doc["excluded"] = {**excluded, **measured.excluded}
    return doc, labelled.num_rows + others, detections, state


def _labelled(keys: list[pa.Table], feedback: pa.Table) -> pa.Table:
    return join_labels(pa.concat_tables(keys, promote_options="permissive"), feedback)


def _classes(entries: list[_Version]) -> list[Any] | None:
    """The union of the versions' recorded classes (``None`` if one records none)."""
    classes: list[Any] = []
    for entry in entries:
        listed = (entry.task or {}).get("classes")
        if listed is None:
            return None
        classes.extend(c for c in listed if c not in classes)
    return classes


def _no_reference(unreferenced: list[_Version]) -> Measurement:
    """The ``no_reference`` rule: registered versions served without a reference profile."""
    commands = "; ".join(reference_command(e.model, e.version) for e in unreferenced[:3])
    labels = ", ".join(e.label for e in unreferenced)
    return Measurement(
        "no_reference",
        float(len(unreferenced)),
        bool(unreferenced),
        not unreferenced,
        None,
        f"no reference profile for {labels}: its traffic is not compared for drift; give it "
        f"one: {commands}"
        if unreferenced
        else "every served version has a reference profile",
    )


def store_run(
    client: Client,
    settings: MonitorSettings,
    result: MonitorResult,
    detector: dict[str, Any] | None,
    measurements: list[Measurement],
) -> list[Alert]:
    """Insert the run and move the alert states, in one transaction; fill in the run's id."""
    from keel.store import schema as s

    # A prompt deployment's trace figures and a feature deployment's skew rates ride in the
    # quality column: one row shape for every monitor run, read back apart by ``_result``.
    stored = {
        **(result.quality or {}),
        **({"llm": result.llm} if result.llm else {}),
        **({"skew": result.skew} if result.skew else {}),
    }
    actor = client.user
    with client.store.write() as conn:
        result.id = conn.execute(
            s.monitor_runs.insert()
            .values(
                deployment=result.deployment,
                window_start=result.window_start,
                window_end=result.window_end,
                rows=result.rows,
                labelled_rows=result.labelled_rows,
                share_drifted=result.share_drifted,
                dataset_drift=result.dataset_drift,
                prediction_drift=result.prediction_drift,
                drifted_columns=json.dumps(result.drifted_columns),
                quality=json.dumps(_finite(stored)) if stored else None,
                concept_drift=result.concept_drift,
                detector=None if detector is None else json.dumps(detector),
                failed_checks=result.failed_checks,
                report_digest=result.report_digest,
                created_at=result.created_at,
                created_by=actor,
            )
            .returning(s.monitor_runs.c.id)
        ).scalar_one()
        return evaluate(
            conn,
            deployment=result.deployment,
            run_id=result.id,
            window_end=result.window_end,
            measurements=measurements,
            fire_after=settings.fire_after,
            resolve_after=settings.resolve_after,
            actor=actor,
        )


@dataclass(frozen=True)
class _Previous:
    window_end: int
    detector: dict[str, Any] | None


def _latest_run(client: Client, deployment: str) -> _Previous | None:
    from keel.store import schema as s

    with client.store.read() as conn:
        row = conn.execute(
            select(s.monitor_runs.c.window_end, s.monitor_runs.c.detector)
            .where(s.monitor_runs.c.deployment == deployment)
            .order_by(s.monitor_runs.c.window_end.desc(), s.monitor_runs.c.id.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    return _Previous(row.window_end, json.loads(row.detector) if row.detector else None)


def _measurements(
    settings: MonitorSettings,
    result: MonitorResult,
    reports: list[DriftReport],
    detections: list[int],
) -> list[Measurement]:
    """What this run measured for each alert rule."""
    share, drifted = result.share_drifted, result.drifted_columns
    prediction_drift, failed = result.prediction_drift, result.failed_checks
    shown = ", ".join(drifted[:8]) + (", …" if len(drifted) > 8 else "")
    out = [
        Measurement(
            "drift",
            share,
            share is not None and share >= settings.drift_share,
            share is not None and share < settings.clear_below,
            settings.drift_share,
            f"drift: {share or 0:.0%} of feature columns drifted (alert at "
            f"{settings.drift_share:.0%}): {shown or 'none'}",
        ),
        Measurement(
            "prediction_drift",
            None if prediction_drift is None else float(prediction_drift),
            bool(prediction_drift),
            prediction_drift is False,
            None,
            "prediction drift: the model's outputs moved away from their reference",
        ),
    ]
    if reports:
        problems = [i.message for r in reports for i in r.issues if i.severity == "fail"]
        out.append(
            Measurement(
                "data_quality",
                float(failed),
                failed > 0,
                failed == 0,
                None,
                f"data quality: {failed} failed check(s): " + "; ".join(problems[:3]),
            )
        )
    if result.concept_drift is not None:
        out.append(
            Measurement(
                "concept_drift",
                float(len(detections)),
                bool(detections),
                not detections,
                None,
                "concept drift: the error rate rose (Page-Hinkley detected a change)",
            )
        )
    metrics = (result.quality or {}).get("metrics") or {}
    for metric, limit in settings.quality.items():
        value = metrics.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        lower_better = metric in _LOWER_IS_BETTER
        bad = value > limit if lower_better else value < limit
        good = (
            value <= limit * (1 - _QUALITY_BAND)
            if lower_better
            else value >= limit * (1 + _QUALITY_BAND)
        )
        out.append(
            Measurement(
                f"quality:{metric}",
                float(value),
                bad,
                good,
                float(limit),
                f"quality: {metric} is {value:.4g} ({'above' if lower_better else 'below'} "
                f"{limit:g})",
            )
        )
    return out


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: spell them as null and strings."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value
