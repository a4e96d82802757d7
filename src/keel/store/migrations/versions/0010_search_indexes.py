"""Covering indexes for run search: a filter and the load of what it found read indexes only.

A search filters with ``run_id IN (SELECT run_id FROM params|latest_metrics
WHERE key = ? AND value …)`` and then loads the found runs' params and latest
metrics by run id. With the key, value and run id in one index, each step
reads that index alone instead of an index and then the table row by row:

- ``latest_metrics (key, value, run_id)`` serves metric filters and replaces
  ``(key, value)``, which it makes redundant; ``latest_metrics (run_id, key,
  value)`` serves the load and the order by a metric.
- ``params (key, value, run_id)`` serves text filters, ``params (run_id, key,
  value)`` the load. On SQLite only: a param value may be 6,000 characters, and
  a PostgreSQL B-tree refuses an entry over 2,704 bytes, so there an index
  holding the value would make long params fail to log.

``ANALYZE`` then gives the planner statistics of the two tables, read from
their rows as they are at the upgrade (a tenth of a second per 100,000 params
on SQLite; PostgreSQL samples). An empty table gets none, and none are needed:
the planner picks these indexes on a new database without them.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    op.drop_index("ix_latest_metrics_key_value", table_name="latest_metrics")
    op.create_index("ix_latest_metrics_key_value_run", "latest_metrics", ["key", "value", "run_id"])
    op.create_index("ix_latest_metrics_run_key_value", "latest_metrics", ["run_id", "key", "value"])
    if _sqlite():
        op.create_index("ix_params_key_value_run", "params", ["key", "value", "run_id"])
        op.create_index("ix_params_run_key_value", "params", ["run_id", "key", "value"])
    op.execute("ANALYZE params")
    op.execute("ANALYZE latest_metrics")


def downgrade() -> None:
    if _sqlite():
        op.drop_index("ix_params_run_key_value", table_name="params")
        op.drop_index("ix_params_key_value_run", table_name="params")
    op.drop_index("ix_latest_metrics_run_key_value", table_name="latest_metrics")
    op.drop_index("ix_latest_metrics_key_value_run", table_name="latest_metrics")
    op.create_index("ix_latest_metrics_key_value", "latest_metrics", ["key", "value"])
