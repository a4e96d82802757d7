"""Automation: policies, their cycle state, claimed triggers and decision events.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "automation_policies",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("deployment", sa.String(128), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
    )
    op.create_table(
        "automation_state",
        sa.Column(
            "policy", sa.String(128), sa.ForeignKey("automation_policies.name"), primary_key=True
        ),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("trigger_key", sa.String(256)),
        sa.Column("candidate_version", sa.Integer),
        sa.Column("baseline_version", sa.Integer),
        sa.Column("pipeline_run_id", sa.String(64)),
        sa.Column("phase_started_at", sa.BigInteger),
        sa.Column("cycle_ended_at", sa.BigInteger),
        sa.Column("detail", sa.Text),
        sa.Column("lease_owner", sa.String(256)),
        sa.Column("lease_until", sa.BigInteger),
    )
    op.create_table(
        "automation_triggers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("policy", sa.String(128), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("policy", "key", name="uq_automation_triggers_policy_key"),
    )
    op.create_table(
        "automation_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("policy", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.Text),
    )
    op.create_index("ix_automation_events_policy_at", "automation_events", ["policy", "at"])


def downgrade() -> None:
    op.drop_index("ix_automation_events_policy_at", "automation_events")
    op.drop_table("automation_events")
    op.drop_table("automation_triggers")
    op.drop_table("automation_state")
    op.drop_table("automation_policies")
