"""Identity for ``keel server``: users, API tokens, scoped role grants, idempotency keys.

Role grants gain a scope (an experiment, a model or an alias; "" is everywhere)
as part of their key, and audit entries gain the id of the token that acted.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_name", sa.String(256), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("scopes", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("revoked_at", sa.BigInteger),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("user_name", sa.String(256), nullable=False),
        sa.Column("route", sa.String(256), nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    # The key grows by the scope: a new table, the old rows copied in as global grants
    # (ALTER of a primary key is not portable; SQLite cannot do it at all).
    op.rename_table("role_grants", "role_grants_unscoped")
    op.create_table(
        "role_grants",
        sa.Column("user_name", sa.String(256), nullable=False),
        sa.Column("role", sa.String(128), nullable=False),
        sa.Column("scope_kind", sa.String(16), nullable=False, server_default=""),
        sa.Column("scope_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("granted_at", sa.BigInteger, nullable=False),
        sa.Column("granted_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint(
            "user_name", "role", "scope_kind", "scope_name", name="pk_role_grants_scoped"
        ),
    )
    op.execute(
        "INSERT INTO role_grants (user_name, role, scope_kind, scope_name, granted_at, granted_by)"
        " SELECT user_name, role, '', '', granted_at, granted_by FROM role_grants_unscoped"
    )
    op.drop_table("role_grants_unscoped")
    op.add_column("audit_log", sa.Column("token_id", sa.String(32)))


def downgrade() -> None:
    op.drop_column("audit_log", "token_id")
    op.execute("DELETE FROM role_grants WHERE scope_kind <> ''")
    with op.batch_alter_table("role_grants", recreate="always") as batch:
        batch.drop_column("scope_name")
        batch.drop_column("scope_kind")
    op.drop_table("idempotency_keys")
    op.drop_table("api_tokens")
    op.drop_table("users")
