"""The automation pages on the demo's home: each policy's state, and its live timeline.

What the pages show is checked against what the API answers for the same policy
(``/api/v1/automation/...``, the library's history), never against a fixed list.
The demo's home is shared: these tests only read it.
"""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest

from _support.browser import log_in, open_page, screenshot

POLICY = "screening-loop"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui-demo")]


def _pages(demo: Any, token: str | None = None) -> httpx.Client:
    return demo.server.pages(token)


def _events(demo: Any) -> list[dict[str, Any]]:
    with demo.server.http() as api:
        answer = api.get("/automation/events", params={"policy": POLICY})
        assert answer.status_code == 200, answer.text
        return list(answer.json())


def test_overview_shows_each_policy_with_its_state(demo: Any) -> None:
    with demo.server.http() as api:
        listed = {p["name"]: p for p in api.get("/automation/policies").json()}
        state = api.get(f"/automation/policies/{POLICY}/state").json()
    last = _events(demo)[-1]
    with _pages(demo) as http:
        page = http.get("/automation")
    assert page.status_code == 200
    row = re.search(rf'<tr data-policy="{POLICY}">(.*?)</tr>', page.text, re.S)
    assert row is not None and set(listed) == {POLICY}
    cells = row.group(1)
    assert f">{state['state']}</span>" in cells
    assert f"kind-{last['kind']}" in cells
    assert ("running" if listed[POLICY]["enabled"] else "paused") in cells
    candidate = listed[POLICY]["candidate_version"]
    assert (f"screening/{candidate}" if candidate else "none") in cells


def test_policy_page_draws_every_event_newest_first(demo: Any) -> None:
    events = _events(demo)
    with _pages(demo) as http:
        page = http.get(f"/automation/{POLICY}")
    assert page.status_code == 200
    drawn = [int(i) for i in re.findall(r'<tr class="event[^"]*" data-event="(\d+)"', page.text)]
    assert drawn == [e["id"] for e in reversed(events)]
    assert f'data-after="{events[-1]["id"]}"' in page.text


def test_events_json_answers_the_events_after_an_id(demo: Any) -> None:
    events = _events(demo)
    middle = events[len(events) // 2]["id"]
    with _pages(demo) as http:
        answer = http.get(f"/ui/api/automation/{POLICY}/events", params={"after": middle})
        assert answer.status_code == 200
        body = answer.json()
        assert [e["id"] for e in body["events"]] == [e["id"] for e in events if e["id"] > middle]
        assert body["last"] == events[-1]["id"] and body["more"] is False
        assert len(body["rows"]) == len(body["events"])
        assert all(
            f'data-event="{e["id"]}"' in r
            for e, r in zip(body["events"], body["rows"], strict=True)
        )
        # nothing after the newest: the poll's usual answer
        none = http.get(f"/ui/api/automation/{POLICY}/events", params={"after": body["last"]})
        assert none.json()["events"] == [] and none.json()["last"] == body["last"]


def test_unknown_policy_is_a_404_page_and_a_404_json(demo: Any) -> None:
    with _pages(demo) as http:
        page = http.get("/automation/no-such-loop")
        assert page.status_code == 404
        assert "no automation policy 'no-such-loop'" in html.unescape(page.text)
        assert 'role="alert"' in page.text
        answer = http.get("/ui/api/automation/no-such-loop/events")
        assert answer.status_code == 404
        assert "no-such-loop" in answer.json()["error"]
        bad = http.get(f"/ui/api/automation/{POLICY}/events", params={"after": "yesterday"})
        assert bad.status_code in (400, 422)


def test_events_json_needs_a_session(demo: Any) -> None:
    with httpx.Client(base_url=demo.server.url, timeout=60.0) as http:
        answer = http.get(f"/ui/api/automation/{POLICY}/events")
        assert answer.status_code == 401


def _timeline(page: Any) -> list[dict[str, Any]]:
    return list(
        page.evaluate(
            """() => Array.from(document.querySelectorAll('#timeline tbody tr[data-event]'))
                 .map(r => ({id: Number(r.dataset.event), kind: r.dataset.kind,
                             reason: r.querySelector('td.reason').textContent}))"""
        )
    )


def test_timeline_in_chromium_shows_promotion_and_rollback_and_stays_live(
    browser: Any, demo: Any
) -> None:
    events = _events(demo)
    promoted = [e for e in events if e["kind"] == "promoted"]
    rolled = [e for e in events if e["kind"] == "rolled_back"]
    assert promoted and rolled  # what the demo leaves behind
    expected = [{"id": e["id"], "kind": e["kind"], "reason": e["reason"]} for e in reversed(events)]
    url = demo.server.url
    with open_page(browser, url) as page:
        log_in(page, url, demo.server.admin_token)
        page.click("nav >> text=Automation")
        page.click(f"#policies >> text={POLICY}")
        page.wait_for_selector("#timeline[data-polls]")  # the first poll came back
        assert _timeline(page) == expected
        # newest first: the roll back (the demo's last decision) above the promotion
        kinds = [row["kind"] for row in _timeline(page)]
        assert kinds.index("rolled_back") < kinds.index("promoted")
        assert page.locator("#timeline-status").inner_text() == "(live)"
        screenshot(page, "automation")

        # take the three newest rows away and rewind the page to before them: the next
        # poll must draw them again, in place and in order, from the JSON
        keep = expected[3]["id"]
        page.evaluate(
            """(keep) => { const t = document.getElementById('timeline');
                 t.querySelectorAll('tbody tr[data-event]').forEach(r => {
                   if (Number(r.dataset.event) > keep) { r.remove(); } });
                 t.dataset.after = String(keep); }""",
            keep,
        )
        assert len(_timeline(page)) == len(expected) - 3
        page.evaluate("() => window.keelTimeline.poll()")
        page.wait_for_function(
            f"() => document.querySelectorAll('#timeline tbody tr[data-event]').length === "
            f"{len(expected)}"
        )
        assert _timeline(page) == expected
        details = page.locator(f'#timeline tr[data-event="{promoted[-1]["id"]}"] details')
        details.locator("summary").click()
        assert "live" in details.inner_text()  # the canary's numbers behind the promotion
