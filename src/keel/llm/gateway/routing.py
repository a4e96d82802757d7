"""Which prompt version answers a prompt request, from facts refreshed in the background.

A request may name ``prompts:/support@production`` (an alias) or
``prompts:/support/3`` (a version). :class:`Catalog` answers from an
immutable snapshot that a background thread rebuilds every
``refresh_interval`` seconds (1 s by default), so the request path reads no
database:

- every alias a request has named is re-resolved, and the versions it points
  at are loaded once and kept (versions are immutable);
- every prompt deployment (``DeploymentSpec(kind="prompt")``) is re-read; one
  whose primary route follows an alias *splits* requests for that alias among
  its routes by weight, with the serving runtime's own choice rule
  (:meth:`keel.serving.runtime.RoutingTable.choose`: weights, and a request id
  always lands on the same route), so a prompt canary and its rollback are the
  deployment's, not a second scheme;
- the price table (when a price source is given) is re-read with the rest.

The first request for an alias or version the snapshot lacks is resolved in
the caller's thread (:meth:`Catalog.resolve`, blocking: the app runs it off the
event loop) and added to what is refreshed. A name that does not resolve is
remembered as missing until the next refresh, so a stream of requests for an
unknown alias costs one lookup a second, not one each.

The snapshot is swapped in one assignment: a request keeps the one it started
with. When a refresh fails (the store is unreachable, or refuses the gateway's
token a prompt that a deployment routes to) the last snapshot keeps serving and
the failure is counted and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import KeelError, NotFound, PermissionDenied
from keel.serving.runtime import ModelHandle, RoutingTable
from keel.uris import PromptURI, parse_prompt_uri

if TYPE_CHECKING:
    from keel.client import Client
    from keel.llm.entities import PromptVersion

__all__ = ["Catalog", "Resolved", "Split"]

log = logging.getLogger("keel.gateway")

#: Versions kept in memory; beyond it the cache starts over (they reload on demand).
_MAX_VERSIONS = 10_000
#: Parsed URIs kept (the same few arrive request after request).
_MAX_URIS = 4_096


@dataclass(frozen=True)
class Resolved:
    """The prompt version that answers a request, the route that chose it, and its deployment.

    ``route`` is ``primary`` or ``canary`` (a deployment's route, or ``primary`` for an
    alias no deployment splits) or ``direct`` (the request named the version).
    """

    version: PromptVersion
    route: str
    deployment: str | None = None


@dataclass(frozen=True)
class Split:
    """A prompt deployment whose primary follows an alias: its name and its routes.

    The routing table's handles hold :class:`~keel.llm.entities.PromptVersion` objects
    where a model deployment's hold loaded models; only its choice rule is used here.
    """

    deployment: str
    table: RoutingTable


@dataclass(frozen=True)
class _Snapshot:
    aliases: Mapping[tuple[str, str], int] = field(default_factory=dict)
    splits: Mapping[tuple[str, str], Split] = field(default_factory=dict)
    listed: tuple[str, ...] = ()
    prices: Any = None
    refreshed_at: float = 0.0


class Catalog:
    """Prompt aliases, versions, prompt deployments and prices, refreshed in the background.

    Args:
        client: the ``keel.Client`` to read prompts and deployments through.
        prices: returns the current price table (``Prices(client).table``), or None to
            keep no prices.
        refresh_interval: seconds between refreshes.
    """

    def __init__(
        self,
        client: Client,
        *,
        prices: Callable[[], Any] | None = None,
        refresh_interval: float = 1.0,
    ) -> None:
        self.client = client
        self.prices_source = prices
        self.refresh_interval = refresh_interval
        self.refresh_errors = 0
        self._snapshot = _Snapshot()
        self._versions: dict[tuple[str, int], PromptVersion] = {}
        self._watched: set[tuple[str, str]] = set()
        self._missing: dict[tuple[str, str], tuple[float, str]] = {}
        self._uris: dict[str, PromptURI] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the request path (no I/O) --------------------------------------------------------

    def parse(self, uri: str) -> PromptURI:
        """``uri`` parsed by the one URI resolver, memoized.

        Raises:
            InvalidInput: not a ``prompts:/NAME@ALIAS`` or ``prompts:/NAME/VERSION`` URI.
        """
        parsed = self._uris.get(uri)
        if parsed is None:
            parsed = parse_prompt_uri(uri)
            if len(self._uris) >= _MAX_URIS:
                self._uris.clear()
            self._uris[uri] = parsed
        return parsed

    def cached(self, uri: PromptURI, request_id: str) -> Resolved | None:
        """The answer from the snapshot, or None when it must be looked up (:meth:`resolve`).

        Raises:
            NotFound: the alias or version was looked up less than a refresh ago and
                did not exist.
        """
        snapshot = self._snapshot
        if uri.alias is not None:
            key = (uri.name, uri.alias)
            split = snapshot.splits.get(key)
            if split is not None:
                role, handle = split.table.choose(request_id)
                return Resolved(handle.model, role, split.deployment)
            number = snapshot.aliases.get(key)
            if number is not None:
                version = self._versions.get((uri.name, number))
                if version is not None:
                    return Resolved(version, "primary")
        else:
            assert uri.version is not None  # the parser gives an alias or a version
            key = (uri.name, str(uri.version))
            version = self._versions.get((uri.name, uri.version))
            if version is not None:
                return Resolved(version, "direct")
        missing = self._missing.get(key)
        if missing is not None and missing[0] > time.monotonic():
            raise NotFound(missing[1])
        return None

    # -- lookups (blocking) ---------------------------------------------------------------

    def resolve(self, uri: PromptURI, request_id: str) -> Resolved:
        """The answer for ``uri``, looking it up in the store if the snapshot lacks it.

        Raises:
            NotFound: no such prompt, alias or version (remembered until the next refresh).
        """
        hit = self.cached(uri, request_id)
        if hit is not None:
            return hit
        prompts = self.client.prompts
        key = (uri.name, uri.alias if uri.alias is not None else str(uri.version))
        try:
            if uri.alias is not None:
                version = prompts.get_by_alias(uri.name, uri.alias)
            else:
                assert uri.version is not None
                version = prompts.get(uri.name, uri.version)
        except NotFound as exc:
            with self._lock:
                self._missing[key] = (time.monotonic() + self.refresh_interval, str(exc))
            raise
        self._keep(version)
        if uri.alias is None:
            return Resolved(version, "direct")
        with self._lock:
            self._watched.add(key)
            current = self._snapshot
            aliases = {**current.aliases, key: version.version}
            self._snapshot = _Snapshot(
                aliases, current.splits, current.listed, current.prices, current.refreshed_at
            )
        return self.cached(uri, request_id) or Resolved(version, "primary")

    def _keep(self, version: PromptVersion) -> None:
        if len(self._versions) >= _MAX_VERSIONS:
            self._versions.clear()
        self._versions[(version.name, version.version)] = version

    def _version(self, name: str, number: int) -> PromptVersion:
        version = self._versions.get((name, number))
        if version is None:
            version = self.client.prompts.get(name, number)
            self._keep(version)
        return version

    # -- what the snapshot holds ----------------------------------------------------------

    @property
    def prices(self) -> Any:
        """The price table of the last refresh (None: no price source, or none read yet)."""
        return self._snapshot.prices

    @property
    def listed(self) -> tuple[str, ...]:
        """``prompts:/`` URIs of the prompt deployments' primary routes, sorted."""
        return self._snapshot.listed

    def refresh(self) -> None:
        """Re-read aliases, prompt deployments and prices, and swap the snapshot (blocking).

        Raises:
            KeelError: the store could not be read; the current snapshot stays.
        """
        from keel.serving.deployments import Deployments

        previous = self._snapshot
        prompts = self.client.prompts
        with self._lock:
            watched = list(self._watched)
        aliases: dict[tuple[str, str], int] = {}
        for name, alias in watched:
            try:
                number = prompts.get_alias(name, alias)
            except NotFound:
                number = None
            if number is not None:
                self._version(name, number)
                aliases[(name, alias)] = number
        splits: dict[tuple[str, str], Split] = {}
        listed = []
        kept = {split.deployment: (key, split) for key, split in previous.splits.items()}
        for deployment in Deployments(self.client).all():
            spec = deployment.spec
            if spec.kind != "prompt":
                continue
            listed.append(spec.uri(spec.primary))
            try:
                table = self._table(deployment.revision, spec, aliases)
            except PermissionDenied:
                # not one broken deployment but the gateway's own token: routing without the
                # deployment would send its alias's traffic past its canary, so the refresh
                # fails (the start, or the refresher logs it and keeps the last snapshot)
                raise
            except KeelError as exc:  # one broken deployment keeps its last routes
                log.warning(
                    "keel: keeping the routes of prompt deployment %s: %s", deployment.name, exc
                )
                if deployment.name in kept:
                    key, split = kept[deployment.name]
                    splits[key] = split
                continue
            if spec.primary.follows_alias:
                splits[(spec.primary.model, spec.primary.ref)] = Split(deployment.name, table)
        prices = previous.prices if self.prices_source is None else self.prices_source()
        with self._lock:
            # an alias first looked up during this refresh is in the current snapshot only
            current = self._snapshot
            for key in self._watched.difference(aliases):
                if key in current.aliases:
                    aliases[key] = current.aliases[key]
            self._snapshot = _Snapshot(aliases, splits, tuple(sorted(listed)), prices, time.time())
            self._missing.clear()

    def _table(
        self, revision: int, spec: Any, aliases: Mapping[tuple[str, str], int]
    ) -> RoutingTable:
        routes = []
        for n, route in enumerate(spec.routes):
            if route.follows_alias:
                number = aliases.get((route.model, route.ref))
                if number is None:
                    number = self.client.prompts.get_alias(route.model, route.ref)
                if number is None:
                    raise NotFound(f"{spec.uri(route)} is not set")
            else:
                number = int(route.ref)
            version = self._version(route.model, number)
            routes.append(
                (
                    "primary" if n == 0 else "canary",
                    route,
                    ModelHandle(route.model, number, version),
                )
            )
        return RoutingTable(revision, tuple(routes), None)

    # -- the background thread ------------------------------------------------------------

    def start(self) -> None:
        """Refresh every ``refresh_interval`` seconds in a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="keel-gateway-refresh", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            try:
                self.refresh()
            except KeelError as exc:
                self.refresh_errors += 1
                log.warning("keel: gateway keeps its current prompts and prices: %s", exc)
            except Exception:  # never let the refresher die; the last snapshot keeps serving
                self.refresh_errors += 1
                log.exception("keel: gateway refresh failed")

    def stop(self) -> None:
        """Stop the background thread (waits for a refresh in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
