"""Feature store: versioned definitions and materialization watermarks.

``feature_definitions`` holds every version of every entity, feature view and
on-demand view as its JSON spec and digest. ``feature_materializations`` holds,
per view and online store, the newest event and created times written, which
makes the next materialization incremental.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_definitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("source_file", sa.Text),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.UniqueConstraint(
            "kind", "name", "version", name="uq_feature_definitions_kind_name_version"
        ),
    )
    op.create_table(
        "feature_materializations",
        sa.Column("view", sa.String(128), nullable=False),
        sa.Column("store", sa.String(512), nullable=False),
        sa.Column("view_version", sa.Integer, nullable=False),
        sa.Column("last_event_ms", sa.BigInteger),
        sa.Column("last_created_ms", sa.BigInteger),
        sa.Column("rows_written", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("runs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("view", "store", name="pk_feature_materializations"),
    )


def downgrade() -> None:
    op.drop_table("feature_materializations")
    op.drop_table("feature_definitions")
