"""The feature store: definitions in Python, point-in-time training sets, online reads.

Define entities and feature views in a file and apply it::

    driver = Entity("driver", join_keys=["driver_id"])
    stats = FeatureView("driver_stats", entities=[driver], source=FileSource("data/stats"),
                        timestamp_field="event_ts", features=[Field("conv_rate")],
                        ttl=timedelta(days=1))

    $ keel features apply defs.py

Then build a training set, materialize, and read online::

    train = keel.features.get_historical_features(entity_df, ["driver_stats:conv_rate"])
    keel.features.materialize()
    keel.features.get_online_features([{"driver_id": 7}], ["driver_stats:conv_rate"]).to_dict()

Each module-level function acts on ``keel.Client()``; ``client.features`` is the same
on any client (:class:`Features`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.features.definitions import (
    DatasetSource,
    Entity,
    FeatureView,
    Field,
    FileSource,
    OnDemandFeatureView,
    RequestSource,
    SqlSource,
    on_demand_feature_view,
)
from keel.lazy import lazy_exports

if TYPE_CHECKING:
    from pathlib import Path

    from keel.features.entities import ApplyResult
    from keel.features.loading import Definitions
    from keel.features.materialize import MaterializeResult
    from keel.features.part import Features
    from keel.features.serving_read import OnlineFeatures

__all__ = [
    "DatasetSource",
    "Entity",
    "FeatureView",
    "Features",
    "Field",
    "FileSource",
    "OnDemandFeatureView",
    "RequestSource",
    "SqlSource",
    "apply",
    "get_historical_features",
    "get_online_features",
    "materialize",
    "on_demand_feature_view",
]


def _features() -> Features:
    from keel.client import Client

    return Client().features


def apply(definitions: str | Path | Definitions) -> ApplyResult:
    """Check, version and audit the definitions of a file (see :meth:`Features.apply`)."""
    return _features().apply(definitions)


def get_historical_features(entity_df: Any, features: list[str], **options: Any) -> Any:
    """A point-in-time correct training set (see :func:`keel.features.offline.get_historical_features`)."""
    return _features().get_historical_features(entity_df, features, **options)


def materialize(views: list[str] | None = None, **options: Any) -> list[MaterializeResult]:
    """Write new feature rows to the online store (see :func:`keel.features.materialize.materialize`)."""
    return _features().materialize(views, **options)


def get_online_features(entity_rows: Any, features: list[str], **options: Any) -> OnlineFeatures:
    """The online store's current values (see :func:`keel.features.serving_read.get_online_features`)."""
    return _features().get_online_features(entity_rows, features, **options)


__getattr__, __dir__ = lazy_exports(__name__, {"Features": "keel.features.part"})
