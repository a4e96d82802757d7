"""What LLM budgets have spent, in the metadata store: atomic increments, loads, a one-off alert.

One row per budget, subject (the user or team the budget counts for) and
period (``period_start``: the first millisecond of the UTC day or month, 0
for a budget over all time). The database settles every race:

- **Increments** are one ``INSERT … ON CONFLICT DO UPDATE SET tokens =
  tokens + excluded.tokens, usd = usd + excluded.usd`` per row (a new
  period's row is made by the same statement), so increments from any
  number of gateway processes, workers and hosts add up; nothing is read
  and written back in Python. Rows are written in key order, so two
  batches never wait on each other in a cycle. Increments are not audited:
  they are counters, flushed every second, not changes of anyone's intent.
- **The alert** of a budget fires once per period: the process that moves
  the row's ``alerted_at`` from NULL (compare-and-set) writes the
  :mod:`~keel.monitoring.alerts` row and its audit entry in the same
  transaction, then hands it to the sinks that the monitor settings of the
  alert's source (the gateway's name) name. Every other process finds the
  row taken and does nothing.

Through ``keel server`` each method is one REST call to
:mod:`keel.server.routes.llm`; an increment batch carries an
``Idempotency-Key`` that the caller keeps across its own retries, so a
batch whose answer was lost is applied once, not twice.
"""

from __future__ import annotations

import builtins
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, or_, select, update

from keel.errors import InvalidInput
from keel.governance import audit
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms
from keel.transport.base import ClientPart
from keel.validation import check_name

if TYPE_CHECKING:
    from keel.monitoring.alerts import Alert

__all__ = ["BudgetAlert", "Spend", "SpendDelta", "SpendRow", "check_subject"]

#: The alert rule budget alerts carry (the budget itself is in the message and the body).
ALERT_RULE = "budget"
#: Rows one increment call may carry (a flush merges per key first, so this is plenty).
MAX_DELTAS = 10_000
MAX_SUBJECT_CHARS = 256
_SUBJECT_RE = re.compile(rf"^[^\x00-\x1f\x7f]{{1,{MAX_SUBJECT_CHARS}}}$")
_CHUNK = 500


def check_subject(subject: object) -> str:
    """``subject`` if it can name a budget's user or team, else ``InvalidInput``."""
    if not isinstance(subject, str) or not _SUBJECT_RE.match(subject):
        raise InvalidInput(
            f"a budget's subject (a user or team name) must be 1-{MAX_SUBJECT_CHARS} characters "
            f"without control characters; got {subject!r}"
        )
    return subject


@dataclass(frozen=True)
class SpendDelta:
    """Tokens and USD to add to one budget's subject in one period."""

    budget: str
    subject: str
    period_start: int
    tokens: int
    usd: float

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.budget, self.subject, self.period_start)


@dataclass(frozen=True)
class SpendRow:
    """What one budget's subject has spent in one period, as stored.

    Attributes:
        alerted_at: when this period's alert fired (epoch ms); None until it has.
        updated_at: the time of the last increment (epoch ms).
    """

    budget: str
    subject: str
    period_start: int
    tokens: int
    usd: float
    alerted_at: int | None
    updated_at: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.budget, self.subject, self.period_start)


@dataclass(frozen=True)
class BudgetAlert:
    """A budget's alert that fired: its row in the alerts list, and how each sink took it.

    Attributes:
        id: the alert's id among :func:`keel.monitoring.list_alerts`'s.
        source: the alert's ``deployment``: the gateway's name.
        value: the share of the limit spent when it fired (the larger of money and tokens).
        threshold: the budget's ``alert_at``.
    """

    id: int
    source: str
    budget: str
    subject: str
    period_start: int
    value: float
    threshold: float
    message: str
    at: int
    deliveries: dict[str, Any] = field(default_factory=dict)


def _check_delta(delta: SpendDelta) -> SpendDelta:
    check_name(delta.budget, "budget name")
    check_subject(delta.subject)
    _check_count(delta.period_start, "period_start")
    _check_count(delta.tokens, "tokens")
    usd = delta.usd
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd):
        raise InvalidInput(f"usd must be a finite number, got {usd!r}")
    if usd < 0:
        raise InvalidInput(f"spend only grows: usd must be 0 or more, got {usd!r}")
    return delta


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what} must be a whole number, 0 or more; got {value!r}")
    return value


def merge(deltas: Sequence[SpendDelta]) -> builtins.list[SpendDelta]:
    """One delta per key (their sums), in key order: the order rows are written in."""
    sums: dict[tuple[str, str, int], tuple[int, float]] = {}
    for d in deltas:
        tokens, usd = sums.get(d.key, (0, 0.0))
        sums[d.key] = (tokens + d.tokens, usd + d.usd)
    return [SpendDelta(b, sub, p, t, u) for (b, sub, p), (t, u) in sorted(sums.items())]


def _row(r: Any) -> SpendRow:
    return SpendRow(
        r.budget, r.subject, r.period_start, int(r.tokens), float(r.usd), r.alerted_at, r.updated_at
    )


class Spend(ClientPart):
    """Budget spend in the metadata store: load, increment atomically, fire an alert once.

    Args:
        client: a ``keel.Client`` (or its transport); through ``keel server`` each method
            is one REST call.
    """

    def load(
        self, periods: Mapping[str, int], *, updated_since: int | None = None
    ) -> builtins.list[SpendRow]:
        """Every subject's spend in the given periods.

        Args:
            periods: budget name -> the period to load (its ``period_start``).
            updated_since: only rows incremented after this time (epoch ms).
        """
        for budget, start in periods.items():
            check_name(budget, "budget name")
            _check_count(start, "period_start")
        if updated_since is not None:
            _check_count(updated_since, "updated_since")
        if not periods:
            return []
        remote = self.remote
        if remote is not None:
            params: dict[str, Any] = {
                "period": [f"{budget}@{start}" for budget, start in sorted(periods.items())]
            }
            if updated_since is not None:
                params["updated_since"] = updated_since
            return remote.call("GET", "/llm/spend", builtins.list[SpendRow], params=params)
        t = s.llm_spend
        query = select(t).where(
            or_(*(and_(t.c.budget == b, t.c.period_start == p) for b, p in periods.items()))
        )
        if updated_since is not None:
            query = query.where(t.c.updated_at > updated_since)
        with self.transport.store.read() as conn:
            rows = conn.execute(query.order_by(t.c.budget, t.c.subject, t.c.period_start))
            return [_row(r) for r in rows]

    def increment(
        self, deltas: Sequence[SpendDelta], *, key: str | None = None
    ) -> builtins.list[SpendRow]:
        """Add each delta to its row (made on first use) atomically; the rows after it.

        Args:
            deltas: what to add; several for one key are summed first.
            key: through ``keel server``, the batch's idempotency key: pass the same one
                when retrying a batch whose answer was lost, and it is applied once.

        Returns:
            The incremented rows (their totals, including every other writer's), by key.
        """
        if len(deltas) > MAX_DELTAS:
            raise InvalidInput(
                f"an increment carries at most {MAX_DELTAS} deltas, got {len(deltas)}; "
                "send several batches"
            )
        merged = merge([_check_delta(d) for d in deltas])
        if not merged:
            return []
        remote = self.remote
        if remote is not None:
            body = {"deltas": [d.__dict__ for d in merged]}
            headers = {"idempotency-key": key} if key else None
            return remote.call(
                "POST",
                "/llm/spend/increments",
                builtins.list[SpendRow],
                json=body,
                headers=headers,
            )
        at = now_ms()
        rows: builtins.list[SpendRow] = []
        with self.transport.store.write() as conn:
            for first in range(0, len(merged), _CHUNK):
                rows.extend(_increment(conn, merged[first : first + _CHUNK], at))
        return sorted(rows, key=lambda r: r.key)

    def check_writable(self) -> None:
        """Raise now if this client may not add spend, rather than at its first flush.

        Through ``keel server`` this sends an empty increment batch: the server checks
        the caller's permission as for any batch, and adds nothing. On the client's own
        store there is no permission to check.

        Raises:
            PermissionDenied: through ``keel server``, the caller's token lacks scope
                ``api`` or the global ``write`` permission (role ``editor``).
        """
        remote = self.remote
        if remote is not None:
            remote.call(
                "POST", "/llm/spend/increments", builtins.list[SpendRow], json={"deltas": []}
            )

    def alert(
        self,
        budget: str,
        subject: str,
        period_start: int,
        *,
        source: str,
        value: float,
        threshold: float,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> BudgetAlert | None:
        """Fire the alert of ``budget`` for ``subject`` in this period, unless it has fired.

        The row's ``alerted_at`` moves from NULL by compare-and-set, in the transaction
        that writes the alert and its audit entry; the alert then goes to the sinks of
        the monitor settings of ``source`` (``keel monitor configure SOURCE --webhook …``).

        Args:
            source: the alert's ``deployment`` (the gateway's name).
            value: the share of the limit spent.
            threshold: the share at which the alert fires.
            message: says what fired, for people.
            details: more fields for the sinks' JSON body (limits, spend, reset time).

        Returns:
            The alert, or None when this period's alert had fired already (or the
            period has no spend row).
        """
        check_name(budget, "budget name")
        check_subject(subject)
        _check_count(period_start, "period_start")
        check_name(source, "alert source")
        extra = json.loads(json.dumps(dict(details or {})))  # plain JSON, as sinks get it
        remote = self.remote
        if remote is not None:
            body = {
                "budget": budget,
                "subject": subject,
                "period_start": period_start,
                "source": source,
                "value": value,
                "threshold": threshold,
                "message": message,
                "details": extra,
            }
            return remote.call("POST", "/llm/spend/alerts", BudgetAlert | None, json=body)
        t = s.llm_spend
        store = self.transport.store
        at = now_ms()
        with store.write() as conn:
            claimed = conn.execute(
                update(t)
                .where(
                    t.c.budget == budget,
                    t.c.subject == subject,
                    t.c.period_start == period_start,
                    t.c.alerted_at.is_(None),
                )
                .values(alerted_at=at)
            ).rowcount
            if claimed != 1:
                return None
            fired = _record_alert(
                conn,
                source=source,
                value=value,
                threshold=threshold,
                message=message,
                actor=self.transport.user,
                object_id=f"{budget}/{subject}",
                at=at,
            )
        from keel.client import Client
        from keel.monitoring.alerts import deliver
        from keel.monitoring.settings import local_monitor_settings

        sinks = local_monitor_settings(source, Client(transport=self.transport)).sinks()
        body = {"budget": budget, "subject": subject, "period_start": period_start, **extra}
        [delivered] = deliver(store, [fired], sinks, body)
        return BudgetAlert(
            delivered.id,
            source,
            budget,
            subject,
            period_start,
            value,
            threshold,
            message,
            at,
            delivered.deliveries,
        )


def _increment(conn: Connection, deltas: Sequence[SpendDelta], at: int) -> builtins.list[SpendRow]:
    t = s.llm_spend
    insert = insert_on_conflict(conn, t).values(
        [
            {
                "budget": d.budget,
                "subject": d.subject,
                "period_start": d.period_start,
                "tokens": d.tokens,
                "usd": float(d.usd),
                "alerted_at": None,
                "updated_at": at,
            }
            for d in deltas
        ]
    )
    statement = insert.on_conflict_do_update(
        index_elements=[t.c.budget, t.c.subject, t.c.period_start],
        set_={
            # the database adds: concurrent increments never lose one another
            "tokens": t.c.tokens + insert.excluded.tokens,
            "usd": t.c.usd + insert.excluded.usd,
            "updated_at": insert.excluded.updated_at,
        },
    ).returning(*t.c)
    return [_row(r) for r in conn.execute(statement)]


def _record_alert(
    conn: Connection,
    *,
    source: str,
    value: float,
    threshold: float,
    message: str,
    actor: str,
    object_id: str,
    at: int,
) -> Alert:
    """An alert raised by no monitor run: its row and audit entry, in the caller's transaction."""
    from keel.monitoring.alerts import Alert

    alert_id = conn.execute(
        s.alerts.insert()
        .values(
            deployment=source,
            rule=ALERT_RULE,
            state="firing",
            value=value,
            threshold=threshold,
            message=message,
            monitor_run_id=None,
            at=at,
        )
        .returning(s.alerts.c.id)
    ).scalar_one()
    audit.record(
        conn,
        actor=actor,
        action="alert.fire",
        object_type="budget",
        object_id=object_id,
        before={"rule": ALERT_RULE, "firing": False},
        after={"rule": ALERT_RULE, "firing": True, "value": value, "alert": alert_id},
    )
    # no monitor run raised it: ``monitor_run_id`` is None (the column is nullable since 0012)
    return Alert(alert_id, source, ALERT_RULE, "firing", value, threshold, message, None, at)
