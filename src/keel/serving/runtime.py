"""What a serving process holds: loaded models and the routing table that picks one.

The routing table is an immutable snapshot (routes with cumulative
weights, the shadow, the deployment revision). A background thread
re-reads the deployment and re-resolves aliases every ``refresh_interval``
seconds; when anything changed it loads the new versions *first* and then
swaps the snapshot in one assignment. A request holds the snapshot it
started with, so in-flight requests finish on the model they began with
and none is dropped.

A deployment that declares features gets them in its table too: a
:class:`~keel.serving.features.ServedFeatures` (the definitions resolved, one
online reader) made when the features change, or when one of their definitions
gets a new version, and shared by the tables in between.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import blake3

from keel.errors import InvalidInput, KeelError, NotFound
from keel.serving.deployments import Deployments, DeploymentSpec, Route
from keel.serving.features import ServedFeatures, feature_layout

if TYPE_CHECKING:
    from keel.client import Client


__all__ = ["ModelHandle", "RoutingTable", "Runtime", "served_by"]

log = logging.getLogger("keel.serving")
#: The v2 ``platform`` of a compiled runtime (``onnxruntime_onnx`` is Triton's own name).
_PLATFORMS = {"onnx": "onnxruntime_onnx", "treelite": "treelite"}


@dataclass(frozen=True)
class ModelHandle:
    """A loaded model version."""

    model_name: str
    version: int
    model: Any  # keel.models.LoadedModel

    @property
    def signature(self) -> Any:
        return getattr(self.model, "signature", None)

    @property
    def runtime(self) -> str:
        """What runs the version: ``native``, ``onnx`` or ``treelite``."""
        return str(getattr(self.model, "runtime", "native"))

    @property
    def runtime_reason(self) -> str:
        """Why that runtime (``compiled onnx passed parity (max |Δp| 3.1e-07)``)."""
        return str(getattr(self.model, "runtime_reason", "native runtime requested"))

    @property
    def platform(self) -> str:
        """The v2 metadata ``platform``: Triton's name for ONNX, else ``keel-<flavor>``."""
        compiled = _PLATFORMS.get(self.runtime)
        return compiled or f"keel-{getattr(self.model, 'flavor', 'python')}"

    def served_by(self) -> str:
        """One line for logs and ``keel serve``: the version, its runtime and why."""
        return f"{self.model_name}/{self.version} served by {self.runtime}: {self.runtime_reason}"


@dataclass(frozen=True)
class RoutingTable:
    revision: int
    routes: tuple[tuple[str, Route, ModelHandle], ...]  # (role, route, handle); role primary|canary
    shadow: ModelHandle | None
    batching: Any = None
    features: ServedFeatures | None = None

    def choose(self, request_id: str | None) -> tuple[str, ModelHandle]:
        """Pick a route by weight; a request id always maps to the same route."""
        if len(self.routes) == 1:
            role, _, handle = self.routes[0]
            return role, handle
        if request_id:
            bucket = int.from_bytes(blake3.blake3(request_id.encode()).digest()[:8], "big") % 100
        else:
            bucket = random.randrange(100)
        edge = 0
        for role, route, handle in self.routes:
            edge += route.weight
            if bucket < edge:
                return role, handle
        role, _, handle = self.routes[-1]
        return role, handle

    def version(self, version: int) -> ModelHandle | None:
        """The handle serving ``version`` (for ``/versions/{v}`` URLs), if it is routed."""
        for _, _, handle in self.routes:
            if handle.version == version:
                return handle
        if self.shadow is not None and self.shadow.version == version:
            return self.shadow
        return None

    @property
    def primary(self) -> ModelHandle:
        return self.routes[0][2]


class Runtime:
    """Models and routing for one deployment (stored, or implicit from a model URI).

    Args:
        name: the deployment name clients use in URLs.
        spec: an implicit deployment's spec; ``None`` reads the stored deployment ``name``.
        client: a ``keel.Client`` (default: one on the process settings).
        refresh_interval: seconds between checks for a new revision or a moved alias.
        loader: loads a model URI (default: ``keel.models.load_model``).
        trust: names the default loader trusts beyond its built-in list and the
            ``trusted_types`` setting (``keel serve --trust``).
        allow_pickle: let the default loader unpickle models stored as pickles
            (``keel serve --allow-pickle``).
        runtime: what the default loader runs each version with (``keel serve
            --runtime``): ``auto`` (a compiled form that passed parity, else the
            native package), ``native``, ``onnx`` or ``treelite`` (see
            :mod:`keel.models.runtimes`).
    """

    def __init__(
        self,
        name: str,
        spec: DeploymentSpec | None = None,
        *,
        client: Client | None = None,
        refresh_interval: float = 1.0,
        loader: Callable[[str], Any] | None = None,
        trust: Sequence[str] = (),
        allow_pickle: bool = False,
        runtime: str = "auto",
    ) -> None:
        from keel.client import Client
        from keel.models.runtimes import check_runtime

        self.name = name
        self.implicit_spec = spec
        self.client = client or Client()
        self.deployments = Deployments(self.client)
        self.refresh_interval = refresh_interval
        self._loader = loader
        self.trust = tuple(trust)
        self.allow_pickle = allow_pickle
        self.runtime = check_runtime(runtime)
        self._cache: dict[tuple[str, int], ModelHandle] = {}
        self._table: RoutingTable | None = None
        self._features: ServedFeatures | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.refresh_errors = 0
        self.swaps = 0

    # -- loading -------------------------------------------------------------------

    def _load(self, model: str, version: int) -> ModelHandle:
        key = (model, version)
        handle = self._cache.get(key)
        if handle is None:
            if self._loader is not None:
                loaded = self._loader(f"models:/{model}/{version}")
            else:
                from keel.models import load_model

                loaded = load_model(
                    f"models:/{model}/{version}",
                    trust=self.trust,
                    allow_pickle=self.allow_pickle,
                    runtime=self.runtime,
                )
            _warm_up(loaded, f"{model}/{version}")
            handle = self._cache[key] = ModelHandle(model, version, loaded)
            log.info("keel: %s", handle.served_by())
        return handle

    def _spec(self) -> tuple[int, DeploymentSpec]:
        if self.implicit_spec is not None:
            return 0, self.implicit_spec
        deployment = self.deployments.get(self.name)
        return deployment.revision, deployment.spec

    def _resolve(self, route: Route) -> int:
        version = self.client.resolve_model(route.uri).version
        if version is None:  # pragma: no cover - models:/ URIs always resolve to a version
            raise NotFound(f"{route.label} does not name a registered version")
        return int(version)

    def build(self) -> RoutingTable:
        """Resolve the spec now and load whatever it needs (blocking)."""
        revision, spec = self._spec()
        if spec.kind != "model":
            raise InvalidInput(
                f"deployment {self.name!r} routes {spec.kind}s, not models; "
                "requests for it go through `keel gateway start`"
            )
        routes = []
        for n, route in enumerate(spec.routes):
            handle = self._load(route.model, self._resolve(route))
            routes.append(("primary" if n == 0 else "canary", route, handle))
        shadow = None
        if spec.shadow is not None:
            shadow = self._load(spec.shadow.model, self._resolve(spec.shadow))
        features = self._served_features(spec)
        return RoutingTable(revision, tuple(routes), shadow, spec.batching, features)

    def _served_features(self, spec: DeploymentSpec) -> ServedFeatures | None:
        """The spec's features: the current ones while their definitions are the latest
        (one registry query), else resolved and opened anew."""
        if spec.features is None:
            return None
        current = self._features
        if current is not None and current.features == spec.features:
            latest = {(d.kind, d.name): d.version for d in self.client.features.list()}
            if current.layout.current(latest):
                return current
        served = ServedFeatures(self.client, feature_layout(self.client, spec.features))
        self._features = served
        return served

    @property
    def table(self) -> RoutingTable:
        table = self._table
        if table is None:
            with self._lock:
                if self._table is None:
                    self._table = self.build()
                table = self._table
        return table

    def refresh(self) -> bool:
        """Rebuild the table if the revision or any alias moved; True if it swapped."""
        with self._lock:
            new = self.build()
            old = self._table
            if old is not None and _same(old, new):
                return False
            self._table = new
            self.swaps += 1
            live = {(h.model_name, h.version) for _, _, h in new.routes}
            if new.shadow is not None:
                live.add((new.shadow.model_name, new.shadow.version))
            for key in list(self._cache):
                if key not in live:
                    del self._cache[key]  # in-flight requests still hold their handle
            if old is not None:
                log.info("keel: %s now serves %s", self.name, describe(new))
            return True

    # -- background refresh -----------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="keel-routing-refresh", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            try:
                self.refresh()
            except KeelError as exc:
                self.refresh_errors += 1
                log.warning("keel: keeping the current routes of %s: %s", self.name, exc)
            except Exception:  # never let the refresher die; the old table keeps serving
                self.refresh_errors += 1
                log.exception("keel: routing refresh of %s failed", self.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._features is not None:
            self._features.close()


def _warm_up(loaded: Any, label: str) -> None:
    """Predict on the stored input example once, before any request is routed to the model.

    The first call pays one-time costs (the checks that choose how inputs are handed
    to the model, lazy initialisation inside libraries); a request should not.
    """
    example = getattr(loaded, "input_example", None)
    if example is None:
        return
    try:
        loaded.predict(example)
    except Exception as exc:  # the package is served anyway; requests will say what is wrong
        log.warning("keel: %s fails on its own input example: %s", label, exc)


def _same(a: RoutingTable, b: RoutingTable) -> bool:
    key_a = [(role, route, h.model_name, h.version) for role, route, h in a.routes]
    key_b = [(role, route, h.model_name, h.version) for role, route, h in b.routes]
    shadow_a = None if a.shadow is None else (a.shadow.model_name, a.shadow.version)
    shadow_b = None if b.shadow is None else (b.shadow.model_name, b.shadow.version)
    return (
        a.revision == b.revision
        and key_a == key_b
        and shadow_a == shadow_b
        and a.batching == b.batching
        and a.features is b.features
    )


def describe(table: RoutingTable) -> str:
    parts = [
        f"{h.model_name}/{h.version} ({route.weight}%, {h.runtime})" for _, route, h in table.routes
    ]
    if table.shadow is not None:
        parts.append(
            f"shadow {table.shadow.model_name}/{table.shadow.version} ({table.shadow.runtime})"
        )
    return ", ".join(parts)


def served_by(table: RoutingTable) -> list[str]:
    """One line per version the table serves (routes, then the shadow): its runtime and why."""
    handles = [h for _, _, h in table.routes]
    if table.shadow is not None:
        handles.append(table.shadow)
    seen: set[tuple[str, int]] = set()
    lines = []
    for handle in handles:
        if (handle.model_name, handle.version) not in seen:
            seen.add((handle.model_name, handle.version))
            lines.append(handle.served_by())
    return lines
