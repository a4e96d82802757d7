"""Reading an MLflow tracking database: the one module that knows MLflow's tables.

MLflow keeps its history in a SQL database (SQLite, PostgreSQL, MySQL) whose
schema its own Alembic migrations define. Keel does not depend on ``mlflow``,
so this module reads those tables with SQLAlchemy directly, and nothing else
in Keel does: every query on an MLflow table is here. The tables and columns
read are those MLflow has had since 2.x (``experiments``, ``runs``,
``params``, ``tags``, ``metrics``, ``registered_models``, ``model_versions``,
``model_version_tags``, ``registered_model_aliases``) plus 3.x's
``logged_models``, read only when present.

The database is opened read-only where the driver allows it (SQLite), and
only ``SELECT`` statements are sent.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from keel.errors import BackendUnavailable, InvalidInput
from keel.store.engine import normalize_url

__all__ = [
    "MlflowExperiment",
    "MlflowLoggedModel",
    "MlflowModelVersion",
    "MlflowRegisteredModel",
    "MlflowRun",
    "MlflowSource",
    "source_label",
    "uri_tail",
]

#: Tables every MLflow tracking database has; a database without them is not MLflow's.
_REQUIRED = ("experiments", "runs", "params", "tags", "metrics")
#: Columns that tell MLflow's tables from others of the same names (Keel's own, say).
_REQUIRED_COLUMNS = (
    ("experiments", "experiment_id"),
    ("runs", "run_uuid"),
    ("runs", "artifact_uri"),
    ("metrics", "is_nan"),
)
#: What MLflow stores for an infinite metric value (it cannot store infinities).
_FLOAT_MAX = 1.7976931348623157e308
#: MLflow objects Keel has no place for, by table: counted and reported, not imported.
_UNMAPPED_TABLES = {
    "experiment_tags": "experiment tags (Keel experiments have no tags)",
    "registered_model_tags": "registered model tags (Keel registered models have no tags)",
    "logged_model_tags": "logged model tags (the model's files come over; its own tags do not)",
    "logged_model_params": "logged model params (the model's files and its run's params "
    "come over; the logged model's own params do not)",
    "logged_model_metrics": "logged model metrics (the run's metrics come over; the logged "
    "model's own copies do not)",
    "trace_info": "traces (not imported)",
    "evaluation_datasets": "evaluation datasets (not imported)",
    "scorers": "scorers (not imported)",
    "webhooks": "webhooks (not imported)",
}


@dataclass(frozen=True)
class MlflowExperiment:
    """An MLflow experiment (``id`` as MLflow's text form, e.g. ``"0"``)."""

    id: str
    name: str
    artifact_location: str | None
    deleted: bool


@dataclass(frozen=True)
class MlflowRun:
    """An MLflow run and where MLflow says its artifacts are."""

    id: str
    experiment_id: str
    name: str | None
    user: str | None
    status: str
    start_time: int | None
    end_time: int | None
    deleted: bool
    artifact_uri: str | None


@dataclass(frozen=True)
class MlflowLoggedModel:
    """An MLflow 3.x logged model: a model package whose files live apart from its run's."""

    id: str
    experiment_id: str
    name: str
    artifact_location: str
    source_run_id: str | None
    deleted: bool


@dataclass(frozen=True)
class MlflowRegisteredModel:
    name: str
    description: str | None
    is_prompt: bool


@dataclass(frozen=True)
class MlflowModelVersion:
    name: str
    version: int
    source: str | None
    run_id: str | None
    status: str | None
    description: str | None
    stage: str | None
    tags: dict[str, str]


def source_label(url: str) -> str:
    """How an import names its source in the mapping record: the URL without its password.

    A SQLite path is made absolute, so the same file is the same source from any folder.

    Raises:
        InvalidInput: ``url`` is not a database URL.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        parsed = parsed.set(database=str(Path(parsed.database).resolve()))
    return parsed.set(password=None).render_as_string(hide_password=False)


def _parse(url: str) -> Any:
    try:
        return make_url(url)
    except ArgumentError:
        raise InvalidInput(
            f"expected an MLflow database URL like sqlite:///mlflow.db or "
            f"postgresql://user@host/mlflow, got {url!r}"
        ) from None


class MlflowSource:
    """An MLflow tracking database, read with SQLAlchemy.

    Args:
        url: the database URL MLflow was given as ``--backend-store-uri``
            (``sqlite:///mlflow.db``, ``postgresql://…``).

    Use it as a context manager: entering opens and checks the database.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._tables: set[str] = set()

    # -- opening -----------------------------------------------------------------

    def __enter__(self) -> MlflowSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect and check that the database is MLflow's.

        Raises:
            InvalidInput: the URL is not a database URL, names a missing SQLite file, or
                the database lacks MLflow's tables.
            BackendUnavailable: the database cannot be reached.
        """
        parsed = _parse(self.url)
        backend = parsed.get_backend_name()
        label = source_label(self.url)
        if backend == "sqlite":
            path = Path(parsed.database or "")
            if not parsed.database or not path.is_file():
                raise InvalidInput(
                    f"no MLflow database at {label}: the file does not exist; give the "
                    "--backend-store-uri MLflow was started with, e.g. sqlite:///mlflow.db"
                )
            uri = f"file:{path.resolve()}?mode=ro"
            engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True))
        else:
            try:
                engine = create_engine(normalize_url(self.url))
            except (ArgumentError, NoSuchModuleError, ImportError) as exc:
                raise InvalidInput(
                    f"cannot open {label}: {exc}; MLflow databases on SQLite and PostgreSQL "
                    "are supported"
                ) from None
        try:
            inspector = inspect(engine)
            tables = set(inspector.get_table_names())
            missing = [t for t in _REQUIRED if t not in tables]
            if not missing:
                missing = [
                    f"{table}.{column}"
                    for table, column in _REQUIRED_COLUMNS
                    if column not in {c["name"] for c in inspector.get_columns(table)}
                ]
        except DBAPIError as exc:
            engine.dispose()
            if backend == "sqlite":
                raise InvalidInput(
                    f"{label} is not a readable SQLite database: {exc.orig}"
                ) from None
            raise BackendUnavailable(
                f"cannot reach the MLflow database {label}: {exc.orig}"
            ) from None
        if missing:
            engine.dispose()
            raise InvalidInput(
                f"{label} is not an MLflow tracking database: it has no "
                f"{', '.join(missing)}; give the --backend-store-uri MLflow was started with"
            )
        self._engine = engine
        self._tables = tables

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _rows(self, sql: str, **params: Any) -> list[Any]:
        if self._engine is None:
            raise RuntimeError("open the MlflowSource first (use it in a with block)")
        try:
            with self._engine.connect() as conn:
                return list(conn.execute(text(sql), params).all())
        except SQLAlchemyError as exc:
            raise BackendUnavailable(
                f"reading the MLflow database {source_label(self.url)} failed: {exc}"
            ) from None

    def has(self, table: str) -> bool:
        """Whether the database has ``table`` (older MLflow versions lack the newer ones)."""
        return table in self._tables

    # -- tracking -------------------------------------------------------------------

    def experiments(self) -> list[MlflowExperiment]:
        rows = self._rows(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments "
            "ORDER BY experiment_id"
        )
        return [MlflowExperiment(str(r[0]), r[1], r[2], r[3] == "deleted") for r in rows]

    def runs(self) -> list[MlflowRun]:
        """Every run, oldest first."""
        rows = self._rows(
            "SELECT run_uuid, experiment_id, name, user_id, status, start_time, end_time, "
            "lifecycle_stage, artifact_uri FROM runs ORDER BY start_time, run_uuid"
        )
        return [
            MlflowRun(
                r[0], str(r[1]), r[2], r[3], r[4] or "FINISHED", r[5], r[6], r[7] == "deleted", r[8]
            )
            for r in rows
        ]

    def params(self, run_id: str) -> dict[str, str]:
        rows = self._rows("SELECT key, value FROM params WHERE run_uuid = :r", r=run_id)
        return {r[0]: r[1] for r in rows}

    def tags(self, run_id: str) -> dict[str, str]:
        rows = self._rows("SELECT key, value FROM tags WHERE run_uuid = :r", r=run_id)
        return {r[0]: "" if r[1] is None else r[1] for r in rows}

    def metrics(self, run_id: str) -> list[tuple[str, float, int, int]]:
        """Every point of every metric of a run: (key, value, step, timestamp), in order.

        MLflow stores NaN as 0 with ``is_nan`` set, and infinities as the largest
        float; both come back as what was logged.
        """
        rows = self._rows(
            "SELECT key, value, step, timestamp, is_nan FROM metrics WHERE run_uuid = :r "
            "ORDER BY key, step, timestamp",
            r=run_id,
        )
        return [(r[0], _metric_value(r[1], r[4]), int(r[2]), int(r[3])) for r in rows]

    def parent_ids(self) -> dict[str, str]:
        """Run id -> its parent run's id, for nested runs (MLflow's ``mlflow.parentRunId`` tag)."""
        rows = self._rows("SELECT run_uuid, value FROM tags WHERE key = 'mlflow.parentRunId'")
        return {r[0]: r[1] for r in rows if r[1]}

    def dataset_inputs(self) -> int:
        """How many dataset inputs runs have (MLflow datasets are not Keel dataset versions)."""
        if not self.has("inputs"):
            return 0
        rows = self._rows(
            "SELECT count(*) FROM inputs WHERE source_type = 'DATASET' AND destination_type = 'RUN'"
        )
        return int(rows[0][0])

    def unmapped_counts(self) -> dict[str, int]:
        """Rows of MLflow tables Keel has no place for, by reason (only tables that have rows)."""
        counts = {}
        for table, reason in _UNMAPPED_TABLES.items():
            if self.has(table):
                # the names are this module's own constants, never input
                count = int(self._rows(f"SELECT count(*) FROM {table}")[0][0])
                if count:
                    counts[reason] = count
        return counts

    # -- 3.x logged models -----------------------------------------------------------

    def logged_models(self) -> list[MlflowLoggedModel]:
        if not self.has("logged_models"):
            return []
        rows = self._rows(
            "SELECT model_id, experiment_id, name, artifact_location, source_run_id, "
            "lifecycle_stage FROM logged_models ORDER BY creation_timestamp_ms, model_id"
        )
        return [
            MlflowLoggedModel(r[0], str(r[1]), r[2], r[3], r[4], r[5] == "deleted") for r in rows
        ]

    # -- registry ---------------------------------------------------------------------

    def registered_models(self) -> list[MlflowRegisteredModel]:
        if not self.has("registered_models"):
            return []
        prompts: set[str] = set()
        if self.has("registered_model_tags"):
            prompts = {
                r[0]
                for r in self._rows(
                    "SELECT name FROM registered_model_tags "
                    "WHERE key = 'mlflow.prompt.is_prompt' AND lower(value) = 'true'"
                )
            }
        rows = self._rows(
            "SELECT name, description FROM registered_models ORDER BY creation_time, name"
        )
        return [MlflowRegisteredModel(r[0], r[1], r[0] in prompts) for r in rows]

    def model_versions(self, name: str) -> list[MlflowModelVersion]:
        """The versions of one registered model, by number."""
        tags: dict[int, dict[str, str]] = {}
        if self.has("model_version_tags"):
            for version, key, value in self._rows(
                "SELECT version, key, value FROM model_version_tags WHERE name = :n", n=name
            ):
                tags.setdefault(int(version), {})[key] = "" if value is None else value
        rows = self._rows(
            "SELECT version, source, run_id, status, description, current_stage "
            "FROM model_versions WHERE name = :n ORDER BY version",
            n=name,
        )
        return [
            MlflowModelVersion(
                name, int(r[0]), r[1], r[2] or None, r[3], r[4], r[5], tags.get(int(r[0]), {})
            )
            for r in rows
        ]

    def aliases(self, name: str) -> dict[str, int]:
        if not self.has("registered_model_aliases"):
            return {}
        rows = self._rows(
            "SELECT alias, version FROM registered_model_aliases WHERE name = :n ORDER BY alias",
            n=name,
        )
        return {r[0]: int(r[1]) for r in rows}


def _metric_value(value: float, is_nan: Any) -> float:
    if is_nan:
        return math.nan
    if value == _FLOAT_MAX:
        return math.inf
    if value == -_FLOAT_MAX:
        return -math.inf
    return float(value)


def uri_tail(uri: str | None, parts: int) -> list[str]:
    """The last ``parts`` segments of a path or URI's path (``file://``, ``s3://``, a plain path)."""
    if not uri:
        return []
    path = (
        unquote(urlparse(uri).path) if "://" in uri or uri.startswith("mlflow-artifacts:") else uri
    )
    segments = [s for s in path.replace("\\", "/").split("/") if s]
    return segments[-parts:]
