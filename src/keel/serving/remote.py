"""The deployments part over ``keel server``: :class:`Deployments`' methods as REST calls.

``Deployments(client)`` is a :class:`RemoteDeployments` when the client's
transport is the http one. Each overridden method is one request to a route
of :mod:`keel.server.routes.deployments`, where the server checks the caller's
permissions (``write`` on every model a spec routes to) and runs the same
:class:`~keel.serving.deployments.Deployments` code with the token's user as
the actor. :meth:`~Deployments.update` and :meth:`~Deployments.status` are
inherited: they compose the calls below, so their rules stay in one place.

One thing stays local-only: ``conn=`` on :meth:`set_spec` (a transaction of the
caller's own) cannot cross HTTP; passing one is refused with a clear error.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection

from keel.errors import InvalidInput, NotFound
from keel.serving.deployments import Deployment, Deployments, DeploymentSpec
from keel.transport.http import HttpTransport
from keel.validation import check_name

__all__ = ["RemoteDeployments"]


class RemoteDeployments(Deployments):
    """Create, change, roll back and read deployments through ``keel server``."""

    @property
    def transport(self) -> HttpTransport:
        """The client's http transport."""
        transport = self.client.transport
        assert isinstance(transport, HttpTransport)  # Deployments.__new__ chose this class for it
        return transport

    def _path(self, name: str) -> str:
        # a name that is not one (``a/b``) would change the route: answer as locally
        try:
            check_name(name, "deployment name")
        except InvalidInput:
            raise NotFound(f"no deployment named {name!r}; see `keel deploy list`") from None
        return f"/deployments/{quote(name, safe='')}"

    def create(self, name: str, spec: DeploymentSpec, comment: str | None = None) -> Deployment:
        check_name(name, "deployment name")
        body = {"name": name, "spec": spec.to_dict(), "comment": comment}
        return self.transport.call("POST", "/deployments", Deployment, json=body)

    def get(self, name: str, revision: int | None = None) -> Deployment:
        if revision is None:
            return self.transport.call("GET", self._path(name), Deployment)
        path = f"{self._path(name)}/revisions/{int(revision)}"
        return self.transport.call("GET", path, Deployment)

    def current_revision(self, name: str) -> int:
        return self.get(name).revision

    def all(self) -> list[Deployment]:
        return self.transport.call("GET", "/deployments", list[Deployment])

    def history(self, name: str) -> list[Deployment]:
        return self.transport.call("GET", f"{self._path(name)}/revisions", list[Deployment])

    def _advance(
        self,
        name: str,
        spec: DeploymentSpec,
        comment: str | None,
        action: str,
        expected: int | None,
        previous: int | bool | None = True,
        conn: Connection | None = None,
    ) -> Deployment:
        # only update() reaches here over http; rollback has a route of its own
        return self.set_spec(name, spec, comment, expected, conn=conn)

    def set_spec(
        self,
        name: str,
        spec: DeploymentSpec,
        comment: str | None = None,
        expected_revision: int | None = None,
        *,
        conn: Connection | None = None,
    ) -> Deployment:
        if conn is not None:
            raise InvalidInput(
                "set_spec(conn=...) joins a transaction of the metadata store, which is the "
                "server's when the client talks to keel server; call it without conn"
            )
        body: dict[str, Any] = {
            "spec": spec.to_dict(),
            "comment": comment,
            "expected_revision": expected_revision,
        }
        return self.transport.call("PUT", f"{self._path(name)}/spec", Deployment, json=body)

    def rollback(self, name: str, to: int | None = None, comment: str | None = None) -> Deployment:
        body = {"to": to, "comment": comment}
        return self.transport.call("POST", f"{self._path(name)}/rollback", Deployment, json=body)
