"""The record of what an import made of each object of another store.

Each row of ``imported_objects`` says: from ``source`` (the other store's URL,
without its password), the object of ``kind`` with id ``source_id`` became
Keel's ``target``. An import reads the rows of its source first and skips what
they name, which makes it idempotent; the same rows answer "where did MLflow
run X go?" later.

:func:`import_records` picks the part for a client's transport: SQL on the
client's store locally, REST calls to ``keel server`` (``/imports``) over http.
This module owns the ``imported_objects`` table: nothing else writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms

if TYPE_CHECKING:
    from keel.client import Client
    from keel.transport.http import HttpTransport

__all__ = ["ImportRecord", "ImportRecords", "import_records"]


@dataclass(frozen=True)
class ImportRecord:
    """One imported object: what it was in the source and what it became in Keel."""

    kind: str
    source_id: str
    target: str


class ImportRecords:
    """The mapping of one client's store, read and written with SQL.

    Args:
        client: a ``keel.Client`` on a local transport.
    """

    def __init__(self, client: Client) -> None:
        self.client = client

    def load(self, source: str) -> list[ImportRecord]:
        """Every object imported from ``source`` so far."""
        t = s.imported_objects
        with self.client.store.read() as conn:
            rows = conn.execute(
                select(t.c.kind, t.c.source_id, t.c.target)
                .where(t.c.source == source)
                .order_by(t.c.kind, t.c.source_id)
            ).all()
        return [ImportRecord(*r) for r in rows]

    def record(self, source: str, records: Sequence[ImportRecord]) -> None:
        """Remember ``records`` as imported from ``source`` (a later record of an object wins)."""
        if not records:
            return
        t = s.imported_objects
        now = now_ms()
        with self.client.store.write() as conn:
            stmt = insert_on_conflict(conn, t)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[t.c.source, t.c.kind, t.c.source_id],
                    set_={"target": stmt.excluded.target, "imported_at": stmt.excluded.imported_at},
                ),
                [
                    {
                        "source": source,
                        "kind": r.kind,
                        "source_id": r.source_id,
                        "target": r.target,
                        "imported_at": now,
                    }
                    for r in records
                ],
            )


class RemoteImportRecords(ImportRecords):
    """The mapping through ``keel server``: the same two methods as REST calls."""

    @property
    def transport(self) -> HttpTransport:
        from keel.transport.http import HttpTransport

        transport = self.client.transport
        assert isinstance(transport, HttpTransport)  # import_records chose this class for it
        return transport

    def load(self, source: str) -> list[ImportRecord]:
        """Every object imported from ``source`` so far."""
        return self.transport.call("GET", "/imports", list[ImportRecord], params={"source": source})

    def record(self, source: str, records: Sequence[ImportRecord]) -> None:
        """Remember ``records`` as imported from ``source``."""
        from keel.transport.wire import to_wire

        if records:
            body = {"source": source, "records": to_wire(list(records))}
            self.transport.request("POST", "/imports", json=body)


def import_records(client: Client) -> ImportRecords:
    """The import mapping for ``client``'s transport: SQL locally, REST calls over http."""
    from keel.transport.http import HttpTransport

    if isinstance(client.transport, HttpTransport):
        return RemoteImportRecords(client)
    return ImportRecords(client)
