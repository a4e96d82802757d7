"""The in-process transport: SQL on the metadata database, blobs in the artifact root."""

from __future__ import annotations

from keel.artifacts import ArtifactStore
from keel.config import Settings, get_settings
from keel.errors import InvalidInput
from keel.store import Store, get_store
from keel.transport.base import Transport

__all__ = ["LocalTransport", "local_or"]


class LocalTransport(Transport):
    """Opens the store and artifact store that ``settings`` name, on first use.

    Args:
        settings: defaults to the process's settings (``keel.config.get_settings()``),
            resolved when first needed so ``keel.init`` before first use still applies.
        store: a metadata store to use instead of the one ``settings`` names.
        artifacts: an artifact store to use instead of the one ``settings`` names.
        user: who this client acts as, instead of ``settings.user``; ``keel server`` passes
            the authenticated token's user here.

    Example:
        >>> client = keel.Client(transport=LocalTransport(settings))
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        artifacts: ArtifactStore | None = None,
        user: str | None = None,
    ) -> None:
        self._given_settings = settings
        self._store = store
        self._artifacts = artifacts
        self._user = user

    @property
    def settings(self) -> Settings:
        return self._given_settings or get_settings()

    @property
    def user(self) -> str:
        return self._user if self._user is not None else self.settings.user

    @property
    def store(self) -> Store:
        if self._store is None:
            # get_store shares one engine per URL across the process, so closing it is not
            # this transport's to do.
            self._store = get_store(self.settings)
        return self._store

    @property
    def artifacts(self) -> ArtifactStore:
        if self._artifacts is None:
            settings = self.settings
            self._artifacts = ArtifactStore.from_url(
                settings.artifacts_url, settings.s3_endpoint_url
            )
        return self._artifacts

    def __repr__(self) -> str:
        given = self._given_settings
        return f"LocalTransport({'process settings' if given is None else given.home!s})"


def local_or(
    transport: Transport | None,
    settings: Settings | None = None,
    store: Store | None = None,
    artifacts: ArtifactStore | None = None,
) -> Transport:
    """``transport``, or one over the other arguments.

    That is an :class:`~keel.transport.http.HttpTransport` when the settings name a
    ``server_url`` (and no store or artifacts are given), else a :class:`LocalTransport`.

    Raises:
        InvalidInput: both a transport and settings, a store or artifacts were given:
            a transport carries its own, so the others would be silently ignored.
    """
    if transport is None:
        resolved = settings or get_settings()
        if resolved.server_url and store is None and artifacts is None:
            from keel.transport.http import HttpTransport

            return HttpTransport(resolved)
        return LocalTransport(settings, store=store, artifacts=artifacts)
    given = [
        n
        for n, v in (("settings", settings), ("store", store), ("artifacts", artifacts))
        if v is not None
    ]
    if given:
        raise InvalidInput(
            f"pass a transport or {', '.join(given)}, not both: the transport already carries "
            f"its own settings and stores (got transport={transport!r})"
        )
    return transport
