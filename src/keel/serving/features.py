"""Serving with features: a request carries entity keys, the server reads the features.

A deployment that declares features (``keel deploy create NAME --model m@alias
--features driver_stats:conv_rate,fares:fare_per_km``) answers requests that
send only the entities' join keys and the request data its on-demand views
take. For each request the server

1. checks every join key and request field is there (400 naming the first one
   missing; the server keeps serving);
2. reads the views' current values from the online store (the ``online_store``
   setting) and runs the on-demand views over them, through one
   :class:`~keel.features.serving_read.OnlineReader` per routing table: the
   specs are resolved when the table is built, never per request;
3. assembles the model's input: the request's columns, then one column per
   feature named by its bare feature name (as training sets name them), and
   hands it to the usual signature handling.

A value missing online (an entity never materialized, or one whose value outlived
the view's TTL) is null: the model gets NaN (or None in a column of text) and the
request is answered. A model whose signature refuses missing values answers 422
naming the column, as for any other request; log the model with training data that
has gaps (or a model that handles NaN) to serve through them. Each missing value
is counted on ``/metrics`` in ``keel_missing_features_total{view=...}``.

The online read runs on the event loop, on purpose: it is a fraction of a
millisecond (one entity, two features: about 20 µs on SQLite, 80 µs on a Redis on
loopback), and handing it to a thread costs more than the read itself (100 µs and
400 µs, the GIL changing hands). A Redis across a network holds the loop for its
round trip, and a stuck one for its socket timeout (5 s) before the request fails
with 503. On-demand views run their Python function per request, on the loop too.

What the prediction log records for such a request is the assembled frame: the
join keys, the declared request fields, the request columns the model's signature
names and every feature's value as served, so monitoring can compare the served
values with the offline store's (:mod:`keel.monitoring.skew`). Request columns that
are none of these are dropped and counted as ignored inputs, as without features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput

if TYPE_CHECKING:
    from keel.client import Client
    from keel.features.entities import FeatureDefinition
    from keel.serving.protocols import V2Request

__all__ = [
    "Assembled",
    "Columns",
    "FeatureLayout",
    "MissingFeatures",
    "ServedFeatures",
    "check_features",
    "feature_layout",
    "parse_features",
    "v2_columns",
]

_VIEW = "feature_view"
_ON_DEMAND = "on_demand_feature_view"


# -- a deployment's declared features ----------------------------------------------------------


def check_features(refs: Any) -> tuple[str, ...]:
    """``"view:feature"`` references as a deployment stores them, in order.

    Each becomes a column of the model's input named by the bare feature name (as
    ``get_historical_features`` names training columns), so two views may not both
    give one name.

    Raises:
        InvalidInput: a reference that is not ``view:feature``, one named twice, or
            two features of one column name.
    """
    from keel.features.definitions import parse_feature_refs

    if isinstance(refs, str) or not isinstance(refs, list | tuple):
        raise InvalidInput(
            f"a deployment's features are a list of view:feature references, got {refs!r}"
        )
    parsed = parse_feature_refs(refs)
    seen: dict[str, str] = {}
    for ref in parsed:
        other = seen.setdefault(ref.feature, str(ref))
        if other != str(ref):
            raise InvalidInput(
                f"features {other} and {ref} would both be the model's input column "
                f"{ref.feature!r}; serve one of them (or rename a feature in the definitions)"
            )
    return tuple(str(r) for r in parsed)


def parse_features(values: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``--features a:x,b:y`` (comma-separated, repeatable) → references; None if absent."""
    if values is None:
        return None
    texts = [values] if isinstance(values, str) else list(values)
    refs = [part.strip() for text in texts for part in text.split(",") if part.strip()]
    if not refs:
        raise InvalidInput(
            "--features needs view:feature references, e.g. "
            "--features driver_stats:conv_rate,driver_stats:acc_rate"
        )
    return check_features(refs)


@dataclass(frozen=True)
class FeatureLayout:
    """What a deployment's features need from a request, and what they add to it.

    Attributes:
        features: the ``"view:feature"`` references, in declared order.
        columns: the input column each gives (its bare feature name), in that order.
        dtypes: each column's declared type (``float64``, ``int64``, ``string`` …).
        join_keys: every join key the views need (of the on-demand views' sources too),
            in first-use order.
        key_types: each join key's entity dtype (``int64``, ``string`` …).
        request_fields: the request data the on-demand views take, in first-use order.
        stored_views: the feature views read from the online store (not on-demand).
        versions: ``(kind, name) → version`` of every definition resolved.
    """

    features: tuple[str, ...]
    columns: tuple[str, ...]
    dtypes: Mapping[str, str]
    join_keys: tuple[str, ...]
    key_types: Mapping[str, str]
    request_fields: tuple[str, ...]
    stored_views: tuple[str, ...]
    versions: Mapping[tuple[str, str], int]

    @property
    def declared(self) -> frozenset[str]:
        """The request columns the features need: join keys and request fields."""
        return frozenset(self.join_keys) | frozenset(self.request_fields)

    def current(self, latest: Mapping[tuple[str, str], int]) -> bool:
        """Whether every definition resolved is still the latest version in ``latest``."""
        return all(latest.get(key) == version for key, version in self.versions.items())


def feature_layout(client: Client, features: Sequence[str]) -> FeatureLayout:
    """Resolve a deployment's features against the latest applied definitions.

    Raises:
        NotFound: an unknown view (or entity).
        InvalidInput: a view without the named feature.
    """
    from keel.features.definitions import parse_feature_refs

    refs = parse_feature_refs(features)
    part = client.features
    views = part.views_for(refs)
    resolved: dict[str, FeatureDefinition] = dict(views)
    for definition in views.values():  # an on-demand view's sources need their keys sent
        if definition.kind == _ON_DEMAND:
            for name in definition.spec.get("views", []):
                if name not in resolved:
                    resolved[name] = part.get(name)
    keys: dict[str, None] = {}
    fields: dict[str, None] = {}
    entities: dict[str, str] = {}
    for definition in resolved.values():
        spec = definition.spec
        if definition.kind == _ON_DEMAND:
            for source in spec.get("request", []):
                fields.update((f["name"], None) for f in source["schema"])
            continue
        keys.update((k, None) for k in spec["join_keys"])
        entities.update(dict.fromkeys(spec["entities"], definition.name))
    versions = {(d.kind, d.name): d.version for d in resolved.values()}
    key_types: dict[str, str] = {}
    for entity in entities:
        found = part.get(entity, kind="entity")
        versions[("entity", entity)] = found.version
        for key in found.spec["join_keys"]:
            key_types[key] = found.spec.get("dtype", "string")
    stored = tuple(dict.fromkeys(r.view for r in refs if views[r.view].kind == _VIEW))
    dtypes = {}
    for ref in refs:
        spec = views[ref.view].spec
        fields_of = spec["features"] if views[ref.view].kind == _VIEW else spec["schema"]
        dtypes[ref.feature] = next(f["dtype"] for f in fields_of if f["name"] == ref.feature)
    return FeatureLayout(
        features=tuple(str(r) for r in refs),
        columns=tuple(r.feature for r in refs),
        dtypes=dtypes,
        join_keys=tuple(keys),
        key_types=key_types,
        request_fields=tuple(f for f in fields if f not in keys),
        stored_views=stored,
        versions=versions,
    )


# -- requests ------------------------------------------------------------------------------------

#: A request's columns by name, each one value per row.
Columns = dict[str, Any]


def v2_columns(request: V2Request) -> Columns:
    """A v2 request's inputs as columns (each ``[N]`` or ``[N, 1]``), for a deployment with
    features: its inputs are keys and request data, not the model's signature."""
    if request.matrix is not None:
        return {name: request.matrix[:, j] for j, name in enumerate(request.names)}
    columns: Columns = {}
    for name, array in request.inputs.items():
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise InvalidInput(
                f"input {name!r} has shape {list(array.shape)}; a deployment with features "
                "takes one input per join key or request field, each [N] or [N, 1]"
            )
        columns[name] = array
    if len({len(a) for a in columns.values()}) > 1:
        raise InvalidInput(
            "inputs must have the same length, got lengths "
            f"{sorted({len(a) for a in columns.values()})}"
        )
    return columns


def _as_columns(data: Any, layout: FeatureLayout) -> Columns:
    """A parsed request's columns as arrays (a DataFrame's, or a dict's)."""
    import numpy as np

    if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # a DataFrame
        return {str(c): column.to_numpy() for c, column in data.items()}
    if isinstance(data, Mapping):
        columns = {str(k): np.asarray(v) for k, v in data.items()}
        if (
            any(v.ndim != 1 for v in columns.values())
            or len({len(v) for v in columns.values()}) > 1
        ):
            raise InvalidInput("a request's columns must each hold one value per row, all as many")
        return columns
    raise InvalidInput(
        "this deployment reads its features from the feature store, so a request names its "
        f"columns: send the join keys ({', '.join(layout.join_keys)}) as named columns "
        "(v2 inputs by name, dataframe_split, dataframe_records, or instances as objects)"
    )


def _cast_key(values: Any, key: str, dtype: str) -> Any:
    """A key column as its entity's type: JSON numbers may arrive as floats (a v2 FP64
    matrix), and an online read must look up ``7``, not ``7.0``."""
    import numpy as np

    if dtype == "int64" and values.dtype.kind != "i":
        whole = values.dtype.kind == "u"
        if values.dtype.kind == "f":
            whole = bool(np.isfinite(values).all() and (np.mod(values, 1) == 0).all())
        if not whole:
            raise InvalidInput(
                f"join key {key!r} holds whole numbers (its entity's type is int64); got "
                f"{values.dtype.name} values"
            )
        return values.astype(np.int64)
    if dtype == "string" and values.dtype.kind != "O":
        return values.astype(str).astype(object)
    return values


@dataclass(frozen=True)
class Assembled:
    """A request completed with its features.

    Attributes:
        columns: what the prediction log records: the kept request columns (join keys,
            request fields, columns the signature names), then one column per feature.
        ignored: request columns dropped (neither declared nor named by the signature).
    """

    columns: Columns
    ignored: int

    def model_input(self, signature: Any) -> Any:
        """What a model of ``signature`` takes: one 2-D array in signature order when its
        columns are numeric and all here (its cheapest form), else a DataFrame."""
        import numpy as np
        import pandas as pd

        from keel.models.signature import matrix_fits

        if signature is None or signature.inputs.is_tensor:
            return pd.DataFrame(self.columns)
        names = signature.inputs.names
        picked = [self.columns[n] for n in names if n in self.columns]
        numeric = signature.inputs.is_numeric and all(a.dtype.kind in "iuf" for a in picked)
        if numeric and len(picked) == len(names):
            matrix = np.column_stack(picked)
            if matrix_fits(signature.inputs, matrix.dtype):
                return matrix
        return pd.DataFrame({n: self.columns[n] for n in names if n in self.columns})


class MissingFeatures:
    """``keel_missing_features_total{deployment, view}`` in an app's Prometheus registry."""

    def __init__(self, registry: Any, deployment: str) -> None:
        from prometheus_client import Counter

        self.deployment = deployment
        self.counter = Counter(
            "keel_missing_features",
            "Feature values a request needed that the online store did not have (never "
            "materialized, or expired by the view's TTL): served as null, by feature view.",
            ["deployment", "view"],
            registry=registry,
        )
        self._children: dict[str, Any] = {}

    def add(self, view: str, count: int) -> None:
        child = self._children.get(view)
        if child is None:
            child = self._children[view] = self.counter.labels(self.deployment, view)
        child.inc(count)


class ServedFeatures:
    """The features one routing table serves: resolved once, one online reader.

    A newer table with the same features shares it; one replaced is left to the
    garbage collector (requests in flight may still read through it), and the
    runtime closes the last one when it stops.

    Args:
        client: the client whose registry holds the definitions.
        layout: the resolved features (:func:`feature_layout`).
        store: the online store URL (default: the client's ``online_store`` setting).
    """

    def __init__(self, client: Client, layout: FeatureLayout, store: str | None = None) -> None:
        from keel.features.serving_read import OnlineReader

        self.layout = layout
        self.store = store or client.settings.online_store
        self.reader = OnlineReader(client, list(layout.features), store=self.store)
        self._kept: dict[tuple[tuple[str, ...], tuple[str, ...] | None], list[str]] = {}

    @property
    def features(self) -> tuple[str, ...]:
        return self.layout.features

    def close(self) -> None:
        """Close the online store the reader opened."""
        self.reader.close()

    def _kept_columns(self, given: tuple[str, ...], signature: Any) -> list[str]:
        names: tuple[str, ...] | None = None
        if signature is not None and not signature.inputs.is_tensor:
            names = signature.inputs.names
        key = (given, names)
        kept = self._kept.get(key)
        if kept is None:  # memoized: a deployment's requests come with the same columns
            if len(self._kept) > 256:
                self._kept.clear()
            wanted = self.layout.declared | frozenset(names or ())
            served = frozenset(self.layout.columns)  # the store's value wins over a sent one
            kept = self._kept[key] = [c for c in given if c in wanted and c not in served]
        return kept

    def check(self, names: Sequence[str]) -> None:
        """InvalidInput naming the first join key or request field the request lacks."""
        present = set(names)
        for key in self.layout.join_keys:
            if key not in present:
                raise InvalidInput(
                    f"the request lacks join key {key!r}: this deployment reads its features "
                    f"({', '.join(self.layout.features)}) by {', '.join(self.layout.join_keys)}; "
                    "send it as a column of every request"
                )
        for field in self.layout.request_fields:
            if field not in present:
                raise InvalidInput(
                    f"the request lacks request field {field!r}, which an on-demand feature "
                    "of this deployment computes with; send it as a column"
                )

    def assemble(
        self, data: Any, signature: Any, missing: MissingFeatures | None = None
    ) -> Assembled:
        """``data`` (a parsed request) completed with its features' online values.

        The read runs on the caller's thread: on the event loop it blocks for the store's
        read, a fraction of a millisecond (see the module docstring).

        Args:
            data: the request's rows (a DataFrame or a dict of columns).
            signature: the answering version's signature: request columns it names are kept.
            missing: counts the values the store lacked, by view.

        Raises:
            InvalidInput: a request without named columns, or lacking a join key or
                request field (400).
        """
        given = _as_columns(data, self.layout)
        self.check(list(given))
        layout = self.layout
        for key in layout.join_keys:
            given[key] = _cast_key(given[key], key, layout.key_types.get(key, ""))
        wanted = [*layout.join_keys, *layout.request_fields]
        online = self.reader.read({n: given[n].tolist() for n in wanted})
        if missing is not None:
            for view in layout.stored_views:
                count = online.event_ms[view].count(None)
                if count:
                    missing.add(view, count)
        found = online.to_dict()
        kept = self._kept_columns(tuple(given), signature)
        columns: Columns = {c: given[c] for c in kept}
        for name in layout.columns:
            columns[name] = _column(found[name], layout.dtypes[name])
        return Assembled(columns, len(given) - len(kept))


def _column(values: list[Any], dtype: str) -> Any:
    """A feature's values (None where missing) as one array: numbers as float64 with NaN
    for the gaps (an int64 feature without gaps stays int64), anything else as objects."""
    import numpy as np

    if dtype in ("float64", "int64"):
        if dtype == "int64":
            try:
                return np.array(values, dtype=np.int64)
            except (TypeError, ValueError):  # a gap: None has no integer
                pass
        return np.array(values, dtype=np.float64)  # None becomes NaN
    return np.array(values, dtype=object)
