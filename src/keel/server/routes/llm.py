"""The LLM gateway's routes: the price table and budget spend.

A gateway working through ``keel server`` reaches its prices and its
budgets' spend here (:class:`keel.llm.prices.Prices`,
:class:`keel.llm.spend.Spend`); ``keel llm prices …`` and ``keel llm budgets
status`` too. What each route needs:

===========================================  =======================================
reading prices, reading spend                 ``read`` somewhere (any grant): costs
                                              and usage are no secret among users
adding a price row                            ``admin`` (global): prices decide what
                                              budgets let through, so changing them
                                              is a control, like alias policies
adding spend, firing a budget's alert         ``write`` (global)
===========================================  =======================================

The gateway's own token (``KEEL_TOKEN`` of the ``keel gateway`` process) is
therefore a user's with scope ``api`` and the global ``editor`` role when its
config has budgets (``viewer`` is enough without), e.g. ``keel users create
gateway --role editor`` and ``keel tokens create --user gateway --scope api``;
the gateway checks this when it starts (an empty increment batch is answered
``[]`` by a caller allowed to write, 403 otherwise). Spend only grows (a
negative amount is refused), so the most such a token can do to a budget is
use it up, never free it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from keel.errors import InvalidInput
from keel.llm.prices import MAX_MODEL_CHARS, Prices
from keel.llm.spend import MAX_DELTAS, MAX_SUBJECT_CHARS, Spend, SpendDelta
from keel.server.context import CallerDep
from keel.transport.wire import to_wire
from keel.validation import MAX_NAME_CHARS

router = APIRouter(tags=["llm"])

_MAX_MS = 2**63 - 1
_MAX_TOKENS = 2**62
_MESSAGE_CHARS = 4_000


class NewPrice(BaseModel):
    """A price row: USD per million tokens of each type, in force from ``starts_at``."""

    model: str = Field(min_length=1, max_length=MAX_MODEL_CHARS, description="upstream model")
    input_per_million: float = Field(ge=0, description="USD per million input tokens")
    output_per_million: float = Field(ge=0, description="USD per million output tokens")
    starts_at: int | None = Field(
        default=None, ge=0, le=_MAX_MS, description="epoch ms it applies from (default: now)"
    )


class DeltaBody(BaseModel):
    """Tokens and USD to add to one budget's subject in one period."""

    budget: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    subject: str = Field(min_length=1, max_length=MAX_SUBJECT_CHARS)
    period_start: int = Field(ge=0, le=_MAX_MS)
    tokens: int = Field(ge=0, le=_MAX_TOKENS)
    usd: float = Field(ge=0)


class Increments(BaseModel):
    """A batch of spend to add (several for one key are summed)."""

    deltas: list[DeltaBody] = Field(max_length=MAX_DELTAS)


class AlertBody(BaseModel):
    """Fire a budget's alert for one subject and period, unless it has fired."""

    budget: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    subject: str = Field(min_length=1, max_length=MAX_SUBJECT_CHARS)
    period_start: int = Field(ge=0, le=_MAX_MS)
    source: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="the gateway")
    value: float = Field(ge=0, description="the share of the limit spent")
    threshold: float = Field(gt=0, le=1, description="the budget's alert_at")
    message: str = Field(min_length=1, max_length=_MESSAGE_CHARS)
    details: dict[str, Any] = Field(default_factory=dict)


@router.get("/llm/prices")
def list_prices(
    caller: CallerDep,
    model: Annotated[str | None, Query(min_length=1, max_length=MAX_MODEL_CHARS)] = None,
) -> Any:
    """Every price row (or one model's), by model and start time."""
    caller.require_somewhere("read")
    return to_wire(Prices(caller.client).list(model))


@router.post("/llm/prices", status_code=201)
def set_price(body: NewPrice, caller: CallerDep) -> Any:
    """Add a price row (rows are never changed; audited)."""
    caller.require("admin")
    return to_wire(
        Prices(caller.client).set(
            body.model,
            input_per_million=body.input_per_million,
            output_per_million=body.output_per_million,
            starts_at=body.starts_at,
        )
    )


@router.get("/llm/spend")
def load_spend(
    caller: CallerDep,
    period: Annotated[
        list[str],
        Query(max_length=1_000, description="BUDGET@PERIOD_START, once per budget"),
    ],
    updated_since: Annotated[int | None, Query(ge=0, le=_MAX_MS)] = None,
) -> Any:
    """Every subject's spend in the given budgets' periods (changed after ``updated_since``)."""
    caller.require_somewhere("read")
    periods: dict[str, int] = {}
    for item in period:
        budget, _, start = item.rpartition("@")
        if not budget or not start.isdigit():
            raise InvalidInput(f"period must be BUDGET@PERIOD_START (epoch ms), got {item!r}")
        periods[budget] = int(start)
    return to_wire(Spend(caller.client).load(periods, updated_since=updated_since))


@router.post("/llm/spend/increments")
def increment_spend(body: Increments, caller: CallerDep) -> Any:
    """Add each delta to its row atomically; the rows' totals after it."""
    caller.require("write")
    deltas = [SpendDelta(**d.model_dump()) for d in body.deltas]
    return to_wire(Spend(caller.client).increment(deltas))


@router.post("/llm/spend/alerts")
def fire_budget_alert(body: AlertBody, caller: CallerDep) -> Any:
    """Fire the budget's alert for the subject and period once; null if it had fired."""
    caller.require("write")
    return to_wire(
        Spend(caller.client).alert(
            body.budget,
            body.subject,
            body.period_start,
            source=body.source,
            value=body.value,
            threshold=body.threshold,
            message=body.message,
            details=body.details,
        )
    )
