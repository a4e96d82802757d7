"""Monitoring: reference profiles, monitor settings and runs, alert states and alerts.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reference_profiles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("registered_models.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("profile_digest", sa.String(64), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.create_index(
        "ix_reference_profiles_model_version", "reference_profiles", ["model_id", "version", "id"]
    )
    op.create_table(
        "monitor_settings",
        sa.Column("deployment", sa.String(128), primary_key=True),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
    )
    op.create_table(
        "monitor_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("deployment", sa.String(128), nullable=False),
        sa.Column("window_start", sa.BigInteger, nullable=False),
        sa.Column("window_end", sa.BigInteger, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("labelled_rows", sa.BigInteger, nullable=False),
        sa.Column("share_drifted", sa.Float),
        sa.Column("dataset_drift", sa.Boolean),
        sa.Column("prediction_drift", sa.Boolean),
        sa.Column("drifted_columns", sa.Text, nullable=False),
        sa.Column("quality", sa.Text),
        sa.Column("concept_drift", sa.Boolean),
        sa.Column("detector", sa.Text),
        sa.Column("failed_checks", sa.Integer, nullable=False),
        sa.Column("report_digest", sa.String(64)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
    )
    op.create_index(
        "ix_monitor_runs_deployment_end", "monitor_runs", ["deployment", "window_end", "id"]
    )
    op.create_table(
        "alert_states",
        sa.Column("deployment", sa.String(128), primary_key=True),
        sa.Column("rule", sa.String(64), primary_key=True),
        sa.Column("firing", sa.Boolean, nullable=False),
        sa.Column("streak", sa.Integer, nullable=False),
        sa.Column("since", sa.BigInteger),
        sa.Column("last_window_end", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("deployment", sa.String(128), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("monitor_run_id", sa.Integer, sa.ForeignKey("monitor_runs.id"), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("deliveries", sa.Text),
    )
    op.create_index("ix_alerts_deployment_id", "alerts", ["deployment", "id"])


def downgrade() -> None:
    op.drop_index("ix_alerts_deployment_id", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("alert_states")
    op.drop_index("ix_monitor_runs_deployment_end", table_name="monitor_runs")
    op.drop_table("monitor_runs")
    op.drop_table("monitor_settings")
    op.drop_index("ix_reference_profiles_model_version", table_name="reference_profiles")
    op.drop_table("reference_profiles")
