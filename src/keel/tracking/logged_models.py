"""Logged models: MLflow 3.x's model records, kept in Keel's ``logged_models`` table.

A logged model is a model package a run produced, named ``m-<32 hex>``. Its
files are artifacts of its source run under ``models/<id>/`` (the MLflow API
stores them there), so lineage, listings and downloads treat them like any
other artifact of the run; this table holds only what MLflow says about the
model itself: name, status, type, tags and params.

Tags and params are JSON objects in one column each. A change to them is a
compare-and-set on the column's previous text, retried when another writer
got there first, so two concurrent writers never lose each other's keys.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from keel.errors import Conflict, InvalidInput, NotFound
from keel.governance import audit
from keel.store import schema as s
from keel.store.sql import now_ms
from keel.tracking.validation import check_key, check_param_value, check_tag_value

if TYPE_CHECKING:
    from keel.store import Store

__all__ = ["MODEL_STATUSES", "LoggedModel", "LoggedModels"]

#: A logged model is PENDING while its files upload, then READY or FAILED.
MODEL_STATUSES = ("PENDING", "READY", "FAILED")
_CAS_ATTEMPTS = 20


@dataclass(frozen=True)
class LoggedModel:
    """One logged model: its files are its source run's artifacts under ``models/<id>/``."""

    id: str
    experiment_id: int
    name: str
    source_run_id: str | None
    status: str
    model_type: str | None
    created_at: int
    updated_at: int
    created_by: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def artifact_prefix(self) -> str:
        """Where the model's files live among its source run's artifacts."""
        return f"models/{self.id}"


def _model(row: Any) -> LoggedModel:
    return LoggedModel(
        id=row.id,
        experiment_id=row.experiment_id,
        name=row.name,
        source_run_id=row.source_run_id,
        status=row.status,
        model_type=row.model_type,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
        tags=json.loads(row.tags),
        params=json.loads(row.params),
    )


def _check_model_id(model_id: Any) -> str:
    if (
        not isinstance(model_id, str)
        or len(model_id) != 34
        or not model_id.startswith("m-")
        or any(c not in "0123456789abcdef" for c in model_id[2:])
    ):
        raise InvalidInput(f"a logged model id is 'm-' and 32 hex digits, got {model_id!r:.60}")
    return model_id


def _checked(values: Mapping[str, Any] | None, kind: str) -> dict[str, str]:
    check = check_tag_value if kind == "tag" else check_param_value
    return {check_key(k, f"{kind} key"): check(k, v) for k, v in (values or {}).items()}


class LoggedModels:
    """Logged models in a metadata store, written as ``actor``.

    Args:
        store: the metadata store (a client's ``store``).
        actor: who the audit log names for creates.
    """

    def __init__(self, store: Store, actor: str) -> None:
        self.store = store
        self.actor = actor

    def create(
        self,
        experiment_id: int,
        name: str,
        *,
        source_run_id: str | None = None,
        model_type: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> LoggedModel:
        """Record a new model in ``PENDING`` state and audit it.

        Raises:
            InvalidInput: a bad name, key or value.
            NotFound: the experiment or the source run does not exist.
        """
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            raise InvalidInput(f"model name must be 1 to 256 characters, got {name!r:.60}")
        if model_type is not None and len(model_type) > 256:
            raise InvalidInput(f"model_type is {len(model_type)} characters; the limit is 256")
        checked_tags, checked_params = _checked(tags, "tag"), _checked(params, "param")
        model_id = f"m-{uuid.uuid4().hex}"
        at = now_ms()
        row = {
            "id": model_id,
            "experiment_id": experiment_id,
            "name": name,
            "source_run_id": source_run_id,
            "status": "PENDING",
            "model_type": model_type,
            "tags": json.dumps(checked_tags, sort_keys=True),
            "params": json.dumps(checked_params, sort_keys=True),
            "created_at": at,
            "updated_at": at,
            "created_by": self.actor,
        }
        try:
            with self.store.write() as conn:
                if source_run_id is not None:
                    run = conn.execute(
                        select(s.runs.c.experiment_id).where(s.runs.c.id == source_run_id)
                    ).first()
                    if run is None:
                        raise NotFound(f"no run with id {source_run_id!r} to log a model from")
                    if run.experiment_id != experiment_id:
                        raise InvalidInput(
                            f"run {source_run_id} is in experiment {run.experiment_id}, not "
                            f"{experiment_id}; log the model in its run's experiment"
                        )
                conn.execute(s.logged_models.insert().values(**row))
                audit.record(
                    conn,
                    actor=self.actor,
                    action="logged_model.create",
                    object_type="logged_model",
                    object_id=model_id,
                    after={"name": name, "experiment_id": experiment_id, "run_id": source_run_id},
                )
        except SQLIntegrityError:
            raise NotFound(
                f"no experiment with id {experiment_id}; see `keel experiments list`"
            ) from None
        return LoggedModel(
            model_id,
            experiment_id,
            name,
            source_run_id,
            "PENDING",
            model_type,
            at,
            at,
            self.actor,
            checked_tags,
            checked_params,
        )

    def get(self, model_id: str) -> LoggedModel:
        """The model ``model_id``.

        Raises:
            NotFound: no model has that id.
        """
        _check_model_id(model_id)
        with self.store.read() as conn:
            row = conn.execute(
                select(s.logged_models).where(s.logged_models.c.id == model_id)
            ).first()
        if row is None:
            raise NotFound(f"no logged model with id {model_id!r}")
        return _model(row)

    def finalize(self, model_id: str, status: str) -> LoggedModel:
        """Set the model's status once its files are uploaded (``READY``) or failed."""
        if status not in MODEL_STATUSES:
            raise InvalidInput(
                f"logged model status must be one of {', '.join(MODEL_STATUSES)}, got {status!r}"
            )
        _check_model_id(model_id)
        with self.store.write() as conn:
            done = conn.execute(
                update(s.logged_models)
                .where(s.logged_models.c.id == model_id)
                .values(status=status, updated_at=now_ms())
            )
        if done.rowcount == 0:
            raise NotFound(f"no logged model with id {model_id!r}")
        return self.get(model_id)

    def set_tags(self, model_id: str, tags: Mapping[str, Any]) -> LoggedModel:
        """Set tags (a new value replaces the old one)."""
        checked = _checked(tags, "tag")
        return self._change(model_id, "tags", lambda old: {**old, **checked})

    def delete_tag(self, model_id: str, key: str) -> LoggedModel:
        """Delete one tag; ``NotFound`` if the model has no such tag."""

        def without(old: dict[str, str]) -> dict[str, str]:
            if key not in old:
                raise NotFound(f"logged model {model_id} has no tag {key!r}")
            return {k: v for k, v in old.items() if k != key}

        return self._change(model_id, "tags", without)

    def log_params(self, model_id: str, params: Mapping[str, Any]) -> LoggedModel:
        """Record params; like a run's, each key is write-once."""
        checked = _checked(params, "param")

        def merged(old: dict[str, str]) -> dict[str, str]:
            for key, value in checked.items():
                if key in old and old[key] != value:
                    raise Conflict(
                        f"param {key!r} of logged model {model_id} is already {old[key]!r}; "
                        "params are write-once"
                    )
            return {**old, **checked}

        return self._change(model_id, "params", merged)

    def _change(
        self, model_id: str, column: str, change: Callable[[dict[str, str]], dict[str, str]]
    ) -> LoggedModel:
        """Apply ``change`` to a JSON column by compare-and-set, retried on a lost race."""
        _check_model_id(model_id)
        target = s.logged_models.c[column]
        for _ in range(_CAS_ATTEMPTS):
            with self.store.write() as conn:
                old = conn.execute(
                    select(target).where(s.logged_models.c.id == model_id)
                ).scalar_one_or_none()
                if old is None:
                    raise NotFound(f"no logged model with id {model_id!r}")
                new = json.dumps(change(json.loads(old)), sort_keys=True)
                done = conn.execute(
                    update(s.logged_models)
                    .where(s.logged_models.c.id == model_id, target == old)
                    .values({column: new, "updated_at": now_ms()})
                )
                if done.rowcount == 1:
                    break
        else:  # pragma: no cover - needs 20 writers racing on one model
            raise Conflict(f"logged model {model_id} changed under {_CAS_ATTEMPTS} attempts")
        return self.get(model_id)

    def search(
        self,
        experiment_ids: Sequence[int] | None = None,
        *,
        source_run_id: str | None = None,
    ) -> list[LoggedModel]:
        """Models of these experiments (every one when ``None``), newest first."""
        query = select(s.logged_models)
        if experiment_ids is not None:
            query = query.where(s.logged_models.c.experiment_id.in_(list(experiment_ids)))
        if source_run_id is not None:
            query = query.where(s.logged_models.c.source_run_id == source_run_id)
        query = query.order_by(s.logged_models.c.created_at.desc(), s.logged_models.c.id)
        with self.store.read() as conn:
            return [_model(row) for row in conn.execute(query).all()]
