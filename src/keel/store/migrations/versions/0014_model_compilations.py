"""Model compilations: compiled forms of versions (`keel models compile`) and their parity.

A row names the parity report (always) and the compiled package's folder manifest
(when one was stored) in the artifact store; a version may be compiled many times,
and the newest passed row for a target is the one a runtime serves.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_compilations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("registered_models.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("target", sa.String(32), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("package_digest", sa.String(64)),
        sa.Column("report_digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.create_index(
        "ix_model_compilations_model_version",
        "model_compilations",
        ["model_id", "version", "target", "id"],
    )


def downgrade() -> None:
    op.drop_table("model_compilations")
