"""Vector backends of RAG indexes: the interface and the backends Keel ships.

``get_backend(name)`` maps a backend's name to a new instance of its class; the
classes load lazily, so importing this package imports neither LanceDB nor DuckDB.
"""

from __future__ import annotations

import importlib
import os

from keel.errors import InvalidInput
from keel.llm.rag.backends.base import (
    EXACT_SEARCH_ROWS,
    RESULT_COLUMNS,
    IndexBackend,
    SearchTable,
    table_schema,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "EXACT_SEARCH_ROWS",
    "RESULT_COLUMNS",
    "IndexBackend",
    "SearchTable",
    "get_backend",
    "storage_options",
    "table_schema",
]

#: Backend name -> ``module:Class`` implementing it.
BACKENDS: dict[str, str] = {
    "lance": "keel.llm.rag.backends.lance:LanceBackend",
    "duckdb": "keel.llm.rag.backends.duckdb:DuckDBBackend",
}
#: The backend of an index built without ``backend=``.
DEFAULT_BACKEND = "lance"


def get_backend(name: str | None = None) -> IndexBackend:
    """A new instance of the backend called ``name`` (:data:`DEFAULT_BACKEND` if ``None``).

    Raises:
        InvalidInput: no backend has that name, or its optional package is missing.
    """
    name = DEFAULT_BACKEND if name is None else name
    target = BACKENDS.get(name)
    if target is None:
        raise InvalidInput(
            f"unknown index backend {name!r}; expected one of {', '.join(sorted(BACKENDS))}"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise InvalidInput(f"index backend {name!r} is not available in this install") from None
        raise
    backend: IndexBackend = getattr(module, class_name)()
    return backend


def storage_options(location: str, s3_endpoint_url: str | None = None) -> dict[str, str] | None:
    """The object-store options a backend needs for ``location``; ``None`` for a local path.

    For ``s3://`` the endpoint comes from the settings (``KEEL_S3_ENDPOINT_URL``) and
    the credentials and region from the usual AWS environment variables; a plain
    ``http://`` endpoint (a loopback S3 server) also needs ``allow_http``.
    """
    if not location.startswith(("s3://", "s3a://")):
        return None
    options: dict[str, str] = {}
    if s3_endpoint_url:
        options["aws_endpoint"] = s3_endpoint_url
        if s3_endpoint_url.startswith("http://"):
            options["allow_http"] = "true"
    for env, key in (
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("AWS_SESSION_TOKEN", "aws_session_token"),
    ):
        if os.environ.get(env):
            options[key] = os.environ[env]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    options["aws_region"] = region or "us-east-1"
    return options
