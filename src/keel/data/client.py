"""The data part of a client: the dataset catalog reached through a transport.

:class:`DataClient` is what ``keel.data``'s functions (``add``, ``get``,
``checkout``, ``log_dataset`` …) use for everything that is not file bytes:
looking versions up, numbering new ones, recording a run's inputs, and asking
which objects the artifact store still lacks. Locally each method is one call
of :mod:`keel.data.catalog` on the transport's store; over ``keel server``
:class:`keel.data.remote.RemoteData` makes each one a REST call. The bytes
themselves always go through ``transport.artifacts``.

:func:`data_part` picks the right one for a transport.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from keel.artifacts import LocalBackend
from keel.data import catalog
from keel.data.catalog import DatasetVersion
from keel.errors import NotFound
from keel.transport import Transport, TransportBound
from keel.uris import DatasetURI

__all__ = ["DataClient", "NewVersion", "data_part"]


@dataclass(frozen=True)
class NewVersion:
    """What a client sends to record a dataset version (the bytes are stored already).

    Attributes:
        name: the dataset's name.
        digest: the version's folder manifest, already in the artifact store.
        kind: ``file``, ``folder`` or ``table``.
        files: how many files the manifest lists.
        nbytes: their total size.
        source: the path it was added from, if any.
        schema: tables only: ``[{"name", "type"}]``.
        num_rows: tables only.
        profile_digest: tables only: the stored profile object.
        packs_digest: the stored pack index, if files were packed.
        run_id: the run to record the version as an input of, if any.
        input_context: how that run used it (``add``, ``log_dataset``).
    """

    name: str
    digest: str
    kind: str
    files: int
    nbytes: int
    source: str | None = None
    schema: list[dict[str, Any]] | None = None
    num_rows: int | None = None
    profile_digest: str | None = None
    packs_digest: str | None = None
    run_id: str | None = None
    input_context: str | None = None


class DataClient(TransportBound):
    """Dataset versions in the metadata store, acting as the transport's user.

    Args:
        transport: where the catalog lives (a :class:`~keel.transport.LocalTransport`).
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def get_version(self, ref: str | DatasetURI) -> DatasetVersion:
        """The version ``ref`` names (``name@3``, ``name``, a digest, or ``datasets:/…``).

        Raises:
            NotFound: no such dataset, version or digest.
        """
        return catalog.get_version(self.store, ref)

    def list_versions(self, name: str) -> list[DatasetVersion]:
        """Every version of ``name``, oldest first.

        Raises:
            NotFound: no dataset is named ``name``.
        """
        return catalog.list_versions(self.store, name)

    def list_datasets(self) -> list[DatasetVersion]:
        """The latest version of every dataset, by name."""
        return catalog.list_datasets(self.store)

    def register_version(self, new: NewVersion) -> tuple[DatasetVersion, bool]:
        """Record ``new`` as the next version of its dataset unless it is the latest already.

        Returns:
            The version, and whether a new one was numbered.

        Raises:
            NotFound: the manifest, profile or pack index is not in the artifact store
                (a version must never name bytes that are not there), or ``new.run_id``
                names no run.
        """
        run_id = None if new.run_id is None else self._run_id(new.run_id)
        named = [new.digest, new.profile_digest, new.packs_digest]
        absent = sorted(self.missing_objects(d for d in named if d))
        if absent:
            raise NotFound(
                f"the artifact store {self.artifacts.url} does not hold object {absent[0]} that "
                f"version of {new.name!r} names; store its bytes first (keel.data.add does)"
            )
        return catalog.register_version(
            self.store,
            name=new.name,
            digest=new.digest,
            kind=new.kind,
            files=new.files,
            nbytes=new.nbytes,
            actor=self.user,
            source=new.source,
            schema=new.schema,
            num_rows=new.num_rows,
            profile_digest=new.profile_digest,
            packs_digest=new.packs_digest,
            run_id=run_id,
            input_context=new.input_context,
        )

    def record_input(self, run_id: str, ref: str, context: str) -> DatasetVersion:
        """Record that run ``run_id`` read version ``ref`` (idempotent); return the version.

        Raises:
            NotFound: no run has id ``run_id`` (or starts with it), or ``ref`` names nothing.
        """
        run = self._run_id(run_id)
        version = self.get_version(ref)
        catalog.record_input(self.store, run, version, context)
        return version

    def run_inputs(self, run_id: str) -> list[DatasetVersion]:
        """The dataset versions a run read or logged, by name and version.

        Raises:
            NotFound: no run has id ``run_id`` (or starts with it); a run that read
                nothing has an empty list.
        """
        return catalog.run_inputs(self.store, self._run_id(run_id))

    def _run_id(self, run_id: str) -> str:
        """The full id of the run ``run_id`` names (an unambiguous prefix will do).

        Asked of the tracking part, so an unknown run is the tracking part's ``NotFound``
        here as on a server, never a foreign-key error of the store. (Imported here: the
        tracking part pulls in numpy, which an ``add`` outside a run never needs.)
        """
        from keel.tracking.remote import tracking_for

        tracking = tracking_for(self.transport)
        return tracking.get_run_info(tracking.resolve_run_id(run_id)).id

    def get_profile(self, ref: str) -> dict[str, Any] | None:
        """The stored profile of version ``ref`` as JSON, or ``None`` for files and folders.

        Raises:
            NotFound: no version matches ``ref``.
        """
        version = self.get_version(ref)
        if not version.profile_digest:
            return None
        profile: dict[str, Any] = self.artifacts.get_json(version.profile_digest)
        return profile

    def missing_objects(self, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` the artifact store does not hold."""
        wanted = set(digests)
        if not wanted:
            return set()
        # A stat per object is cheap on a local folder, and a few lookups on a remote
        # store cost less than listing it; many on a remote store: one listing.
        if len(wanted) <= 16 or isinstance(self.artifacts.backend, LocalBackend):
            return {d for d in wanted if not self.artifacts.exists(d)}
        return wanted - set(self.artifacts.iter_digests())

    def tracked_packs_digest(self, digest: str) -> str | None:
        """The pack index of the newest version with manifest ``digest`` (None if unknown)."""
        try:
            return self.get_version(digest).packs_digest
        except NotFound:
            return None


def data_part(transport: Transport) -> DataClient:
    """The data part for ``transport``: SQL locally, REST calls over the http transport."""
    from keel.transport.http import HttpTransport

    if isinstance(transport, HttpTransport):
        from keel.data.remote import RemoteData

        return RemoteData(transport)
    return DataClient(transport)
