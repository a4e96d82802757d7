"""LLM budgets: reservations that never pass a limit, spend kept in the store, one alert a period."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import keel
from _support.cli import keel_environ
from keel.errors import InvalidInput, OverBudget, PermissionDenied, StorageError
from keel.llm.budgets import BudgetRule, Budgets, budget_status, budgets_from_config
from keel.llm.spend import Spend, SpendDelta
from keel.store.sql import now_ms

NOON = 1_773_144_000_000  # 2026-03-10T12:00:00Z
DAY = 86_400_000
TODAY = NOON - NOON % DAY  # 2026-03-10T00:00:00Z
TEAMS = {"support": ["alice", "bob"]}


class Clock:
    """A wall clock the test moves by hand: it decides which day a budget counts."""

    def __init__(self, at: int = NOON) -> None:
        self.at = at

    def __call__(self) -> int:
        return self.at


def budgets(*rules: BudgetRule, clock: Clock | None = None, teams=TEAMS) -> Budgets:
    """Budgets on the test's store, written by hand (``flush()``) rather than by a thread."""
    return Budgets(
        rules, Spend(keel.Client()), teams=teams, clock=clock or Clock(), flush_interval=0
    ).start()


def stored(budget: str, start: int = TODAY) -> dict[str, tuple[int, float]]:
    rows = Spend(keel.Client()).load({budget: start})
    return {r.subject: (r.tokens, r.usd) for r in rows}


def test_a_reservation_that_would_pass_a_limit_is_refused_naming_the_budget(any_env):
    team = BudgetRule("support-daily", team="support", period="day", max_tokens=1000, max_usd=1)
    with budgets(team) as b:
        held = b.reserve("alice", None, 600, 0.10)
        b.settle(held, 600, 0.10)
        # bob is on alice's team: his request counts toward the same budget
        with pytest.raises(
            OverBudget,
            match=r"budget 'support-daily' of team 'support' would be passed by this request's "
            r"estimate of 500 tokens: 600 tokens spent and 0 tokens reserved by requests in "
            r"flight, of a limit of 1,000 tokens per day; it resets at 2026-03-11T00:00:00Z",
        ):
            b.reserve("bob", None, 500, 0.10)
        b.reserve("carol", None, 5000, 50.0)  # no budget counts carol
        b.reserve("carol", "support", 300, 0.10)  # unless she acts for the team
        with pytest.raises(
            OverBudget, match=r"\$0.1 spent and \$0.1 reserved .* limit of \$1 per day"
        ):
            b.reserve("bob", None, 10, 0.85)
        last = b.reserve("bob", None, 100, 0.10)  # lands exactly on the token limit
        with pytest.raises(OverBudget, match="'support-daily' of team 'support' is used up"):
            b.reserve("alice", None, 0, 0.0)
        b.release(last)  # an upstream failure gives it back
        b.reserve("alice", None, 100, 0.0)


def test_each_caller_has_a_budget_of_their_own_when_it_names_no_one(any_env):
    with budgets(BudgetRule("per-caller", period="month", max_usd=1.0)) as b:
        b.settle(b.reserve("alice", None, 10, 0.9), 10, 0.9)
        with pytest.raises(
            OverBudget,
            match=r"'per-caller' of caller 'alice' .* per month; "
            r"it resets at 2026-04-01T00:00:00Z",
        ):
            b.reserve("alice", None, 10, 0.2)
        b.reserve("bob", None, 10, 0.9)


def test_a_day_budget_starts_again_at_midnight_utc(any_env):
    clock = Clock(TODAY + DAY - 1)
    with budgets(BudgetRule("daily", user="alice", max_tokens=100), clock=clock) as b:
        b.settle(b.reserve("alice", None, 100, 0), 100, 0)
        with pytest.raises(OverBudget, match="is used up"):
            b.reserve("alice", None, 1, 0)
        clock.at += 1
        b.settle(b.reserve("alice", None, 60, 0), 60, 0)
    assert stored("daily") == {"alice": (100, 0.0)}
    assert stored("daily", TODAY + DAY) == {"alice": (60, 0.0)}


def test_concurrent_reservations_from_threads_never_pass_the_limit(any_env):
    b = budgets(BudgetRule("team", team="support", max_tokens=1000))
    granted: list[int] = []
    barrier = threading.Barrier(16)

    def caller(name: str) -> None:
        barrier.wait()
        for _ in range(40):
            try:
                held = b.reserve(name, None, 7, 0.0)
            except OverBudget:
                continue
            granted.append(7)
            b.settle(held, 7, 0.0)

    threads = [
        threading.Thread(target=caller, args=("alice" if i % 2 else "bob",)) for i in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b.close()
    # 16 x 40 attempts of 7 tokens: exactly as many as fit, never one more
    assert sum(granted) == 994
    assert stored("team") == {"support": (994, 0.0)}


def test_spend_survives_a_restart_of_the_gateway(any_env):
    rule = BudgetRule("alice-daily", user="alice", max_tokens=1000, max_usd=2.0)
    first = budgets(rule)
    first.settle(first.reserve("alice", None, 300, 0.5), 300, 0.5)
    open_one = first.reserve("alice", None, 100, 0.1)  # in flight when it stops: not spent
    first.close()
    second = budgets(rule)
    [status] = second.status()
    assert (status.subject, status.tokens, status.usd, status.reserved_tokens) == (
        "alice",
        300,
        0.5,
        0,
    )
    with pytest.raises(OverBudget, match="300 tokens spent"):
        second.reserve("alice", None, 701, 0.1)
    second.settle(second.reserve("alice", None, 700, 0.1), 700, 0.1)
    second.close()
    assert stored("alice-daily") == {"alice": (1000, pytest.approx(0.6))}
    assert open_one.tokens == 100


def test_two_gateway_workers_enforce_one_budget_through_the_store(any_env):
    rule = BudgetRule("team", team="support", max_tokens=1000)
    first, second = budgets(rule), budgets(rule)
    first.settle(first.reserve("alice", None, 600, 0), 600, 0)
    first.flush()  # written ...
    second.flush()  # ... and read back by the other worker
    with pytest.raises(OverBudget, match="600 tokens spent"):
        second.reserve("bob", None, 500, 0)
    second.settle(second.reserve("bob", None, 400, 0), 400, 0)
    second.flush()
    first.flush()
    with pytest.raises(OverBudget, match=r"is used up: 1,000 tokens spent"):
        first.reserve("alice", None, 1, 0)
    first.close()
    second.close()
    assert stored("team") == {"support": (1000, 0.0)}


def test_the_writer_thread_persists_spend_without_being_asked(any_env):
    rule = BudgetRule("alice-daily", user="alice", max_tokens=1000)
    b = Budgets([rule], Spend(keel.Client()), clock=Clock(), flush_interval=0.05).start()
    try:
        b.settle(b.reserve("alice", None, 250, 0.5), 250, 0.5)
        deadline = time.monotonic() + 60
        while stored("alice-daily") != {"alice": (250, 0.5)}:
            assert time.monotonic() < deadline, "the writer thread never wrote the spend"
            time.sleep(0.05)
    finally:
        b.close()
    assert stored("alice-daily") == {"alice": (250, 0.5)}  # close wrote nothing twice


def test_a_batch_the_store_refused_is_sent_again_and_counted_once(tmp_path: Path):
    settings = keel.init(home=tmp_path / ".keel", busy_timeout=0.2)
    b = budgets(BudgetRule("d", user="alice", max_tokens=1000))
    b.settle(b.reserve("alice", None, 100, 0), 100, 0)
    # another process holds SQLite's write lock: the store refuses the batch
    blocker = sqlite3.connect(settings.store_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError, match="locked"):
            b.flush()
        # the refused spend still counts here, and more comes in meanwhile
        with pytest.raises(OverBudget, match="100 tokens spent"):
            b.reserve("alice", None, 901, 0)
        b.settle(b.reserve("alice", None, 50, 0), 50, 0)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    b.flush()  # the kept batch, once
    b.close()  # then what came after it
    assert stored("d") == {"alice": (150, 0.0)}


def test_the_alert_fires_once_when_spend_crosses_alert_at(any_env):
    from keel.monitoring import list_alerts

    clock = Clock()
    rule = BudgetRule("team-daily", team="support", max_tokens=1000, alert_at=0.5)
    b = budgets(rule, clock=clock)
    b.settle(b.reserve("alice", None, 400, 0), 400, 0)
    b.flush()
    assert list_alerts() == []
    b.settle(b.reserve("bob", None, 200, 0), 200, 0)
    b.flush()
    b.settle(b.reserve("bob", None, 100, 0), 100, 0)
    b.flush()
    b.close()
    # a restarted gateway finds it fired already
    again = budgets(rule, clock=clock)
    again.settle(again.reserve("alice", None, 10, 0), 10, 0)
    again.flush()
    [alert] = list_alerts()
    assert (alert.deployment, alert.rule, alert.state, alert.threshold) == (
        "gateway",
        "budget",
        "firing",
        0.5,
    )
    assert alert.value == pytest.approx(0.6)
    assert alert.message.startswith(
        "budget 'team-daily' of team 'support' has spent 60% of its limit this day: "
        "600 of 1,000 tokens; it alerts at 50% and resets at 2026-03-11T00:00:00Z"
    )
    assert alert.deliveries == {"store": {"ok": True}}
    [status] = again.status()
    assert status.alerted
    # the next day is a new period, with an alert of its own
    clock.at += DAY
    again.settle(again.reserve("alice", None, 500, 0), 500, 0)
    again.close()
    assert [a.message[:40] for a in list_alerts()] == [
        "budget 'team-daily' of team 'support' ha",
        "budget 'team-daily' of team 'support' ha",
    ]


def test_the_alert_goes_to_the_sinks_of_the_gateways_monitor_settings(sqlite_env, tmp_path):
    from keel.monitoring import configure_monitor, list_alerts
    from keel.serving.deployments import DeploymentSpec, Route

    # monitoring knows a deployment's name: here the prompt deployment the alerts are about
    keel.prompts.register("support", template="Answer {{ question }}", model="small")
    keel.prompts.set_alias("support", "production", 1)
    spec = DeploymentSpec(routes=(Route("support", "production"),), kind="prompt")
    keel.Client().deployments.create("support-gw", spec)
    out = tmp_path / "alert.json"
    # the sink is a shell command: the alert's JSON arrives on its stdin
    configure_monitor("support-gw", command=f"cat > {out}")
    rule = BudgetRule("usd", user="alice", max_usd=1.0, alert_at=0.8)
    b = Budgets([rule], Spend(keel.Client()), clock=Clock(), source="support-gw", flush_interval=0)
    with b:
        b.settle(b.reserve("alice", None, 10, 0.9), 10, 0.9)
    body = json.loads(out.read_text())
    assert (body["deployment"], body["rule"], body["budget"], body["subject"]) == (
        "support-gw",
        "budget",
        "usd",
        "alice",
    )
    assert (body["max_usd"], body["resets_at"]) == (1.0, TODAY + DAY)
    [alert] = list_alerts("support-gw")
    assert alert.deliveries["command"] == {"ok": True, "exit": 0}


INCREMENT = """
import sys
from keel.client import Client
from keel.llm.spend import Spend, SpendDelta
spend = Spend(Client())
for _ in range(int(sys.argv[1])):
    spend.increment([SpendDelta("shared", "support", int(sys.argv[2]), 1, 0.25)])
"""


def test_increments_from_threads_and_processes_add_up(any_env):
    spend = Spend(keel.Client())
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", INCREMENT, "60", str(TODAY)],
            env=keel_environ(any_env),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]

    def add() -> None:
        for _ in range(25):
            spend.increment([SpendDelta("shared", "support", TODAY, 1, 0.25)])

    threads = [threading.Thread(target=add) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in processes:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    # 2 x 60 + 6 x 25 increments, none lost
    assert stored("shared") == {"support": (270, 67.5)}


def test_the_rows_an_increment_answers_hold_every_writers_total(any_env):
    spend = Spend(keel.Client())
    spend.increment([SpendDelta("b", "ann", TODAY, 5, 0.5)])
    rows = spend.increment(
        [
            SpendDelta("b", "bob", TODAY, 1, 0.0),
            SpendDelta("b", "ann", TODAY, 2, 0.25),
            SpendDelta("b", "ann", TODAY, 3, 0.25),
        ]
    )
    assert [(r.subject, r.tokens, r.usd, r.alerted_at) for r in rows] == [
        ("ann", 10, 1.0, None),
        ("bob", 1, 0.0, None),
    ]
    with pytest.raises(InvalidInput, match="spend only grows"):
        spend.increment([SpendDelta("b", "ann", TODAY, 0, -1.0)])
    with pytest.raises(InvalidInput, match="tokens must be a whole number"):
        spend.increment([SpendDelta("b", "ann", TODAY, -3, 0.0)])
    assert stored("b") == {"ann": (10, 1.0), "bob": (1, 0.0)}


@pytest.mark.parametrize("any_env", ["server"], indirect=True)
def test_a_batch_sent_again_with_its_key_is_counted_once(any_env):
    spend = Spend(keel.Client())
    batch = [SpendDelta("b", "ann", TODAY, 5, 0.5)]
    spend.increment(batch, key="batch-1")
    spend.increment(batch, key="batch-1")  # its answer was lost: the writer sends it again
    spend.increment(batch, key="batch-2")
    assert stored("b") == {"ann": (10, 1.0)}


@pytest.mark.parametrize("any_env", ["server"], indirect=True)
def test_adding_spend_through_the_server_needs_write_everywhere(any_env, request):
    server = request.getfixturevalue("control_plane")
    viewer = keel.Client(replace(any_env, token=server.make_user("vera", "viewer")))
    gateway = keel.Client(replace(any_env, token=server.make_user("gateway", "editor")))
    with pytest.raises(PermissionDenied, match="user 'vera' lacks permission 'write'"):
        Spend(viewer).increment([SpendDelta("b", "ann", TODAY, 5, 0.5)])
    Spend(gateway).increment([SpendDelta("b", "ann", TODAY, 5, 0.5)])
    assert [r.tokens for r in Spend(viewer).load({"b": TODAY})] == [5]


def test_the_status_command_shows_each_budget_against_its_limits(any_env, tmp_path: Path):
    from keel.cli.llm import llm_app

    config = tmp_path / "gateway.yaml"
    config.write_text(
        """
name: gateway
teams: {support: [alice, bob]}
budgets:
  - {name: support-daily, team: support, period: day, max_usd: 5.0, max_tokens: 200000, alert_at: 0.8}
  - {name: per-caller, period: total, max_tokens: 1000}
"""
    )
    spend = Spend(keel.Client())
    today = now_ms() // DAY * DAY
    spend.increment([SpendDelta("support-daily", "support", today, 50_000, 1.25)])
    spend.increment([SpendDelta("per-caller", "alice", 0, 900, 0.0)])
    answer = CliRunner().invoke(llm_app, ["budgets", "status", "--config", str(config), "--json"])
    assert answer.exit_code == 0, answer.output
    rows = {(r["budget"], r["subject"]): r for r in json.loads(answer.output)}
    assert set(rows) == {("support-daily", "support"), ("per-caller", "alice")}
    daily = rows["support-daily", "support"]
    assert (daily["tokens"], daily["usd"], daily["share"], daily["resets_at"]) == (
        50_000,
        1.25,
        0.25,
        today + DAY,
    )
    assert (rows["per-caller", "alice"]["share"], rows["per-caller", "alice"]["resets_at"]) == (
        0.9,
        None,
    )
    table = CliRunner().invoke(llm_app, ["budgets", "status", "--config", str(config)])
    assert all(word in table.output for word in ("25%", "90%", "never", "80%"))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"budgets": [{"name": "b", "max_usd": 1, "colour": "red"}]}, "unknown key.*colour"),
        ({"budgets": [{"name": "b", "user": "a", "team": "t", "max_usd": 1}]}, "both user"),
        ({"budgets": [{"name": "b", "team": "ops", "max_usd": 1}]}, "team 'ops', which teams"),
        ({"budgets": [{"name": "b", "period": "week", "max_usd": 1}]}, "day, month, total"),
        ({"budgets": [{"name": "b"}]}, "needs max_usd, max_tokens or both"),
        ({"budgets": [{"name": "b", "max_tokens": 1.5}]}, "max_tokens must be a whole number"),
        ({"budgets": [{"name": "b", "max_usd": 1, "alert_at": 80}]}, "0.8 alerts at 80%"),
        ({"budgets": [{"name": "b", "max_usd": 1}, {"name": "b", "max_usd": 2}]}, "two budgets"),
        ({"teams": {"support": "alice"}}, "team 'support' must list its members"),
    ],
)
def test_a_bad_budget_config_is_refused_saying_what_is_wrong(doc, message):
    with pytest.raises(InvalidInput, match=message):
        budgets_from_config(doc)


def test_budget_status_reads_the_store_without_a_gateway(any_env):
    rule = BudgetRule("alice-daily", user="alice", max_tokens=100, alert_at=0.5)
    [empty] = budget_status([rule], Spend(keel.Client()), clock=Clock())
    assert (empty.subject, empty.tokens, empty.share, empty.alerted) == ("alice", 0, 0.0, False)
    with budgets(rule) as b:
        b.settle(b.reserve("alice", None, 70, 0), 70, 0)
    [status] = budget_status([rule], Spend(keel.Client()), clock=Clock())
    assert (status.tokens, status.share, status.alerted) == (70, 0.7, True)
