"""Automation policies, their cycle state and events through ``keel server``.

:class:`RemotePolicyStore` is what ``PolicyStore(client)`` gives on a client
of the http transport: each method is one request to a route of
:mod:`keel.server.routes.automation`, where the server checks the caller's
permissions and runs :class:`~keel.automation.state.PolicyStore`'s own code as
the token's user. So ``keel automation run`` pointed at a server runs the
pipelines, gates and canary measurements where it runs, and every write —
each transition with its event, deployment revision or alias move — is one
transaction on the server.

What needs a transaction of the caller's own (``conn=``) cannot cross HTTP:
:meth:`claim_trigger` and ``transition(conn=...)`` are refused with a clear
error; :meth:`PolicyStore.trigger` is the one call that claims and moves.
"""

from __future__ import annotations

import builtins
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection

from keel.automation.events import Event, check_kinds
from keel.automation.policy import Policy, load_policy
from keel.automation.state import CycleState, PolicyStore, Transition
from keel.errors import InvalidInput
from keel.transport.http import HttpTransport
from keel.transport.wire import to_wire

__all__ = ["RemotePolicyStore"]


def _no_conn(conn: Connection | None, method: str) -> None:
    if conn is not None:
        raise InvalidInput(
            f"{method}(conn=...) joins a transaction of the metadata store, which is the "
            "server's when the client talks to keel server; call it without conn"
        )


class RemotePolicyStore(PolicyStore):
    """:class:`PolicyStore` whose reads and writes are requests to ``keel server``."""

    @property
    def transport(self) -> HttpTransport:
        transport = self.client.transport
        assert isinstance(transport, HttpTransport)
        return transport

    @staticmethod
    def _path(name: str, tail: str = "") -> str:
        return f"/automation/policies/{quote(str(name), safe='')}{tail}"

    # -- policies ----------------------------------------------------------------------

    def store_policy(self, policy: Policy, datasets: dict[str, int]) -> tuple[Policy, int]:
        body = {"policy": policy.to_dict(), "datasets": datasets}
        answer = self.transport.request("PUT", self._path(policy.name), json=body)
        return load_policy(answer["policy"]), int(answer["revision"])

    def get(self, name: str) -> Policy:
        return load_policy(self.transport.request("GET", self._path(name))["policy"])

    def list(self, *, enabled_only: bool = False) -> builtins.list[dict[str, Any]]:
        params = {"enabled_only": "true"} if enabled_only else {}
        rows: builtins.list[dict[str, Any]] = self.transport.request(
            "GET", "/automation/policies", params=params
        )
        return rows

    def set_enabled(self, name: str, enabled: bool) -> None:
        self.transport.request("POST", self._path(name, "/enable" if enabled else "/disable"))

    # -- cycle state -------------------------------------------------------------------

    def state(self, name: str) -> CycleState:
        return self.transport.call("GET", self._path(name, "/state"), CycleState)

    def _move(
        self, current: CycleState, change: Transition, effect: str, **extra: Any
    ) -> CycleState | None:
        body = {"current": to_wire(current), "change": to_wire(change), "effect": effect, **extra}
        path = self._path(current.policy, "/transitions")
        moved: CycleState | None = self.transport.call("POST", path, CycleState | None, json=body)
        return moved

    def transition(
        self,
        current: CycleState,
        policy: Policy,
        change: Transition,
        conn: Connection | None = None,
    ) -> CycleState:
        _no_conn(conn, "transition")
        moved = self._move(current, change, "state")
        assert moved is not None
        return moved

    def trigger(
        self, current: CycleState, policy: Policy, key: str, change: Transition
    ) -> CycleState | None:
        return self._move(current, change, "trigger", trigger_key=key)

    def start_canary(
        self, current: CycleState, policy: Policy, change: Transition, version: int
    ) -> CycleState:
        moved = self._move(current, change, "canary", version=version)
        assert moved is not None
        return moved

    def roll_back(self, current: CycleState, policy: Policy, change: Transition) -> CycleState:
        moved = self._move(current, change, "rollback")
        assert moved is not None
        return moved

    def promote(
        self,
        current: CycleState,
        policy: Policy,
        change: Transition,
        *,
        expected: int | None,
        comment: str,
    ) -> CycleState:
        moved = self._move(current, change, "promote", expected=expected, comment=comment)
        assert moved is not None
        return moved

    def note(
        self,
        policy: Policy,
        kind: str,
        reason: str,
        version: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        body = {"kind": kind, "reason": reason, "version": version, "details": details}
        self.transport.request("POST", self._path(policy.name, "/events"), json=body)

    def save_detail(self, current: CycleState, detail: dict[str, Any]) -> CycleState:
        body = {"epoch": current.epoch, "detail": detail}
        return self.transport.call(
            "POST", self._path(current.policy, "/detail"), CycleState, json=body
        )

    # -- events ------------------------------------------------------------------------

    def history(
        self,
        policy: str | None = None,
        *,
        kinds: tuple[str, ...] | None = None,
        limit: int | None = None,
        after: int = 0,
    ) -> builtins.list[Event]:
        params: dict[str, Any] = {}
        if policy is not None:
            params["policy"] = policy
        if kinds:
            params["kind"] = list(check_kinds(kinds))  # the local message, before a request
        if limit is not None:
            params["limit"] = limit
        if after:
            params["after"] = after
        return self.transport.call("GET", "/automation/events", builtins.list[Event], params=params)

    def last_event_id(self, name: str) -> int:
        self.state(name)  # a policy that does not exist is NotFound, not "no events"
        events = self.history(name, limit=1)
        return events[-1].id if events else 0

    def claim_trigger(self, conn: Connection, policy: str, key: str) -> bool:
        _no_conn(conn, "claim_trigger")
        raise InvalidInput("claim_trigger needs a transaction; call trigger() instead")

    def trigger_claimed(self, policy: str, key: str) -> bool:
        answer = self.transport.request(
            "GET", self._path(policy, "/trigger-claimed"), params={"key": key}
        )
        return bool(answer["claimed"])

    # -- leases --------------------------------------------------------------------------

    def acquire(self, name: str, owner: str, seconds: float) -> bool:
        body = {"owner": owner, "seconds": seconds}
        answer = self.transport.request("PUT", self._path(name, "/lease"), json=body)
        return bool(answer["acquired"])

    def release(self, name: str, owner: str) -> None:
        self.transport.request("DELETE", self._path(name, "/lease"), params={"owner": owner})
