"""The import routes: the record of what an import (``keel import mlflow``) made of each object.

The import itself runs in the caller's process and writes through the other
routes (experiments, runs, artifacts, registry); these two routes only read
and extend its mapping (:class:`keel.interop.records.ImportRecords`).

An import spans experiments and models, so both routes need a global grant:
``read`` to list a source's records, ``write`` to add to them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from keel.interop.records import ImportRecord, ImportRecords
from keel.server.context import CallerDep
from keel.transport.wire import to_wire

router = APIRouter(tags=["imports"])

_SOURCE = 512


class Record(BaseModel):
    kind: str = Field(min_length=1, max_length=32)
    source_id: str = Field(min_length=1, max_length=256)
    target: str = Field(min_length=1, max_length=256)


class Records(BaseModel):
    source: str = Field(min_length=1, max_length=_SOURCE)
    records: list[Record] = Field(max_length=10_000)


@router.get("/imports")
def list_imports(
    caller: CallerDep, source: Annotated[str, Query(min_length=1, max_length=_SOURCE)]
) -> Any:
    """Every object imported from ``source``: kind, its id there, what it became here."""
    caller.require("read")
    return to_wire(ImportRecords(caller.client).load(source))


@router.post("/imports", status_code=204)
def record_imports(caller: CallerDep, body: Records) -> None:
    """Remember objects as imported from ``body.source`` (a later record of one wins)."""
    caller.require("write")
    ImportRecords(caller.client).record(
        body.source, [ImportRecord(r.kind, r.source_id, r.target) for r in body.records]
    )
