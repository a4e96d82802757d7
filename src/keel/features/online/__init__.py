"""Online feature stores: the latest value per view and entity, for millisecond reads.

:func:`open_online_store` picks the backend by the URL's scheme:

- ``sqlite:///path/online.db`` — embedded, the default (``<home>/features/online.db``);
- ``redis://host:6379/0`` or ``rediss://…`` (TLS), optionally ``?prefix=<name>`` so
  several Keel homes can share one Redis database (keys ``keel:<prefix>:<view>:<entity>``).

Both implement :class:`OnlineStore`; :mod:`keel.features.online.base` documents the
rules they share (a write never moves an entity back in time; an expired value reads
as missing) and the key and value encoding.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from keel.errors import InvalidInput
from keel.features.extra import require
from keel.features.online.base import OnlineStore, entity_key

__all__ = ["OnlineStore", "entity_key", "open_online_store"]

#: The schemes :func:`open_online_store` accepts.
SCHEMES = ("sqlite", "redis", "rediss")


def open_online_store(url: str) -> OnlineStore:
    """The online store at ``url`` (its connections open on first use).

    Raises:
        InvalidInput: ``url`` is not a ``sqlite:///`` or ``redis://`` URL, or the
            store's client library is not installed (``pip install 'keel[features]'``).
    """
    scheme = urlsplit(url).scheme.lower() if isinstance(url, str) else ""
    if scheme == "sqlite":
        require("msgpack", what="the SQLite online store")
        from keel.features.online.sqlite import SqliteOnlineStore

        path = urlsplit(url).path
        # sqlite:///rel.db is relative, sqlite:////abs.db absolute, as in SQLAlchemy
        path = path[1:] if path.startswith("/") else path
        if not path or path == ":memory:":
            raise InvalidInput(
                f"an SQLite online store needs a file, as in sqlite:///features/online.db; "
                f"got {url!r}"
            )
        return SqliteOnlineStore(path, url)
    if scheme in ("redis", "rediss"):
        require("redis", "hiredis", "msgpack", what="the Redis online store")
        from keel.features.online.redis import RedisOnlineStore

        return RedisOnlineStore(url)
    from keel.store import redact_url

    shown = redact_url(url) if isinstance(url, str) else url
    raise InvalidInput(
        "the online store URL must be sqlite:///path/online.db or redis://host:6379/0 "
        f"(rediss:// for TLS); got {shown!r}. Set it with KEEL_ONLINE_STORE or online_store "
        "in .keel/config.toml"
    )
