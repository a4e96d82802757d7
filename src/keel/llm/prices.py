"""The LLM price table: per upstream model and token type, with a start time, never rewritten.

A price row says what one upstream model (the ``model`` of a gateway target,
e.g. ``gpt-4o-mini``) costs per million input tokens and per million output
tokens from ``starts_at`` on. Rows are only ever added, each with an audit
entry in the same transaction; the row in force at a moment is the one with
the latest ``starts_at`` at or before it. A price change therefore never
changes what was paid before it: the gateway costs each request with the
row in force at the request's own time and stores that cost in the
request's trace, where it stays.

A start time in the past is allowed (a provider announces a change late,
or an operator enters a contract's prices after the fact). It changes how
requests *from now on* that carry an earlier time are costed, and what
:class:`PriceTable` answers for that past moment, but costs already stored
in traces are never rewritten. Two rows for one model with the same start
time would make the price ambiguous: the second one is refused (``Conflict``).

:class:`Prices` is the part that reads and adds rows, on either transport:
SQL on the client's own metadata store, or REST calls to ``keel server``
(:mod:`keel.server.routes.llm`), which checks the caller's permissions and
runs this same code. :meth:`Prices.table` takes an immutable
:class:`PriceTable` snapshot, whose :meth:`~PriceTable.cost` is a bisection
per call, cheap enough for every request.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from keel.errors import Conflict, InvalidInput
from keel.governance import audit
from keel.store import schema as s
from keel.store.dated import DatedRows, check_rate, check_start
from keel.store.sql import iso_ms, now_ms
from keel.transport import Transport
from keel.transport.base import ClientPart

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["Price", "PriceTable", "Prices", "check_model", "iso_ms", "prices_for"]

#: Characters an upstream model name may hold (``meta-llama/Llama-3.1-8B``, ``llama3:8b`` …).
MAX_MODEL_CHARS = 256
_MODEL_RE = re.compile(rf"^[^\s\x00-\x1f\x7f]{{1,{MAX_MODEL_CHARS}}}$")
_PER = 1_000_000.0


def check_model(model: object) -> str:
    """``model`` if it can name an upstream model, else ``InvalidInput`` saying the rule."""
    if not isinstance(model, str) or not _MODEL_RE.match(model):
        raise InvalidInput(
            f"a model name must be 1-{MAX_MODEL_CHARS} characters without spaces or control "
            f"characters (the upstream's own name, e.g. 'gpt-4o-mini'); got {model!r}"
        )
    return model


@dataclass(frozen=True)
class Price:
    """What one upstream model costs from ``starts_at`` on, in USD per million tokens.

    Attributes:
        model: the upstream model's name (a gateway target's ``model``).
        input_per_million: USD per million input (prompt) tokens.
        output_per_million: USD per million output (completion) tokens.
        starts_at: epoch ms from which this row is in force (until a later row's start).
        created_at: when the row was added (epoch ms).
        created_by: who added it.
    """

    model: str
    input_per_million: float
    output_per_million: float
    starts_at: int
    created_at: int
    created_by: str

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for ``input_tokens`` and ``output_tokens`` at this row's rates."""
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / _PER

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_per_million": self.input_per_million,
            "output_per_million": self.output_per_million,
            "starts_at": self.starts_at,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }


class PriceTable(DatedRows[Price]):
    """An immutable snapshot of the price rows: which row is in force for a model at a time.

    Args:
        prices: the rows (any order); two rows of one model must not share a start.

    Example:
        >>> table = keel.llm.prices.Prices(keel.Client()).table()
        >>> table.cost("gpt-4o-mini", 1200, 300, at_ms=request_time)
        0.00036
    """

    __slots__ = ()

    def __init__(self, prices: Iterable[Price] = ()) -> None:
        super().__init__(prices, key=lambda p: p.model, start=lambda p: p.starts_at)

    def price(self, model: str, at_ms: int) -> Price | None:
        """The row in force for ``model`` at ``at_ms``; None when none had started yet."""
        return self.at(model, at_ms)

    def cost(self, model: str, input_tokens: int, output_tokens: int, at_ms: int) -> float | None:
        """USD for a request to ``model`` at ``at_ms``; None when no price was in force then.

        Args:
            model: the upstream model's name.
            input_tokens: prompt tokens.
            output_tokens: completion tokens.
            at_ms: the request's time (epoch ms): the row in force then prices it.
        """
        price = self.price(model, at_ms)
        return None if price is None else price.cost(input_tokens, output_tokens)

    @property
    def models(self) -> builtins.list[str]:
        """The models with at least one price row, sorted."""
        return self.keys

    @property
    def prices(self) -> builtins.list[Price]:
        """Every row, by model and start."""
        return self.rows

    def __repr__(self) -> str:
        return f"PriceTable({len(self)} rows, {len(self.keys)} models)"


class Prices(ClientPart):
    """The price table's rows: add one (audited, never changed), list them, take a snapshot.

    Args:
        client: a ``keel.Client`` (or its transport). Locally the rows are SQL on its
            metadata store; through ``keel server`` each method is one REST call.

    Example:
        >>> prices = Prices(keel.Client())
        >>> prices.set("gpt-4o-mini", input_per_million=0.15, output_per_million=0.60)
        >>> prices.table().cost("gpt-4o-mini", 1000, 200, at_ms=now)
    """

    def set(
        self,
        model: str,
        *,
        input_per_million: float,
        output_per_million: float,
        starts_at: Any = None,
    ) -> Price:
        """Add a price row for ``model``, in force from ``starts_at`` (default: now).

        Nothing is updated: the new row takes over from its start, and every row before
        it keeps pricing the requests of its own time. A ``starts_at`` in the past is
        allowed; costs already stored in traces are never rewritten.

        Args:
            model: the upstream model's name (a gateway target's ``model``).
            input_per_million: USD per million input tokens.
            output_per_million: USD per million output tokens.
            starts_at: epoch ms, a datetime (naive = UTC) or ISO-8601 text; None for now.

        Raises:
            InvalidInput: a bad model name, rate or time (the message says which).
            Conflict: ``model`` already has a row starting at that very time.
            PermissionDenied: through ``keel server``, the caller is not an admin.
        """
        check_model(model)
        rates = (
            check_rate(input_per_million, "input_per_million", "million tokens"),
            check_rate(output_per_million, "output_per_million", "million tokens"),
        )
        start = check_start(starts_at)
        remote = self.remote
        if remote is not None:
            body = {
                "model": model,
                "input_per_million": rates[0],
                "output_per_million": rates[1],
                "starts_at": start,
            }
            return remote.call("POST", "/llm/prices", Price, json=body)
        created = now_ms()
        actor = self.transport.user
        price = Price(
            model, rates[0], rates[1], created if start is None else start, created, actor
        )
        try:
            with self.transport.store.write() as conn:
                conn.execute(s.llm_prices.insert().values(**price.to_dict()))
                audit.record(
                    conn,
                    actor=actor,
                    action="llm_price.set",
                    object_type="llm_price",
                    object_id=model,
                    after={
                        "input_per_million": price.input_per_million,
                        "output_per_million": price.output_per_million,
                        "starts_at": price.starts_at,
                    },
                )
        except SQLIntegrityError:
            raise Conflict(
                f"model {model!r} already has a price starting at {iso_ms(price.starts_at)} "
                f"({price.starts_at}); price rows are never changed: add one with another "
                "start time"
            ) from None
        return price

    def list(self, model: str | None = None) -> builtins.list[Price]:
        """Every price row (or ``model``'s), by model and start time."""
        if model is not None:
            check_model(model)
        remote = self.remote
        if remote is not None:
            params = {} if model is None else {"model": model}
            return remote.call("GET", "/llm/prices", builtins.list[Price], params=params)
        query = select(s.llm_prices).order_by(s.llm_prices.c.model, s.llm_prices.c.starts_at)
        if model is not None:
            query = query.where(s.llm_prices.c.model == model)
        with self.transport.store.read() as conn:
            return [
                Price(
                    r.model,
                    r.input_per_million,
                    r.output_per_million,
                    r.starts_at,
                    r.created_at,
                    r.created_by,
                )
                for r in conn.execute(query)
            ]

    def table(self) -> PriceTable:
        """An immutable snapshot of every row, to cost requests with."""
        return PriceTable(self.list())


def prices_for(client: Client | Transport) -> Prices:
    """The price table part of ``client``, on its transport (SQL locally, REST over http)."""
    return Prices(client)
