"""The audit page against a real server: its entries, filters, paging, and the chain's state.

What the page lists is compared with what the API's audit route answers; the
tampering test edits a row of this module's own server's SQLite file, as
``tests/governance/test_audit.py`` does, and the page must name the broken entry.
"""

from __future__ import annotations

import html
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.browser import log_in, open_page, screenshot
from _support.control_plane import ControlPlane, start_control_plane
from keel.server.ui.audit import PAGE_SIZE

USERS = 30  # each adds a user and a token entry: more entries than one page holds


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with start_control_plane(tmp_path_factory.mktemp("ui-audit") / "server") as started:
        for n in range(USERS):
            started.make_user(f"user{n}", "viewer")
        yield started


def _pages(server: ControlPlane, token: str) -> httpx.Client:
    return server.pages(token)


def _seqs(page: str) -> list[int]:
    return [int(s) for s in re.findall(r'<tr data-seq="(\d+)"', page)]


def _api(server: ControlPlane, **params: Any) -> list[dict[str, Any]]:
    with server.http() as api:
        answer = api.get("/audit", params={"limit": 10_000, **params})
        assert answer.status_code == 200, answer.text
        return list(answer.json())


def test_admin_sees_entries_verified_and_paged(server: ControlPlane) -> None:
    everything = _api(server)
    assert len(everything) > PAGE_SIZE
    with _pages(server, server.admin_token) as http:
        first = http.get("/audit")
        assert first.status_code == 200
        assert 'id="verification" data-ok="1"' in first.text
        assert f"the chain holds over {len(everything)} entries" in first.text
        seen = _seqs(first.text)
        assert seen == [e["seq"] for e in everything[:PAGE_SIZE]]
        link = re.search(r'<a href="([^"]+)" rel="next">', first.text)
        while link is not None:
            page = http.get(html.unescape(link.group(1)))
            assert page.status_code == 200
            seen += _seqs(page.text)
            link = re.search(r'<a href="([^"]+)" rel="next">', page.text)
    assert seen == [e["seq"] for e in everything]  # every entry once, newest first


def test_filters_narrow_to_what_the_api_finds(server: ControlPlane) -> None:
    with _pages(server, server.admin_token) as http:
        by_object = http.get("/audit", params={"object": "user:user7"})
        expected = _api(server, object_type="user", object_id="user7")
        assert expected and _seqs(by_object.text) == [e["seq"] for e in expected]
        actors = {e["actor"] for e in _api(server)}
        actor = sorted(actors)[0]
        page = http.get("/audit", params={"actor": actor, "action": "user.*"})
        wanted = [e["seq"] for e in _api(server, actor=actor) if e["action"].startswith("user.")][
            :PAGE_SIZE
        ]
        assert wanted and _seqs(page.text) == wanted
        nobody = http.get("/audit", params={"actor": "no-such-actor"})
        assert _seqs(nobody.text) == [] and "No entries match." in nobody.text
        future = http.get("/audit", params={"since": "2999-01-01"})
        assert _seqs(future.text) == []
        past = http.get("/audit", params={"until": "2999-01-01T00:00"})
        assert len(_seqs(past.text)) == PAGE_SIZE


def test_a_malformed_time_is_a_400_saying_what_was_expected(server: ControlPlane) -> None:
    with _pages(server, server.admin_token) as http:
        page = http.get("/audit", params={"since": "yesterday-ish"})
    assert page.status_code == 400
    message = html.unescape(re.search(r'id="filter-error">(.*?)<', page.text, re.S).group(1))
    assert "'since' must be epoch milliseconds or ISO-8601 text such as" in message
    assert "'yesterday-ish'" in message
    assert 'value="yesterday-ish"' in page.text  # the form keeps what was typed


def test_a_viewer_reads_entries_but_not_the_verification(server: ControlPlane) -> None:
    token = server.make_user("watcher", "viewer")
    with _pages(server, token) as http:
        page = http.get("/audit")
    assert page.status_code == 200 and _seqs(page.text)
    assert "needs the <code>admin</code> permission" in page.text
    assert "data-ok" not in page.text
    with server.http(token) as api:
        assert api.get("/audit/verify").status_code == 403  # the API refuses it too


def test_a_user_without_read_gets_403_as_from_the_api(server: ControlPlane) -> None:
    token = server.make_user("stranger")
    with server.http(token) as api:
        assert api.get("/audit").status_code == 403
    with _pages(server, token) as http:
        page = http.get("/audit")
    assert page.status_code == 403
    assert "lacks permission &#39;read&#39;" in page.text


@pytest.mark.slow
def test_a_tampered_row_shows_where_the_chain_breaks(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with start_control_plane(tmp_path_factory.mktemp("ui-audit-tamper") / "server") as own:
        for n in range(3):
            own.make_user(f"member{n}", "viewer")
        entries = sorted(_api(own), key=lambda e: e["seq"])
        target = entries[2]["seq"]
        with sqlite3.connect(Path(own.home) / "keel.db") as db:
            db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = ?", (target,))
        with own.http() as api:
            verdict = api.get("/audit/verify").json()
        assert verdict["ok"] is False and verdict["first_bad_seq"] == target
        with open_page(browser, own.url) as page:
            log_in(page, own.url, own.admin_token)
            page.goto(f"{own.url}/audit")
            banner = page.locator("#verification")
            assert banner.get_attribute("data-ok") == "0"
            assert banner.get_attribute("data-first-bad") == str(target)
            assert verdict["reason"] in banner.inner_text()
            assert page.locator(f'#entries tr.bad[data-seq="{target}"] td.actor').inner_text() == (
                "mallory"
            )
            page.fill("input[name=actor]", "mallory")
            page.click("#audit-form button[type=submit]")
            page.wait_for_url("**actor=mallory*")
            assert page.locator("#entries tr[data-seq]").count() == 1
            screenshot(page, "audit-tampered")
