"""Jobs: queues with quotas, jobs with their state machine and events, pools, the scheduler's lease, prices.

``keel jobs`` (``keel.jobs``) keeps its whole state here, so every scheduler and
worker sharing the store sees one queue, and admission is a compare-and-set.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_queues",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("team", sa.String(128)),
        sa.Column("cohort", sa.String(128)),
        sa.Column("quotas", sa.Text, nullable=False),
        sa.Column("borrowing_limit", sa.Text),
        sa.Column("gpu_hours_per_day", sa.Float),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("queue", sa.String(128), sa.ForeignKey("job_queues.name"), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("gpu_type", sa.String(64)),
        sa.Column("cpus", sa.Float, nullable=False),
        sa.Column("memory", sa.BigInteger, nullable=False),
        sa.Column("timeout_s", sa.Float),
        sa.Column("max_retries", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("submitted_at", sa.BigInteger, nullable=False),
        sa.Column("submitted_by", sa.String(256), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("admitted_at", sa.BigInteger),
        sa.Column("started_at", sa.BigInteger),
        sa.Column("ended_at", sa.BigInteger),
        sa.Column("assigned_gpu_type", sa.String(64)),
        sa.Column("pool", sa.String(256)),
        sa.Column("devices", sa.Text),
        sa.Column("borrowed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("preempt_requested_at", sa.BigInteger),
        sa.Column("cancel_requested_at", sa.BigInteger),
        sa.Column("pid", sa.Integer),
        sa.Column("exit_code", sa.Integer),
        sa.Column("policy", sa.String(128)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("model_name", sa.String(256)),
        sa.Column("model_version", sa.Integer),
        sa.Column("usage", sa.Text),
        sa.Column("cost", sa.Float),
        sa.Column("cost_detail", sa.Text),
        sa.Column("logs_digest", sa.String(64)),
        sa.Column("seconds_run", sa.Float, nullable=False, server_default="0"),
    )
    op.create_index("ix_jobs_queue_state_priority", "jobs", ["queue", "state", "priority", "id"])
    op.create_index("ix_jobs_state_pool", "jobs", ["state", "pool"])
    op.create_index("ix_jobs_model", "jobs", ["model_name", "model_version"])
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_job_events_job", "job_events", ["job_id", "id"])
    op.create_table(
        "job_pools",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("inventory", sa.Text, nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "job_scheduler",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("lease_owner", sa.String(256)),
        sa.Column("lease_until", sa.BigInteger),
        sa.Column("epoch", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "job_prices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("resource", sa.String(128), nullable=False),
        sa.Column("per_hour", sa.Float, nullable=False),
        sa.Column("starts_at", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.UniqueConstraint("resource", "starts_at", name="uq_job_prices_resource_start"),
    )


def downgrade() -> None:
    op.drop_table("job_prices")
    op.drop_table("job_scheduler")
    op.drop_table("job_pools")
    op.drop_table("job_events")
    op.drop_table("jobs")
    op.drop_table("job_queues")
