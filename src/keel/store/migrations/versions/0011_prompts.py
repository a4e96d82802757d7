"""Prompts in the registry: a registered model's ``kind`` says whether it is a model or a prompt.

A prompt is a ``registered_models`` row with ``kind = 'prompt'``; its versions,
aliases, alias history and approvals are the rows the registry already keeps,
so prompts share the registry's numbering, compare-and-set alias moves, alias
policies, approvals and audit. Names stay unique across both kinds: a name is
a model or a prompt. Every row that exists before this migration is a model.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "registered_models",
        sa.Column("kind", sa.String(16), nullable=False, server_default="model"),
    )


def downgrade() -> None:
    with op.batch_alter_table("registered_models") as batch:
        batch.drop_column("kind")
