"""The data part over ``keel server``: :class:`DataClient`'s methods as REST calls.

:class:`RemoteData` is what ``keel.data``'s functions use when the settings name
a server: each catalog method is one request to a route of
:mod:`keel.server.routes.data`, where the server checks the caller's roles and
runs the same catalog code. File bytes never pass through these routes: they
go to the server's content-addressed blob routes (``transport.artifacts``),
digest-checked on both ends, and the version is registered after them (the
server refuses a version whose manifest it does not hold).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from keel.data.catalog import DatasetVersion, check_dataset_name
from keel.data.client import DataClient, NewVersion
from keel.errors import InvalidInput, NotFound
from keel.transport.http import HttpTransport
from keel.transport.wire import from_wire, to_wire
from keel.uris import DatasetURI

__all__ = ["MISSING_BATCH", "RemoteData"]

#: How many digests one "which are missing?" request asks about.
MISSING_BATCH = 5_000


class RemoteData(DataClient):
    """Dataset versions through ``keel server``, acting as the token's user."""

    transport: HttpTransport

    def __init__(self, transport: HttpTransport) -> None:
        super().__init__(transport)

    def get_version(self, ref: str | DatasetURI) -> DatasetVersion:
        return self.transport.call(
            "GET", "/datasets/resolve", DatasetVersion, params={"ref": str(ref)}
        )

    def list_versions(self, name: str) -> list[DatasetVersion]:
        try:
            check_dataset_name(name)
        except InvalidInput:  # a name like ``a/b`` would change the route: answer as locally
            raise NotFound(f"no dataset named {name!r}") from None
        path = f"/datasets/{quote(name, safe='')}/versions"
        return self.transport.call("GET", path, list[DatasetVersion])

    def list_datasets(self) -> list[DatasetVersion]:
        return self.transport.call("GET", "/datasets", list[DatasetVersion])

    def register_version(self, new: NewVersion) -> tuple[DatasetVersion, bool]:
        check_dataset_name(new.name)  # the same message as locally, before any request
        body = to_wire(new)
        answer = self.transport.request("POST", "/datasets/versions", json=body)
        return from_wire(answer["version"], DatasetVersion), bool(answer["created"])

    def record_input(self, run_id: str, ref: str, context: str) -> DatasetVersion:
        body = {"ref": str(ref), "context": context}
        path = f"/runs/{quote(run_id, safe='')}/dataset-inputs"
        return self.transport.call("POST", path, DatasetVersion, json=body)

    def run_inputs(self, run_id: str) -> list[DatasetVersion]:
        path = f"/runs/{quote(run_id, safe='')}/dataset-inputs"
        return self.transport.call("GET", path, list[DatasetVersion])

    def get_profile(self, ref: str) -> dict[str, Any] | None:
        version = self.get_version(ref)  # one lookup, then the profile object over the blob route
        if not version.profile_digest:
            return None
        profile: dict[str, Any] = self.artifacts.get_json(version.profile_digest)
        return profile

    def missing_objects(self, digests: Iterable[str]) -> set[str]:
        wanted = sorted(set(digests))
        missing: set[str] = set()
        for start in range(0, len(wanted), MISSING_BATCH):
            chunk = wanted[start : start + MISSING_BATCH]
            answer = self.transport.request(
                "POST", "/datasets/objects/missing", json={"digests": chunk}, keyed=False
            )
            missing.update(str(d) for d in answer["missing"])
        return missing
