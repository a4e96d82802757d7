"""Metadata storage: the schema, engines with Keel's transaction discipline, migrations."""

from keel.store.engine import Store, get_store, normalize_url, redact_url, reset_stores
from keel.store.migrate import HEAD_REVISION, current_revision, ensure_schema

__all__ = [
    "HEAD_REVISION",
    "Store",
    "current_revision",
    "ensure_schema",
    "get_store",
    "normalize_url",
    "redact_url",
    "reset_stores",
]
