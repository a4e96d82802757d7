"""MLflow compatibility: logged models (MLflow 3.x) and the record of what an import mapped.

A logged model is MLflow's name for a model package logged by a run; its files
are ordinary artifacts of its source run (under ``models/<id>/``), so this table
holds only what MLflow says about it. ``imported_objects`` maps each object of
an imported MLflow store to the Keel object made from it, so a second import
brings only what is new.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "logged_models",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("source_run_id", sa.String(32), sa.ForeignKey("runs.id")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model_type", sa.String(256)),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.create_index("ix_logged_models_experiment", "logged_models", ["experiment_id", "created_at"])
    op.create_table(
        "imported_objects",
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("source_id", sa.String(256), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("imported_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("source", "kind", "source_id", name="pk_imported_objects"),
    )


def downgrade() -> None:
    op.drop_table("imported_objects")
    op.drop_index("ix_logged_models_experiment", table_name="logged_models")
    op.drop_table("logged_models")
