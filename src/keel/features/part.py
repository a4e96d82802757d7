"""The feature store part of :class:`keel.Client`: ``client.features``.

Definitions and watermarks are rows of the metadata store
(:mod:`keel.features.registry`), so through ``keel server`` they are REST calls
(:class:`keel.features.remote.RemoteFeatures` overrides those methods). Training
sets, materialization and online reads run in this process on either transport:
they read the specs through the methods above and the data from the sources and
the online store directly.
"""

from __future__ import annotations

import builtins
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, NotFound
from keel.features.definitions import (
    Entity,
    FeatureRef,
    FeatureView,
    OnDemandFeatureView,
)
from keel.features.entities import ApplyResult, FeatureDefinition, Watermark
from keel.features.loading import Definitions, load_definitions
from keel.features.registry import FeatureRegistry
from keel.uris import parse_feature_uri

if TYPE_CHECKING:
    from datetime import datetime

    from keel.client import Client
    from keel.features.materialize import MaterializeResult
    from keel.features.online import OnlineStore
    from keel.features.serving_read import OnlineFeatures

__all__ = ["Features", "features_part"]


class Features:
    """Feature definitions, training sets, materialization and online reads.

    Args:
        client: the client whose transport holds the definitions and watermarks.

    Example:
        >>> client = keel.Client()
        >>> client.features.apply("defs.py").to_dict()["counts"]
        {'created': 3, 'updated': 0, 'unchanged': 0}
        >>> client.features.get("driver_stats").version
        1
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport = client.transport

    @cached_property
    def _registry(self) -> FeatureRegistry:
        return FeatureRegistry(self.transport)

    # -- definitions --------------------------------------------------------------------------

    def apply(self, definitions: str | Path | Definitions) -> ApplyResult:
        """Check a definitions file (or loaded :class:`Definitions`), then version and audit it.

        Each definition whose spec differs from its latest version becomes a new version
        (the first one: created); the others are left alone (unchanged) and write nothing.

        Raises:
            NotFound: no such file.
            InvalidInput: the file fails to import, defines nothing, or a definition is wrong
                (file:line first).
            Conflict: concurrent applies kept winning the race for version numbers.
        """
        started = time.perf_counter()
        loaded = (
            definitions if isinstance(definitions, Definitions) else load_definitions(definitions)
        )
        if not (loaded.entities or loaded.views or loaded.on_demand):
            raise InvalidInput(
                f"{loaded.file} defines no Entity, FeatureView or on-demand view at module "
                "level; assign each one to a module-level name"
            )
        placed: builtins.list[FeatureView | OnDemandFeatureView] = [
            *loaded.views,
            *loaded.on_demand,
        ]
        sites = {d.name: f"{d.site[0]}:{d.site[1]}" for d in placed if d.site is not None}
        result = self.apply_specs(self._specs(loaded), loaded.file, sites)
        return ApplyResult(
            result.created, result.updated, result.unchanged, time.perf_counter() - started
        )

    def _specs(self, definitions: Definitions) -> builtins.list[dict[str, Any]]:
        """The specs to store; a view over an entity applied earlier takes its stored keys."""
        own = {e.name for e in definitions.entities}
        elsewhere = {n for v in definitions.views for n in v.entity_names} - own
        if not elsewhere:
            return definitions.specs()
        stored: builtins.list[Entity] = []
        for view in definitions.views:
            for name in sorted(set(view.entity_names) & elsewhere):
                try:
                    spec = self.get(name, kind="entity").spec
                except NotFound as exc:
                    where = "" if view.site is None else f"{view.site[0]}:{view.site[1]}: "
                    raise InvalidInput(
                        f"{where}feature view {view.name!r} names unknown entity {name!r} "
                        f"({exc}); define it in the file or apply a file that does"
                    ) from None
                stored.append(
                    Entity(
                        name,
                        tuple(spec["join_keys"]),
                        spec["dtype"],
                        spec["description"],
                        site=None,
                    )
                )
                elsewhere.discard(name)
        whole = Definitions(
            definitions.file,
            definitions.entities + tuple(stored),
            definitions.views,
            definitions.on_demand,
        )
        return [s for s in whole.specs() if s["kind"] != "entity" or s["name"] in own]

    def apply_specs(
        self,
        specs: builtins.list[dict[str, Any]],
        file: str | None,
        sites: dict[str, str] | None = None,
    ) -> ApplyResult:
        """Version and audit specs made by :meth:`Definitions.specs` (what ``apply`` stores).

        Args:
            specs: the specs, entities first.
            file: the definitions file they come from.
            sites: ``file:line`` of each view and on-demand view by name, for messages.
        """
        return self._registry.apply(specs, file, sites)

    def get(
        self, name: str, version: int | None = None, *, kind: str = "feature_view"
    ) -> FeatureDefinition:
        """A definition's latest version, or its version ``version``.

        Raises:
            NotFound: no such definition (the message lists the closest names) or version.
        """
        return self._registry.get(name, version, kind=kind)

    def list(self, kind: str | None = None) -> builtins.list[FeatureDefinition]:
        """The latest version of every definition, or of every one of ``kind``."""
        return self._registry.list(kind)

    def history(self, name: str, *, kind: str = "feature_view") -> builtins.list[FeatureDefinition]:
        """Every version of a definition, oldest first."""
        return self._registry.history(name, kind=kind)

    def resolve(self, uri: str) -> FeatureDefinition:
        """The view ``features:/view`` (latest) or ``features:/view@3`` names (on-demand too)."""
        parsed = parse_feature_uri(uri)
        return self._registry.resolve(parsed.view, parsed.version)

    def views_for(self, refs: builtins.list[FeatureRef]) -> dict[str, FeatureDefinition]:
        """The latest version of each view ``refs`` name, each checked to have its features.

        Raises:
            NotFound: ``unknown feature view 'x'``.
            InvalidInput: ``feature view 'v' has no feature 'f'; it has [...]``.
        """
        return self._registry.views_for(refs)

    # -- watermarks ---------------------------------------------------------------------------

    def watermark(self, view: str, store: str) -> Watermark | None:
        """How far ``view`` is materialized into the online store ``store`` (``None``: never)."""
        return self._registry.watermark(view, store)

    def record_inputs(self, run_id: str, definitions: builtins.list[FeatureDefinition]) -> None:
        """Record the definitions' versions as inputs of run ``run_id`` (lineage edges).

        Raises:
            NotFound: no such run, or a version that was never applied.
        """
        self._registry.record_inputs(run_id, definitions)

    def watermarks(self) -> builtins.list[Watermark]:
        """Every view's watermark in every online store."""
        return self._registry.watermarks()

    def set_watermark(
        self,
        view: str,
        store: str,
        *,
        view_version: int,
        last_event_ms: int | None,
        last_created_ms: int | None,
        rows: int,
    ) -> Watermark:
        """Record a materialization run: times never move back; rows and runs add up."""
        return self._registry.set_watermark(
            view,
            store,
            view_version=view_version,
            last_event_ms=last_event_ms,
            last_created_ms=last_created_ms,
            rows=rows,
        )

    # -- offline and online (the same on every transport) -------------------------------------

    def get_historical_features(
        self, entity_df: Any, features: builtins.list[str], **kw: Any
    ) -> Any:
        """A point-in-time correct training set (:func:`keel.features.offline.get_historical_features`)."""
        from keel.features.offline import get_historical_features

        return get_historical_features(self.client, entity_df, features, **kw)

    def materialize(
        self,
        views: builtins.list[str] | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        store: str | None = None,
        progress: Any = None,
    ) -> builtins.list[MaterializeResult]:
        """Write new feature rows to an online store (:func:`keel.features.materialize.materialize`)."""
        from keel.features.materialize import materialize

        return materialize(self.client, views, start=start, end=end, store=store, progress=progress)

    def get_online_features(
        self, entity_rows: Any, features: builtins.list[str], *, store: str | None = None, **kw: Any
    ) -> OnlineFeatures:
        """The online store's values (:func:`keel.features.serving_read.get_online_features`)."""
        from keel.features.serving_read import get_online_features

        return get_online_features(self.client, entity_rows, features, store=store, **kw)

    def online_store(self, url: str | None = None) -> OnlineStore:
        """The online store at ``url`` (default: the ``online_store`` setting), opened."""
        from keel.features.online import open_online_store

        return open_online_store(url or self.transport.settings.online_store)


def features_part(client: Client) -> Features:
    """The feature part of ``client``: SQL locally, REST calls through ``keel server``."""
    from keel.transport.http import HttpTransport

    if isinstance(client.transport, HttpTransport):
        from keel.features.remote import RemoteFeatures

        return RemoteFeatures(client)
    return Features(client)
