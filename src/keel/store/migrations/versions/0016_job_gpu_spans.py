"""Jobs: every attempt that held GPUs, so a queue's GPU-hour budget counts retries too.

Before, the budget read each job's own ``started_at``/``ended_at``, which a retry
or a preemption overwrites: only a job's last attempt was counted. Attempts that
ended before this revision are carried over as one span per job (all that was kept).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_gpu_spans",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("ended_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_job_gpu_spans_ended", "job_gpu_spans", ["ended_at"])
    op.execute(
        "INSERT INTO job_gpu_spans (job_id, queue, gpus, started_at, ended_at) "
        "SELECT id, queue, gpus, started_at, ended_at FROM jobs "
        "WHERE gpus > 0 AND started_at IS NOT NULL AND ended_at IS NOT NULL "
        "AND ended_at >= started_at AND state <> 'running'"
    )


def downgrade() -> None:
    op.drop_table("job_gpu_spans")
