"""Tracking by id: experiments, runs, params, metrics, tags, artifacts, search.

:class:`TrackingClient` writes synchronously; the fluent API in
``keel.tracking.fluent`` sits on top of it and buffers metric points.
"""

from __future__ import annotations

import functools
import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

import keel.tracking.search as q
from keel.artifacts import ArtifactStore, folder_files
from keel.config import Settings
from keel.errors import Conflict, InvalidInput, NotFound
from keel.governance import audit
from keel.store import Store
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms
from keel.tracking.columns import (
    Axis,
    MetricColumns,
    MetricSummary,
    read_metric_columns,
    read_metric_summaries,
)
from keel.tracking.entities import (
    RUN_STATUSES,
    ArtifactEntry,
    Experiment,
    Metric,
    Run,
    RunInfo,
    RunsPage,
)
from keel.tracking.environment import (
    Capture,
    Environment,
    GitState,
    capture_environment,
    capture_git,
    command_line,
)
from keel.tracking.search_load import RUN_COLUMNS, load_frame, load_runs
from keel.tracking.validation import (
    check_key,
    check_metric_value,
    check_param_value,
    check_step,
    check_tag_value,
    numeric_or_none,
)
from keel.transport import Transport, TransportBound, local_or
from keel.validation import RelativePath, check_relative_path, safe_joins

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MetricRow", "TrackingClient", "write_metrics"]

#: (run_id, key, step, timestamp_ms, value) — the shape buffered and written in bulk.
MetricRow = tuple[str, str, int, int, float]

# Statements of the hot paths, built once: building a statement with ``.values(...)`` costs
# more than running it (a run's start and end spent most of their time there), and a
# prebuilt statement also finds its compiled form in SQLAlchemy's cache at once.
_INSERT_RUN = s.runs.insert()
_INSERT_TAGS = s.tags.insert()
_INSERT_METRICS = s.metrics.insert()
_RUN_STATUS = select(s.runs.c.status).where(s.runs.c.id == bindparam("rid"))
_SET_STATUS = (
    update(s.runs)
    .where(s.runs.c.id == bindparam("rid"))
    .values(status=bindparam("new_status"), end_time=bindparam("new_end_time"))
)
_STORED_PARAMS = select(s.params.c.key, s.params.c.value).where(
    s.params.c.run_id == bindparam("rid"), s.params.c.key.in_(bindparam("keys", expanding=True))
)


_UPSERTS: dict[tuple[str, str], Any] = {}


def _upsert(conn: Connection, table: str) -> Any:
    """The INSERT … ON CONFLICT of ``table`` on ``conn``'s dialect, built once per dialect."""
    key = (conn.dialect.name, table)
    found = _UPSERTS.get(key)
    if found is not None:
        return found
    stmt = insert_on_conflict(conn, getattr(s, table))
    if table == "environments":
        stmt = stmt.on_conflict_do_nothing(index_elements=[s.environments.c.digest])
    elif table == "params":
        stmt = stmt.on_conflict_do_nothing(index_elements=[s.params.c.run_id, s.params.c.key])
    elif table == "tags":
        stmt = stmt.on_conflict_do_update(
            index_elements=[s.tags.c.run_id, s.tags.c.key],
            set_={"value": stmt.excluded.value, "value_num": stmt.excluded.value_num},
        )
    elif table == "latest_metrics":
        excluded = stmt.excluded
        target = s.latest_metrics.c
        stmt = stmt.on_conflict_do_update(
            index_elements=[target.run_id, target.key],
            set_={"step": excluded.step, "timestamp": excluded.timestamp, "value": excluded.value},
            where=(excluded.step > target.step)
            | ((excluded.step == target.step) & (excluded.timestamp >= target.timestamp)),
        )
    else:  # pragma: no cover - only the tables above are asked for
        raise AssertionError(table)
    _UPSERTS[key] = stmt
    return stmt


@functools.lru_cache(maxsize=4)
def _environment_row(environment: Environment) -> dict[str, Any]:
    """The ``environments`` row of an environment (its JSON is the same for every run)."""
    return {
        "digest": environment.digest,
        "python_version": environment.python_version,
        "implementation": environment.implementation,
        "platform": environment.platform,
        "distributions": json.dumps(list(environment.distributions)),
    }


def _stored(value: float) -> float | None:
    return None if math.isnan(value) else value


def _loaded(value: float | None) -> float:
    return math.nan if value is None else value


def write_metrics(conn: Connection, rows: Sequence[MetricRow]) -> None:
    """Append metric points and advance each (run, key)'s latest value, in one transaction."""
    if not rows:
        return
    conn.execute(
        _INSERT_METRICS,
        [
            {"run_id": r, "key": k, "step": st, "timestamp": ts, "value": _stored(v)}
            for r, k, st, ts, v in rows
        ],
    )
    latest: dict[tuple[str, str], MetricRow] = {}
    for row in rows:
        current = latest.get((row[0], row[1]))
        if current is None or (row[2], row[3]) >= (current[2], current[3]):
            latest[(row[0], row[1])] = row
    conn.execute(
        _upsert(conn, "latest_metrics"),
        [
            {"run_id": r, "key": k, "step": st, "timestamp": ts, "value": _stored(v)}
            for r, k, st, ts, v in latest.values()
        ],
    )


class TrackingClient(TransportBound):
    """Experiments and runs addressed by id: the tracking part of :class:`keel.Client`.

    Args:
        settings: defaults to the process's settings (``keel.config.get_settings()``).
        store: a metadata store to use instead of the one ``settings`` names.
        artifacts: an artifact store to use instead of the one ``settings`` names.
        transport: how to reach the stores; defaults to a
            :class:`~keel.transport.LocalTransport` over the three arguments above,
            which must then be left out.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        artifacts: ArtifactStore | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.transport = local_or(transport, settings, store, artifacts)

    # -- experiments ---------------------------------------------------------

    def create_experiment(self, name: str) -> int:
        """Create an experiment and return its id; ``Conflict`` if the name is taken."""
        name = _check_name(name, "experiment name")
        try:
            with self.store.write() as conn:
                result = conn.execute(s.experiments.insert().values(name=name, created_at=now_ms()))
                return int(result.inserted_primary_key[0])  # type: ignore[index]
        except SQLIntegrityError:
            raise Conflict(f"an experiment named {name!r} already exists") from None

    def get_or_create_experiment(self, name: str) -> Experiment:
        """The experiment named ``name``, created if absent (safe under concurrent callers)."""
        name = _check_name(name, "experiment name")
        found = self.get_experiment_by_name(name)
        if found is not None:
            return found
        with self.store.write() as conn:
            conn.execute(
                insert_on_conflict(conn, s.experiments)
                .values(name=name, created_at=now_ms())
                .on_conflict_do_nothing(index_elements=[s.experiments.c.name])
            )
        found = self.get_experiment_by_name(name)
        assert found is not None
        return found

    def get_experiment(self, experiment_id: int) -> Experiment:
        with self.store.read() as conn:
            row = conn.execute(
                select(s.experiments).where(s.experiments.c.id == experiment_id)
            ).first()
        if row is None:
            raise NotFound(f"no experiment with id {experiment_id}; see `keel experiments list`")
        return Experiment(row.id, row.name, row.created_at, row.lifecycle)

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        with self.store.read() as conn:
            row = conn.execute(select(s.experiments).where(s.experiments.c.name == name)).first()
        return None if row is None else Experiment(row.id, row.name, row.created_at, row.lifecycle)

    def resolve_experiment(self, name_or_id: str | int) -> Experiment:
        """The experiment named ``name_or_id``, or with that id; ``NotFound`` otherwise.

        A name is looked up first, so an experiment named ``"42"`` wins over id 42.
        The error names the closest existing experiments, so a typo is answered
        with what the user probably meant rather than an empty result.

        Raises:
            NotFound: no experiment has that name or id.
        """
        if isinstance(name_or_id, str):
            found = self.get_experiment_by_name(name_or_id)
            if found is not None:
                return found
            if not name_or_id.isdigit():
                from keel.suggest import hint

                known = [e.name for e in self.list_experiments()]
                raise NotFound(
                    f"no experiment named {name_or_id!r}; "
                    + hint(
                        name_or_id,
                        known,
                        kind="experiments",
                        create="runs create them on first use",
                    )
                )
        return self.get_experiment(int(name_or_id))

    def list_experiments(self) -> list[Experiment]:
        with self.store.read() as conn:
            rows = conn.execute(select(s.experiments).order_by(s.experiments.c.id)).all()
        return [Experiment(r.id, r.name, r.created_at, r.lifecycle) for r in rows]

    def experiment_run_counts(self) -> dict[int, int]:
        with self.store.read() as conn:
            rows = conn.execute(
                select(s.runs.c.experiment_id, func.count()).group_by(s.runs.c.experiment_id)
            ).all()
        return {int(r[0]): int(r[1]) for r in rows}

    # -- runs ----------------------------------------------------------------

    def create_run(
        self,
        experiment_id: int,
        name: str | None = None,
        *,
        parent_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        capture: bool = True,
        seeds: Mapping[str, int] | None = None,
        captured: Capture | None = None,
        start_time: int | None = None,
        user: str | None = None,
    ) -> RunInfo:
        """Start a run in ``RUNNING`` state, recording its environment unless ``capture=False``.

        The run, its environment, its tags and the audit entry are written in one
        transaction. The git state comes from :func:`~keel.tracking.environment.capture_git`,
        which asks git only when the repository changed since the last run.
        ``captured`` records an environment captured by another process instead
        (``keel server`` records the one its client sends).

        ``start_time`` (ms since the epoch) and ``user`` record a run that happened
        elsewhere, as an import does; by default the run starts now, as this client's
        user. The audit entry's actor is this client's user either way.
        """
        run_id = uuid.uuid4().hex
        run_name = _check_name(name, "run name") if name else f"run-{run_id[:8]}"
        tag_rows = _tag_rows(run_id, tags or {})
        environment = None
        git: GitState | None = None
        command: str | None = None
        if captured is not None:
            environment, git, command = captured.environment, captured.git, captured.command
        elif capture:
            environment = capture_environment()
            git = capture_git()
            command = command_line()
        start = now_ms() if start_time is None else check_step(start_time)
        actor = self.user
        user = actor if user is None else _check_name(user, "run user")
        # Every column, always: one compiled form of the INSERT serves every run.
        values: dict[str, Any] = {
            "id": run_id,
            "experiment_id": experiment_id,
            "name": run_name,
            "status": "RUNNING",
            "start_time": start,
            "end_time": None,
            "parent_id": parent_id,
            "user_name": user,
            "command": command,
            "environment_digest": environment.digest if environment is not None else None,
            "git_commit": git.commit if git is not None else None,
            "git_dirty": git.dirty if git is not None else None,
            "git_diff_digest": git.diff_digest if git is not None else None,
            "seeds": json.dumps(dict(seeds)) if seeds else None,
        }
        try:
            with self.store.write() as conn:
                if environment is not None:
                    conn.execute(_upsert(conn, "environments"), _environment_row(environment))
                conn.execute(_INSERT_RUN, values)
                audit.record(
                    conn,
                    actor=actor,
                    action="run.create",
                    object_type="run",
                    object_id=run_id,
                    after={"status": "RUNNING", "experiment_id": experiment_id, "name": run_name},
                )
                if tag_rows:
                    conn.execute(_INSERT_TAGS, tag_rows)
        except SQLIntegrityError:
            self.get_experiment(experiment_id)  # NotFound names the experiment
            if parent_id is not None:
                self.get_run_info(parent_id)
            raise
        return RunInfo(run_id, experiment_id, run_name, "RUNNING", start, None, parent_id, user)

    def get_run_info(self, run_id: str) -> RunInfo:
        with self.store.read() as conn:
            row = conn.execute(select(*RUN_COLUMNS).where(s.runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(_no_run(run_id))
        return RunInfo(*row)

    def get_run(self, run_id: str) -> Run:
        """The run with its params, tags and latest metric values."""
        with self.store.read() as conn:
            runs = load_runs(conn, [run_id])
        if not runs:
            raise NotFound(_no_run(run_id))
        return runs[0]

    def resolve_run_id(self, prefix: str) -> str:
        """A full run id from an unambiguous prefix of at least 6 characters."""
        if len(prefix) == 32:
            return prefix
        if len(prefix) < 6:
            raise InvalidInput(f"run id prefix {prefix!r} is too short; give at least 6 characters")
        with self.store.read() as conn:
            ids = (
                conn.execute(select(s.runs.c.id).where(s.runs.c.id.like(f"{prefix}%")).limit(2))
                .scalars()
                .all()
            )
        if not ids:
            raise NotFound(_no_run(prefix))
        if len(ids) > 1:
            raise InvalidInput(f"run id prefix {prefix!r} matches several runs; give more of it")
        return ids[0]

    def set_terminated(
        self, run_id: str, status: str = "FINISHED", end_time: int | None = None
    ) -> None:
        """Mark a run ended with ``status`` (FINISHED, FAILED or KILLED)."""
        if status not in RUN_STATUSES or status == "RUNNING":
            raise InvalidInput(f"status must be one of FINISHED, FAILED, KILLED, got {status!r}")
        self._change_status(run_id, status, end_time or now_ms())

    def _change_status(self, run_id: str, status: str, end_time: int | None) -> None:
        """Status, end time and the audit entry, in one transaction."""
        with self.store.write() as conn:
            before = conn.execute(_RUN_STATUS, {"rid": run_id}).first()
            if before is None:
                raise NotFound(_no_run(run_id))
            conn.execute(
                _SET_STATUS, {"rid": run_id, "new_status": status, "new_end_time": end_time}
            )
            audit.record(
                conn,
                actor=self.user,
                action="run.status",
                object_type="run",
                object_id=run_id,
                before={"status": before.status},
                after={"status": status},
            )

    def set_running(self, run_id: str) -> RunInfo:
        """Reopen an ended run so more can be logged to it."""
        self._change_status(run_id, "RUNNING", None)
        return self.get_run_info(run_id)

    def record_seeds(self, run_id: str, seeds: Mapping[str, int]) -> None:
        with self.store.write() as conn:
            row = conn.execute(select(s.runs.c.seeds).where(s.runs.c.id == run_id)).first()
            if row is None:
                raise NotFound(_no_run(run_id))
            merged = {**json.loads(row[0] or "{}"), **seeds}
            conn.execute(
                update(s.runs).where(s.runs.c.id == run_id).values(seeds=json.dumps(merged))
            )

    def get_environment(self, run_id: str) -> dict[str, Any]:
        """Interpreter, platform, distributions, git state, command and seeds of a run."""
        with self.store.read() as conn:
            row = conn.execute(
                select(
                    s.runs.c.command,
                    s.runs.c.git_commit,
                    s.runs.c.git_dirty,
                    s.runs.c.git_diff_digest,
                    s.runs.c.seeds,
                    s.environments,
                )
                .select_from(s.runs.outerjoin(s.environments))
                .where(s.runs.c.id == run_id)
            ).first()
        if row is None:
            raise NotFound(_no_run(run_id))
        return {
            "python_version": row.python_version,
            "implementation": row.implementation,
            "platform": row.platform,
            "distributions": json.loads(row.distributions) if row.distributions else [],
            "environment_digest": row.digest,
            "git_commit": row.git_commit,
            "git_dirty": row.git_dirty,
            "git_diff_digest": row.git_diff_digest,
            "command": row.command,
            "seeds": json.loads(row.seeds) if row.seeds else {},
        }

    # -- params and tags -----------------------------------------------------

    def log_param(self, run_id: str, key: str, value: Any) -> None:
        self.log_params(run_id, {key: value})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Record params; each key is write-once (the same value again is fine).

        Raises:
            Conflict: a key already holds a different value; nothing is written.
        """
        rows = []
        for key, value in params.items():
            check_key(key, "param key")
            text = check_param_value(key, value)
            rows.append(
                {"run_id": run_id, "key": key, "value": text, "value_num": numeric_or_none(text)}
            )
        if not rows:
            return
        try:
            with self.store.write() as conn:
                inserted = conn.execute(_upsert(conn, "params"), rows).rowcount
                if inserted == len(rows):
                    return  # every key was new: nothing to compare (the common case)
                # Some key existed (or the driver cannot count): compare what is stored.
                stored = dict(
                    conn.execute(
                        _STORED_PARAMS, {"rid": run_id, "keys": [r["key"] for r in rows]}
                    ).all()
                )
                for row in rows:
                    if stored.get(row["key"]) != row["value"]:
                        raise Conflict(
                            f"param {row['key']!r} of run {run_id} is already "
                            f"{stored.get(row['key'])!r}; params are write-once, so "
                            f"{row['value']!r} was not logged. Log it under another key or "
                            "start a new run"
                        )
        except SQLIntegrityError:
            raise NotFound(_no_run(run_id)) from None

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        self.set_tags(run_id, {key: value})

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags (mutable: a new value replaces the old one)."""
        rows = _tag_rows(run_id, tags)
        if not rows:
            return
        try:
            with self.store.write() as conn:
                conn.execute(_upsert(conn, "tags"), rows)
        except SQLIntegrityError:
            raise NotFound(_no_run(run_id)) from None

    def delete_tag(self, run_id: str, key: str) -> None:
        with self.store.write() as conn:
            done = conn.execute(
                s.tags.delete().where(s.tags.c.run_id == run_id, s.tags.c.key == key)
            )
        if done.rowcount == 0:
            raise NotFound(f"run {run_id} has no tag {key!r}")

    # -- metrics ---------------------------------------------------------------

    def log_metric(
        self, run_id: str, key: str, value: Any, step: int = 0, timestamp: int | None = None
    ) -> None:
        """Write one metric point now (the fluent ``keel.log_metric`` buffers instead)."""
        self.log_batch(run_id, metrics=[Metric(key, value, step, timestamp or now_ms())])

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[Metric] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """Write metric points, params and tags of one run."""
        rows = [
            (
                run_id,
                check_key(m.key, "metric key"),
                check_step(m.step),
                check_step(m.timestamp),
                check_metric_value(m.key, m.value),
            )
            for m in metrics
        ]
        if params:
            self.log_params(run_id, params)
        if tags:
            self.set_tags(run_id, tags)
        self.write_metric_rows(rows)

    def write_metric_rows(self, rows: Sequence[MetricRow]) -> None:
        """Bulk-write already validated points (the buffer's flush path)."""
        if not rows:
            return
        try:
            with self.store.write() as conn:
                write_metrics(conn, rows)
        except SQLIntegrityError:
            missing = sorted(
                {r[0] for r in rows} - set(self._existing_run_ids({r[0] for r in rows}))
            )
            raise NotFound(_no_run(missing[0] if missing else rows[0][0])) from None

    def _existing_run_ids(self, ids: set[str]) -> list[str]:
        with self.store.read() as conn:
            return list(conn.execute(select(s.runs.c.id).where(s.runs.c.id.in_(ids))).scalars())

    def next_steps(self, run_id: str) -> dict[str, int]:
        """Per metric key of the run, the step after its highest (a resumed run goes on there)."""
        with self.store.read() as conn:
            rows = conn.execute(
                select(s.metrics.c.key, func.max(s.metrics.c.step))
                .where(s.metrics.c.run_id == run_id)
                .group_by(s.metrics.c.key)
            ).all()
        return {key: int(step) + 1 for key, step in rows}

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every point of one metric, by step then time."""
        with self.store.read() as conn:
            rows = conn.execute(
                select(s.metrics.c.key, s.metrics.c.value, s.metrics.c.step, s.metrics.c.timestamp)
                .where(s.metrics.c.run_id == run_id, s.metrics.c.key == key)
                .order_by(s.metrics.c.step, s.metrics.c.timestamp)
            ).all()
            if (
                not rows
                and conn.execute(select(s.runs.c.id).where(s.runs.c.id == run_id)).first() is None
            ):
                raise NotFound(_no_run(run_id))
        return [Metric(k, _loaded(v), st, ts) for k, v, st, ts in rows]

    def metric_columns(
        self,
        run_id: str,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        x: Axis = "step",
        width: int | None = None,
    ) -> MetricColumns:
        """One metric from ``start`` to ``end`` as numpy columns; downsampled in SQL with ``width``.

        See :func:`keel.tracking.columns.read_metric_columns`. It reads the metadata store,
        so through ``keel server`` it is refused; ask the server for the history instead.

        Raises:
            NotFound: no run has this id.
        """
        with self.store.read() as conn:
            found = read_metric_columns(conn, run_id, key, start=start, end=end, x=x, width=width)
            if (
                not found.points
                and not found.skipped
                and conn.execute(select(s.runs.c.id).where(s.runs.c.id == run_id)).first() is None
            ):
                raise NotFound(_no_run(run_id))
        return found

    def metric_summaries(
        self, run_ids: list[str], keys: list[str] | None = None
    ) -> dict[tuple[str, str], MetricSummary]:
        """Min, max, last and count of each metric of ``run_ids`` (see
        :func:`keel.tracking.columns.read_metric_summaries`), read in one snapshot."""
        with self.store.read() as conn:
            return read_metric_summaries(conn, run_ids, keys)

    def count_metric_points(self, run_id: str | None = None) -> int:
        query = select(func.count()).select_from(s.metrics)
        if run_id is not None:
            query = query.where(s.metrics.c.run_id == run_id)
        with self.store.read() as conn:
            return int(conn.execute(query).scalar_one())

    # -- artifacts ---------------------------------------------------------------

    def log_artifact(
        self, run_id: str, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> ArtifactEntry:
        """Store a file in the content store and list it under the run.

        Args:
            run_id: the run.
            local_path: the file.
            artifact_path: a folder under the run's artifacts (``"plots"``); default the root.

        Raises:
            InvalidInput: the resulting artifact path is not a safe relative path
                (see :func:`keel.validation.check_relative_path`); nothing is stored.
        """
        src = Path(local_path)
        if src.is_dir():
            raise InvalidInput(f"{src} is a folder; use log_artifacts for folders")
        dest = _artifact_path(artifact_path, src.name)
        self.get_run_info(run_id)
        blob = self.artifacts.put_file(src)
        entry = ArtifactEntry(dest, blob.digest, blob.size)
        self._record_artifacts(run_id, [entry])
        return entry

    def log_artifacts(
        self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactEntry]:
        """Store every file under a folder and list each under the run.

        Raises:
            InvalidInput: a file's artifact path is not a safe relative path; every
                path is checked before any byte is stored.
        """
        files = folder_files(local_dir)
        dests = [_artifact_path(artifact_path, rel) for rel, _ in files]
        self.get_run_info(run_id)
        blobs = self.artifacts.put_files([p for _, p in files])
        entries = [ArtifactEntry(d, b.digest, b.size) for d, b in zip(dests, blobs, strict=True)]
        self._record_artifacts(run_id, entries)
        return entries

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> ArtifactEntry:
        """Store a JSON-serializable object as ``artifact_file`` (JSON, sorted keys)."""
        if not isinstance(artifact_file, str) or not artifact_file.endswith(".json"):
            raise InvalidInput(
                f"log_dict writes JSON; artifact_file must end in .json, got {artifact_file!r}"
            )
        dest = _artifact_path(None, artifact_file)
        try:
            data = json.dumps(obj, indent=2, sort_keys=True, allow_nan=True).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"log_dict needs a JSON-serializable object: {exc}") from None
        self.get_run_info(run_id)
        blob = self.artifacts.put_bytes(data)
        entry = ArtifactEntry(dest, blob.digest, blob.size)
        self._record_artifacts(run_id, [entry])
        return entry

    def _record_artifacts(self, run_id: str, entries: Sequence[ArtifactEntry]) -> None:
        if not entries:
            return
        for e in entries:  # the one gate every stored artifact path passes, whoever logs it
            check_relative_path(e.path, "artifact path")
        with self.store.write() as conn:
            stmt = insert_on_conflict(conn, s.run_artifacts)
            stmt = stmt.on_conflict_do_update(
                index_elements=[s.run_artifacts.c.run_id, s.run_artifacts.c.path],
                set_={"digest": stmt.excluded.digest, "size": stmt.excluded.size},
            )
            conn.execute(
                stmt,
                [
                    {"run_id": run_id, "path": e.path, "digest": e.digest, "size": e.size}
                    for e in entries
                ],
            )

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[ArtifactEntry]:
        """Artifacts of a run, optionally only those at or under ``path``.

        ``None``, ``""`` and ``"/"`` mean every artifact of the run.
        """
        query = select(
            s.run_artifacts.c.path, s.run_artifacts.c.digest, s.run_artifacts.c.size
        ).where(s.run_artifacts.c.run_id == run_id)
        prefix = _artifact_prefix(path)
        if prefix:
            query = query.where(
                (s.run_artifacts.c.path == prefix)
                | s.run_artifacts.c.path.like(f"{_escape_like(prefix)}/%", escape="\\")
            )
        with self.store.read() as conn:
            rows = conn.execute(query.order_by(s.run_artifacts.c.path)).all()
        if not rows:
            self.get_run_info(run_id)
        return [ArtifactEntry(*r) for r in rows]

    def download_artifacts(self, run_id: str, path: str, dst: str | os.PathLike[str]) -> Path:
        """Copy an artifact file, or every file under an artifact folder, into ``dst``.

        Args:
            run_id: the run.
            path: an artifact file or folder; ``""`` or ``"/"`` is the whole run.
            dst: the local folder to write into.

        Returns:
            The downloaded file (``dst/<name>``) when ``path`` names one file, else ``dst``.

        Raises:
            NotFound: the run has no artifact at ``path``.
            InvalidInput: ``path`` is not a safe relative path, or a file would land
                outside ``dst`` (a folder of ``dst`` is a symlink to elsewhere, or a
                stored path is unsafe); checked before anything is written.
        """
        prefix = _artifact_prefix(path)
        entries = self.list_artifacts(run_id, prefix)
        if not entries:
            raise NotFound(f"run {run_id} has no artifact at {path!r}")
        single = len(entries) == 1 and entries[0].path == prefix
        rels = [
            PurePosixPath(e.path).name
            if e.path == prefix
            else e.path[len(prefix) + 1 :]
            if prefix
            else e.path
            for e in entries
        ]
        targets = safe_joins(dst, rels, "artifact path")  # every file, before the first write
        for entry, target in zip(entries, targets, strict=True):
            self.artifacts.get_file(entry.digest, target)
        return Path(dst) / rels[0] if single else Path(dst)

    def load_dict(self, run_id: str, artifact_file: str) -> Any:
        entries = [e for e in self.list_artifacts(run_id, artifact_file) if e.path == artifact_file]
        if not entries:
            raise NotFound(f"run {run_id} has no artifact {artifact_file!r}")
        return json.loads(self.artifacts.get_bytes(entries[0].digest))

    # -- search ------------------------------------------------------------------

    def search_runs(
        self,
        experiment_ids: Sequence[int] | None = None,
        filter_string: str | None = None,
        order_by: Sequence[str] | str | None = None,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> RunsPage:
        """Runs matching a filter, in order, one page at a time.

        Args:
            experiment_ids: restrict to these experiments; ``None`` searches all.
            filter_string: see ``keel.tracking.search`` for the grammar, e.g.
                ``"metrics.acc > 0.9 AND (params.model = 'rf' OR tags.stage = 'prod')"``.
            order_by: e.g. ``["metrics.acc DESC", "attributes.start_time"]``; missing values last.
            max_results: page size (1 to 100,000).
            page_token: the ``next_page_token`` of the previous page.
        """
        ids, next_token = self._search_ids(
            experiment_ids, filter_string, order_by, max_results, page_token
        )
        with self.store.read() as conn:
            runs = load_runs(conn, ids)
        return RunsPage(runs, next_token)

    def search_runs_frame(
        self,
        experiment_ids: Sequence[int] | None = None,
        filter_string: str | None = None,
        order_by: Sequence[str] | str | None = None,
        max_results: int = 100_000,
        page_token: str | None = None,
    ) -> pd.DataFrame:
        """Like :meth:`search_runs`, as a DataFrame with ``metrics.*``, ``params.*``, ``tags.*`` columns."""
        ids, _ = self._search_ids(experiment_ids, filter_string, order_by, max_results, page_token)
        with self.store.read() as conn:
            return load_frame(conn, ids)

    def _search_ids(
        self,
        experiment_ids: Sequence[int] | None,
        filter_string: str | None,
        order_by: Sequence[str] | str | None,
        max_results: int,
        page_token: str | None,
    ) -> tuple[list[str], str | None]:
        if (
            isinstance(max_results, bool)
            or not isinstance(max_results, int)
            or not 1 <= max_results <= 100_000
        ):
            raise InvalidInput(
                f"max_results must be an integer from 1 to 100000, got {max_results!r}"
            )
        condition = q.compile_filter(q.parse_filter(filter_string))
        order = q.parse_order_by(order_by)
        offset = q.decode_page_token(page_token)
        query = select(s.runs.c.id).where(condition)
        if experiment_ids is not None:
            query = query.where(s.runs.c.experiment_id.in_(list(experiment_ids)))
        query = q.apply_order(query, order).limit(max_results + 1).offset(offset)
        with self.store.read() as conn:
            ids = list(conn.execute(query).scalars().all())  # one fetch, not a row at a time
        next_token = q.encode_page_token(offset + max_results) if len(ids) > max_results else None
        return ids[:max_results], next_token


def _escape_like(text: str) -> str:
    """``text`` matched literally inside a LIKE pattern (escape character: backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > 256:
        raise InvalidInput(f"{what} is {len(name)} characters; the limit is 256")
    return name


def _tag_rows(run_id: str, tags: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, value in tags.items():
        check_key(key, "tag key")
        text = check_tag_value(key, value)
        rows.append(
            {"run_id": run_id, "key": key, "value": text, "value_num": numeric_or_none(text)}
        )
    return rows


def _artifact_path(artifact_path: str | None, name: str) -> RelativePath:
    """The stored path of ``name`` logged under the folder ``artifact_path``, checked."""
    if artifact_path is None or artifact_path == "":
        return check_relative_path(name, "artifact path")
    if not isinstance(artifact_path, str):
        raise InvalidInput(f"artifact_path must be a string like 'plots', got {artifact_path!r}")
    if artifact_path.startswith("/"):
        # Refused, not made relative: "/plots" may well mean a local folder the caller confused
        # with the run's artifact root.
        raise InvalidInput(
            f"artifact_path {artifact_path!r} is absolute; give a folder relative to the run's "
            f"artifact root, like {artifact_path.lstrip('/') or 'plots'!r}"
        )
    folder = artifact_path[:-1] if artifact_path.endswith("/") else artifact_path
    return check_relative_path(f"{folder}/{name}", "artifact path")


def _artifact_prefix(path: str | None) -> str:
    """An artifact folder or file to list or download; ``""`` for the whole run."""
    if path is None:
        return ""
    if not isinstance(path, str):
        raise InvalidInput(f"artifact path must be a string like 'plots', got {path!r}")
    prefix = path.strip("/")
    return check_relative_path(prefix, "artifact path") if prefix else ""


def _no_run(run_id: str) -> str:
    return f"no run with id {run_id!r}; list runs with `keel runs list`"
