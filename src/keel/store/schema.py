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
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

__all__ = [
    "alert_states",
    "alerts",
    "alias_history",
    "alias_policies",
    "aliases",
    "api_tokens",
    "approvals",
    "audit_head",
    "audit_log",
    "automation_events",
    "automation_policies",
    "automation_state",
    "automation_triggers",
    "dataset_versions",
    "datasets",
    "deployment_revisions",
    "deployments",
    "environments",
    "experiments",
    "feature_definitions",
    "feature_materializations",
    "idempotency_keys",
    "imported_objects",
    "job_events",
    "job_gpu_spans",
    "job_pools",
    "job_prices",
    "job_queues",
    "job_scheduler",
    "jobs",
    "latest_metrics",
    "lineage_edges",
    "llm_prices",
    "llm_spend",
    "logged_models",
    "metadata",
    "metrics",
    "model_checks",
    "model_compilations",
    "model_version_tags",
    "model_versions",
    "monitor_runs",
    "monitor_settings",
    "params",
    "pipeline_runs",
    "reference_profiles",
    "registered_models",
    "role_grants",
    "run_artifacts",
    "run_inputs",
    "runs",
    "step_cache",
    "step_runs",
    "tags",
    "users",
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
    # Covering indexes of search (filter by value, load by run), on SQLite only: a
    # PostgreSQL B-tree entry holds at most 2,704 bytes and a value up to 6,000 characters.
    Index("ix_params_key_value_run", "key", "value", "run_id").ddl_if(dialect="sqlite"),
    Index("ix_params_run_key_value", "run_id", "key", "value").ddl_if(dialect="sqlite"),
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
    # Covering indexes of search: filter by value, load (and order) by run.
    Index("ix_latest_metrics_key_value_run", "key", "value", "run_id"),
    Index("ix_latest_metrics_run_key_value", "run_id", "key", "value"),
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
    # 'model', or 'prompt' (keel.llm): prompts reuse versions, aliases and approvals, and a
    # name is one or the other (the name stays unique across both).
    Column("kind", String(16), nullable=False, server_default="model"),
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

#: A role held by a user, everywhere (``scope_kind`` "") or on one experiment, model or
#: alias (``scope_kind`` "experiment" | "model" | "alias", ``scope_name`` its name).
role_grants = Table(
    "role_grants",
    metadata,
    Column("user_name", String(256), primary_key=True),
    Column("role", String(128), primary_key=True),
    Column("scope_kind", String(16), primary_key=True, server_default=""),
    Column("scope_name", String(256), primary_key=True, server_default=""),
    Column("granted_at", BigInteger, nullable=False),
    Column("granted_by", String(256), nullable=False),
)

#: The people and services a ``keel server`` knows; a token acts as one of them.
users = Table(
    "users",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("disabled", Boolean, nullable=False),
)

#: API tokens: only the SHA-256 of the secret is kept; ``scopes`` is a comma list.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_name", String(256), ForeignKey("users.name"), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),
    Column("scopes", String(256), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("expires_at", BigInteger),
    Column("revoked_at", BigInteger),
)

#: MLflow 3.x logged models: a model package of a run, its files the run's artifacts
#: under ``models/<id>/``; tags and params are JSON objects.
logged_models = Table(
    "logged_models",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("experiment_id", Integer, ForeignKey("experiments.id"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("source_run_id", String(32), ForeignKey("runs.id")),
    Column("status", String(16), nullable=False),
    Column("model_type", String(256)),
    Column("tags", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Index("ix_logged_models_experiment", "experiment_id", "created_at"),
)

#: What an import of another store (``keel import mlflow``) made of each of its objects.
imported_objects = Table(
    "imported_objects",
    metadata,
    Column("source", String(512), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("source_id", String(256), nullable=False),
    Column("target", String(256), nullable=False),
    Column("imported_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("source", "kind", "source_id", name="pk_imported_objects"),
)

#: A create's idempotency key and what it answered, so a retried create makes nothing twice.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("user_name", String(256), nullable=False),
    Column("route", String(256), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
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

model_compilations = Table(
    "model_compilations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("target", String(32), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("package_digest", String(64)),
    Column("report_digest", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Index("ix_model_compilations_model_version", "model_id", "version", "target", "id"),
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

# -- monitoring ---------------------------------------------------------------------

#: Reference profiles set with ``keel monitor reference set`` (the newest row of a version
#: wins); the profile itself is JSON in the artifact store.
reference_profiles = Table(
    "reference_profiles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("profile_digest", String(64), nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Index("ix_reference_profiles_model_version", "model_id", "version", "id"),
)

#: A deployment's monitor settings as JSON (no row: the defaults); ``revision`` moves by
#: compare-and-set.
monitor_settings = Table(
    "monitor_settings",
    metadata,
    Column("deployment", String(128), primary_key=True),
    Column("settings", Text, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(256), nullable=False),
)

#: One row per monitor run: the time series ``keel monitor history`` reads. The full
#: report is JSON in the artifact store under ``report_digest``.
monitor_runs = Table(
    "monitor_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment", String(128), nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("window_end", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("labelled_rows", BigInteger, nullable=False),
    Column("share_drifted", Float),
    Column("dataset_drift", Boolean),
    Column("prediction_drift", Boolean),
    Column("drifted_columns", Text, nullable=False),
    Column("quality", Text),
    Column("concept_drift", Boolean),
    Column("detector", Text),
    Column("failed_checks", Integer, nullable=False),
    Column("report_digest", String(64)),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    Index("ix_monitor_runs_deployment_end", "deployment", "window_end", "id"),
)

#: Per deployment and rule: firing or not, and the streak hysteresis counts.
alert_states = Table(
    "alert_states",
    metadata,
    Column("deployment", String(128), primary_key=True),
    Column("rule", String(64), primary_key=True),
    Column("firing", Boolean, nullable=False),
    Column("streak", Integer, nullable=False),
    Column("since", BigInteger),
    Column("last_window_end", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

#: Alert events (a rule started firing, or resolved) and how each sink took them.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment", String(128), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("value", Float),
    Column("threshold", Float),
    Column("message", Text, nullable=False),
    # NULL for an alert that no monitor run raised (an LLM budget crossing its alert share)
    Column("monitor_run_id", Integer, ForeignKey("monitor_runs.id")),
    Column("at", BigInteger, nullable=False),
    Column("deliveries", Text),
    Index("ix_alerts_deployment_id", "deployment", "id"),
)

# -- data versions, lineage and pipelines ----------------------------------------

#: A named dataset; the store numbers its versions (``last_version``), as for models.
datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("last_version", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
)

#: An immutable version: the digest of a folder manifest in the content store.
dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # file, folder or table
    Column("files", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("source", Text),
    Column("table_schema", Text),  # tables: JSON [{"name", "type"}]
    Column("num_rows", BigInteger),
    Column("profile_digest", String(64)),  # tables: per-column statistics, a JSON object
    Column("packs_digest", String(64)),  # where small files were packed (keel.data.packs)
    Column("run_id", String(32), ForeignKey("runs.id")),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_version"),
    Index("ix_dataset_versions_digest", "digest"),
)

#: Which dataset versions a run read (``load_dataset``) or logged (``log_dataset``).
run_inputs = Table(
    "run_inputs",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("dataset_version_id", Integer, ForeignKey("dataset_versions.id"), primary_key=True),
    Column("context", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_run_inputs_dataset_version", "dataset_version_id"),
)

#: Lineage hops between URIs (``datasets:/``, ``runs:/``, ``artifacts:/``, ``code:/``).
lineage_edges = Table(
    "lineage_edges",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("src", String(512), nullable=False),
    Column("dst", String(512), nullable=False),
    Column("relation", String(32), nullable=False),  # input, output or code
    Column("label", String(256), nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("src", "dst", "relation", "label", name="uq_lineage_edges"),
    Index("ix_lineage_edges_dst", "dst"),
)

#: A pipeline run: what re-executing it needs (target, code digest, pinned params, seed).
pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("pipeline", String(256), nullable=False),
    Column("target", Text, nullable=False),
    Column("code_digest", String(64), nullable=False),
    Column("code_snapshot", String(64)),  # JSON of the hashed sources, in the content store
    Column("params", Text, nullable=False),
    Column("executor", String(32), nullable=False),
    Column("seed", BigInteger),
    Column("use_cache", Boolean, nullable=False),
    Column("outputs", Text),
    Column("reproduces", String(32)),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_pipeline_runs_pipeline", "pipeline", "created_at"),
)

#: One step of a pipeline run (a nested tracked run), executed or served from the cache.
step_runs = Table(
    "step_runs",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "pipeline_run_id",
        String(32),
        ForeignKey("pipeline_runs.run_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("node", String(256), nullable=False),
    Column("step", String(512), nullable=False),
    Column("code_digest", String(64), nullable=False),
    Column("cache_key", String(64)),
    Column("cached", Boolean, nullable=False),
    Column("source_run_id", String(32)),
    Column("inputs", Text, nullable=False),
    Column("outputs", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("seconds", Float),
    UniqueConstraint("pipeline_run_id", "node", name="uq_step_runs_pipeline_node"),
)

#: Step outputs by cache key; the first writer of a key wins (insert on conflict do nothing).
step_cache = Table(
    "step_cache",
    metadata,
    Column("cache_key", String(64), primary_key=True),
    Column("step", String(512), nullable=False),
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("outputs", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
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
    Column("token_id", String(32)),
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


# -- automation ------------------------------------------------------------------

automation_policies = Table(
    "automation_policies",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("model", String(256), nullable=False),
    Column("deployment", String(128), nullable=False),
    Column("spec", Text, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(256), nullable=False),
)

#: Where each policy's cycle stands. ``epoch`` moves by compare-and-set on every transition,
#: so two controllers can never both act on one state; ``lease_*`` says who acts now.
automation_state = Table(
    "automation_state",
    metadata,
    Column("policy", String(128), ForeignKey("automation_policies.name"), primary_key=True),
    Column("state", String(32), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("trigger_key", String(256)),
    Column("candidate_version", Integer),
    Column("baseline_version", Integer),
    Column("pipeline_run_id", String(64)),
    Column("phase_started_at", BigInteger),
    Column("cycle_ended_at", BigInteger),
    Column("detail", Text),
    Column("lease_owner", String(256)),
    Column("lease_until", BigInteger),
)

#: A trigger key is claimed once: one trigger never starts two retrains.
automation_triggers = Table(
    "automation_triggers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("policy", String(128), nullable=False),
    Column("key", String(256), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("policy", "key", name="uq_automation_triggers_policy_key"),
)

automation_events = Table(
    "automation_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("policy", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("model", String(256), nullable=False),
    Column("version", Integer),
    Column("reason", Text, nullable=False),
    Column("details", Text),
    Index("ix_automation_events_policy_at", "policy", "at"),
)


# -- LLM gateway -------------------------------------------------------------------

#: Prices per upstream model and token type, in USD per million tokens, from ``starts_at``.
#: Rows are only ever added: a request is costed with the row in force at its own time.
llm_prices = Table(
    "llm_prices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(256), nullable=False),
    Column("input_per_million", Float, nullable=False),
    Column("output_per_million", Float, nullable=False),
    Column("starts_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    UniqueConstraint("model", "starts_at", name="uq_llm_prices_model_starts_at"),
)

#: What each budget's subject (a user or a team) spent in one period (``period_start``: the
#: UTC day's or month's first millisecond, 0 for ``total``). Only atomic increments change
#: ``tokens`` and ``usd``; ``alerted_at`` is set once, by compare-and-set, when the alert fires.
llm_spend = Table(
    "llm_spend",
    metadata,
    Column("budget", String(128), nullable=False),
    Column("subject", String(256), nullable=False),
    Column("period_start", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("usd", Float, nullable=False),
    Column("alerted_at", BigInteger),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("budget", "subject", "period_start", name="pk_llm_spend"),
    Index("ix_llm_spend_budget_period_updated", "budget", "period_start", "updated_at"),
)


# -- feature store ----------------------------------------------------------------------

#: Versions of feature definitions (``kind``: entity, feature_view, on_demand_feature_view).
#: A version is immutable: ``spec`` is its JSON and ``digest`` that JSON's SHA-256, so
#: applying an unchanged definition adds nothing. Numbers come from the unique constraint:
#: two appliers racing for one number collide, and the loser retries.
feature_definitions = Table(
    "feature_definitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("spec", Text, nullable=False),
    Column("source_file", Text),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    UniqueConstraint("kind", "name", "version", name="uq_feature_definitions_kind_name_version"),
)

#: How far each view has been materialized into each online store: the newest event
#: time and created time written, so the next run reads only rows after them.
feature_materializations = Table(
    "feature_materializations",
    metadata,
    Column("view", String(128), nullable=False),
    Column("store", String(512), nullable=False),
    Column("view_version", Integer, nullable=False),
    Column("last_event_ms", BigInteger),
    Column("last_created_ms", BigInteger),
    Column("rows_written", BigInteger, nullable=False, server_default="0"),
    Column("runs", Integer, nullable=False, server_default="0"),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("view", "store", name="pk_feature_materializations"),
)

# -- jobs -------------------------------------------------------------------------

#: A job queue: nominal quota per resource (``cpus``, ``memory`` bytes, ``gpu:<type>``),
#: an optional cohort whose idle quota it may borrow (up to ``borrowing_limit``), and a
#: GPU-hour budget per trailing day. ``revision`` moves by compare-and-set.
job_queues = Table(
    "job_queues",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("team", String(128)),
    Column("cohort", String(128)),
    Column("quotas", Text, nullable=False),
    Column("borrowing_limit", Text),
    Column("gpu_hours_per_day", Float),
    Column("revision", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("updated_by", String(256), nullable=False),
)

#: One job per row; ``state`` and everything that moves with it change by
#: compare-and-set on ``epoch`` (see ``keel.jobs.store``). ``requests`` is the resource
#: vector the job asked for; ``assigned`` what admission gave it (a GPU type chosen,
#: the pool and its device indices).
jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(256), nullable=False),
    Column("queue", String(128), ForeignKey("job_queues.name"), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("target", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("gpus", Integer, nullable=False),
    Column("gpu_type", String(64)),
    Column("cpus", Float, nullable=False),
    Column("memory", BigInteger, nullable=False),
    Column("timeout_s", Float),
    Column("max_retries", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("reason", Text),
    Column("submitted_at", BigInteger, nullable=False),
    Column("submitted_by", String(256), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("admitted_at", BigInteger),
    Column("started_at", BigInteger),
    Column("ended_at", BigInteger),
    Column("assigned_gpu_type", String(64)),
    Column("pool", String(256)),
    Column("devices", Text),
    Column("borrowed", Boolean, nullable=False, server_default=false()),
    Column("preempt_requested_at", BigInteger),
    Column("cancel_requested_at", BigInteger),
    Column("pid", Integer),
    Column("exit_code", Integer),
    Column("policy", String(128)),
    Column("run_id", String(64)),
    Column("model_name", String(256)),
    Column("model_version", Integer),
    Column("usage", Text),
    Column("cost", Float),
    Column("cost_detail", Text),
    Column("logs_digest", String(64)),
    Column("seconds_run", Float, nullable=False, server_default="0"),
    # The queue's heads: by priority (highest first), then arrival.
    Index("ix_jobs_queue_state_priority", "queue", "state", "priority", "id"),
    Index("ix_jobs_state_pool", "state", "pool"),
    Index("ix_jobs_model", "model_name", "model_version"),
)

#: Every transition of a job, with its reason, in order.
job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("detail", Text),
    Index("ix_job_events_job", "job_id", "id"),
)

#: Each attempt that held GPUs, once it stopped running (a retry or a preemption makes
#: another): what a queue's ``gpu_hours_per_day`` counts over the trailing 24 hours.
job_gpu_spans = Table(
    "job_gpu_spans",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("queue", String(128), nullable=False),
    Column("gpus", Integer, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger, nullable=False),
    Index("ix_job_gpu_spans_ended", "ended_at"),
)

#: Where admitted jobs run: a worker's inventory (``keel jobs worker``), live while its
#: heartbeat is recent.
job_pools = Table(
    "job_pools",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("executor", String(16), nullable=False),
    Column("inventory", Text, nullable=False),
    Column("owner", String(256), nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("heartbeat_at", BigInteger, nullable=False),
)

#: The scheduler's lease: one row per scheduler name. Every admission bumps ``epoch``
#: in its own transaction, under the lease, which fences out a scheduler that lost it.
job_scheduler = Table(
    "job_scheduler",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("lease_owner", String(256)),
    Column("lease_until", BigInteger),
    Column("epoch", BigInteger, nullable=False),
)

#: What a resource costs per hour (``gpu:a100`` per GPU, ``cpu`` per CPU, ``memory`` per
#: GiB) from ``starts_at`` on; rows are only added, never changed.
job_prices = Table(
    "job_prices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("resource", String(128), nullable=False),
    Column("per_hour", Float, nullable=False),
    Column("starts_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(256), nullable=False),
    UniqueConstraint("resource", "starts_at", name="uq_job_prices_resource_start"),
)
