"""Feature definitions in Python: entities, sources, feature views and on-demand views.

A definitions file is the user's own code, as a pipeline file is: ``keel features
apply defs.py`` imports it and collects every :class:`Entity`, :class:`FeatureView`
and :class:`OnDemandFeatureView` it defines at module level
(:mod:`keel.features.loading`). Each object remembers
the file and line that made it, so a check names where to look
(``defs.py:14: feature view 'driver_stats' names unknown entity 'drivr'``).

What gets stored is each object's :meth:`spec`: plain JSON, digested, so an
unchanged definition is never a new version. The offline and online paths work
from stored specs (:func:`view_from_spec`), never from the file, except for an
on-demand view's function: its code is imported from the definitions file it was
applied from, and refused when its source no longer matches the digest applied
(:func:`keel.features.loading.load_function`). A changed function is then an error to re-apply, not a
silent difference between training and serving.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from keel.errors import InvalidInput
from keel.validation import check_name

__all__ = [
    "DTYPES",
    "DatasetSource",
    "Entity",
    "FeatureRef",
    "FeatureView",
    "Field",
    "FileSource",
    "OnDemandFeatureView",
    "RequestSource",
    "Source",
    "SqlSource",
    "on_demand_feature_view",
    "parse_feature_refs",
    "spec_digest",
    "view_from_spec",
    "where_prefix",
]

#: The types a feature, a join key or a request field may have.
DTYPES = ("int64", "float64", "string", "bool", "timestamp")

#: What each kind of definition is called in a spec and in messages.
ENTITY, VIEW, ON_DEMAND = "entity", "feature_view", "on_demand_feature_view"


def spec_digest(spec: Mapping[str, Any]) -> str:
    """The SHA-256 of a spec's canonical JSON: equal specs, equal digests."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _caller_site() -> tuple[str, int] | None:
    """The file and line of the user's code that constructed a definition."""
    here = __file__
    frame = inspect.currentframe()
    try:
        while frame is not None:
            name = frame.f_code.co_filename
            # skip this module and generated code (a dataclass's __init__ is "<string>")
            if name != here and not name.startswith("<"):
                return name, frame.f_lineno
            frame = frame.f_back
    finally:
        del frame
    return None


def where_prefix(site: tuple[str, int] | None) -> str:
    """``file:line: `` for a definition made at ``site`` (empty when unknown)."""
    return "" if site is None else f"{site[0]}:{site[1]}: "


def _check_dtype(dtype: str, what: str, site: tuple[str, int] | None) -> str:
    if dtype not in DTYPES:
        raise InvalidInput(
            f"{where_prefix(site)}{what} has type {dtype!r}; expected one of {', '.join(DTYPES)}"
        )
    return dtype


@dataclass(frozen=True)
class Field:
    """A typed column: a feature, or a field of request data.

    Args:
        name: the column's name in the source (and the feature's name).
        dtype: one of :data:`DTYPES`.
    """

    name: str
    dtype: str = "float64"

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype}


def _fields(items: Iterable[Field | Mapping[str, Any]], what: str, site: Any) -> tuple[Field, ...]:
    out: list[Field] = []
    for item in items:
        f = item if isinstance(item, Field) else Field(**dict(item))
        if not isinstance(f.name, str) or not f.name.isidentifier():
            raise InvalidInput(
                f"{where_prefix(site)}{what} has a field named {f.name!r}; use a Python identifier "
                "(letters, digits and _)"
            )
        _check_dtype(f.dtype, f"{what}'s field {f.name!r}", site)
        out.append(f)
    names = [f.name for f in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInput(f"{where_prefix(site)}{what} names the field(s) {twice} twice")
    return tuple(out)


# -- entities ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entity:
    """What features describe, named by its join keys (``driver_id``).

    Args:
        name: the entity's name.
        join_keys: the columns that identify one (default: ``[name]``).
        dtype: the join keys' type (``int64`` or ``string``).
        description: free text.
    """

    name: str
    join_keys: tuple[str, ...] = ()
    dtype: str = "int64"
    description: str = ""
    site: tuple[str, int] | None = field(default_factory=_caller_site, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_name(self.name, f"{where_prefix(self.site)}entity name")
        keys = tuple(self.join_keys) if self.join_keys else (self.name,)
        for key in keys:
            if not isinstance(key, str) or not key.isidentifier():
                raise InvalidInput(
                    f"{where_prefix(self.site)}entity {self.name!r} has join key {key!r}; "
                    "use a Python identifier"
                )
        if self.dtype not in ("int64", "string"):
            raise InvalidInput(
                f"{where_prefix(self.site)}entity {self.name!r} has key type {self.dtype!r}; "
                "expected int64 or string"
            )
        object.__setattr__(self, "join_keys", keys)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": ENTITY,
            "name": self.name,
            "join_keys": list(self.join_keys),
            "dtype": self.dtype,
            "description": self.description,
        }


# -- sources ----------------------------------------------------------------------------------


class Source:
    """Where a feature view's rows come from (one of the classes below)."""

    type: str = ""

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class FileSource(Source):
    """A Parquet or CSV file, or a folder of them.

    Args:
        path: the file or folder; a relative path is taken from the definitions
            file's folder when applied, and stored absolute.
        format: ``parquet`` or ``csv`` (default: from the files' suffix).
    """

    path: str
    format: str | None = None
    type = "file"

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in ("parquet", "csv"):
            raise InvalidInput(f"a file source's format is parquet or csv, got {self.format!r}")

    def spec(self) -> dict[str, Any]:
        return {"type": self.type, "path": str(self.path), "format": self.format}


@dataclass(frozen=True)
class DatasetSource(Source):
    """A dataset version of Keel's: ``datasets:/transactions@3`` (a table or a folder of files)."""

    uri: str
    type = "dataset"

    def spec(self) -> dict[str, Any]:
        return {"type": self.type, "uri": self.uri}


@dataclass(frozen=True)
class SqlSource(Source):
    """A table (or a query) in a database SQLAlchemy reaches.

    Args:
        url: the SQLAlchemy URL (``postgresql+psycopg://…``, ``sqlite:///…``).
        table: the table to read; give this or ``query``.
        query: a ``SELECT`` whose rows are the source.
    """

    url: str
    table: str | None = None
    query: str | None = None
    type = "sql"

    def __post_init__(self) -> None:
        if (self.table is None) == (self.query is None):
            raise InvalidInput("a SQL source takes a table or a query, exactly one of them")

    def spec(self) -> dict[str, Any]:
        return {"type": self.type, "url": self.url, "table": self.table, "query": self.query}


def source_from_spec(spec: Mapping[str, Any]) -> Source:
    kind = spec.get("type")
    if kind == "file":
        return FileSource(spec["path"], spec.get("format"))
    if kind == "dataset":
        return DatasetSource(spec["uri"])
    if kind == "sql":
        return SqlSource(spec["url"], spec.get("table"), spec.get("query"))
    raise InvalidInput(f"a source's type is file, dataset or sql, got {kind!r}")


@dataclass(frozen=True)
class RequestSource:
    """Data that arrives with each request (not stored anywhere), for on-demand views.

    Args:
        name: the request source's name.
        schema: its typed fields.
    """

    name: str
    schema: tuple[Field, ...] = ()
    site: tuple[str, int] | None = field(default_factory=_caller_site, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_name(self.name, f"{where_prefix(self.site)}request source name")
        object.__setattr__(
            self, "schema", _fields(self.schema, f"request source {self.name!r}", self.site)
        )

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "schema": [f.spec() for f in self.schema]}


# -- feature views ----------------------------------------------------------------------------


def _ttl_seconds(ttl: timedelta | float | int | None, what: str, site: Any) -> int | None:
    if ttl is None:
        return None
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise InvalidInput(
            f"{where_prefix(site)}{what}'s ttl must be a positive timedelta or number of seconds "
            f"(or None for no expiry), got {ttl!r}"
        )
    return int(seconds)


@dataclass(frozen=True)
class FeatureView:
    """Typed features of one or more entities, read from a source, valid for ``ttl``.

    Args:
        name: the view's name (``driver_stats``).
        entities: the entities (or their names) whose join keys index the view.
        source: where the rows come from.
        timestamp_field: the column holding each row's event time.
        features: the typed feature columns.
        ttl: how long a value stays valid after its event time (``None``: forever).
        created_timestamp_field: the column holding when a row was written; of two
            rows with one event time, the later-created one wins (late corrections).
        description: free text.
        tags: free key-value labels.
    """

    name: str
    entities: tuple[Entity | str, ...]
    source: Source
    timestamp_field: str
    features: tuple[Field, ...]
    ttl: timedelta | float | int | None = None
    created_timestamp_field: str | None = None
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    site: tuple[str, int] | None = field(default_factory=_caller_site, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = where_prefix(self.site)
        check_name(self.name, f"{where}feature view name")
        what = f"feature view {self.name!r}"
        if not isinstance(self.source, Source):
            raise InvalidInput(
                f"{where}{what} has source {self.source!r}; expected a FileSource, "
                "DatasetSource or SqlSource"
            )
        if not self.entities:
            raise InvalidInput(f"{where}{what} needs at least one entity")
        object.__setattr__(self, "entities", tuple(self.entities))
        object.__setattr__(self, "features", _fields(self.features, what, self.site))
        if not self.features:
            raise InvalidInput(f"{where}{what} needs at least one feature")
        _ttl_seconds(self.ttl, what, self.site)  # a bad ttl fails here, at its line
        for column in (self.timestamp_field, self.created_timestamp_field):
            if column is not None and column in self.feature_names:
                raise InvalidInput(f"{where}{what} uses {column!r} as a timestamp and a feature")

    @property
    def entity_names(self) -> tuple[str, ...]:
        return tuple(e if isinstance(e, str) else e.name for e in self.entities)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def ttl_seconds(self) -> int | None:
        return _ttl_seconds(self.ttl, f"feature view {self.name!r}", self.site)

    def spec(self, join_keys: Sequence[str] | None = None) -> dict[str, Any]:
        """The stored form. ``join_keys``: the entities' keys, resolved by :func:`collect`."""
        return {
            "kind": VIEW,
            "name": self.name,
            "entities": list(self.entity_names),
            "join_keys": list(join_keys or []),
            "source": self.source.spec(),
            "timestamp_field": self.timestamp_field,
            "created_timestamp_field": self.created_timestamp_field,
            "features": [f.spec() for f in self.features],
            "ttl_seconds": self.ttl_seconds,
            "description": self.description,
            "tags": dict(self.tags),
        }


@dataclass(frozen=True)
class OnDemandFeatureView:
    """Features computed at request time from request data and other views' features.

    The function takes one pandas DataFrame (a column per source feature, named
    ``feature``, and per request field) and returns a DataFrame with the schema's
    columns, row for row. Offline and online run the very same function.

    Args:
        name: the view's name.
        sources: the feature views and request sources it reads.
        schema: the typed columns it returns.
        function: ``(pandas.DataFrame) -> pandas.DataFrame``, defined at module level
            in the definitions file.
        description: free text.
    """

    name: str
    sources: tuple[FeatureView | RequestSource, ...]
    schema: tuple[Field, ...]
    function: Callable[[Any], Any]
    description: str = ""
    site: tuple[str, int] | None = field(default_factory=_caller_site, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = where_prefix(self.site)
        check_name(self.name, f"{where}on-demand feature view name")
        what = f"on-demand feature view {self.name!r}"
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "schema", _fields(self.schema, what, self.site))
        if not self.schema:
            raise InvalidInput(f"{where}{what} needs a schema of at least one field")
        for source in self.sources:
            if not isinstance(source, FeatureView | RequestSource):
                raise InvalidInput(
                    f"{where}{what} has source {source!r}; expected FeatureViews and RequestSources"
                )
        if not callable(self.function) or getattr(self.function, "__name__", "") == "<lambda>":
            raise InvalidInput(f"{where}{what} needs a named function defined at module level")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.schema)

    def spec(self, file: str | None = None) -> dict[str, Any]:
        """The stored form: sources by name, and the function by file, name and source digest."""
        fn = self.function
        try:
            code = textwrap.dedent(inspect.getsource(fn))
        except (OSError, TypeError):
            raise InvalidInput(
                f"{where_prefix(self.site)}on-demand feature view {self.name!r}: the source of "
                f"{fn.__name__!r} cannot be read; define it in the definitions file"
            ) from None
        return {
            "kind": ON_DEMAND,
            "name": self.name,
            "views": [s.name for s in self.sources if isinstance(s, FeatureView)],
            "request": [s.spec() for s in self.sources if isinstance(s, RequestSource)],
            "schema": [f.spec() for f in self.schema],
            "function": {
                "name": fn.__name__,
                "file": file or inspect.getsourcefile(fn),
                "code_digest": hashlib.sha256(code.encode()).hexdigest(),
            },
            "description": self.description,
        }


def on_demand_feature_view(
    *,
    sources: Sequence[FeatureView | RequestSource],
    schema: Sequence[Field],
    name: str | None = None,
    description: str = "",
) -> Callable[[Callable[[Any], Any]], OnDemandFeatureView]:
    """Decorate a ``DataFrame -> DataFrame`` function to make an :class:`OnDemandFeatureView`.

    Example:
        >>> @on_demand_feature_view(sources=[driver_stats, trip], schema=[Field("fare_per_km")])
        ... def fares(df):
        ...     return pd.DataFrame({"fare_per_km": df["fare"] / df["km"]})
    """
    site = _caller_site()

    def wrap(fn: Callable[[Any], Any]) -> OnDemandFeatureView:
        return OnDemandFeatureView(
            name or fn.__name__,
            tuple(sources),
            tuple(schema),
            fn,
            description=description,
            site=site,
        )

    return wrap


def view_from_spec(spec: Mapping[str, Any]) -> FeatureView:
    """The :class:`FeatureView` a stored spec describes (entities by name)."""
    return FeatureView(
        spec["name"],
        tuple(spec["entities"]),
        source_from_spec(spec["source"]),
        spec["timestamp_field"],
        tuple(Field(f["name"], f["dtype"]) for f in spec["features"]),
        ttl=spec.get("ttl_seconds"),
        created_timestamp_field=spec.get("created_timestamp_field"),
        description=spec.get("description", ""),
        tags=dict(spec.get("tags") or {}),
        site=None,
    )


@dataclass(frozen=True)
class FeatureRef:
    """``view:feature``, parsed."""

    view: str
    feature: str

    def __str__(self) -> str:
        return f"{self.view}:{self.feature}"


def parse_feature_refs(refs: Iterable[str]) -> list[FeatureRef]:
    """``["view:feature", …]`` parsed, in order, each once.

    Raises:
        InvalidInput: a reference is not ``view:feature``, or one appears twice.
    """
    if isinstance(refs, str):
        refs = [refs]
    out: list[FeatureRef] = []
    for ref in refs:
        view, sep, feature = str(ref).partition(":")
        if not sep or not view or not feature or ":" in feature:
            raise InvalidInput(
                f"expected a feature reference such as driver_stats:conv_rate, got {ref!r}"
            )
        parsed = FeatureRef(view, feature)
        if parsed in out:
            raise InvalidInput(f"the feature {ref!r} is asked for twice; name it once")
        out.append(parsed)
    if not out:
        raise InvalidInput("no features asked for; name at least one view:feature")
    return out
