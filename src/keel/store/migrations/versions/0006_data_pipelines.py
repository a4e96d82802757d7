"""Dataset versions, run inputs, lineage edges and pipeline runs.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("last_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("files", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("table_schema", sa.Text),
        sa.Column("num_rows", sa.BigInteger),
        sa.Column("profile_digest", sa.String(64)),
        sa.Column("packs_digest", sa.String(64)),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_version"),
    )
    op.create_index("ix_dataset_versions_digest", "dataset_versions", ["digest"])
    op.create_table(
        "run_inputs",
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "dataset_version_id",
            sa.Integer,
            sa.ForeignKey("dataset_versions.id"),
            primary_key=True,
        ),
        sa.Column("context", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_run_inputs_dataset_version", "run_inputs", ["dataset_version_id"])
    op.create_table(
        "lineage_edges",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("src", sa.String(512), nullable=False),
        sa.Column("dst", sa.String(512), nullable=False),
        sa.Column("relation", sa.String(32), nullable=False),
        sa.Column("label", sa.String(256), nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("src", "dst", "relation", "label", name="uq_lineage_edges"),
    )
    op.create_index("ix_lineage_edges_dst", "lineage_edges", ["dst"])
    op.create_table(
        "pipeline_runs",
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("pipeline", sa.String(256), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("code_digest", sa.String(64), nullable=False),
        sa.Column("code_snapshot", sa.String(64)),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("executor", sa.String(32), nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("use_cache", sa.Boolean, nullable=False),
        sa.Column("outputs", sa.Text),
        sa.Column("reproduces", sa.String(32)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_pipeline_runs_pipeline", "pipeline_runs", ["pipeline", "created_at"])
    op.create_table(
        "step_runs",
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "pipeline_run_id",
            sa.String(32),
            sa.ForeignKey("pipeline_runs.run_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("node", sa.String(256), nullable=False),
        sa.Column("step", sa.String(512), nullable=False),
        sa.Column("code_digest", sa.String(64), nullable=False),
        sa.Column("cache_key", sa.String(64)),
        sa.Column("cached", sa.Boolean, nullable=False),
        sa.Column("source_run_id", sa.String(32)),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("outputs", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("seconds", sa.Float),
        sa.UniqueConstraint("pipeline_run_id", "node", name="uq_step_runs_pipeline_node"),
    )
    op.create_table(
        "step_cache",
        sa.Column("cache_key", sa.String(64), primary_key=True),
        sa.Column("step", sa.String(512), nullable=False),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("outputs", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("step_cache")
    op.drop_table("step_runs")
    op.drop_index("ix_pipeline_runs_pipeline", table_name="pipeline_runs")
    op.drop_table("pipeline_runs")
    op.drop_index("ix_lineage_edges_dst", table_name="lineage_edges")
    op.drop_table("lineage_edges")
    op.drop_index("ix_run_inputs_dataset_version", table_name="run_inputs")
    op.drop_table("run_inputs")
    op.drop_index("ix_dataset_versions_digest", table_name="dataset_versions")
    op.drop_table("dataset_versions")
    op.drop_table("datasets")
