"""LLM gateway: a versioned price table, budget spend per period, and alerts without a monitor run.

``llm_prices`` holds prices per upstream model and token type with a start time;
rows are only ever added. ``llm_spend`` holds what each budget's subject spent
in each period, changed only by atomic increments. An alert may now come from
something other than a monitor run (a budget crossing its alert share), so
``alerts.monitor_run_id`` becomes nullable; every existing alert keeps its run.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "llm_prices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("input_per_million", sa.Float, nullable=False),
        sa.Column("output_per_million", sa.Float, nullable=False),
        sa.Column("starts_at", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.UniqueConstraint("model", "starts_at", name="uq_llm_prices_model_starts_at"),
    )
    op.create_table(
        "llm_spend",
        sa.Column("budget", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("period_start", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("usd", sa.Float, nullable=False),
        sa.Column("alerted_at", sa.BigInteger),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("budget", "subject", "period_start", name="pk_llm_spend"),
    )
    op.create_index(
        "ix_llm_spend_budget_period_updated",
        "llm_spend",
        ["budget", "period_start", "updated_at"],
    )
    # SQLite cannot ALTER a column: batch mode copies the table (its index comes along)
    with op.batch_alter_table("alerts") as batch:
        batch.alter_column("monitor_run_id", existing_type=sa.Integer, nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM alerts WHERE monitor_run_id IS NULL")
    with op.batch_alter_table("alerts") as batch:
        batch.alter_column("monitor_run_id", existing_type=sa.Integer, nullable=False)
    op.drop_index("ix_llm_spend_budget_period_updated", table_name="llm_spend")
    op.drop_table("llm_spend")
    op.drop_table("llm_prices")
