"""Online reads: the current feature values of entity rows, on-demand features included.

:class:`OnlineReader` resolves the feature references once (the registry is asked when
it is made, never per request), groups the features by view and opens the online store;
each :meth:`OnlineReader.read` then costs one store read per view (one ``MGET`` on
Redis, one ``SELECT`` on SQLite) plus assembling the columns, and the on-demand
functions for on-demand features. Servers hold one reader per deployment.

:func:`get_online_features` is the convenience form: it keeps a reader per settings,
feature list and store for :data:`READER_REFRESH_S` seconds, so repeated calls cost what
a reader's read costs while a newly applied view version is seen within seconds.

The result's columns are the join keys (as given in the rows) and then one column per
requested feature, in the order asked for: ``feature``, or ``view__feature`` with
``full_feature_names``. A value is ``None`` where the store has no row for the entity or
its row is past the view's TTL.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput
from keel.features.definitions import parse_feature_refs

if TYPE_CHECKING:
    import pandas as pd

    from keel.client import Client
    from keel.config import Settings
    from keel.features.entities import FeatureDefinition
    from keel.features.online import OnlineStore

__all__ = ["READER_REFRESH_S", "OnlineFeatures", "OnlineReader", "get_online_features"]

#: Seconds :func:`get_online_features` reuses a reader before resolving the views again.
READER_REFRESH_S = 10.0

_VIEW, _ON_DEMAND = "feature_view", "on_demand_feature_view"


class OnlineFeatures:
    """The values an online read returned.

    Attributes:
        columns: ``{column: [value per row]}``: join keys, then features as asked.
        event_ms: ``{view: [event ms per row, None where missing or expired]}``.
        feature_columns: the feature columns' names, in the order asked for.
    """

    __slots__ = ("columns", "event_ms", "feature_columns")

    def __init__(
        self,
        columns: dict[str, list[Any]],
        event_ms: dict[str, list[int | None]],
        feature_columns: list[str],
    ) -> None:
        self.columns = columns
        self.event_ms = event_ms
        self.feature_columns = feature_columns

    def to_dict(self) -> dict[str, list[Any]]:
        """``{column: [values]}``, join keys first."""
        return dict(self.columns)

    def to_df(self) -> pd.DataFrame:
        """The columns as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def __repr__(self) -> str:
        return f"OnlineFeatures({len(self)} rows, columns={list(self.columns)})"


@dataclass
class _ViewRead:
    """One feature view to read: its keys, TTL, and the features to read (with types)."""

    name: str
    join_keys: list[str]
    ttl_seconds: int | None
    dtypes: dict[str, str]
    features: list[str] = field(default_factory=list)

    def need(self, features: Sequence[str]) -> None:
        self.features += [f for f in features if f not in self.features]


@dataclass
class _OnDemandRead:
    """One on-demand view to run: its spec, its source views and request fields."""

    spec: dict[str, Any]
    views: list[str]
    request: list[str]


def _columns(entity_rows: Any) -> tuple[int, Mapping[str, Sequence[Any]] | None, list[Any]]:
    """``(rows, columns of a DataFrame or None, the list of row dicts or [])``."""
    if isinstance(entity_rows, list):
        return len(entity_rows), None, entity_rows
    import pandas as pd

    if isinstance(entity_rows, pd.DataFrame):
        frame = entity_rows
        return len(frame), {str(c): frame[c].tolist() for c in frame.columns}, []
    if isinstance(entity_rows, tuple):
        return len(entity_rows), None, list(entity_rows)
    if isinstance(entity_rows, Mapping):  # columns: {join key: [values], …}
        columns = {str(k): list(v) for k, v in entity_rows.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise InvalidInput(
                f"entity columns must be of one length, got lengths {sorted(lengths)}"
            )
        return (lengths.pop() if lengths else 0), columns, []
    raise InvalidInput(
        "entity_rows must be a list of dicts ({join key: value, …}), a dict of columns "
        "or a pandas DataFrame, "
        f"got {type(entity_rows).__name__}"
    )


class OnlineReader:
    """Online reads of a fixed list of features, resolved once.

    The views are resolved when the reader is made, so an unknown view or feature fails
    here (at a server's start) rather than on each request.

    Args:
        client: the client whose registry resolves the features.
        features: ``["view:feature", …]``; on-demand views' features too.
        store: the online store: a URL, an opened :class:`OnlineStore` (shared, not
            closed by the reader), or ``None`` for the ``online_store`` setting.
        full_feature_names: name columns ``view__feature`` instead of ``feature``.

    Raises:
        NotFound: an unknown view.
        InvalidInput: a malformed reference, a feature the view lacks, or two features
            that would share a column name.
    """

    def __init__(
        self,
        client: Client,
        features: Sequence[str],
        store: str | OnlineStore | None = None,
        *,
        full_feature_names: bool = False,
    ) -> None:
        from keel.features.online import OnlineStore

        self.features = list(features)
        self.full_feature_names = full_feature_names
        refs = parse_feature_refs(self.features)
        found = client.features.views_for(refs)
        views: dict[str, _ViewRead] = {}

        def view(definition: FeatureDefinition) -> _ViewRead:
            read = views.get(definition.name)
            if read is None:
                spec = definition.spec
                read = _ViewRead(
                    definition.name,
                    list(spec["join_keys"]),
                    spec.get("ttl_seconds"),
                    {f["name"]: f["dtype"] for f in spec["features"]},
                )
                views[definition.name] = read
            return read

        on_demand: dict[str, _OnDemandRead] = {}
        # (column, view, feature, kind) per requested feature, in order
        outputs: list[tuple[str, str, str, str]] = []
        for ref in refs:
            definition = found[ref.view]
            column = f"{ref.view}__{ref.feature}" if full_feature_names else ref.feature
            outputs.append((column, ref.view, ref.feature, definition.kind))
            if definition.kind == _VIEW:
                view(definition).need([ref.feature])
                continue
            if definition.name in on_demand:
                continue
            spec = definition.spec
            for source in spec["views"]:
                src = found.get(source)
                if src is None or src.kind != _VIEW:
                    src = client.features.get(source)
                # the function sees every feature of its source views, as offline
                view(src).need(src.feature_names)
            request = [f["name"] for r in spec.get("request") or [] for f in r["schema"]]
            on_demand[definition.name] = _OnDemandRead(spec, list(spec["views"]), request)
        names = [column for column, *_ in outputs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            clashing = [f"{v}:{f}" for c, v, f, _ in outputs if c in twice]
            raise InvalidInput(
                f"the features {clashing} would share the column name(s) {twice}; pass "
                "full_feature_names=True to name them view__feature"
            )
        self._views = list(views.values())
        self._on_demand = list(on_demand.values())
        self._outputs = outputs
        self._feature_columns = names
        self._keys = list(dict.fromkeys(k for v in self._views for k in v.join_keys))
        taken = sorted(set(names) & set(self._keys))
        if taken:
            raise InvalidInput(
                f"the feature column(s) {taken} would replace the join key column(s) of that "
                "name; pass full_feature_names=True to name them view__feature"
            )
        self._owns_store = not isinstance(store, OnlineStore)
        self.store: OnlineStore = (
            store if isinstance(store, OnlineStore) else client.features.online_store(store)
        )

    def close(self) -> None:
        """Close the online store, if the reader opened it."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> OnlineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(
        self, entity_rows: list[dict[str, Any]] | Mapping[str, Sequence[Any]] | pd.DataFrame
    ) -> OnlineFeatures:
        """The current values for ``entity_rows``, one output row per entity row.

        Args:
            entity_rows: dicts of join key values (and request fields for on-demand
                views), a dict of such columns (what a server holds), or a DataFrame.

        Raises:
            InvalidInput: a row lacks a join key or a request field an on-demand view needs,
                a key is not an integer or a string, or an on-demand function fails.
        """
        count, frame_columns, rows = _columns(entity_rows)
        now_ms = time.time_ns() // 1_000_000
        keys: dict[str, list[Any]] = {k: self._column(frame_columns, rows, k) for k in self._keys}
        found: dict[str, list[Any]] = {}
        event_ms: dict[str, list[int | None]] = {}
        for view in self._views:
            if len(view.join_keys) == 1:
                entity = [(value,) for value in keys[view.join_keys[0]]]
            else:
                entity = list(zip(*(keys[k] for k in view.join_keys), strict=True))
            try:
                got = self.store.read(view.name, entity, view.features, view.ttl_seconds, now_ms)
            except InvalidInput as exc:
                raise InvalidInput(f"feature view {view.name!r}: {exc}") from None
            found[view.name] = got
            event_ms[view.name] = [None if r is None else r[0] for r in got]
        columns: dict[str, list[Any]] = dict(keys)
        computed = self._run_on_demand(found, frame_columns, rows, count) if self._on_demand else {}
        for column, view_name, feature, kind in self._outputs:
            if kind == _VIEW:
                columns[column] = [None if r is None else r[1][feature] for r in found[view_name]]
            else:
                columns[column] = computed[(view_name, feature)]
        return OnlineFeatures(columns, event_ms, self._feature_columns)

    def _column(
        self, frame_columns: Mapping[str, Sequence[Any]] | None, rows: list[Any], name: str
    ) -> list[Any]:
        """One join key's values across the rows; a row lacking it is an error naming the view."""
        values = _values(frame_columns, rows, name)
        if values is None:
            owner = next(v.name for v in self._views if name in v.join_keys)
            raise InvalidInput(
                f"feature view {owner!r} needs join key {name!r}; the rows have "
                f"{sorted(_lacking(frame_columns, rows, name))}"
            )
        return values

    def _run_on_demand(
        self,
        found: dict[str, list[Any]],
        frame_columns: Mapping[str, Sequence[Any]] | None,
        rows: list[Any],
        count: int,
    ) -> dict[tuple[str, str], list[Any]]:
        """Each on-demand view's outputs, from its source views' values and the request fields."""
        import pandas as pd

        from keel.features.on_demand import request_fields, run_on_demand
        from keel.features.sources import pandas_column

        by_view = {v.name: v for v in self._views}
        out: dict[tuple[str, str], list[Any]] = {}
        for od in self._on_demand:
            data: dict[str, Any] = {}
            for name in od.views:
                source = by_view[name]
                got = found[name]
                for feature in source.features:
                    column = [None if r is None else r[1][feature] for r in got]
                    data[feature] = pandas_column(column, source.dtypes[feature])
            for name, (dtype, _source) in request_fields(od.spec).items():
                values = _values(frame_columns, rows, name)
                if values is None:
                    raise InvalidInput(
                        f"on-demand feature view {od.spec['name']!r} needs request field "
                        f"{name!r}; the rows have {sorted(_lacking(frame_columns, rows, name))}"
                    )
                data[name] = _request_column(values, dtype)
            frame = pd.DataFrame(data, index=range(count))
            result = run_on_demand(od.spec, frame)
            for column in result.columns:
                values = result[column]
                out[(od.spec["name"], str(column))] = (
                    values.astype(object).where(values.notna(), None).tolist()
                )
        return out


def _request_column(values: Sequence[Any], dtype: str) -> Any:
    """Request values typed as declared when they already are numbers, else as sent.

    :func:`~keel.features.on_demand.run_on_demand` casts (and refuses) whatever is
    not of its type; numbers typed here spare a request that cast's copy.
    """
    from keel.features.sources import pandas_column

    if dtype == "float64" and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        return pandas_column(list(values), dtype)
    return list(values)


def _values(
    frame_columns: Mapping[str, Sequence[Any]] | None, rows: list[Any], name: str
) -> list[Any] | None:
    """The values of column ``name`` across the rows, or ``None`` when a row lacks it."""
    if frame_columns is not None:
        return list(frame_columns[name]) if name in frame_columns else None
    try:
        return [row[name] for row in rows]
    except KeyError:
        return None
    except TypeError:
        odd = next(r for r in rows if not isinstance(r, Mapping))
        raise InvalidInput(
            f"entity_rows must be dicts of join key values, got a {type(odd).__name__}"
        ) from None


def _lacking(
    frame_columns: Mapping[str, Sequence[Any]] | None, rows: list[Any], name: str
) -> list[str]:
    """The columns of the first row without ``name`` (the DataFrame's, for a DataFrame)."""
    if frame_columns is not None:
        return list(frame_columns)
    return [str(k) for k in next(row for row in rows if name not in row)]


# -- the convenience function ------------------------------------------------------------------

#: Readers :func:`get_online_features` keeps (the least recently made go first).
READER_CACHE_SIZE = 256

_CacheKey = tuple["Settings", tuple[str, ...], str | None, bool]
_READERS: OrderedDict[_CacheKey, tuple[OnlineReader, float]] = OrderedDict()
_LOCK = threading.Lock()


def _reader(
    client: Client, features: Sequence[str], store: str | None, full_feature_names: bool
) -> OnlineReader:
    """A reader for these arguments, reused for :data:`READER_REFRESH_S` seconds.

    Readers are kept by the client's settings, not the client: ``keel.features.
    get_online_features`` makes a new client per call, and two clients with equal
    settings read the same registry and store.
    """
    key: _CacheKey = (client.settings, tuple(features), store, full_feature_names)
    now = time.monotonic()
    cached = _READERS.get(key)
    if cached is not None and now - cached[1] < READER_REFRESH_S:
        return cached[0]
    # a refreshed reader shares the previous one's store (its connections stay warm)
    shared = None if cached is None else cached[0].store
    reader = OnlineReader(
        client,
        features,
        shared if shared is not None else store,
        full_feature_names=full_feature_names,
    )
    with _LOCK:
        _READERS[key] = (reader, now)
        _READERS.move_to_end(key)
        while len(_READERS) > READER_CACHE_SIZE:
            _READERS.popitem(last=False)
    return reader


def get_online_features(
    client: Client,
    entity_rows: list[dict[str, Any]] | Mapping[str, Sequence[Any]] | pd.DataFrame,
    features: Sequence[str],
    *,
    store: str | None = None,
    full_feature_names: bool = False,
) -> OnlineFeatures:
    """The online store's current values of ``features`` for ``entity_rows``.

    Args:
        client: the client whose registry resolves the features.
        entity_rows: dicts of join key values (and request fields), a dict of such
            columns, or a DataFrame.
        features: ``["view:feature", …]``, on-demand views' features included.
        store: the online store URL (default: the ``online_store`` setting).
        full_feature_names: name columns ``view__feature``.

    Returns:
        The values, join keys first, then the features in the order asked for.

    Raises:
        NotFound: an unknown view.
        InvalidInput: an unknown feature, a missing join key or request field.
    """
    if isinstance(features, str):
        features = [features]
    return _reader(client, features, store, full_feature_names).read(entity_rows)
