"""``keel import mlflow``: a team's MLflow history, brought into Keel.

:func:`import_mlflow` reads an MLflow tracking database (through
:class:`~keel.interop.mlflow_source.MlflowSource`, the one module that knows
MLflow's tables) and its artifact root, and writes everything through a
:class:`keel.Client`, so the same import fills an embedded store, PostgreSQL,
or a ``keel server``.

What maps to what:

- an active experiment is the Keel experiment of the same name (created if absent);
- a run is a Keel run with its name, user, status, start and end time, params,
  tags (MLflow's ``mlflow.*`` tags included), every metric point (step,
  timestamp, value) and the files under ``<root>/<exp>/<run>/artifacts``; its
  parent (tag ``mlflow.parentRunId``) is its Keel parent;
- a 3.x logged model's files (``<root>/<exp>/models/<id>/artifacts``) are
  artifacts of its source run at ``models/<id>/``;
- a registered model version is a Keel version of the same model, registered
  from ``runs:/<keel run>/models/<id>`` (source ``models:/<id>``) or
  ``runs:/<keel run>/<path>``; its files are stored as they are, MLflow's own
  format included. Versions are registered in MLflow's order, so they get
  MLflow's numbers unless MLflow has gaps (deleted versions) or the Keel model
  already had versions: each renumbered version is reported;
- an alias is the Keel alias of the same name (moved with a compare-and-set,
  so a protected alias needs approvals as any move does).

Where MLflow's artifact root lived elsewhere (another machine, S3), the
artifact paths recorded in the database are resolved under the ``artifacts``
folder given here by their MLflow layout (the trailing ``<exp>/<run>/artifacts``).

Idempotence: every imported object is recorded (``imported_objects``, see
:mod:`keel.interop.records`) and skipped by the next import of the same source.
A run is recorded as soon as its Keel copy exists, and that copy stays
``RUNNING`` until everything of it came over; so a Keel copy still ``RUNNING``
(an interrupted import, or a run MLflow was still running) is brought up to date
by the next import: params and tags it lacks, the metric points it lacks (each
point compared by step, timestamp and value, so nothing is written twice), new
artifact files, and MLflow's status and end time once the run ended there. A
run imported as ended is not revisited.

What has no place in Keel is counted in the summary with the reason, never
dropped silently: deleted experiments and runs, dataset inputs, traces,
prompts, experiment and registered model tags, logged model params and metrics.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import ApprovalRequired, Conflict, InvalidInput, KeelError
from keel.interop.mlflow_source import (
    MlflowLoggedModel,
    MlflowModelVersion,
    MlflowRun,
    MlflowSource,
    source_label,
    uri_tail,
)
from keel.interop.records import ImportRecord, ImportRecords, import_records
from keel.tracking.entities import RUN_STATUSES, Metric
from keel.tracking.validation import check_key, check_param_value, check_tag_value

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["ImportSummary", "Progress", "import_mlflow"]

#: ``progress(stage, done, total)``: the import's stages are "runs", "logged models", "models".
Progress = Callable[[str, int, int | None], None]

#: What the summary counts as new, in the order it prints them.
COUNTED = (
    "experiments",
    "runs",
    "params",
    "tags",
    "metric_points",
    "artifacts",
    "logged_models",
    "registered_models",
    "model_versions",
    "aliases",
)
_POINTS_PER_BATCH = 50_000
_ENDED = frozenset(RUN_STATUSES) - {"RUNNING"}


@dataclass
class ImportSummary:
    """What an import brought over, what it updated, and what it could not map.

    Attributes:
        source: the MLflow database URL, without its password.
        new: objects imported by this call, by kind (:data:`COUNTED`).
        updated_runs: runs imported before whose Keel copy was still ``RUNNING`` and
            that gained something this time.
        unmapped: objects that have no place in Keel or could not be imported, counted
            by reason.
        renumbered: versions whose Keel number differs from MLflow's
            (``{"model", "mlflow_version", "keel_version"}``).
        runs_without_artifacts: imported runs with no artifact folder under the
            artifact root (normal for a run that logged none; all of them suggests the
            wrong ``artifacts`` folder).
    """

    source: str
    new: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))
    updated_runs: int = 0
    unmapped: dict[str, int] = field(default_factory=dict)
    renumbered: list[dict[str, Any]] = field(default_factory=list)
    runs_without_artifacts: int = 0

    @property
    def total_new(self) -> int:
        """How many objects this import added (0 for an import with nothing new)."""
        return sum(self.new.values())

    def skip(self, reason: str, count: int = 1) -> None:
        """Count ``count`` objects not imported for ``reason``."""
        if count:
            self.unmapped[reason] = self.unmapped.get(reason, 0) + count

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "new": dict(self.new),
            "total_new": self.total_new,
            "updated_runs": self.updated_runs,
            "unmapped": dict(sorted(self.unmapped.items())),
            "renumbered": list(self.renumbered),
            "runs_without_artifacts": self.runs_without_artifacts,
        }


def import_mlflow(
    source: str,
    artifacts: str | Path,
    *,
    client: Client | None = None,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import an MLflow tracking database and its artifacts into Keel.

    Args:
        source: the MLflow database URL (``sqlite:///mlflow.db``, ``postgresql://…``).
        artifacts: the MLflow artifact root folder (what holds ``<exp_id>/<run_id>/artifacts``).
        client: where to import to; default a ``keel.Client`` on the process's settings
            (the embedded store, or ``keel server`` when one is configured).
        progress: called as ``progress(stage, done, total)`` while it works.

    Returns:
        What came over and what could not (see :class:`ImportSummary`).

    Raises:
        InvalidInput: ``source`` is not a database URL or not MLflow's database, or
            ``artifacts`` is not a folder.
        BackendUnavailable: the database cannot be reached.
    """
    root = Path(artifacts)
    if not root.is_dir():
        raise InvalidInput(
            f"the MLflow artifact root {str(root)!r} is not a folder; give the folder MLflow "
            "stored artifacts in (its --default-artifact-root, ./mlruns by default)"
        )
    if client is None:
        from keel.client import Client

        client = Client()
    with MlflowSource(source) as mlflow_db:
        return _Import(client, mlflow_db, root, progress).run()


class _Import:
    """One import: the source, the destination, what was imported before, the summary."""

    def __init__(
        self, client: Client, source: MlflowSource, root: Path, progress: Progress | None
    ) -> None:
        self.client = client
        self.source = source
        self.root = root
        self.progress = progress or (lambda stage, done, total: None)
        self.label = source_label(source.url)
        self.records: ImportRecords = import_records(client)
        self.done: dict[tuple[str, str], str] = {}
        self.summary = ImportSummary(self.label)

    def run(self) -> ImportSummary:
        self.done = {(r.kind, r.source_id): r.target for r in self.records.load(self.label)}
        experiments = self._experiments()
        self._runs(experiments)
        self._logged_models()
        self._registry()
        for reason, count in self.source.unmapped_counts().items():
            self.summary.skip(reason, count)
        self.summary.skip(
            "dataset inputs of runs (MLflow datasets are not Keel dataset versions)",
            self.source.dataset_inputs(),
        )
        return self.summary

    def _remember(self, kind: str, source_id: str, target: str) -> None:
        self.records.record(self.label, [ImportRecord(kind, source_id, target)])
        self.done[(kind, source_id)] = target

    # -- experiments and runs -----------------------------------------------------

    def _experiments(self) -> dict[str, int]:
        """MLflow experiment id -> Keel experiment id, for every active experiment."""
        mapped: dict[str, int] = {}
        for experiment in self.source.experiments():
            if experiment.deleted:
                self.summary.skip("deleted experiments (not imported, nor their runs)")
                continue
            target = self.done.get(("experiment", experiment.id))
            if target is None:
                keel_experiment = self.client.tracking.get_or_create_experiment(experiment.name)
                target = str(keel_experiment.id)
                self._remember("experiment", experiment.id, target)
                self.summary.new["experiments"] += 1
            mapped[experiment.id] = int(target)
        return mapped

    def _runs(self, experiments: dict[str, int]) -> None:
        runs = []
        for run in self.source.runs():
            if run.experiment_id not in experiments:
                self.summary.skip("runs of deleted experiments")
            elif run.deleted:
                self.summary.skip("deleted runs (not imported)")
            else:
                runs.append(run)
        runs = _parents_first(runs, self.source.parent_ids())
        for done, run in enumerate(runs):
            self.progress("runs", done, len(runs))
            self._run(run, experiments[run.experiment_id])
        self.progress("runs", len(runs), len(runs))

    def _run(self, run: MlflowRun, experiment_id: int) -> None:
        tracking = self.client.tracking
        target = self.done.get(("run", run.id))
        tags = self.source.tags(run.id)
        if target is None:
            parent = self.done.get(("run", tags.get("mlflow.parentRunId", "")))
            info = tracking.create_run(
                experiment_id,
                run.name or tags.get("mlflow.runName") or None,
                parent_id=parent,
                capture=False,
                start_time=run.start_time,
                user=run.user or tags.get("mlflow.user") or None,
            )
            # Recorded at once: the copy stays RUNNING until complete, so an interrupted
            # import is finished by the next one instead of making a second copy.
            self._remember("run", run.id, info.id)
            self.summary.new["runs"] += 1
            self._fill_run(run, info.id, tags, fresh=True)
        elif tracking.get_run_info(target).status == "RUNNING":
            before = self.summary.total_new
            self._fill_run(run, target, tags, fresh=False)
            if self.summary.total_new > before or run.status in _ENDED:
                self.summary.updated_runs += 1

    def _fill_run(self, run: MlflowRun, target: str, tags: dict[str, str], *, fresh: bool) -> None:
        """Bring the Keel run ``target`` level with the MLflow run (all of it when ``fresh``)."""
        tracking = self.client.tracking
        params = self.source.params(run.id)
        if not fresh:
            stored = tracking.get_run(target)
            params = {k: v for k, v in params.items() if k not in stored.params}
            tags = {k: v for k, v in tags.items() if stored.tags.get(k) != v}
        params = self._valid("param", params, check_param_value)
        tags = self._valid("tag", tags, check_tag_value)
        tracking.log_batch(target, params=params, tags=tags)
        self.summary.new["params"] += len(params)
        self.summary.new["tags"] += len(tags)
        self._metrics(run, target, fresh=fresh)
        self._artifacts(run, target, fresh=fresh)
        if run.status in _ENDED:
            tracking.set_terminated(target, run.status, run.end_time or run.start_time)
        elif run.status != "RUNNING":
            self.summary.skip(f"{run.status} runs (imported as RUNNING)")

    def _valid(
        self, kind: str, values: dict[str, str], check: Callable[[str, Any], str]
    ) -> dict[str, str]:
        """The entries Keel accepts; the others are counted with the reason."""
        kept = {}
        for key, value in values.items():
            try:
                kept[check_key(key, f"{kind} key")] = check(key, value)
            except InvalidInput:
                self.summary.skip(f"run {kind}s Keel does not accept (key characters or length)")
        return kept

    def _metrics(self, run: MlflowRun, target: str, *, fresh: bool) -> None:
        points = self.source.metrics(run.id)
        keys = {p[0] for p in points}
        bad = {k for k in keys if not _valid_key(k)}
        if bad:
            self.summary.skip(
                "metric points whose key Keel does not accept",
                sum(1 for p in points if p[0] in bad),
            )
            points = [p for p in points if p[0] not in bad]
        if not fresh and points:
            have: Counter[tuple[str, int, int, Any]] = Counter()
            for key in keys - bad:
                for m in self.client.tracking.get_metric_history(target, key):
                    have[_point_key(m.key, m.step, m.timestamp, m.value)] += 1
            missing = []
            for point in points:
                found = _point_key(point[0], point[2], point[3], point[1])
                if have[found]:
                    have[found] -= 1
                else:
                    missing.append(point)
            points = missing
        for start in range(0, len(points), _POINTS_PER_BATCH):
            chunk = points[start : start + _POINTS_PER_BATCH]
            self.client.tracking.log_batch(
                target, metrics=[Metric(k, v, st, ts) for k, v, st, ts in chunk]
            )
        self.summary.new["metric_points"] += len(points)

    def _artifacts(self, run: MlflowRun, target: str, *, fresh: bool) -> None:
        folder = self._run_folder(run)
        if not folder.is_dir():
            if fresh:
                self.summary.runs_without_artifacts += 1
            return
        known = set() if fresh else {e.path for e in self.client.tracking.list_artifacts(target)}
        entries = self.client.tracking.log_artifacts(target, folder)
        self.summary.new["artifacts"] += sum(1 for e in entries if e.path not in known)

    def _run_folder(self, run: MlflowRun) -> Path:
        """Where the run's artifacts are under the root: MLflow's ``<exp>/<run>/artifacts``."""
        tail = uri_tail(run.artifact_uri, 3)
        if len(tail) == 3 and tail[1:] == [run.id, "artifacts"]:
            return self.root.joinpath(*tail)
        return self.root / run.experiment_id / run.id / "artifacts"

    # -- 3.x logged models ------------------------------------------------------------

    def _logged_models(self) -> None:
        models = self.source.logged_models()
        for done, model in enumerate(models):
            self.progress("logged models", done, len(models))
            if ("logged_model", model.id) not in self.done:
                self._logged_model(model)
        self.progress("logged models", len(models), len(models))

    def _logged_model(self, model: MlflowLoggedModel) -> None:
        if model.deleted:
            self.summary.skip("deleted logged models (not imported)")
            return
        run = self.done.get(("run", model.source_run_id or ""))
        if run is None:
            self.summary.skip("logged models without an imported source run (not imported)")
            return
        tail = uri_tail(model.artifact_location, 4)
        if len(tail) == 4 and tail[1:] == ["models", model.id, "artifacts"]:
            folder = self.root.joinpath(*tail)
        else:
            folder = self.root / model.experiment_id / "models" / model.id / "artifacts"
        if not folder.is_dir():
            self.summary.skip("logged models whose files are not under the artifact root")
            return
        entries = self.client.tracking.log_artifacts(run, folder, f"models/{model.id}")
        self.summary.new["artifacts"] += len(entries)
        self._remember("logged_model", model.id, f"runs:/{run}/models/{model.id}")
        self.summary.new["logged_models"] += 1

    # -- registry -------------------------------------------------------------------------

    def _registry(self) -> None:
        models = self.source.registered_models()
        for done, model in enumerate(models):
            self.progress("models", done, len(models))
            if model.is_prompt:
                self.summary.skip("prompts (registered models tagged as prompts; not imported)")
                continue
            if ("registered_model", model.name) not in self.done:
                try:
                    self.client.registry.create_registered_model(model.name, model.description)
                except Conflict:
                    pass  # a Keel model of that name: MLflow's versions join it (renumbered)
                self._remember("registered_model", model.name, model.name)
                self.summary.new["registered_models"] += 1
            for version in self.source.model_versions(model.name):
                if ("model_version", f"{model.name}/{version.version}") not in self.done:
                    self._version(version)
            self._aliases(model.name)
        self.progress("models", len(models), len(models))

    def _version(self, version: MlflowModelVersion) -> None:
        if version.status not in (None, "READY"):
            self.summary.skip(f"model versions in status {version.status} (not imported)")
            return
        uri, reason = self._version_source(version)
        if uri is None:
            self.summary.skip(f"model versions whose source {reason}")
            return
        tags = dict(version.tags)
        if version.stage and version.stage != "None":
            tags["mlflow.current_stage"] = version.stage
        latest = self.client.registry.get_registered_model(version.name).latest_version
        try:
            created = self.client.registry.create_model_version(
                version.name, uri, description=version.description, tags=tags
            )
        except (Conflict, InvalidInput) as exc:
            self.summary.skip(f"model versions Keel refused ({type(exc).__name__})")
            return
        self._remember(
            "model_version",
            f"{version.name}/{version.version}",
            f"{version.name}/{created.version}",
        )
        if created.version <= latest:
            # Keel keeps one version per source and bytes: MLflow's twin maps to it
            self.summary.skip(
                "model versions holding the same files as an earlier version (mapped to it)"
            )
            return
        self.summary.new["model_versions"] += 1
        if created.version != version.version:
            self.summary.renumbered.append(
                {
                    "model": version.name,
                    "mlflow_version": version.version,
                    "keel_version": created.version,
                }
            )

    def _version_source(self, version: MlflowModelVersion) -> tuple[str | None, str]:
        """The ``runs:/`` URI of the version's files in Keel, or ``None`` and why not."""
        source = version.source or ""
        if source.startswith("models:/m-") and "/" not in source[len("models:/") :]:
            model_id = source[len("models:/") :]
            target = self.done.get(("logged_model", model_id))
            if target is None:
                return None, "is a logged model that was not imported"
            return target, ""
        if source.startswith("runs:/"):
            run_id, _, path = source[len("runs:/") :].partition("/")
            target = self.done.get(("run", run_id))
            if target is None or not path.strip("/"):
                return None, "is a run that was not imported"
            return f"runs:/{target}/{path.strip('/')}", ""
        if version.run_id is not None:
            # MLflow 2.x records the artifact location itself: <root>/<exp>/<run>/artifacts/<path>
            target = self.done.get(("run", version.run_id))
            segments = uri_tail(source, 1_000)
            marker = [version.run_id, "artifacts"]
            for i in range(len(segments) - 1):
                if segments[i : i + 2] == marker and i + 2 < len(segments) and target:
                    return f"runs:/{target}/{'/'.join(segments[i + 2 :])}", ""
        return None, "is not a run's or a logged model's files"

    def _aliases(self, name: str) -> None:
        registry = self.client.registry
        for alias, mlflow_version in self.source.aliases(name).items():
            target = self.done.get(("model_version", f"{name}/{mlflow_version}"))
            if target is None:
                self.summary.skip("aliases of versions that were not imported")
                continue
            version = int(target.rpartition("/")[2])
            recorded = self.done.get(("alias", f"{name}@{alias}"))
            current = registry.get_alias(name, alias)
            if current == version:
                if recorded != target:
                    self._remember("alias", f"{name}@{alias}", target)
                continue
            if recorded is not None and current != int(recorded.rpartition("/")[2]):
                self.summary.skip("aliases moved in Keel since the last import (left as they are)")
                continue
            try:
                registry.set_alias(
                    name, alias, version, expected=current, comment=f"imported from {self.label}"
                )
            except ApprovalRequired:
                self.summary.skip("aliases protected in Keel (approve the version, then move it)")
                continue
            except KeelError:
                self.summary.skip("aliases Keel refused to move")
                continue
            self._remember("alias", f"{name}@{alias}", target)
            self.summary.new["aliases"] += 1


def _valid_key(key: str) -> bool:
    try:
        check_key(key, "metric key")
    except InvalidInput:
        return False
    return True


def _point_key(key: str, step: int, timestamp: int, value: float) -> tuple[str, int, int, Any]:
    """A metric point as compared between MLflow and Keel (NaN equal to NaN)."""
    return (key, step, timestamp, "nan" if math.isnan(value) else value)


def _parents_first(runs: Sequence[MlflowRun], parents: dict[str, str]) -> list[MlflowRun]:
    """``runs`` in their order, except that a run comes after its parent when both are there."""
    by_id = {r.id: r for r in runs}
    ordered: list[MlflowRun] = []
    placed: set[str] = set()

    def place(run: MlflowRun, seen: Iterable[str] = ()) -> None:
        if run.id in placed:
            return
        parent = parents.get(run.id)
        if parent in by_id and parent not in placed and parent not in seen:
            place(by_id[parent], {*seen, run.id})
        placed.add(run.id)
        ordered.append(run)

    for run in runs:
        place(run)
    return ordered
