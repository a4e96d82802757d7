"""Creating and describing a Keel home folder (``keel init``)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from keel.config import CONFIG_FILENAME, HOME_DIRNAME, load_settings
from keel.errors import InvalidInput

__all__ = ["init_home"]


def _toml_line(key: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key} = "{escaped}"\n'


def init_home(
    path: str | os.PathLike[str] = ".",
    *,
    store_url: str | None = None,
    artifacts_url: str | None = None,
) -> dict[str, Any]:
    """Create ``<path>/.keel`` (idempotent), save the given URLs in its config and migrate.

    Returns:
        ``home``, ``created`` (False when it existed), ``store_url``,
        ``artifacts_url`` and ``schema_revision``.
    """
    base = Path(path).expanduser().resolve()
    if not base.is_dir():
        raise InvalidInput(f"{base} is not a folder; create it first or pick another path")
    home = base if base.name == HOME_DIRNAME else base / HOME_DIRNAME
    created = not home.exists()
    home.mkdir(parents=True, exist_ok=True)
    config_file = home / CONFIG_FILENAME
    current: dict[str, Any] = {}
    if config_file.exists():
        current = tomllib.loads(config_file.read_text())
    updates = {k: v for k, v in (("store_url", store_url), ("artifacts_url", artifacts_url)) if v}
    if updates or not config_file.exists():
        merged = {**current, **updates}
        lines = ["# Keel settings. KEEL_* environment variables override these.\n"]
        lines += [_toml_line(k, str(v)) for k, v in sorted(merged.items())]
        config_file.write_text("".join(lines))
    (home / ".gitignore").write_text("# Keel's local database and artifacts\n*\n")

    settings = load_settings(home)
    from keel.store import HEAD_REVISION, Store

    store = Store(settings.store_url, settings.busy_timeout)
    try:
        store.engine  # noqa: B018 - opening the engine applies migrations
    finally:
        store.dispose()
    if "://" not in settings.artifacts_url:
        Path(settings.artifacts_url).mkdir(parents=True, exist_ok=True)
    from keel.store import redact_url

    return {
        "home": str(home),
        "created": created,
        "store_url": redact_url(settings.store_url),
        "artifacts_url": settings.artifacts_url,
        "schema_revision": HEAD_REVISION,
    }
