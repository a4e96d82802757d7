"""Model checks: the results of `keel models check`, kept for cards and gates.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_checks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("registered_models.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("against_version", sa.Integer),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("data_digest", sa.String(64), nullable=False),
        sa.Column("report_digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.create_index("ix_model_checks_model_version", "model_checks", ["model_id", "version", "id"])


def downgrade() -> None:
    op.drop_table("model_checks")
