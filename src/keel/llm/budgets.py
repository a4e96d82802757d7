"""LLM budgets: money and tokens per user, team or caller, per UTC day, month or all time.

A gateway asks :meth:`Budgets.reserve` before it sends a request upstream,
with an estimate of the request's tokens and cost. The reservation is
refused (:class:`~keel.errors.OverBudget`, which the gateway answers with
429) when what the budget has spent, plus what requests in flight have
reserved, plus this estimate would pass any limit that applies; otherwise
the estimate is held until :meth:`~Budgets.settle` replaces it with what
the upstream reported (or :meth:`~Budgets.release` drops it, for a call
that cost nothing). The check and the hold happen under one lock, so
concurrent requests can never together reserve past a limit: nothing
beyond a budget is sent upstream. An actual cost above its estimate is
still counted, and the next request is refused.

What a request costs is kept in memory (a dict lookup and a few additions
per request) and written to the metadata store by a background thread every
second, and on :meth:`~Budgets.close`, as atomic increments
(:mod:`keel.llm.spend`): the store is the sum of every gateway process's
spend. The same thread reads back what other processes spent, so several
workers or hosts enforce one budget (each sees the others' spend within
about a second). :meth:`~Budgets.start` loads the current periods' spend,
so a restarted gateway keeps its spend. A batch the store did not take is
kept and sent again with the same idempotency key, so it is counted once.

When a budget's spend in the store reaches ``alert_at`` of a limit, its
alert fires once per period (see :meth:`keel.llm.spend.Spend.alert`).

Periods are UTC calendar days and months; ``total`` never resets.
"""

from __future__ import annotations

import builtins
import datetime as dt
import itertools
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, NotFound, OverBudget
from keel.llm.spend import Spend, SpendDelta, SpendRow, check_subject
from keel.store.sql import iso_ms, now_ms
from keel.validation import check_name

if TYPE_CHECKING:
    from keel.client import Client

__all__ = [
    "PERIODS",
    "BudgetRule",
    "BudgetStatus",
    "Budgets",
    "Reservation",
    "budget_status",
    "budgets_from_config",
    "read_budgets",
]

log = logging.getLogger("keel.llm.budgets")

PERIODS = ("day", "month", "total")
_DAY_MS = 86_400_000
_RULE_KEYS = ("name", "user", "team", "period", "max_usd", "max_tokens", "alert_at")
#: Rows read back every second are those changed since the last read, less this much
#: (a transaction that committed late still stamped its row with its own clock).
_SYNC_OVERLAP_MS = 10_000
#: Every so often the read-back takes every row of the current periods instead.
_FULL_SYNC_MS = 60_000
_USD_SLACK = 1e-9  # float sums: a request that lands exactly on a limit is not refused

Key = tuple[str, str, int]


def period_start(period: str, at_ms: int) -> int:
    """The first millisecond (UTC) of the ``period`` holding ``at_ms``; 0 for ``total``."""
    if period == "day":
        return at_ms - at_ms % _DAY_MS
    if period == "month":
        moment = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)
        return int(dt.datetime(moment.year, moment.month, 1, tzinfo=dt.UTC).timestamp() * 1000)
    return 0


def period_end(period: str, start: int) -> int | None:
    """When the period starting at ``start`` resets (epoch ms); None for ``total``."""
    if period == "day":
        return start + _DAY_MS
    if period == "month":
        moment = dt.datetime.fromtimestamp(start / 1000, dt.UTC)
        year, month = (
            (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        )
        return int(dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp() * 1000)
    return None


@dataclass(frozen=True)
class BudgetRule:
    """One budget of a gateway's config (an entry of its ``budgets`` list).

    Attributes:
        name: the budget's name (in messages, alerts and the spend rows).
        user: the one user it counts; or
        team: the team (of the config's ``teams``) whose members' requests it counts
            together; neither: it counts each caller separately.
        period: ``day`` or ``month`` (UTC calendar periods), or ``total``.
        max_usd: the most money the period may spend (USD); either or both limits.
        max_tokens: the most tokens (input plus output) the period may use.
        alert_at: the share of a limit (0 to 1) at which an alert fires, once per period.
    """

    name: str
    user: str | None = None
    team: str | None = None
    period: str = "day"
    max_usd: float | None = None
    max_tokens: int | None = None
    alert_at: float | None = None

    def __post_init__(self) -> None:
        where = f"budget {self.name!r}"
        check_name(self.name, "budget name")
        if self.user is not None and self.team is not None:
            raise InvalidInput(
                f"{where} names both user {self.user!r} and team {self.team!r}; give one, "
                "or neither to count each caller separately"
            )
        if self.user is not None:
            check_subject(self.user)
        if self.team is not None:
            check_name(self.team, "team name")
        if self.period not in PERIODS:
            raise InvalidInput(
                f"{where}: period must be one of {', '.join(PERIODS)}, got {self.period!r}"
            )
        if self.max_usd is None and self.max_tokens is None:
            raise InvalidInput(f"{where} needs max_usd, max_tokens or both")
        if self.max_usd is not None and (
            isinstance(self.max_usd, bool)
            or not isinstance(self.max_usd, int | float)
            or not math.isfinite(self.max_usd)
            or self.max_usd <= 0
        ):
            raise InvalidInput(f"{where}: max_usd must be a number above 0, got {self.max_usd!r}")
        if self.max_tokens is not None and (
            isinstance(self.max_tokens, bool)
            or not isinstance(self.max_tokens, int)
            or self.max_tokens <= 0
        ):
            raise InvalidInput(
                f"{where}: max_tokens must be a whole number above 0, got {self.max_tokens!r}"
            )
        if self.alert_at is not None and (
            isinstance(self.alert_at, bool)
            or not isinstance(self.alert_at, int | float)
            or not 0 < self.alert_at <= 1
        ):
            raise InvalidInput(
                f"{where}: alert_at is a share of the limit, above 0 and at most 1 "
                f"(0.8 alerts at 80%); got {self.alert_at!r}"
            )

    @classmethod
    def from_config(cls, entry: Any, where: str = "budgets") -> BudgetRule:
        """A rule from one entry of a config's ``budgets`` list; unknown keys are refused."""
        if not isinstance(entry, Mapping):
            raise InvalidInput(f"{where} must be a mapping with a name, got {type(entry).__name__}")
        unknown = sorted(set(map(str, entry)) - set(_RULE_KEYS))
        if unknown:
            raise InvalidInput(
                f"{where} has unknown key(s) {', '.join(unknown)}; a budget takes "
                f"{', '.join(_RULE_KEYS)}"
            )
        if "name" not in entry:
            raise InvalidInput(f"{where} needs a name")
        try:
            return cls(**{str(k): v for k, v in entry.items()})
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None

    @classmethod
    def of(cls, rule: Any) -> BudgetRule:
        """``rule`` as a :class:`BudgetRule`: one already, a config mapping, or any object
        with the same attributes (a gateway config's parsed budget).
        """
        if isinstance(rule, BudgetRule):
            return rule
        if isinstance(rule, Mapping):
            return cls.from_config(rule)
        values: dict[str, Any] = {k: getattr(rule, k, None) for k in _RULE_KEYS}
        values["period"] = values["period"] or "day"
        return cls(**values)

    def subject(self, caller: str) -> str:
        """Whose spend a request of ``caller`` counts toward (the rule must apply to it)."""
        return self.user or self.team or caller

    def whose(self, subject: str) -> str:
        """Whose spend ``subject`` is, for messages: ``team 'support'``, ``caller 'ann'`` …"""
        kind = "user" if self.user is not None else "team" if self.team is not None else "caller"
        return f"{kind} {subject!r}"

    def share(self, tokens: int, usd: float) -> float:
        """The larger share of a limit that ``tokens`` and ``usd`` use."""
        shares = [0.0]
        if self.max_tokens is not None:
            shares.append(tokens / self.max_tokens)
        if self.max_usd is not None:
            shares.append(usd / self.max_usd)
        return max(shares)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _RULE_KEYS}


def _teams(teams: Any) -> dict[str, tuple[str, ...]]:
    if teams is None:
        return {}
    if not isinstance(teams, Mapping):
        raise InvalidInput(
            f"teams must map each team to its members (support: [alice, bob]), "
            f"got {type(teams).__name__}"
        )
    checked: dict[str, tuple[str, ...]] = {}
    for team, members in teams.items():
        check_name(team, "team name")
        if isinstance(members, str) or not isinstance(members, Sequence):
            raise InvalidInput(f"team {team!r} must list its members, got {members!r}")
        checked[team] = tuple(check_subject(m) for m in members)
    return checked


def budgets_from_config(
    doc: Mapping[str, Any],
) -> tuple[list[BudgetRule], dict[str, tuple[str, ...]]]:
    """The budget rules and teams of a gateway config (its ``budgets`` and ``teams`` keys).

    Raises:
        InvalidInput: a bad entry, two budgets with one name, or a budget naming a team
            that ``teams`` does not define.
    """
    teams = _teams(doc.get("teams"))
    entries = doc.get("budgets") or []
    if not isinstance(entries, list):
        raise InvalidInput(f"budgets must be a list, got {type(entries).__name__}")
    rules: list[BudgetRule] = []
    for index, entry in enumerate(entries):
        rule = BudgetRule.from_config(entry, f"budgets[{index}]")
        if any(r.name == rule.name for r in rules):
            raise InvalidInput(f"two budgets are named {rule.name!r}; give each its own name")
        if rule.team is not None and rule.team not in teams:
            raise InvalidInput(
                f"budget {rule.name!r} counts team {rule.team!r}, which teams does not define; "
                f"add it under teams with its members (defined: {', '.join(teams) or 'none'})"
            )
        rules.append(rule)
    return rules, teams


def read_budgets(path: str | Path) -> tuple[list[BudgetRule], dict[str, tuple[str, ...]]]:
    """The budget rules and teams of the gateway config file at ``path`` (YAML or JSON)."""
    import yaml

    source = Path(path)
    try:
        doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"no gateway config file {str(source)!r}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(f"cannot read gateway config {str(source)!r}: {first}") from None
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"gateway config {str(source)!r} must hold a mapping")
    return budgets_from_config(doc)


@dataclass(frozen=True)
class Reservation:
    """An estimate held against every budget a request counts toward, until settled."""

    id: int
    caller: str
    keys: tuple[Key, ...]
    tokens: int
    usd: float


@dataclass(frozen=True)
class BudgetStatus:
    """One budget's subject in the current period: spend against its limits."""

    budget: str
    subject: str
    period: str
    period_start: int
    resets_at: int | None
    tokens: int
    usd: float
    max_tokens: int | None
    max_usd: float | None
    share: float
    alert_at: float | None
    alerted: bool
    reserved_tokens: int = 0
    reserved_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Counter:
    """One key's spend: as last read from the store, being sent, waiting to be sent, held."""

    __slots__ = (
        "held_tokens",
        "held_usd",
        "open",
        "pending_tokens",
        "pending_usd",
        "sending_tokens",
        "sending_usd",
        "stored_tokens",
        "stored_usd",
    )

    def __init__(self) -> None:
        self.stored_tokens, self.stored_usd = 0, 0.0
        self.sending_tokens, self.sending_usd = 0, 0.0
        self.pending_tokens, self.pending_usd = 0, 0.0
        self.held_tokens, self.held_usd = 0, 0.0
        self.open = 0

    @property
    def tokens(self) -> int:
        return self.stored_tokens + self.sending_tokens + self.pending_tokens

    @property
    def usd(self) -> float:
        return self.stored_usd + self.sending_usd + self.pending_usd

    @property
    def idle(self) -> bool:
        return not (
            self.open
            or self.pending_tokens
            or self.pending_usd
            or self.sending_tokens
            or self.sending_usd
        )


def _usd(value: float) -> str:
    return f"${value:.6g}"


def _resets(rule: BudgetRule, start: int) -> str:
    end = period_end(rule.period, start)
    return "it never resets (period total)" if end is None else f"it resets at {iso_ms(end)}"


class Budgets:
    """The gateway's budgets: reserve before a request, settle after; spend persisted.

    Args:
        rules: the budgets (:func:`budgets_from_config` reads them from a gateway config;
            config mappings or objects with a rule's attributes are taken as well).
        spend: where spend is stored (``Spend(keel.Client())``; a client is wrapped).
        teams: team -> members, for team budgets.
        clock: epoch ms now; decides the current periods (tests pass a fixed clock).
        source: the alerts' ``deployment`` (the gateway's name).
        flush_interval: seconds between writes of the spend to the store.

    Example:
        >>> budgets = Budgets(rules, Spend(keel.Client()), teams=teams).start()
        >>> held = budgets.reserve("alice", None, tokens=900, usd=0.002)  # OverBudget: 429
        >>> budgets.settle(held, tokens=712, usd=0.0016)
        >>> budgets.close()
    """

    def __init__(
        self,
        rules: Sequence[BudgetRule | Any],
        spend: Spend | Client,
        *,
        teams: Mapping[str, Sequence[str]] | None = None,
        clock: Callable[[], int] = now_ms,
        source: str = "gateway",
        flush_interval: float = 1.0,
    ) -> None:
        self.rules = rules
        self.spend = spend
        self.teams = teams
        self.clock = clock
        self.source = source
        self.flush_interval = flush_interval
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._counters: dict[Key, _Counter] = {}
        self._open: dict[int, Reservation] = {}
        self._ids = itertools.count(1)
        self._alerted: set[Key] = set()
        self._unchecked: dict[Key, SpendRow] = {}
        self._batch: tuple[str, list[SpendDelta]] | None = None
        self._synced_at = 0
        self._full_sync_at = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = False
        self._closed = False

    @cached_property
    def _rules(self) -> dict[str, BudgetRule]:
        rules = {r.name: r for r in map(BudgetRule.of, self.rules)}
        if len(rules) != len(self.rules):
            raise InvalidInput("two budgets share a name; give each its own name")
        return rules

    @cached_property
    def _spend(self) -> Spend:
        return self.spend if isinstance(self.spend, Spend) else Spend(self.spend)

    @cached_property
    def _teams_of(self) -> dict[str, frozenset[str]]:
        teams = _teams(self.teams)
        members: dict[str, set[str]] = {}
        for team, users in teams.items():
            for user in users:
                members.setdefault(user, set()).add(team)
        return {user: frozenset(found) for user, found in members.items()}

    # -- life ----------------------------------------------------------------------------

    def start(self) -> Budgets:
        """Load the current periods' spend from the store and start the writer thread.

        Raises:
            StorageError, BackendUnavailable: the store cannot be read; a gateway that
                cannot know its budgets' spend must not start.
        """
        with self._flush_lock:
            if self._started:
                return self
            if self._closed:
                raise InvalidInput("these budgets were closed; make a new Budgets")
            self._rules  # noqa: B018 — checks the rules now, not on the first request
            self._sync(full=True)
            self._started = True
            if self.flush_interval > 0:
                self._thread = threading.Thread(
                    target=self._run, name="keel-budgets-writer", daemon=True
                )
                self._thread.start()
        return self

    def close(self) -> None:
        """Stop the writer thread and write what is left; reservations still open are dropped.

        Raises:
            StorageError, BackendUnavailable: the last write failed (the message of the
                store's error); the unwritten spend is lost with this process.
        """
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._closed = True
        if self._started:
            self.flush()

    def __enter__(self) -> Budgets:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception as exc:  # the next tick retries; the gateway keeps serving
                log.warning("budget spend not written yet, retrying: %s", exc)

    # -- the request path -------------------------------------------------------------------

    def applicable(self, caller: str, team: str | None = None) -> list[BudgetRule]:
        """The rules a request of ``caller`` (acting for ``team``, if any) counts toward."""
        teams = self._teams_of.get(caller, frozenset())
        return [
            r
            for r in self._rules.values()
            if (r.user is not None and r.user == caller)
            or (r.team is not None and (r.team == team or r.team in teams))
            or (r.user is None and r.team is None)
        ]

    def reserve(self, caller: str, team: str | None, tokens: int, usd: float) -> Reservation:
        """Hold ``tokens`` and ``usd`` (a request's estimate) against every budget it counts toward.

        Raises:
            OverBudget: spend, plus what requests in flight hold, plus this estimate would
                pass a limit (or the limit is used up); the message names the budget,
                whom it counts, its limit, what is spent and held, and when it resets.
            InvalidInput: a negative estimate, or the budgets were closed.
        """
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise InvalidInput(f"tokens must be a whole number, 0 or more; got {tokens!r}")
        if not isinstance(usd, int | float) or not math.isfinite(usd) or usd < 0:
            raise InvalidInput(f"usd must be a finite number, 0 or more; got {usd!r}")
        if not self._started:
            self.start()
        now = self.clock()
        rules = self.applicable(caller, team)
        keys = [(r.name, r.subject(caller), period_start(r.period, now)) for r in rules]
        with self._lock:
            if self._closed:
                raise InvalidInput("these budgets were closed; the gateway is shutting down")
            counters = []
            for rule, key in zip(rules, keys, strict=True):
                counter = self._counters.get(key)
                if counter is None:
                    counter = self._counters[key] = _Counter()
                self._check(rule, key, counter, tokens, float(usd))
                counters.append(counter)
            for counter in counters:
                counter.held_tokens += tokens
                counter.held_usd += usd
                counter.open += 1
            reservation = Reservation(next(self._ids), caller, tuple(keys), tokens, float(usd))
            self._open[reservation.id] = reservation
        return reservation

    def _check(self, rule: BudgetRule, key: Key, c: _Counter, tokens: int, usd: float) -> None:
        limits: list[tuple[str, float, float, float, float, Callable[[float], str]]] = []
        if rule.max_tokens is not None:
            limits.append(
                (
                    "tokens",
                    rule.max_tokens,
                    c.tokens,
                    c.held_tokens,
                    tokens,
                    lambda v: f"{v:,.0f} tokens",
                )
            )
        if rule.max_usd is not None:
            limits.append(("usd", rule.max_usd, c.usd, c.held_usd, usd, _usd))
        for _, limit, spent, held, estimate, fmt in limits:
            slack = _USD_SLACK if fmt is _usd else 0
            if spent + held < limit - slack and spent + held + estimate <= limit + slack:
                continue
            used_up = spent + held >= limit - slack
            why = (
                "is used up"
                if used_up
                else f"would be passed by this request's estimate of {fmt(estimate)}"
            )
            raise OverBudget(
                f"budget {rule.name!r} of {rule.whose(key[1])} {why}: {fmt(spent)} spent "
                f"and {fmt(held)} reserved by requests in flight, of a limit of {fmt(limit)} "
                f"per {rule.period}; {_resets(rule, key[2])}"
            )

    def settle(self, reservation: Reservation, tokens: int, usd: float) -> None:
        """Replace a reservation's estimate with what the request really used.

        Raises:
            InvalidInput: the reservation was settled or released already, or a negative
                amount.
        """
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise InvalidInput(f"tokens must be a whole number, 0 or more; got {tokens!r}")
        if not isinstance(usd, int | float) or not math.isfinite(usd) or usd < 0:
            raise InvalidInput(f"usd must be a finite number, 0 or more; got {usd!r}")
        with self._lock:
            if self._open.pop(reservation.id, None) is None:
                raise InvalidInput(
                    f"reservation {reservation.id} was settled or released already; "
                    "settle each reservation once"
                )
            for counter in self._drop(reservation):
                counter.pending_tokens += tokens
                counter.pending_usd += usd

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose request cost nothing (the upstream call failed).

        Releasing a reservation that was settled or released already does nothing, so a
        gateway may release in a ``finally`` after settling.
        """
        with self._lock:
            if self._open.pop(reservation.id, None) is not None:
                self._drop(reservation)

    def _drop(self, reservation: Reservation) -> list[_Counter]:
        counters = []
        for key in reservation.keys:
            counter = self._counters[key]  # an open reservation keeps its counter
            counter.open -= 1
            if counter.open:
                counter.held_tokens -= reservation.tokens
                counter.held_usd -= reservation.usd
            else:  # exactly zero, whatever float sums left behind
                counter.held_tokens, counter.held_usd = 0, 0.0
            counters.append(counter)
        return counters

    # -- the writer ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Write settled spend to the store, read back other processes' spend, fire alerts.

        The writer thread calls this every ``flush_interval`` seconds; :meth:`close` once
        more. A batch the store did not take stays queued and is sent again, with the
        same idempotency key, by the next call.
        """
        with self._flush_lock:
            self._send()
            self._sync(full=self.clock() - self._full_sync_at >= _FULL_SYNC_MS)
            self._alert()
            self._prune()

    def _send(self) -> None:
        with self._lock:
            if self._batch is None:
                deltas = []
                for key, c in self._counters.items():
                    if c.pending_tokens or c.pending_usd:
                        deltas.append(SpendDelta(*key, c.pending_tokens, c.pending_usd))
                        c.sending_tokens += c.pending_tokens
                        c.sending_usd += c.pending_usd
                        c.pending_tokens, c.pending_usd = 0, 0.0
                if deltas:
                    self._batch = (uuid.uuid4().hex, deltas)
            batch = self._batch
        if batch is None:
            return
        rows = self._spend.increment(batch[1], key=batch[0])  # raises: kept for the next call
        with self._lock:
            for delta in batch[1]:
                c = self._counters[delta.key]
                c.sending_tokens, c.sending_usd = 0, 0.0
            self._take(rows)
            self._batch = None

    def _sync(self, *, full: bool) -> None:
        now = self.clock()
        periods = {r.name: period_start(r.period, now) for r in self._rules.values()}
        since = None if full else max(0, self._synced_at - _SYNC_OVERLAP_MS)
        started = now_ms()  # the writers stamp rows with the wall clock, not self.clock
        rows = self._spend.load(periods, updated_since=since)
        with self._lock:
            unsent = set() if self._batch is None else {d.key for d in self._batch[1]}
            # a batch whose answer was lost may or may not be in these rows: keep the
            # figures held for its keys until the batch is confirmed
            self._take([r for r in rows if r.key not in unsent])
        self._synced_at = started
        if full:
            self._full_sync_at = now

    def _take(self, rows: Iterable[SpendRow]) -> None:
        """Adopt stored totals (under the lock); the store only grows, so keep the larger."""
        for row in rows:
            c = self._counters.get(row.key)
            if c is None:
                c = self._counters[row.key] = _Counter()
            c.stored_tokens = max(c.stored_tokens, row.tokens)
            c.stored_usd = max(c.stored_usd, row.usd)
            if row.alerted_at is not None:
                self._alerted.add(row.key)
            elif row.key not in self._alerted:
                self._unchecked[row.key] = row

    def _alert(self) -> None:
        with self._lock:
            rows, self._unchecked = list(self._unchecked.values()), {}
        for row in rows:
            rule = self._rules.get(row.budget)
            if rule is None or rule.alert_at is None or row.key in self._alerted:
                continue
            share = rule.share(row.tokens, row.usd)
            if share < rule.alert_at:
                continue
            limits = []
            if rule.max_usd is not None:
                limits.append(f"{_usd(row.usd)} of {_usd(rule.max_usd)}")
            if rule.max_tokens is not None:
                limits.append(f"{row.tokens:,} of {rule.max_tokens:,} tokens")
            resets = period_end(rule.period, row.period_start)
            message = (
                f"budget {rule.name!r} of {rule.whose(row.subject)} has spent "
                f"{share:.0%} of its limit this {rule.period}: {', '.join(limits)}; "
                f"it alerts at {rule.alert_at:.0%} and {_resets(rule, row.period_start)[3:]}"
            )
            details = {
                "tokens": row.tokens,
                "usd": row.usd,
                "max_tokens": rule.max_tokens,
                "max_usd": rule.max_usd,
                "period": rule.period,
                "resets_at": resets,
            }
            try:
                self._spend.alert(
                    row.budget,
                    row.subject,
                    row.period_start,
                    source=self.source,
                    value=share,
                    threshold=float(rule.alert_at),
                    message=message,
                    details=details,
                )
            except Exception:
                with self._lock:  # try again on the next flush
                    self._unchecked.setdefault(row.key, row)
                raise
            with self._lock:
                self._alerted.add(row.key)

    def _prune(self) -> None:
        """Forget idle keys of periods that have ended (their rows stay in the store)."""
        now = self.clock()
        with self._lock:
            for key in [k for k, c in self._counters.items() if c.idle]:
                rule = self._rules.get(key[0])
                if rule is None or key[2] < period_start(rule.period, now):
                    del self._counters[key]
                    self._alerted.discard(key)

    # -- reading ----------------------------------------------------------------------------------

    def status(self) -> list[BudgetStatus]:
        """Every budget's subjects in the current period, as this process sees them now."""
        now = self.clock()
        with self._lock:
            figures = {
                key: (c.tokens, c.usd, c.held_tokens, c.held_usd, key in self._alerted)
                for key, c in self._counters.items()
            }
        return _statuses(self._rules.values(), now, figures)


def _statuses(
    rules: Iterable[BudgetRule],
    now: int,
    figures: Mapping[Key, tuple[int, float, int, float, bool]],
) -> list[BudgetStatus]:
    found: list[BudgetStatus] = []
    for rule in rules:
        start = period_start(rule.period, now)
        keys = sorted(k for k in figures if k[0] == rule.name and k[2] == start)
        fixed = rule.user or rule.team
        if fixed is not None and (rule.name, fixed, start) not in figures:
            keys.insert(0, (rule.name, fixed, start))
        for key in keys:
            tokens, usd, held_tokens, held_usd, alerted = figures.get(key, (0, 0.0, 0, 0.0, False))
            found.append(
                BudgetStatus(
                    rule.name,
                    key[1],
                    rule.period,
                    start,
                    period_end(rule.period, start),
                    tokens,
                    usd,
                    rule.max_tokens,
                    rule.max_usd,
                    rule.share(tokens, usd),
                    rule.alert_at,
                    alerted,
                    held_tokens,
                    held_usd,
                )
            )
    return found


def budget_status(
    rules: Sequence[BudgetRule], spend: Spend, *, clock: Callable[[], int] = now_ms
) -> builtins.list[BudgetStatus]:
    """Every budget's subjects in the current period, as stored (what ``keel llm budgets
    status`` shows): a user or team budget always has a row, a per-caller one has a row
    per caller that spent.
    """
    now = clock()
    periods = {r.name: period_start(r.period, now) for r in rules}
    rows = spend.load(periods)
    figures = {r.key: (r.tokens, r.usd, 0, 0.0, r.alerted_at is not None) for r in rows}
    return _statuses(rules, now, figures)
