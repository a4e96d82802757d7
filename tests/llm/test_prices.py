"""The LLM price table: rows per model with start times, only added, audited, on every store."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

import keel
from keel.errors import Conflict, InvalidInput, PermissionDenied
from keel.llm.prices import Price, Prices, PriceTable

JAN = 1_767_225_600_000  # 2026-01-01T00:00:00Z
FEB = 1_769_904_000_000  # 2026-02-01T00:00:00Z
HOUR = 3_600_000


def _audit(object_type: str) -> list[dict]:
    """The audit entries about ``object_type`` objects, newest first, on either transport."""
    client = keel.Client()
    if client.settings.server_url:
        transport = client.transport
        return transport.request("GET", "/audit", params={"object_type": object_type})  # type: ignore[attr-defined]
    from keel.governance import audit

    return [e.to_dict() for e in audit.list_entries(client.store, object_type=object_type)]


def test_a_price_dated_mid_way_costs_earlier_requests_at_the_old_price(any_env):
    prices = Prices(keel.Client())
    prices.set("gpt-4o-mini", input_per_million=0.15, output_per_million=0.60, starts_at=JAN)
    prices.set(
        "gpt-4o-mini",
        input_per_million=0.30,
        output_per_million=1.20,
        starts_at="2026-02-01T00:00:00Z",
    )
    table = prices.table()
    # a request in January is costed at January's price, one in February at February's
    assert table.cost("gpt-4o-mini", 1000, 500, JAN + HOUR) == pytest.approx(0.00045)
    assert table.cost("gpt-4o-mini", 1000, 500, FEB - 1) == pytest.approx(0.00045)
    assert table.cost("gpt-4o-mini", 1000, 500, FEB) == pytest.approx(0.0009)
    assert table.cost("gpt-4o-mini", 1000, 500, FEB + 40 * 24 * HOUR) == pytest.approx(0.0009)
    # before the first row, and for a model without one, nothing is priced
    assert table.cost("gpt-4o-mini", 1000, 500, JAN - 1) is None
    assert table.cost("llama3:8b", 1000, 500, FEB) is None
    assert table.price("gpt-4o-mini", FEB + HOUR).input_per_million == 0.30  # type: ignore[union-attr]


def test_price_rows_are_only_added_and_each_one_is_audited(any_env):
    prices = Prices(keel.Client())
    first = prices.set("small", input_per_million=1, output_per_million=2, starts_at=FEB)
    # a row dated before the first one is added beside it, not over it
    prices.set("small", input_per_million=3, output_per_million=4, starts_at=JAN)
    prices.set("meta-llama/Llama-3.1-8B", input_per_million=0, output_per_million=0.5)
    with pytest.raises(
        Conflict, match=r"'small' already has a price starting at 2026-02-01T00:00:00Z"
    ):
        prices.set("small", input_per_million=9, output_per_million=9, starts_at=FEB)
    listed = prices.list()
    assert [(p.model, p.input_per_million, p.starts_at) for p in listed[1:]] == [
        ("small", 3.0, JAN),
        ("small", 1.0, FEB),
    ]
    assert listed[0].model == "meta-llama/Llama-3.1-8B"
    assert [p.input_per_million for p in prices.list("small")] == [3.0, 1.0]
    assert prices.list("small")[1] == first  # what set returned is what is stored
    assert first.created_by == keel.Client().user
    entries = _audit("llm_price")
    assert [(e["action"], e["object"]) for e in entries] == [
        ("llm_price.set", "llm_price:meta-llama/Llama-3.1-8B"),
        ("llm_price.set", "llm_price:small"),
        ("llm_price.set", "llm_price:small"),
    ]
    assert entries[-1]["after"] == {
        "input_per_million": 1.0,
        "output_per_million": 2.0,
        "starts_at": FEB,
    }


def test_a_price_table_is_a_snapshot_that_later_rows_do_not_change(any_env):
    prices = Prices(keel.Client())
    prices.set("small", input_per_million=1, output_per_million=1, starts_at=JAN)
    before = prices.table()
    # a start in the past is allowed: it prices that time from now on ...
    prices.set("small", input_per_million=2, output_per_million=2, starts_at=JAN + HOUR)
    assert prices.table().cost("small", 1_000_000, 0, JAN + 2 * HOUR) == 2.0
    # ... while a snapshot taken before it, like a cost stored then, keeps its answer
    assert before.cost("small", 1_000_000, 0, JAN + 2 * HOUR) == 1.0
    assert len(before) == 1 and before.models == ["small"]


def test_the_latest_start_at_or_before_a_time_wins_whatever_the_insertion_order():
    rows = [
        Price("m", float(start), 0.0, start, 0, "ann") for start in (30, 10, 20)
    ]  # the input rate names the row
    table = PriceTable(rows)
    assert [table.cost("m", 1_000_000, 0, at) for at in (9, 10, 19, 20, 29, 30, 10**13)] == [
        None,
        10.0,
        10.0,
        20.0,
        20.0,
        30.0,
        30.0,
    ]
    assert [p.starts_at for p in table.prices] == [10, 20, 30]


@pytest.mark.parametrize(
    ("model", "rates", "start", "message"),
    [
        ("gpt 4", (1, 1), None, "without spaces"),
        ("", (1, 1), None, "1-256 characters"),
        ("m", (-1, 1), None, "input_per_million must be 0 or more"),
        ("m", (1, float("nan")), None, "output_per_million must be a finite number"),
        ("m", (True, 1), None, "input_per_million must be a finite number"),
        ("m", (1, 1), "next tuesday", "is not ISO-8601"),
        ("m", (1, 1), -5, "at or after 1970"),
    ],
)
def test_a_bad_price_is_refused_saying_what_is_wrong(any_env, model, rates, start, message):
    with pytest.raises(InvalidInput, match=message):
        Prices(keel.Client()).set(
            model, input_per_million=rates[0], output_per_million=rates[1], starts_at=start
        )
    assert Prices(keel.Client()).list() == []


@pytest.mark.parametrize("any_env", ["server"], indirect=True)
def test_only_an_admin_adds_prices_through_the_server_and_any_reader_lists_them(any_env, request):
    server = request.getfixturevalue("control_plane")
    editor = keel.Client(replace(any_env, token=server.make_user("eddie", "editor")))
    viewer = keel.Client(replace(any_env, token=server.make_user("vera", "viewer")))
    with pytest.raises(PermissionDenied, match="user 'eddie' lacks permission 'admin'"):
        Prices(editor).set("small", input_per_million=0, output_per_million=0)
    Prices(keel.Client()).set("small", input_per_million=1, output_per_million=2, starts_at=JAN)
    assert [p.output_per_million for p in Prices(viewer).list()] == [2.0]
    assert Prices(viewer).table().cost("small", 10**6, 10**6, FEB) == 3.0


def test_the_cli_adds_and_lists_prices(sqlite_env):
    from keel.cli.llm import llm_app

    runner = CliRunner()
    added = runner.invoke(
        llm_app,
        ["prices", "set", "small", "--input", "0.15", "--output", "0.6", "--from", "2026-01-01"],
    )
    assert added.exit_code == 0, added.output
    assert "small: $0.15 input, $0.6 output per million tokens from 2026-01-01T00:00:00Z" in (
        added.output
    )
    later = runner.invoke(
        llm_app, ["prices", "set", "small", "--input", "0.2", "--output", "0.8", "--json"]
    )
    assert json.loads(later.output)["input_per_million"] == 0.2
    listed = runner.invoke(llm_app, ["prices", "list", "--model", "small", "--json"])
    first, second = json.loads(listed.output)
    assert (first["input_per_million"], first["starts_at"]) == (0.15, JAN)
    assert second["input_per_million"] == 0.2
    table = runner.invoke(llm_app, ["prices", "list"])
    assert "small" in table.output and "2026-01-01" in table.output
