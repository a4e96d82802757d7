"""The job price table: what a GPU, a CPU or a GiB of memory costs per hour, from a start time.

A row says what one *resource* costs per hour from ``starts_at`` on:

- ``gpu:<type>`` (``gpu:a100``): USD per GPU-hour of that type;
- ``cpus``: USD per CPU-hour;
- ``memory``: USD per GiB-hour.

Rows are only ever added, each with an audit entry (``job_price.set``) in the
same transaction; the row in force at a moment is the one with the latest
``starts_at`` at or before it. A job's running time is split at every start
time that falls inside it (:meth:`JobPriceTable.segments`), so a price change
in the middle of a run charges each part at its own rate, and a change never
reprices the time before it. A start time in the past is allowed (a contract
entered late); costs already recorded on jobs are only recomputed when their
job is costed again. Two rows of one resource with the same start time would
make the price ambiguous: the second one is refused (``Conflict``).

:class:`JobPrices` reads and adds rows, on either transport: SQL on the
client's own store, or REST calls to ``keel server`` (``GET``/``POST
/jobs/prices``), which checks the caller's permissions and runs this same
code. :meth:`JobPrices.table` takes an immutable :class:`JobPriceTable`
snapshot whose lookups are one bisection each.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from keel.errors import Conflict, InvalidInput
from keel.governance import audit
from keel.jobs.resources import CPUS, MEMORY, check_gpu_type
from keel.store import schema as s
from keel.store.dated import DatedRows, check_rate, check_start
from keel.store.sql import iso_ms, now_ms
from keel.transport.base import ClientPart

if TYPE_CHECKING:
    from keel.client import Client
    from keel.transport import Transport

__all__ = [
    "UNITS",
    "JobPrice",
    "JobPriceTable",
    "JobPrices",
    "check_resource",
    "job_prices_for",
]

_GPU_PREFIX = "gpu:"
#: What one hour of each resource is counted in (``gpu:<type>`` resources are GPU-hours).
UNITS = {CPUS: "CPU-hour", MEMORY: "GiB-hour", _GPU_PREFIX: "GPU-hour"}


def check_resource(resource: object) -> str:
    """``resource`` if it can be priced (``gpu:<type>``, ``cpus``, ``memory``), else ``InvalidInput``."""
    if resource in (CPUS, MEMORY):
        return str(resource)
    if isinstance(resource, str) and resource.startswith(_GPU_PREFIX):
        check_gpu_type(resource.removeprefix(_GPU_PREFIX))
        return resource
    raise InvalidInput(
        "a priced resource is gpu:<type> (per GPU-hour, such as gpu:a100), cpus (per "
        f"CPU-hour) or memory (per GiB-hour); got {resource!r}"
    )


def unit(resource: str) -> str:
    """What ``resource``'s hourly price is per: ``GPU-hour``, ``CPU-hour`` or ``GiB-hour``."""
    return UNITS[_GPU_PREFIX] if resource.startswith(_GPU_PREFIX) else UNITS[resource]


@dataclass(frozen=True)
class JobPrice:
    """What one resource costs per hour from ``starts_at`` on, in USD.

    Attributes:
        resource: ``gpu:<type>``, ``cpus`` or ``memory``.
        per_hour: USD per GPU-hour, CPU-hour or GiB-hour.
        starts_at: epoch ms from which this row is in force (until a later row's start).
        created_at: when the row was added (epoch ms).
        created_by: who added it.
    """

    resource: str
    per_hour: float
    starts_at: int
    created_at: int
    created_by: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "per_hour": self.per_hour,
            "starts_at": self.starts_at,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }


class JobPriceTable(DatedRows[JobPrice]):
    """An immutable snapshot of the job price rows: which row is in force for a resource when.

    Args:
        prices: the rows (any order); two rows of one resource must not share a start.

    Example:
        >>> table = JobPrices(keel.Client()).table()
        >>> table.rate("gpu:a100", at_ms=start)
        2.5
        >>> table.segments("gpu:a100", start, end)  # split at every price change inside
        [(start, change, <JobPrice 2.5>), (change, end, <JobPrice 3.0>)]
    """

    __slots__ = ()

    def __init__(self, prices: Iterable[JobPrice] = ()) -> None:
        super().__init__(prices, key=lambda p: p.resource, start=lambda p: p.starts_at)

    def price(self, resource: str, at_ms: int) -> JobPrice | None:
        """The row in force for ``resource`` at ``at_ms``; None when none had started yet."""
        return self.at(resource, at_ms)

    def rate(self, resource: str, at_ms: int) -> float | None:
        """USD per hour of ``resource`` at ``at_ms``; None when no price was in force then."""
        price = self.at(resource, at_ms)
        return None if price is None else price.per_hour

    @property
    def resources(self) -> builtins.list[str]:
        """The resources with at least one price row, sorted."""
        return self.keys

    @property
    def prices(self) -> builtins.list[JobPrice]:
        """Every row, by resource and start."""
        return self.rows

    def __repr__(self) -> str:
        return f"JobPriceTable({len(self)} rows, {len(self.keys)} resources)"


class JobPrices(ClientPart):
    """The job price table's rows: add one (audited, never changed), list them, take a snapshot.

    Args:
        client: a ``keel.Client`` (or its transport). Locally the rows are SQL on its
            metadata store; through ``keel server`` each method is one REST call
            (``POST /jobs/prices``, ``GET /jobs/prices``).

    Example:
        >>> prices = JobPrices(keel.Client())
        >>> prices.set("gpu:a100", 2.5, starts_at="2026-01-01T00:00:00Z")
        >>> prices.set("cpus", 0.04)
        >>> prices.table().rate("gpu:a100", now)
        2.5
    """

    def set(self, resource: str, per_hour: float, starts_at: Any = None) -> JobPrice:
        """Add a price row for ``resource``, in force from ``starts_at`` (default: now).

        Nothing is updated: the new row takes over from its start, and every row before
        it keeps pricing the time before that.

        Args:
            resource: ``gpu:<type>`` (per GPU-hour), ``cpus`` (per CPU-hour) or ``memory``
                (per GiB-hour).
            per_hour: USD per hour of one unit, 0 or more.
            starts_at: epoch ms, a datetime (naive = UTC) or ISO-8601 text; None for now.

        Raises:
            InvalidInput: a bad resource, rate or time (the message says which).
            Conflict: ``resource`` already has a row starting at that very time.
            PermissionDenied: through ``keel server``, the caller may not set prices.
        """
        check_resource(resource)
        rate = check_rate(per_hour, "per_hour", unit(resource))
        start = check_start(starts_at)
        remote = self.remote
        if remote is not None:
            body = {"resource": resource, "per_hour": rate, "starts_at": start}
            return remote.call("POST", "/jobs/prices", JobPrice, json=body)
        created = now_ms()
        actor = str(self.transport.user)
        price = JobPrice(resource, rate, created if start is None else start, created, actor)
        try:
            with self.transport.store.write() as conn:
                conn.execute(s.job_prices.insert().values(**price.to_dict()))
                audit.record(
                    conn,
                    actor=actor,
                    action="job_price.set",
                    object_type="job_price",
                    object_id=resource,
                    after={"per_hour": price.per_hour, "starts_at": price.starts_at},
                )
        except SQLIntegrityError:
            raise Conflict(
                f"resource {resource!r} already has a price starting at "
                f"{iso_ms(price.starts_at)} ({price.starts_at}); price rows are never changed: "
                "add one with another start time"
            ) from None
        return price

    def list(self, resource: str | None = None) -> builtins.list[JobPrice]:
        """Every price row (or ``resource``'s), by resource and start time."""
        if resource is not None:
            check_resource(resource)
        remote = self.remote
        if remote is not None:
            params = {} if resource is None else {"resource": resource}
            return remote.call("GET", "/jobs/prices", builtins.list[JobPrice], params=params)
        table = s.job_prices
        query = select(table).order_by(table.c.resource, table.c.starts_at)
        if resource is not None:
            query = query.where(table.c.resource == resource)
        with self.transport.store.read() as conn:
            return [
                JobPrice(r.resource, r.per_hour, r.starts_at, r.created_at, r.created_by)
                for r in conn.execute(query)
            ]

    def table(self) -> JobPriceTable:
        """An immutable snapshot of every row, to cost jobs with."""
        return JobPriceTable(self.list())


def job_prices_for(client: Client | Transport) -> JobPrices:
    """The job price table part of ``client``, on its transport (SQL locally, REST over http)."""
    return JobPrices(client)
