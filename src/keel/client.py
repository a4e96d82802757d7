"""``keel.Client``: everything the module-level API does, addressed by id.

:class:`Client` holds its parts and delegates to them, the way MLflow's
``MlflowClient`` composes a tracking and a registry client: ``client.tracking``
(experiments, runs, metrics, artifacts, search) and ``client.registry`` (models,
versions, aliases, approvals, roles). Both reach Keel's state through one
:class:`~keel.transport.Transport`, so the same API can later talk to a server
by passing another transport.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from keel.data.client import data_part
from keel.registry.client import UNSET
from keel.registry.remote import registry_for
from keel.tracking.remote import tracking_for
from keel.transport import LocalTransport, Transport, TransportBound, local_or

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path

    import pandas as pd
    from sqlalchemy import Connection

    from keel.config import Settings
    from keel.features.part import Features
    from keel.jobs.store import JobStore
    from keel.llm.part import Prompts
    from keel.llm.rag.part import RagIndexes
    from keel.monitoring.part import MonitoringPart
    from keel.pipelines.lineage import Lineage
    from keel.registry.client import Unset
    from keel.registry.entities import (
        AliasChange,
        AliasPolicy,
        Approval,
        ModelVersion,
        RegisteredModel,
        ResolvedModel,
    )
    from keel.serving.deployments import Deployments
    from keel.tracking.client import MetricRow
    from keel.tracking.entities import ArtifactEntry, Experiment, Metric, Run, RunInfo, RunsPage

__all__ = ["Client"]


class Client(TransportBound):
    """One client for experiments, runs, metrics, artifacts, search and the registry.

    Args:
        settings: defaults to the process's settings (``keel.config.get_settings()``).
        transport: how to reach Keel's state; defaults to a
            :class:`~keel.transport.LocalTransport` on ``settings`` (then leave
            ``settings`` out: the transport carries its own).

    Attributes:
        transport: the one transport every part uses.
        tracking: experiments, runs, params, metrics, artifacts and search.
        registry: registered models, versions, aliases, approvals and roles.
        data: dataset versions and the runs that used them.
        deployments: deployment specs, revisions and rollback (made on first use).
        monitoring: monitor settings, results and alerts (made on first use).
        lineage: the lineage graph (made on first use).
        prompts: versioned prompts, their aliases and approvals (made on first use).
        rag: versioned RAG indexes, their aliases and approvals (made on first use).
        features: feature definitions, training sets and online features (made on first use).
        jobs: queued jobs, queues and pools (made on first use).

    Example:
        >>> client = keel.Client()
        >>> page = client.search_runs(filter_string="metrics.acc > 0.9", max_results=10)
        >>> client.set_alias("churn", "champion", 3)
    """

    def __init__(self, settings: Settings | None = None, *, transport: Transport | None = None):
        self.transport = local_or(transport, settings)
        self.tracking = tracking_for(self.transport)
        self.registry = registry_for(self.transport, self.tracking)
        self.data = data_part(self.transport)

    def __repr__(self) -> str:
        return f"Client(transport={self.transport!r})"

    # Parts that take the whole client (they read the registry through it), made on first use.

    @cached_property
    def deployments(self) -> Deployments:
        """Deployments: specs, revisions and rollback (see :class:`keel.serving.Deployments`)."""
        from keel.serving.deployments import deployments_part

        return deployments_part(self)

    @cached_property
    def monitoring(self) -> MonitoringPart:
        """Monitor settings, results and alerts (see :mod:`keel.monitoring`)."""
        from keel.monitoring.part import monitoring_part

        return monitoring_part(self)

    @cached_property
    def prompts(self) -> Prompts:
        """Versioned prompts: register, load, render, alias, approve (see :mod:`keel.llm`)."""
        from keel.llm.part import prompts_part

        return prompts_part(self.transport)

    @cached_property
    def rag(self) -> RagIndexes:
        """Versioned RAG indexes: build, load, query, alias, approve (see :mod:`keel.llm.rag`)."""
        from keel.llm.rag.part import rag_part

        return rag_part(self)

    @cached_property
    def features(self) -> Features:
        """Feature views: apply, training sets, materialize, online reads (see :mod:`keel.features`)."""
        from keel.features.part import features_part

        return features_part(self)

    @cached_property
    def jobs(self) -> JobStore:
        """Jobs, queues and pools: submit, list, cancel (see :mod:`keel.jobs`)."""
        from keel.jobs.store import jobs_for

        return jobs_for(self)

    @cached_property
    def lineage(self) -> Lineage:
        """The lineage graph: what a node came from and what came of it."""
        from keel.pipelines.lineage import lineage_part

        return lineage_part(self.transport)

    # -- tracking ------------------------------------------------------------

    def create_experiment(self, name: str) -> int:
        """Create an experiment and return its id; ``Conflict`` if the name is taken.

        See :meth:`TrackingClient.create_experiment`.
        """
        return self.tracking.create_experiment(name)

    def get_or_create_experiment(self, name: str) -> Experiment:
        """The experiment named ``name``, created if absent (safe under concurrent callers).

        See :meth:`TrackingClient.get_or_create_experiment`.
        """
        return self.tracking.get_or_create_experiment(name)

    def get_experiment(self, experiment_id: int) -> Experiment:
        """See :meth:`TrackingClient.get_experiment`."""
        return self.tracking.get_experiment(experiment_id)

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """See :meth:`TrackingClient.get_experiment_by_name`."""
        return self.tracking.get_experiment_by_name(name)

    def resolve_experiment(self, name_or_id: str | int) -> Experiment:
        """The experiment named ``name_or_id``, or with that id; ``NotFound`` otherwise.

        See :meth:`TrackingClient.resolve_experiment`.
        """
        return self.tracking.resolve_experiment(name_or_id)

    def list_experiments(self) -> list[Experiment]:
        """See :meth:`TrackingClient.list_experiments`."""
        return self.tracking.list_experiments()

    def experiment_run_counts(self) -> dict[int, int]:
        """See :meth:`TrackingClient.experiment_run_counts`."""
        return self.tracking.experiment_run_counts()

    def create_run(
        self,
        experiment_id: int,
        name: str | None = None,
        *,
        parent_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        capture: bool = True,
        seeds: Mapping[str, int] | None = None,
    ) -> RunInfo:
        """Start a run in ``RUNNING`` state, recording its environment unless ``capture=False``.

        See :meth:`TrackingClient.create_run`.
        """
        return self.tracking.create_run(
            experiment_id, name, parent_id=parent_id, tags=tags, capture=capture, seeds=seeds
        )

    def get_run_info(self, run_id: str) -> RunInfo:
        """See :meth:`TrackingClient.get_run_info`."""
        return self.tracking.get_run_info(run_id)

    def get_run(self, run_id: str) -> Run:
        """The run with its params, tags and latest metric values.

        See :meth:`TrackingClient.get_run`.
        """
        return self.tracking.get_run(run_id)

    def resolve_run_id(self, prefix: str) -> str:
        """A full run id from an unambiguous prefix of at least 6 characters.

        See :meth:`TrackingClient.resolve_run_id`.
        """
        return self.tracking.resolve_run_id(prefix)

    def set_terminated(
        self, run_id: str, status: str = "FINISHED", end_time: int | None = None
    ) -> None:
        """Mark a run ended with ``status`` (FINISHED, FAILED or KILLED).

        See :meth:`TrackingClient.set_terminated`.
        """
        return self.tracking.set_terminated(run_id, status, end_time)

    def set_running(self, run_id: str) -> RunInfo:
        """Reopen an ended run so more can be logged to it.

        See :meth:`TrackingClient.set_running`.
        """
        return self.tracking.set_running(run_id)

    def record_seeds(self, run_id: str, seeds: Mapping[str, int]) -> None:
        """See :meth:`TrackingClient.record_seeds`."""
        return self.tracking.record_seeds(run_id, seeds)

    def get_environment(self, run_id: str) -> dict[str, Any]:
        """Interpreter, platform, distributions, git state, command and seeds of a run.

        See :meth:`TrackingClient.get_environment`.
        """
        return self.tracking.get_environment(run_id)

    def log_param(self, run_id: str, key: str, value: Any) -> None:
        """See :meth:`TrackingClient.log_param`."""
        return self.tracking.log_param(run_id, key, value)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Record params; each key is write-once (the same value again is fine).

        See :meth:`TrackingClient.log_params`.
        """
        return self.tracking.log_params(run_id, params)

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        """See :meth:`TrackingClient.set_tag`."""
        return self.tracking.set_tag(run_id, key, value)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags (mutable: a new value replaces the old one).

        See :meth:`TrackingClient.set_tags`.
        """
        return self.tracking.set_tags(run_id, tags)

    def delete_tag(self, run_id: str, key: str) -> None:
        """See :meth:`TrackingClient.delete_tag`."""
        return self.tracking.delete_tag(run_id, key)

    def log_metric(
        self, run_id: str, key: str, value: Any, step: int = 0, timestamp: int | None = None
    ) -> None:
        """Write one metric point now (the fluent ``keel.log_metric`` buffers instead).

        See :meth:`TrackingClient.log_metric`.
        """
        return self.tracking.log_metric(run_id, key, value, step, timestamp)

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[Metric] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """Write metric points, params and tags of one run.

        See :meth:`TrackingClient.log_batch`.
        """
        return self.tracking.log_batch(run_id, metrics, params, tags)

    def write_metric_rows(self, rows: Sequence[MetricRow]) -> None:
        """Bulk-write already validated points (the buffer's flush path).

        See :meth:`TrackingClient.write_metric_rows`.
        """
        return self.tracking.write_metric_rows(rows)

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every point of one metric, by step then time.

        See :meth:`TrackingClient.get_metric_history`.
        """
        return self.tracking.get_metric_history(run_id, key)

    def count_metric_points(self, run_id: str | None = None) -> int:
        """See :meth:`TrackingClient.count_metric_points`."""
        return self.tracking.count_metric_points(run_id)

    def log_artifact(
        self, run_id: str, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> ArtifactEntry:
        """Store a file in the content store and list it under the run.

        See :meth:`TrackingClient.log_artifact`.
        """
        return self.tracking.log_artifact(run_id, local_path, artifact_path)

    def log_artifacts(
        self, run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactEntry]:
        """Store every file under a folder and list each under the run.

        See :meth:`TrackingClient.log_artifacts`.
        """
        return self.tracking.log_artifacts(run_id, local_dir, artifact_path)

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> ArtifactEntry:
        """Store a JSON-serializable object as ``artifact_file`` (JSON, sorted keys).

        See :meth:`TrackingClient.log_dict`.
        """
        return self.tracking.log_dict(run_id, obj, artifact_file)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[ArtifactEntry]:
        """Artifacts of a run, optionally only those at or under ``path``.

        See :meth:`TrackingClient.list_artifacts`.
        """
        return self.tracking.list_artifacts(run_id, path)

    def download_artifacts(self, run_id: str, path: str, dst: str | os.PathLike[str]) -> Path:
        """Copy an artifact file, or every file under an artifact folder, into ``dst``.

        See :meth:`TrackingClient.download_artifacts`.
        """
        return self.tracking.download_artifacts(run_id, path, dst)

    def load_dict(self, run_id: str, artifact_file: str) -> Any:
        """See :meth:`TrackingClient.load_dict`."""
        return self.tracking.load_dict(run_id, artifact_file)

    def search_runs(
        self,
        experiment_ids: Sequence[int] | None = None,
        filter_string: str | None = None,
        order_by: Sequence[str] | str | None = None,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> RunsPage:
        """Runs matching a filter, in order, one page at a time.

        See :meth:`TrackingClient.search_runs`.
        """
        return self.tracking.search_runs(
            experiment_ids, filter_string, order_by, max_results, page_token
        )

    def search_runs_frame(
        self,
        experiment_ids: Sequence[int] | None = None,
        filter_string: str | None = None,
        order_by: Sequence[str] | str | None = None,
        max_results: int = 100000,
        page_token: str | None = None,
    ) -> pd.DataFrame:
        """Like :meth:`search_runs`, as a DataFrame with ``metrics.*``, ``params.*``, ``tags.*``
        columns.

        See :meth:`TrackingClient.search_runs_frame`.
        """
        return self.tracking.search_runs_frame(
            experiment_ids, filter_string, order_by, max_results, page_token
        )

    # -- registry ------------------------------------------------------------

    def create_registered_model(self, name: str, description: str | None = None) -> RegisteredModel:
        """Create an empty registered model; ``Conflict`` if the name exists.

        See :meth:`RegistryClient.create_registered_model`.
        """
        return self.registry.create_registered_model(name, description)

    def get_registered_model(self, name: str) -> RegisteredModel:
        """See :meth:`RegistryClient.get_registered_model`."""
        return self.registry.get_registered_model(name)

    def list_registered_models(self) -> list[RegisteredModel]:
        """See :meth:`RegistryClient.list_registered_models`."""
        return self.registry.list_registered_models()

    def create_model_version(
        self,
        name: str,
        source: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Register the model package at ``source`` (``runs:/<run_id>/<path>``) as a new version.

        See :meth:`RegistryClient.create_model_version`. With the ``compile_on_register``
        setting, the version is then compiled to that target
        (:func:`keel.models.compile.compile_on_register`); a failure warns and leaves the
        version registered. Through ``keel server`` the server's setting decides.
        """
        version = self.registry.create_model_version(
            name, source, description=description, tags=tags
        )
        if self.transport.settings.compile_on_register and isinstance(
            self.transport, LocalTransport
        ):
            from keel.models.compile import compile_on_register

            compile_on_register(self, version)  # after the commit; a failure only warns
        return version

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        """See :meth:`RegistryClient.get_model_version`."""
        return self.registry.get_model_version(name, version)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        """See :meth:`RegistryClient.list_model_versions`."""
        return self.registry.list_model_versions(name)

    def set_model_version_tag(self, name: str, version: int, key: str, value: Any) -> None:
        """Tag a version (tags are metadata; the version's bytes never change).

        See :meth:`RegistryClient.set_model_version_tag`.
        """
        return self.registry.set_model_version_tag(name, version, key, value)

    def update_model_version(self, name: str, version: int, *, description: str) -> ModelVersion:
        """Replace a version's description (its intended use and limitations, for the card).

        See :meth:`RegistryClient.update_model_version`.
        """
        return self.registry.update_model_version(name, version, description=description)

    def get_alias(self, name: str, alias: str) -> int | None:
        """The version ``alias`` points at, or ``None``.

        See :meth:`RegistryClient.get_alias`.
        """
        return self.registry.get_alias(name, alias)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """See :meth:`RegistryClient.get_model_version_by_alias`."""
        return self.registry.get_model_version_by_alias(name, alias)

    def find_model_version(self, name: str, ref: int | str | None = None) -> ModelVersion:
        """The version a person names: a number or an alias, after the name or joined to it.

        See :meth:`RegistryClient.find_model_version`.
        """
        return self.registry.find_model_version(name, ref)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
        conn: Connection | None = None,
    ) -> AliasChange:
        """Point ``alias`` at ``version``, as a compare-and-set.

        See :meth:`RegistryClient.set_alias`.
        """
        return self.registry.set_alias(
            name, alias, version, expected=expected, comment=comment, conn=conn
        )

    def delete_alias(
        self,
        name: str,
        alias: str,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
        conn: Connection | None = None,
    ) -> AliasChange:
        """Remove an alias (compare-and-set like :meth:`set_alias`, ``conn`` likewise).

        See :meth:`RegistryClient.delete_alias`.
        """
        return self.registry.delete_alias(
            name, alias, expected=expected, comment=comment, conn=conn
        )

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasChange]:
        """Every move of the model's aliases (or of one alias), oldest first.

        See :meth:`RegistryClient.alias_history`.
        """
        return self.registry.alias_history(name, alias)

    def approve(self, name: str, version: int, alias: str, comment: str | None = None) -> Approval:
        """Record the current user's approval of ``version`` for the protected ``alias``.

        See :meth:`RegistryClient.approve`.
        """
        return self.registry.approve(name, version, alias, comment)

    def list_approvals(self, name: str, version: int | None = None) -> list[Approval]:
        """Approvals of the model's versions (or of one version), oldest first.

        See :meth:`RegistryClient.list_approvals`.
        """
        return self.registry.list_approvals(name, version)

    def set_alias_policy(
        self,
        alias: str,
        *,
        approvals: int = 1,
        role: str = "approver",
        allow_registrant: bool = False,
    ) -> AliasPolicy:
        """Protect ``alias`` for every model: moving it needs approvals from ``role``.

        See :meth:`RegistryClient.set_alias_policy`.
        """
        return self.registry.set_alias_policy(
            alias, approvals=approvals, role=role, allow_registrant=allow_registrant
        )

    def delete_alias_policy(self, alias: str) -> None:
        """Unprotect ``alias``: it moves without approvals again.

        See :meth:`RegistryClient.delete_alias_policy`.
        """
        return self.registry.delete_alias_policy(alias)

    def list_alias_policies(self) -> list[AliasPolicy]:
        """See :meth:`RegistryClient.list_alias_policies`."""
        return self.registry.list_alias_policies()

    def grant_role(self, user: str, role: str) -> None:
        """Give ``user`` a role. Once anyone is an admin, only admins may grant.

        See :meth:`RegistryClient.grant_role`.
        """
        return self.registry.grant_role(user, role)

    def revoke_role(self, user: str, role: str) -> None:
        """Take a role from ``user`` (admins only, once anyone is an admin).

        See :meth:`RegistryClient.revoke_role`.
        """
        return self.registry.revoke_role(user, role)

    def list_roles(self) -> dict[str, list[str]]:
        """Every user with a role, and their roles.

        See :meth:`RegistryClient.list_roles`.
        """
        return self.registry.list_roles()

    def resolve_model(self, uri: str) -> ResolvedModel:
        """Where ``uri``'s package lives (``runs:/``, ``models:/name/3``, ``models:/name@alias``).

        See :meth:`RegistryClient.resolve_model`.
        """
        return self.registry.resolve_model(uri)
