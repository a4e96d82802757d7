"""The deployments pages over the demo's home: routes, revisions, traffic and rollback.

The rollback test runs last in this module and puts back what the demo left.
"""

from __future__ import annotations

import html
from typing import Any

import httpx
import numpy as np
import pytest

from _support.browser import log_in, open_page, screenshot
from keel.predictions import ERRORS, read_predictions

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui-demo")]

DEPLOYMENT = "screening-api"


def _page(demo: Any, token: str | None = None) -> httpx.Client:
    return demo.server.pages(token)


def _current(demo: Any) -> dict[str, Any]:
    with demo.server.http() as api:
        answer = api.get(f"/deployments/{DEPLOYMENT}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def test_deployments_lists_routes_with_versions_and_weights(demo: Any) -> None:
    with _page(demo) as http:
        answer = http.get("/deployments")
    assert answer.status_code == 200, answer.text
    assert f'data-deployment="{DEPLOYMENT}"' in answer.text
    # the demo leaves the champion alias on version 2, serving all the traffic
    assert "screening@champion → v2 · 100%" in answer.text


def test_traffic_counts_match_the_prediction_log(demo: Any) -> None:
    with _page(demo) as http:
        answer = http.get(
            f"/ui/api/deployments/{DEPLOYMENT}/traffic", params={"since": "0", "buckets": "7"}
        )
    assert answer.status_code == 200, answer.text
    series = answer.json()
    rows = read_predictions(
        demo.server.artifacts_url, DEPLOYMENT, columns=["request_id", "time", "route"]
    )
    firsts: dict[str, int] = {}  # a request of many rows counts once, at its first row
    for request, ms, route in zip(
        rows.column("request_id").to_pylist(),
        rows.column("time").cast("int64").to_pylist(),
        rows.column("route").to_pylist(),
        strict=True,
    ):
        if route != "shadow":
            firsts[request] = min(firsts.get(request, ms), ms)
    failed = read_predictions(
        demo.server.artifacts_url, DEPLOYMENT, columns=["request_id"], dataset=ERRORS
    )
    assert series["total_requests"] == len(firsts) > 0
    assert series["total_errors"] == failed.num_rows > 0  # the bad candidate's failures
    slots = (np.array(list(firsts.values())) - series["start"]) // series["bucket_ms"]
    expected = np.bincount(slots, minlength=len(series["times"]))
    assert series["requests"] == expected.tolist()
    busy = [k for k, n in enumerate(series["requests"]) if n]
    assert all(series["p99"][k] is not None for k in busy)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "an hour ago"}, "since must be epoch milliseconds or ISO-8601"),
        ({"since": "0", "until": "later"}, "until must be epoch milliseconds or ISO-8601"),
    ],
)
def test_traffic_with_a_bad_time_is_a_400_saying_what_to_give(
    demo: Any, params: dict[str, str], message: str
) -> None:
    with _page(demo) as http:
        answer = http.get(f"/ui/api/deployments/{DEPLOYMENT}/traffic", params=params)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_unknown_deployment_is_a_404_page_and_404_json(demo: Any) -> None:
    with _page(demo) as http:
        page = http.get("/deployments/no-such-api")
        data = http.get("/ui/api/deployments/no-such-api/traffic", params={"since": "0"})
    assert page.status_code == 404
    assert "no deployment named 'no-such-api'" in html.unescape(page.text)
    assert data.status_code == 404
    assert "no-such-api" in data.json()["error"]


def test_viewer_sees_no_rollback_button_and_cannot_post_one(demo: Any) -> None:
    token = demo.server.make_user("deployments-page-viewer", "viewer")
    before = _current(demo)
    with _page(demo, token) as http:
        page = http.get(f"/deployments/{DEPLOYMENT}")
        assert page.status_code == 200
        assert 'data-revision="1"' in page.text
        assert "Roll back to this revision" not in page.text
        posted = http.post(
            f"/deployments/{DEPLOYMENT}/rollback",
            data={"revision": "1"},
            headers={"origin": demo.server.url},
        )
    assert posted.status_code == 403
    assert "lacks permission 'write'" in html.unescape(posted.text)
    assert _current(demo)["revision"] == before["revision"]


def test_cross_site_rollback_post_is_refused(demo: Any) -> None:
    before = _current(demo)
    with _page(demo) as http:
        assert "Roll back to this revision" in http.get(f"/deployments/{DEPLOYMENT}").text
        posted = http.post(
            f"/deployments/{DEPLOYMENT}/rollback",
            data={"revision": "1"},
            headers={"origin": "http://evil.example"},
        )
    assert posted.status_code == 403
    assert "evil.example" in posted.text
    assert _current(demo)["revision"] == before["revision"]


def test_rollback_from_the_page_changes_the_routes_in_the_store(demo: Any, browser: Any) -> None:
    left = _current(demo)  # what the demo left, put back at the end
    with demo.server.http() as api:
        revisions = api.get(f"/deployments/{DEPLOYMENT}/revisions").json()
    # a revision whose routes differ from the current ones: the canary of screening/2
    target = next(r for r in revisions if r["spec"]["routes"] != left["spec"]["routes"])
    try:
        with open_page(browser, demo.server.url) as page:
            log_in(page, demo.server.url, demo.server.admin_token)
            page.goto(f"{demo.server.url}/deployments/{DEPLOYMENT}")
            page.wait_for_selector("#traffic figure.chart[data-ready='1']")
            screenshot(page, "deployment")
            row = page.locator(f"#revisions tr[data-revision='{target['revision']}']")
            row.get_by_role("button", name="Roll back to this revision").click()
            page.wait_for_url(f"**/deployments/{DEPLOYMENT}?rolled_back_to={target['revision']}")
            notice = page.locator(".notice").inner_text()
            assert f"revision {target['revision']}" in notice
            now = _current(demo)
            assert now["revision"] == left["revision"] + 1
            assert now["spec"]["routes"] == target["spec"]["routes"]
            assert page.locator("#revision").inner_text() == str(now["revision"])
            weights = page.eval_on_selector_all(
                "#routes tr[data-weight]:not([data-role='shadow'])",
                "trs => trs.map(tr => +tr.dataset.weight)",
            )
            assert weights == [r["weight"] for r in target["spec"]["routes"]]
    finally:
        with demo.server.http() as api:
            back = api.post(f"/deployments/{DEPLOYMENT}/rollback", json={"to": left["revision"]})
            assert back.status_code == 200, back.text
    assert _current(demo)["spec"]["routes"] == left["spec"]["routes"]
