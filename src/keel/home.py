"""Creating a Keel home folder (``keel init``) and requiring one that exists.

Commands that write create the home on first use. Commands that only read
call :func:`require_home` instead: run in the wrong folder, they must say
where they looked, not create an empty ``.keel`` and report that nothing
matches.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from keel.config import (
    CONFIG_FILENAME,
    HOME_DIRNAME,
    Settings,
    get_settings,
    load_settings,
    make_home,
)
from keel.errors import InvalidInput, NotFound

__all__ = ["init_home", "require_home"]


def _toml_line(key: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key} = "{escaped}"\n'


def init_home(
    path: str | os.PathLike[str] | None = None,
    *,
    store_url: str | None = None,
    artifacts_url: str | None = None,
) -> dict[str, Any]:
    """Create a Keel home (idempotent), save the given URLs in its config and migrate.

    Args:
        path: the folder to create ``.keel`` in (a path ending in ``.keel`` is the
            home itself). Default: the folder ``KEEL_HOME`` names, used as the home
            itself, else the working folder.

    Returns:
        ``home``, ``created`` (False when it existed), ``store_url``,
        ``artifacts_url`` and ``schema_revision``.
    """
    env_home = os.environ.get("KEEL_HOME")
    if path is None and env_home:
        home = Path(env_home).expanduser().resolve()
    else:
        base = Path(path if path is not None else ".").expanduser().resolve()
        if not base.is_dir():
            raise InvalidInput(f"{base} is not a folder; create it first or pick another path")
        home = base if base.name == HOME_DIRNAME else base / HOME_DIRNAME
    created = make_home(home)
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


def require_home(settings: Settings | None = None) -> Settings:
    """The settings, once their SQLite database is known to exist; creates nothing.

    A server database (PostgreSQL) is not checked here: opening it says whether it
    is reachable.

    Raises:
        NotFound: the database is missing; the message says where Keel looked and
            what creates a home (``keel init``, or ``KEEL_HOME`` pointing at one).
    """
    settings = settings or get_settings()
    database = _sqlite_file(settings.store_url)
    if database is None or database.is_file():
        return settings
    home = settings.home
    if database.parent != home:
        raise NotFound(
            f"no Keel database at {database} (the SQLite store_url set by KEEL_STORE_URL or "
            f"{home / CONFIG_FILENAME}); check the URL, or run `keel init` to create it"
        )
    if os.environ.get("KEEL_HOME"):
        where = f"no Keel home at {home} (named by KEEL_HOME or --home)"
        fix = "check the path, or run `keel init` to create it there"
    elif home.is_dir():
        where = f"the Keel home {home} has no database"
        fix = f"run `keel init {home.parent}` to create it"
    else:
        where = (
            f"no Keel home here: looked for {HOME_DIRNAME} in {home.parent} and every folder "
            "above it"
        )
        fix = (
            "run `keel init` to create one in this folder, or set KEEL_HOME (or --home) to "
            "an existing home"
        )
    raise NotFound(f"{where}; {fix}")


def _sqlite_file(store_url: str) -> Path | None:
    """The database file a SQLite store URL names; ``None`` for any other store."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(store_url)
    except Exception:  # malformed: opening the store reports it, with the expected form
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).expanduser().resolve()
