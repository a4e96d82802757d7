"""The lineage routes: what a node was made from, and what was made from it.

Both need ``read`` somewhere: the graph crosses experiments, datasets and
models, and names only their URIs and the facts their own read routes give.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from keel.pipelines.lineage import Lineage
from keel.server.context import CallerDep
from keel.transport.wire import to_wire

router = APIRouter(tags=["lineage"])

NodeUri = Annotated[
    str,
    Query(
        min_length=1,
        max_length=2_048,
        description="datasets:/…, runs:/…, models:/…, artifacts:/… or code:/…",
    ),
]
Depth = Annotated[int | None, Query(ge=1, le=1_000, description="stop after this many hops")]


@router.get("/lineage/upstream")
def lineage_upstream(caller: CallerDep, uri: NodeUri, depth: Depth = None) -> Any:
    """Everything ``uri`` was made from: inputs, the runs that made them, code, data."""
    caller.require_somewhere("read", "reading lineage")
    return to_wire(Lineage(caller.client.transport).upstream(uri, depth=depth))


@router.get("/lineage/downstream")
def lineage_downstream(caller: CallerDep, uri: NodeUri, depth: Depth = None) -> Any:
    """Everything made from ``uri``: the runs that read it, what they produced, models."""
    caller.require_somewhere("read", "reading lineage")
    return to_wire(Lineage(caller.client.transport).downstream(uri, depth=depth))
