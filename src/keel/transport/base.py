"""The one interface between a :class:`keel.Client` and where Keel's state lives.

A transport is passed in, never looked up through globals (in the spirit of
httpx's ``BaseTransport``). Today there is one implementation,
:class:`keel.transport.local.LocalTransport`, which opens the metadata
database and the artifact store named by the settings; the client's parts
(tracking, registry) run their queries on what it hands them.

The next transport is ``HttpTransport``: it will talk to ``keel server``
with a token. It will implement the same few members:

- ``settings``: the client's settings (the server URL and token among them);
- ``user``: the token's user as the server reports it, not the OS user or
  ``KEEL_USER`` — on a server, identity is checked by the server;
- ``artifacts``: an :class:`~keel.artifacts.ArtifactStore` over the server's
  content-addressed blob routes (get and put by digest, verified on read);
- ``store``: metadata goes through the server's REST API instead of SQL, so
  an http transport raises here and the parts' reads and writes move behind
  transport methods as they are ported;
- ``close``: releases the connection pool.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.artifacts import ArtifactStore
    from keel.client import Client
    from keel.config import Settings
    from keel.store import Store
    from keel.transport.http import HttpTransport

__all__ = ["Transport", "TransportBound"]


class Transport(ABC):
    """How a client reaches the metadata store and the artifact store."""

    @property
    @abstractmethod
    def settings(self) -> Settings:
        """The settings this transport was opened with."""

    @property
    def user(self) -> str:
        """Who the client acts as: recorded on runs, versions and audit entries."""
        return self.settings.user

    @property
    @abstractmethod
    def store(self) -> Store:
        """The metadata store (opened on first use)."""

    @property
    @abstractmethod
    def artifacts(self) -> ArtifactStore:
        """The content-addressed artifact store (opened on first use)."""

    def close(self) -> None:  # noqa: B027 — optional: a transport may hold nothing to release
        """Release what this transport holds; the default holds nothing of its own."""


class TransportBound:
    """What every client part reads through its transport, written once.

    ``TrackingClient``, ``RegistryClient`` and ``Client`` each hold a
    ``transport``; these properties are the only way they reach settings,
    identity and the two stores.
    """

    transport: Transport

    @property
    def settings(self) -> Settings:
        """The settings of this client's transport."""
        return self.transport.settings

    @property
    def user(self) -> str:
        """Who this client acts as: recorded on runs, versions, alias moves and audit entries.

        Locally this is the OS user or ``KEEL_USER``, which is not a control.
        """
        return self.transport.user

    @property
    def store(self) -> Store:
        """The metadata store of this client's transport."""
        return self.transport.store

    @property
    def artifacts(self) -> ArtifactStore:
        """The artifact store of this client's transport."""
        return self.transport.artifacts


class ClientPart:
    """A part built on a ``keel.Client`` or on a transport, local or through ``keel server``.

    It only stores what it is given; :attr:`transport` and :attr:`remote` say how to
    reach the rows. A part's methods run SQL when :attr:`remote` is ``None`` and make
    one REST call each otherwise.
    """

    def __init__(self, client: Client | Transport) -> None:
        self.client = client

    @cached_property
    def transport(self) -> Transport:
        """The transport the rows are reached through."""
        client = self.client
        return client if isinstance(client, Transport) else client.transport

    @cached_property
    def remote(self) -> HttpTransport | None:
        """The http transport of a ``keel server`` client, or ``None`` for a local one."""
        from keel.transport.http import HttpTransport

        return self.transport if isinstance(self.transport, HttpTransport) else None
