"""Settings: one object, one precedence.

A value comes from the first of these that sets it:

1. an argument (``keel.init(store_url=...)``, ``load_settings(flush_interval=0.5)``),
2. an environment variable ``KEEL_<NAME>`` (``KEEL_STORE_URL``, ``KEEL_ARTIFACTS_URL`` …),
3. ``<home>/config.toml`` (flat ``name = value`` pairs),
4. the default.

``<home>`` is ``KEEL_HOME`` (or the ``home`` argument) if set; otherwise the
nearest ``.keel`` folder found walking up from the working directory, like
git; otherwise ``./.keel``, created on first write. Commands that only read
never create it (:func:`keel.home.require_home`). However it is created
(``keel init`` or a first write), :func:`make_home` makes it, with a
``.gitignore`` that keeps the database and artifacts out of the project's git.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.errors import InvalidInput

__all__ = [
    "Settings",
    "find_home",
    "get_settings",
    "load_settings",
    "make_home",
    "reset_settings",
    "set_settings",
]

HOME_DIRNAME = ".keel"
CONFIG_FILENAME = "config.toml"
#: The ``.gitignore`` of every home: its database and artifacts are not source.
HOME_GITIGNORE = "# Keel's local database and artifacts\n*\n"


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers): fall back to a stable name
        return "unknown"


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :func:`load_settings`, not directly.

    Attributes:
        home: folder holding the default database, artifacts and ``config.toml``.
        store_url: SQLAlchemy URL of the metadata store.
        artifacts_url: local folder or ``s3://bucket/prefix`` for the content store.
        s3_endpoint_url: S3-compatible endpoint (MinIO, a loopback server), if not AWS.
        flush_interval: seconds between background flushes of buffered metrics.
        busy_timeout: seconds a SQLite writer waits for the lock before failing.
        user: identity recorded on runs and audit entries.
        default_experiment: experiment used when none was set.
        data_remote: where ``keel data push``/``pull`` move objects (``s3://bucket/prefix``).
        data_link: how ``keel data add``/``checkout`` place files, tried in order:
            comma-separated ``reflink``, ``hardlink``, ``copy``.
        ray_address: the Ray cluster the ray executor joins (``auto``, ``ray://host:10001``);
            unset starts a local Ray.
        trusted_types: extra types, comma-separated (``mymodule.MyTransformer``), that the
            model loader trusts beyond its built-in list. The loader decides what it trusts;
            a package only states what it needs.
        audit_key: secret that signs audit checkpoints with HMAC-SHA256; unset writes
            unsigned checkpoints (they still anchor the chain's head outside the database).
        max_request_elements: the most tensor elements one serving request may declare;
            larger requests get 400 before anything is allocated.
        server_url: a ``keel server`` to talk to (``http://host:5005``); set, every client
            call goes through it instead of opening the store and artifacts here.
        token: the API token sent to ``server_url`` (``keel tokens create``).
        max_upload_bytes: the largest artifact object ``keel server`` accepts in one upload.
        max_request_bytes: the largest request body ``keel server`` accepts on its other
            (JSON) routes; a bigger one gets 413 before it is parsed. The default holds
            the largest metrics request the API allows (100,000 points with 250-character
            keys and parameters and tags at their limits is about 45 MiB on the wire; the
            client sends at most 50,000 points a request) with room to spare.
        online_store: where materialized features are read and written:
            ``sqlite:///path/online.db`` (default: ``<home>/features/online.db``) or
            ``redis://host:6379/0``.
        compile_on_register: ``onnx`` or ``treelite`` compiles every model version the
            registry registers to that target (``keel models compile``); a failure only
            warns. Unset (the default) compiles nothing.
    """

    home: Path
    store_url: str = ""
    artifacts_url: str = ""
    s3_endpoint_url: str | None = None
    flush_interval: float = 1.0
    busy_timeout: float = 60.0
    user: str = field(default_factory=_default_user)
    default_experiment: str = "Default"
    data_remote: str | None = None
    data_link: str = "reflink,copy"
    ray_address: str | None = None
    trusted_types: str = ""
    audit_key: str | None = None
    max_request_elements: int = 10_000_000
    server_url: str | None = None
    token: str | None = None
    max_upload_bytes: int = 5 * 1024**3
    max_request_bytes: int = 64 * 1024**2
    online_store: str = ""
    compile_on_register: str | None = None

    @property
    def trusted_type_list(self) -> list[str]:
        """``trusted_types`` as a list of dotted names, blanks dropped."""
        return [t.strip() for t in self.trusted_types.split(",") if t.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.store_url.startswith("sqlite")


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "home"}


def find_home(start: Path | None = None) -> Path:
    """Return the nearest ``.keel`` folder at or above ``start``, else ``start/.keel``."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        candidate = folder / HOME_DIRNAME
        if candidate.is_dir():
            return candidate
    return start / HOME_DIRNAME


def make_home(home: Path) -> bool:
    """Create the Keel home folder ``home`` with its ``.gitignore``, if they are missing.

    ``keel init`` and the first write of any command both make a home through here,
    so a home looks the same however it came to be. A ``.gitignore`` already there
    is left as it is.

    Returns:
        True if the folder did not exist before.
    """
    created = not home.is_dir()
    home.mkdir(parents=True, exist_ok=True)
    ignore = home / ".gitignore"
    if not ignore.exists():
        ignore.write_text(HOME_GITIGNORE)
    return created


def _coerce(name: str, raw: Any, source: str) -> Any:
    kind = _FIELDS[name].type
    if raw is None:
        return None
    try:
        if kind == "float":
            value = float(raw)
            if value <= 0:
                raise ValueError
            return value
        if kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            number = int(raw)
            if number <= 0:
                raise ValueError
            return number
        if isinstance(raw, list | tuple):  # config.toml may list trusted_types as an array
            return ",".join(str(item) for item in raw)
        return str(raw)
    except (TypeError, ValueError):
        expected = "whole number" if kind == "int" else "number"
        raise InvalidInput(
            f"setting {name!r} from {source} must be a positive {expected}, got {raw!r}"
        ) from None


def load_settings(home: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Resolve settings from arguments, ``KEEL_*`` variables, ``config.toml`` and defaults.

    Args:
        home: the Keel home folder; default as described in the module docstring.
        **overrides: any :class:`Settings` field; ``None`` means "not given".

    Raises:
        InvalidInput: an unknown setting name, a malformed value, or an unreadable config file.
    """
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise InvalidInput(
            f"unknown setting(s) {', '.join(unknown)}; valid names are {', '.join(sorted(_FIELDS))}"
        )
    env_home = os.environ.get("KEEL_HOME")
    home_path = Path(home) if home is not None else Path(env_home) if env_home else find_home()
    home_path = home_path.expanduser().resolve()

    file_values: Mapping[str, Any] = {}
    config_file = home_path / CONFIG_FILENAME
    if config_file.is_file():
        try:
            file_values = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(
                f"cannot read {config_file}: {exc}; fix or delete the file"
            ) from None
        bad = sorted(set(file_values) - set(_FIELDS))
        if bad:
            raise InvalidInput(
                f"{config_file} has unknown setting(s) {', '.join(bad)}; "
                f"valid names are {', '.join(sorted(_FIELDS))}"
            )

    values: dict[str, Any] = {}
    for name in _FIELDS:
        env_name = f"KEEL_{name.upper()}"
        if overrides.get(name) is not None:
            values[name] = _coerce(name, overrides[name], "argument")
        elif os.environ.get(env_name):
            values[name] = _coerce(name, os.environ[env_name], env_name)
        elif name in file_values:
            values[name] = _coerce(name, file_values[name], str(config_file))

    _check_compile_target(values.get("compile_on_register"))
    values.setdefault("store_url", f"sqlite:///{home_path / 'keel.db'}")
    values.setdefault("artifacts_url", str(home_path / "artifacts"))
    values.setdefault("online_store", f"sqlite:///{home_path / 'features' / 'online.db'}")
    return Settings(home=home_path, **values)


#: What ``compile_on_register`` takes (``keel.registry.compilations.TARGETS``, which sits above).
_COMPILE_TARGETS = ("onnx", "treelite")


def _check_compile_target(value: Any) -> None:
    if value is not None and value not in _COMPILE_TARGETS:
        raise InvalidInput(
            f"setting 'compile_on_register' must be one of {', '.join(_COMPILE_TARGETS)}, "
            f"got {value!r}; unset it to compile nothing on registration"
        )


_lock = threading.Lock()
_current: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, resolved on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = load_settings()
        return _current


def set_settings(settings: Settings) -> None:
    """Make ``settings`` the process's settings (``keel.init`` calls this)."""
    global _current
    with _lock:
        _current = settings


def reset_settings() -> None:
    """Forget the resolved settings so the next use resolves them again."""
    global _current
    with _lock:
        _current = None
