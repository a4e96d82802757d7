"""The registry part over ``keel server``: :class:`RegistryClient`'s methods as REST calls.

:class:`RemoteRegistry` is what :class:`keel.Client` holds when its transport is
the http one; each method it overrides is one request to a route of
:mod:`keel.server.routes.registry`, where the server checks the caller's
roles and runs the same registry code. The acting user is always the token's:
no request names a user, so four-eyes rules hold against the registrant.

One thing stays local-only: ``conn=`` on :meth:`set_alias` and
:meth:`delete_alias` (a transaction of the caller's own) cannot cross HTTP;
passing one is refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection

from keel.errors import InvalidInput, NotFound
from keel.registry.client import UNSET, RegistryClient, Unset
from keel.registry.entities import (
    AliasChange,
    AliasPolicy,
    Approval,
    ModelCheck,
    ModelCompilation,
    ModelVersion,
    RegisteredModel,
    ResolvedModel,
)
from keel.tracking.client import TrackingClient
from keel.transport import Transport
from keel.transport.http import HttpTransport
from keel.validation import check_name

__all__ = ["AliasCalls", "RemoteRegistry", "registry_for"]


def _seg(text: Any) -> str:
    """One path segment: a name is checked by the server, but must not change the path."""
    return quote(str(text), safe="")


class AliasCalls:
    """The alias and approval requests of one collection (``/models`` or ``/prompts``).

    The client's side of :func:`keel.server.routes.aliases.add_alias_routes`: models and
    prompts move, trace and approve aliases through the same routes under their own path.

    Args:
        transport: the http transport.
        noun: what one item is called in messages (``model``, ``prompt``).
        path: the item's route from its name (``/models/<name>``); it refuses a name
            that would change the route.
    """

    def __init__(self, transport: HttpTransport, noun: str, path: Callable[[str], str]) -> None:
        self.transport = transport
        self.noun = noun
        self.path = path

    def set_alias(
        self, name: str, alias: str, version: int, expected: int | Unset | None, comment: str | None
    ) -> AliasChange:
        body: dict[str, Any] = {"version": version, "comment": comment}
        if not isinstance(expected, Unset):  # absent: whatever the alias holds when it moves
            body["expected"] = expected
        path = f"{self.path(name)}/aliases/{_seg(alias)}"
        return self.transport.call("PUT", path, AliasChange, json=body)

    def delete_alias(
        self, name: str, alias: str, expected: int | Unset | None, comment: str | None
    ) -> AliasChange:
        if expected is None:  # as locally: an alias believed unset has nothing to delete
            raise NotFound(f"alias {alias!r} of {self.noun} {name!r} is not set; nothing to delete")
        params: dict[str, Any] = {}
        if not isinstance(expected, Unset):
            params["expected"] = expected
        if comment is not None:
            params["comment"] = comment
        path = f"{self.path(name)}/aliases/{_seg(alias)}"
        return self.transport.call("DELETE", path, AliasChange, params=params)

    def alias_history(self, name: str, alias: str | None) -> list[AliasChange]:
        params = {} if alias is None else {"alias": alias}
        path = f"{self.path(name)}/alias-history"
        return self.transport.call("GET", path, list[AliasChange], params=params)

    def approve(self, name: str, version: int, alias: str, comment: str | None) -> Approval:
        path = f"{self.path(name)}/versions/{_seg(version)}/approvals"
        return self.transport.call(
            "POST", path, Approval, json={"alias": alias, "comment": comment}
        )

    def list_approvals(self, name: str, version: int | None) -> list[Approval]:
        params = {} if version is None else {"version": version}
        path = f"{self.path(name)}/approvals"
        return self.transport.call("GET", path, list[Approval], params=params)


def _no_conn(conn: Connection | None, method: str) -> None:
    if conn is not None:
        raise InvalidInput(
            f"{method}(conn=...) joins a transaction of the metadata store, which is the "
            "server's when the client talks to keel server; call it without conn"
        )


class RemoteRegistry(RegistryClient):
    """Registered models, versions, aliases and approvals through ``keel server``."""

    transport: HttpTransport

    def __init__(self, transport: HttpTransport, tracking: TrackingClient) -> None:
        super().__init__(transport=transport, tracking=tracking)
        self._aliases = AliasCalls(transport, "model", self._model)

    def _model(self, name: str) -> str:
        # a name that is not one (``a/b``) would change the route: say so as locally
        try:
            check_name(name, "model name")
        except InvalidInput:
            raise NotFound(f"no registered model named {name!r}") from None
        return f"/models/{_seg(name)}"

    def _version(self, name: str, version: Any) -> str:
        return f"{self._model(name)}/versions/{_seg(version)}"

    # -- registered models ----------------------------------------------------

    def create_registered_model(self, name: str, description: str | None = None) -> RegisteredModel:
        body = {"name": name, "description": description}
        return self.transport.call("POST", "/models", RegisteredModel, json=body)

    def get_registered_model(self, name: str) -> RegisteredModel:
        return self.transport.call("GET", self._model(name), RegisteredModel)

    def list_registered_models(self) -> list[RegisteredModel]:
        return self.transport.call("GET", "/models", list[RegisteredModel])

    # -- versions ----------------------------------------------------------------

    def create_model_version(
        self,
        name: str,
        source: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        check_name(name, "model name")
        body = {
            "source": source,
            "description": description,
            "tags": None if tags is None else {str(k): str(v) for k, v in tags.items()},
        }
        path = f"{self._model(name)}/versions"
        return self.transport.call("POST", path, ModelVersion, json=body)

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        return self.transport.call("GET", self._version(name, version), ModelVersion)

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        path = f"{self._model(name)}/versions"
        return self.transport.call("GET", path, list[ModelVersion])

    def set_model_version_tag(self, name: str, version: int, key: str, value: Any) -> None:
        from keel.tracking.validation import check_key, check_tag_value

        # the same checks as locally, so a bad tag says the same thing in both modes
        check_key(key, "tag key")
        text = check_tag_value(key, value)
        path = f"{self._version(name, version)}/tags"
        self.transport.request("POST", path, json={"key": key, "value": text})

    def update_model_version(self, name: str, version: int, *, description: str) -> ModelVersion:
        body = {"description": description}
        return self.transport.call("PATCH", self._version(name, version), ModelVersion, json=body)

    # -- checks ----------------------------------------------------------------------------

    def record_check(
        self,
        name: str,
        version: int,
        *,
        against_version: int | None,
        passed: bool,
        data_digest: str,
        report_digest: str,
    ) -> ModelCheck:
        # the report crossed already, through the blob routes (``self.artifacts``)
        body = {
            "against_version": against_version,
            "passed": passed,
            "data_digest": data_digest,
            "report_digest": report_digest,
        }
        path = f"{self._version(name, version)}/checks"
        return self.transport.call("POST", path, ModelCheck, json=body)

    def list_checks(self, name: str, version: int) -> list[ModelCheck]:
        return self.transport.call(
            "GET", f"{self._version(name, version)}/checks", list[ModelCheck]
        )

    # -- compilations ----------------------------------------------------------------------

    def record_compilation(
        self,
        name: str,
        version: int,
        *,
        target: str,
        passed: bool,
        package_digest: str | None,
        report_digest: str,
    ) -> ModelCompilation:
        # the report and the package crossed already, through the blob routes
        from keel.registry.compilations import check_target

        body = {
            "target": check_target(target),  # the same message as locally
            "passed": passed,
            "package_digest": package_digest,
            "report_digest": report_digest,
        }
        path = f"{self._version(name, version)}/compilations"
        return self.transport.call("POST", path, ModelCompilation, json=body)

    def list_compilations(self, name: str, version: int) -> list[ModelCompilation]:
        return self.transport.call(
            "GET", f"{self._version(name, version)}/compilations", list[ModelCompilation]
        )

    # -- aliases -------------------------------------------------------------------------

    def get_alias(self, name: str, alias: str) -> int | None:
        return self.get_registered_model(name).aliases.get(alias)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        path = f"{self._model(name)}/aliases/{_seg(alias)}"
        return self.transport.call("GET", path, ModelVersion)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
        conn: Connection | None = None,
    ) -> AliasChange:
        _no_conn(conn, "set_alias")
        return self._aliases.set_alias(name, alias, version, expected, comment)

    def delete_alias(
        self,
        name: str,
        alias: str,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
        conn: Connection | None = None,
    ) -> AliasChange:
        _no_conn(conn, "delete_alias")
        return self._aliases.delete_alias(name, alias, expected, comment)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasChange]:
        return self._aliases.alias_history(name, alias)

    # -- approvals and protection ----------------------------------------------------------

    def approve(self, name: str, version: int, alias: str, comment: str | None = None) -> Approval:
        return self._aliases.approve(name, version, alias, comment)

    def list_approvals(self, name: str, version: int | None = None) -> list[Approval]:
        return self._aliases.list_approvals(name, version)

    def set_alias_policy(
        self,
        alias: str,
        *,
        approvals: int = 1,
        role: str = "approver",
        allow_registrant: bool = False,
    ) -> AliasPolicy:
        body = {"approvals": approvals, "role": role, "allow_registrant": allow_registrant}
        path = f"/alias-policies/{_seg(alias)}"
        return self.transport.call("PUT", path, AliasPolicy, json=body)

    def delete_alias_policy(self, alias: str) -> None:
        self.transport.request("DELETE", f"/alias-policies/{_seg(alias)}")

    def list_alias_policies(self) -> list[AliasPolicy]:
        return self.transport.call("GET", "/alias-policies", list[AliasPolicy])

    # -- roles (the server's identity routes) -------------------------------------------------

    def grant_role(self, user: str, role: str) -> None:
        self.transport.request("POST", "/roles", json={"user": user, "role": role})

    def revoke_role(self, user: str, role: str) -> None:
        self.transport.request("POST", "/roles/revoke", json={"user": user, "role": role})

    def list_roles(self) -> dict[str, list[str]]:
        return self.transport.call("GET", "/roles", dict[str, list[str]])

    # -- URIs --------------------------------------------------------------------------------

    def resolve_model(self, uri: str) -> ResolvedModel:
        return self.transport.call("GET", "/registry/resolve", ResolvedModel, params={"uri": uri})


def registry_for(transport: Transport, tracking: TrackingClient) -> RegistryClient:
    """The registry part for ``transport``: SQL locally, REST calls over the http transport."""
    if isinstance(transport, HttpTransport):
        return RemoteRegistry(transport, tracking)
    return RegistryClient(transport=transport, tracking=tracking)
