"""Deployments and their revisions (routes, shadow, batching), for serving and rollback.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.create_table(
        "deployment_revisions",
        sa.Column(
            "deployment", sa.String(128), sa.ForeignKey("deployments.name"), primary_key=True
        ),
        sa.Column("revision", sa.Integer, primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("previous", sa.Integer),
        sa.Column("comment", sa.Text),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deployment_revisions")
    op.drop_table("deployments")
