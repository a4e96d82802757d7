"""Lineage: the graph of what was made from what, walked upstream or downstream.

Nodes are URIs:

- ``datasets:/<name>@<version>`` — a dataset version,
- ``runs:/<run_id>`` — any run (a pipeline run, one of its steps, a training script),
- ``artifacts:/<digest>`` — a step output, or a version's compiled package, by content digest,
- ``code:/<digest>`` — the code a step or pipeline ran (see ``keel.pipelines.code``),
- ``models:/<name>/<version>`` — a registered model version,
- ``features:/<view>@<version>`` — a feature view version a training set read.

Every hop is a stored row, read in both directions:

- ``lineage_edges``: input → step run, step run → output, code → run, and the run that
  made a cached output → the cached step run that reused it (pipelines write them),
- ``run_inputs``: dataset version → run (``keel.load_dataset``/``log_dataset`` in a run),
- ``model_versions``: run → the model version registered from it (the registry),
- ``lineage_edges`` again: model version → its compiled packages (``keel models compile``).

So a prediction's model version walks back to the step run that trained it,
that run's inputs and code digest, the steps that made those inputs, and the
dataset versions at the start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from keel.errors import InvalidInput
from keel.store import Store
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms
from keel.transport.base import Transport, TransportBound
from keel.uris import (
    DATASETS,
    MODELS,
    RUNS,
    URI,
    DatasetURI,
    ModelURI,
    RunURI,
    parse_dataset_uri,
    parse_model_ref,
    parse_run_uri,
    parse_uri,
    scheme_of,
)

__all__ = [
    "Edge",
    "Lineage",
    "LineageGraph",
    "Node",
    "RemoteLineage",
    "add_edges",
    "downstream",
    "lineage_part",
    "normalize_uri",
    "upstream",
]

_KINDS = {
    "datasets": "dataset",
    "runs": "run",
    "artifacts": "artifact",
    "code": "code",
    "models": "model",
    "features": "feature_view",
}
_CHUNK = 500


@dataclass(frozen=True)
class Edge:
    """A hop from ``src`` to ``dst``: input, output, code, registered, or reused (a cache hit)."""

    src: str
    dst: str
    relation: str
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "relation": self.relation, "label": self.label}


@dataclass
class Node:
    """A URI in the graph, its kind, and what the store says about it."""

    uri: str
    kind: str
    depth: int
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "kind": self.kind, "depth": self.depth, **self.attributes}


@dataclass
class LineageGraph:
    """The part of the lineage graph reachable from ``root`` in one direction."""

    root: str
    direction: str
    nodes: dict[str, Node]
    edges: list[Edge]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "direction": self.direction,
            "nodes": [n.to_dict() for n in self.nodes.values()],
            "edges": [e.to_dict() for e in self.edges],
        }

    def uris(self, kind: str | None = None) -> list[str]:
        return [n.uri for n in self.nodes.values() if kind is None or n.kind == kind]


def normalize_uri(uri: str) -> str:
    """A node URI in canonical form (``runs:/<id>`` without a path, ``models:/n/3`` …)."""
    if not isinstance(uri, str) or ":/" not in uri:
        raise InvalidInput(
            "expected a lineage URI such as datasets:/churn@3, runs:/<run_id>, "
            "models:/churn/5, features:/driver_stats@2, artifacts:/<digest> or "
            f"code:/<digest>; got {uri!r}"
        )
    scheme, _, rest = uri.partition(":/")
    rest = rest.strip("/")
    if scheme not in _KINDS or not rest:
        raise InvalidInput(
            f"lineage URIs start with {', '.join(f'{k}:/' for k in _KINDS)}; got {uri!r}"
        )
    if scheme_of(uri) == RUNS:
        return str(RunURI(parse_run_uri(uri).run_id))
    return f"{scheme}:/{rest}"


def add_edges(conn: Connection, edges: Iterable[Edge]) -> None:
    """Store edges in the caller's transaction (an edge stored twice is stored once)."""
    rows = [
        {
            "src": e.src,
            "dst": e.dst,
            "relation": e.relation,
            "label": e.label,
            "created_at": now_ms(),
        }
        for e in edges
    ]
    if not rows:
        return
    stmt = insert_on_conflict(conn, s.lineage_edges).on_conflict_do_nothing(
        index_elements=[
            s.lineage_edges.c.src,
            s.lineage_edges.c.dst,
            s.lineage_edges.c.relation,
            s.lineage_edges.c.label,
        ]
    )
    conn.execute(stmt, rows)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _parsed(uri: str) -> URI | None:
    """``uri`` parsed, or None for a scheme the resolver leaves to lineage (``code:/`` …)."""
    if scheme_of(uri) is None:
        return None
    try:
        return parse_uri(uri)
    except InvalidInput:
        return None


def _dataset_ids(conn: Connection, uris: list[str]) -> dict[int, str]:
    """``{dataset_version row id: uri}`` for dataset URIs (``name@N``)."""
    pairs = [
        (p.name, p.version, u)
        for u in uris
        if isinstance(p := _parsed(u), DatasetURI) and p.name is not None and p.version is not None
    ]
    out: dict[int, str] = {}
    for name, version, uri in pairs:
        row = conn.execute(
            select(s.dataset_versions.c.id)
            .join(s.datasets)
            .where(s.datasets.c.name == name, s.dataset_versions.c.version == version)
        ).first()
        if row is not None:
            out[row.id] = uri
    return out


def _dataset_uris(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    rows = conn.execute(
        select(s.dataset_versions.c.id, s.datasets.c.name, s.dataset_versions.c.version)
        .join(s.datasets)
        .where(s.dataset_versions.c.id.in_(list(ids)))
    ).all()
    return {r.id: f"datasets:/{r.name}@{r.version}" for r in rows}


def _hops(conn: Connection, frontier: list[str], direction: str) -> list[Edge]:
    """Edges one hop from ``frontier`` (towards sources when upstream)."""
    found: list[Edge] = []
    up = direction == "upstream"
    near = s.lineage_edges.c.dst if up else s.lineage_edges.c.src
    for chunk in _chunks(frontier):
        for row in conn.execute(
            select(
                s.lineage_edges.c.src,
                s.lineage_edges.c.dst,
                s.lineage_edges.c.relation,
                s.lineage_edges.c.label,
            ).where(near.in_(chunk))
        ):
            found.append(Edge(row.src, row.dst, row.relation, row.label))
    parsed = [_parsed(u) for u in frontier]
    run_ids = [p.run_id for p in parsed if isinstance(p, RunURI) and not p.path]
    models = [(p.name, p.version) for p in parsed if isinstance(p, ModelURI) and p.version]
    if up:
        for chunk in _chunks(run_ids):  # dataset versions the runs read
            rows = conn.execute(
                select(
                    s.run_inputs.c.run_id, s.run_inputs.c.dataset_version_id, s.run_inputs.c.context
                ).where(s.run_inputs.c.run_id.in_(chunk))
            ).all()
            uris = _dataset_uris(conn, {r.dataset_version_id for r in rows}) if rows else {}
            found += [
                Edge(uris[r.dataset_version_id], f"runs:/{r.run_id}", "input", r.context)
                for r in rows
            ]
        for name, version in models:  # a registered version comes from its run
            source = conn.execute(
                select(s.model_versions.c.run_id)
                .join(s.registered_models)
                .where(
                    s.registered_models.c.name == name,
                    s.registered_models.c.kind == "model",  # a prompt is not a model version
                    s.model_versions.c.version == version,
                )
            ).first()
            if source is not None and source.run_id:
                found.append(
                    Edge(f"runs:/{source.run_id}", f"models:/{name}/{version}", "registered")
                )
    else:
        datasets = _dataset_ids(conn, frontier)
        if datasets:
            rows = conn.execute(
                select(
                    s.run_inputs.c.run_id, s.run_inputs.c.dataset_version_id, s.run_inputs.c.context
                ).where(s.run_inputs.c.dataset_version_id.in_(list(datasets)))
            ).all()
            found += [
                Edge(datasets[r.dataset_version_id], f"runs:/{r.run_id}", "input", r.context)
                for r in rows
            ]
        for chunk in _chunks(run_ids):
            rows = conn.execute(
                select(
                    s.model_versions.c.run_id,
                    s.registered_models.c.name,
                    s.model_versions.c.version,
                )
                .join(s.registered_models)
                .where(s.model_versions.c.run_id.in_(chunk))
            ).all()
            found += [
                Edge(f"runs:/{r.run_id}", f"models:/{r.name}/{r.version}", "registered")
                for r in rows
            ]
    return found


def _describe(conn: Connection, nodes: dict[str, Node]) -> None:
    """Fill in what the store knows about runs, datasets and models among ``nodes``."""
    run_ids = [
        p.run_id for n in nodes.values() if isinstance(p := _parsed(n.uri), RunURI) and not p.path
    ]
    for chunk in _chunks(run_ids):
        rows = conn.execute(
            select(s.runs.c.id, s.runs.c.name, s.runs.c.status, s.runs.c.parent_id).where(
                s.runs.c.id.in_(chunk)
            )
        ).all()
        kinds = dict(
            conn.execute(
                select(s.tags.c.run_id, s.tags.c.value).where(
                    s.tags.c.run_id.in_(chunk), s.tags.c.key == "keel.kind"
                )
            ).all()
        )
        for r in rows:
            nodes[f"runs:/{r.id}"].attributes.update(
                name=r.name, status=r.status, parent_id=r.parent_id, role=kinds.get(r.id, "run")
            )
    for node in nodes.values():
        dataset = _parsed(node.uri)
        if isinstance(dataset, DatasetURI) and dataset.name and dataset.version:
            row = conn.execute(
                select(s.dataset_versions.c.digest, s.dataset_versions.c.kind)
                .join(s.datasets)
                .where(
                    s.datasets.c.name == dataset.name,
                    s.dataset_versions.c.version == dataset.version,
                )
            ).first()
            if row is not None:
                node.attributes.update(digest=row.digest, dataset_kind=row.kind)


def _walk(store: Store, uri: str, direction: str, depth: int | None) -> LineageGraph:
    root = _canonical_root(store, normalize_uri(uri))
    nodes = {root: Node(root, _KINDS[root.split(":/", 1)[0]], 0)}
    edges: list[Edge] = []
    seen_edges: set[Edge] = set()
    frontier = [root]
    level = 0
    with store.read() as conn:
        while frontier and (depth is None or level < depth):
            level += 1
            nxt: list[str] = []
            for edge in _hops(conn, frontier, direction):
                if edge in seen_edges:
                    continue
                seen_edges.add(edge)
                edges.append(edge)
                other = edge.src if direction == "upstream" else edge.dst
                if other not in nodes:
                    nodes[other] = Node(other, _KINDS.get(other.split(":/", 1)[0], "other"), level)
                    nxt.append(other)
            frontier = nxt
        _describe(conn, nodes)
    return LineageGraph(root, direction, nodes, edges)


def _canonical_root(store: Store, uri: str) -> str:
    """Dataset references by name or digest, and model aliases, become the URIs edges use."""
    scheme = scheme_of(uri)
    if scheme == DATASETS:
        dataset = parse_dataset_uri(uri)
        if dataset.name is not None and dataset.version is not None:
            return str(dataset)
        from keel.data import catalog

        return catalog.get_version(store, dataset).uri
    if scheme == MODELS:
        model = parse_model_ref(uri)
        return str(model) if model.version is not None else _model_version_uri(store, model)
    if scheme == RUNS:
        from keel.tracking.client import TrackingClient

        run_id = parse_run_uri(uri).run_id
        return str(RunURI(TrackingClient(store=store).resolve_run_id(run_id)))
    return uri


def _model_version_uri(store: Store, uri: ModelURI) -> str:
    """``models:/name@alias`` or ``models:/name/latest`` → ``models:/name/<version>``."""
    from keel.errors import NotFound

    name, alias = uri.name, uri.alias
    with store.read() as conn:
        model = conn.execute(
            select(s.registered_models.c.id, s.registered_models.c.last_version).where(
                s.registered_models.c.name == name, s.registered_models.c.kind == "model"
            )
        ).first()
        if model is None:
            raise NotFound(f"no registered model for {str(uri)!r}; see `keel models list`")
        if alias is None:
            if not model.last_version:
                raise InvalidInput(f"model {name!r} has no versions yet, so {uri} names none")
            return str(ModelURI(name, model.last_version))
        version = conn.execute(
            select(s.aliases.c.version).where(
                s.aliases.c.model_id == model.id, s.aliases.c.alias == alias
            )
        ).scalar()
    if version is None:  # the registry's NotFound names the aliases the model has
        from keel.registry import RegistryClient

        RegistryClient(store=store).get_model_version_by_alias(name, alias)
    return str(ModelURI(name, version))


class Lineage(TransportBound):
    """The lineage graph read through a transport: the local part runs the queries.

    Over ``keel server`` :class:`RemoteLineage` sends the
    same questions to the server's lineage routes instead.
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def upstream(self, uri: str, *, depth: int | None = None) -> LineageGraph:
        """Everything ``uri`` was made from (see :func:`upstream`)."""
        return _walk(self.store, uri, "upstream", depth)

    def downstream(self, uri: str, *, depth: int | None = None) -> LineageGraph:
        """Everything made from ``uri`` (see :func:`downstream`)."""
        return _walk(self.store, uri, "downstream", depth)


class RemoteLineage(Lineage):
    """The lineage graph through ``keel server``'s ``/lineage`` routes (``read`` is enough)."""

    def upstream(self, uri: str, *, depth: int | None = None) -> LineageGraph:
        return self._walk(uri, "upstream", depth)

    def downstream(self, uri: str, *, depth: int | None = None) -> LineageGraph:
        return self._walk(uri, "downstream", depth)

    def _walk(self, uri: str, direction: str, depth: int | None) -> LineageGraph:
        from keel.transport.http import HttpTransport

        assert isinstance(self.transport, HttpTransport)
        params: dict[str, Any] = {"uri": uri}
        if depth is not None:
            params["depth"] = depth
        return self.transport.call("GET", f"/lineage/{direction}", LineageGraph, params=params)


def lineage_part(transport: Transport) -> Lineage:
    """The lineage part for ``transport``: REST calls over the http one, queries otherwise."""
    from keel.transport.http import HttpTransport

    if isinstance(transport, HttpTransport):
        return RemoteLineage(transport)
    return Lineage(transport)


def _part(store: Store | None) -> Lineage:
    """The part over ``store``, or the one the process settings choose (a server's, say)."""
    from keel.transport import LocalTransport, local_or

    if store is not None:
        return Lineage(LocalTransport(store=store))
    return lineage_part(local_or(None))


def upstream(uri: str, *, depth: int | None = None, store: Store | None = None) -> LineageGraph:
    """Everything ``uri`` was made from: inputs, the runs that made them, code, data.

    Args:
        uri: ``datasets:/name@3`` (or ``datasets:/name``), ``runs:/<id>`` (a prefix is
            enough), ``models:/name/5`` (or ``models:/name@alias``), ``artifacts:/<digest>``
            or ``code:/<digest>``.
        depth: stop after this many hops; default: to the sources.
        store: query this metadata store; default: the process settings' (which may be
            a ``keel server``'s, reached over HTTP).
    """
    return _part(store).upstream(uri, depth=depth)


def downstream(uri: str, *, depth: int | None = None, store: Store | None = None) -> LineageGraph:
    """Everything made from ``uri``: the runs that read it, what they produced, models."""
    return _part(store).downstream(uri, depth=depth)
