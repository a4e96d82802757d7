"""The metadata schema, as SQLAlchemy Core tables.

This module is the schema's description for queries. Changes to it ship as
a new Alembic revision in ``keel/store/migrations/versions``; a test checks
that the migrated database and these tables agree.

Times are integer milliseconds since the epoch (UTC). A NaN metric value is
stored as NULL (SQLite cannot store NaN) and read back as NaN; infinities
are stored as they are.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "alias_history",
    "alias_policies",
    "aliases",
    "approvals",
    "audit_head",
    "audit_log",
    "deployment_revisions",
    "deployments",
    "environments",
    "experiments",
    "latest_metrics",
    "metadata",
    "metrics",
    "model_checks",
    "model_version_tags",
    "model_versions",
    "params",
    "registered_models",
    "role_grants",
    "run_artifacts",
    "runs",
    "tags",
]

metadata = MetaData()

experiments = Table(
    "experiments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("lifecycle", String(16), nullable=False, server_default="active"),
)

environments = Table(
    "environments",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("python_version", String(64), nullable=False),
    Column("implementation", String(64), nullable=False),
    Column("platform", String(256), nullable=False),
    Column("distributions", Text, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("experiment_id", Integer, ForeignKey("experiments.id"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger),
    Column("parent_id", String(32), ForeignKey("runs.id")),
    Column("user_name", String(256), nullable=False),
    Column("command", Text),
    Column("environment_digest", String(64), ForeignKey("environments.digest")),
    Column("git_commit", String(64)),
    Column("git_dirty", Boolean),
    Column("git_diff_digest", String(64)),
    Column("seeds", Text),
    Index("ix_runs_experiment_start", "experiment_id", "start_time"),
    Index("ix_runs_parent", "parent_id"),
)

params = Table(
    "params",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Column("value_num", Float),
    Index("ix_params_key_num", "key", "value_num"),
)

tags = Table(
    "tags",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Column("value_num", Float),
    Index("ix_tags_key_num", "key", "value_num"),
)

metrics = Table(
    "metrics",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("value", Float),
    Index("ix_metrics_run_key_step", "run_id", "key", "step"),
)

latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("value", Float),
    Index("ix_latest_metrics_key_value", "key", "value"),
)

run_artifacts = Table(
    "run_artifacts",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
)

# -- registry ------------------------------------------------------------------

registered_models = Table(
    "registered_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("description", Text),
    # The store numbers versions: registering increments this in the same transaction.
    Column("last_version", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("source", String(1024), nullable=False),
    Column("run_id", String(32), ForeignKey("runs.id")),
    # The package's manifest at registration: the version's bytes never change.
    Column("manifest_digest", String(64)),
    Column("description", Text),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
)

model_version_tags = Table(
    "model_version_tags",
    metadata,
    Column(
        "version_id", Integer, ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("registered_models.id"), primary_key=True),
    Column("alias", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(256), nullable=False),
)

alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_models.id"), nullable=False),
    Column("alias", String(128), nullable=False),
    Column("from_version", Integer),
    Column("to_version", Integer),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("comment", Text),
    Index("ix_alias_history_model_alias", "model_id", "alias", "id"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("alias", String(128), nullable=False),
    Column("approver", String(256), nullable=False),
    Column("comment", Text),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint(
        "model_id", "version", "alias", "approver", name="uq_approvals_one_per_approver"
    ),
)

alias_policies = Table(
    "alias_policies",
    metadata,
    Column("alias", String(128), primary_key=True),
    Column("approvals", Integer, nullable=False),
    Column("role", String(128), nullable=False),
    Column("allow_registrant", Boolean, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(256), nullable=False),
)

role_grants = Table(
    "role_grants",
    metadata,
    Column("user_name", String(256), primary_key=True),
    Column("role", String(128), primary_key=True),
    Column("granted_at", BigInteger, nullable=False),
    Column("granted_by", String(256), nullable=False),
)

#: Results of ``keel models check``; the full report is a JSON object in the artifact store.
model_checks = Table(
    "model_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("against_version", Integer),
    Column("passed", Boolean, nullable=False),
    Column("data_digest", String(64), nullable=False),
    Column("report_digest", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Index("ix_model_checks_model_version", "model_id", "version", "id"),
)

# -- serving ----------------------------------------------------------------------

#: A named endpoint; ``revision`` is the one in force (moved by compare-and-set).
deployments = Table(
    "deployments",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
)

#: Every spec a deployment has had (routes, shadow, batching) as JSON; never edited.
deployment_revisions = Table(
    "deployment_revisions",
    metadata,
    Column("deployment", String(128), ForeignKey("deployments.name"), primary_key=True),
    Column("revision", Integer, primary_key=True),
    Column("spec", Text, nullable=False),
    # The revision this one undoes to on rollback: an undo stack, not a toggle.
    Column("previous", Integer),
    Column("comment", Text),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
)

# -- governance ------------------------------------------------------------------

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("object_type", String(64), nullable=False),
    Column("object_id", String(512), nullable=False),
    Column("before", Text),
    Column("after", Text),
    Column("prev_digest", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Index("ix_audit_log_object", "object_type", "object_id"),
)

#: One row (id 1): the newest entry's seq and digest. Locking it serializes the chain.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
)
