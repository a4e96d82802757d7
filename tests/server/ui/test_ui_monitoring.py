"""The monitoring pages over the demo's home: drift per window, alerts, bad input."""

from __future__ import annotations

import html
from typing import Any

import httpx
import pytest

from _support.browser import log_in, open_page, screenshot
from keel.predictions import read_predictions

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui-demo")]

DEPLOYMENT = "screening-api"
#: The feature the scenario splits its populations on: the clinic's tumours are the larger ones.
SHIFTED = ["input.mean area", "input.mean radius", "input.mean perimeter", "input.worst area"]
#: A shape measure, not a size: the clinic's cases do not move it (checked below per window).
UNSHIFTED = "input.mean fractal dimension"


def _page(demo: Any, token: str | None = None) -> httpx.Client:
    return demo.server.pages(token)


def _phases(demo: Any) -> tuple[int, int]:
    """The first routine request's time and the first shifted one's (epoch ms), from the log."""
    rows = read_predictions(
        demo.server.artifacts_url, DEPLOYMENT, columns=["request_id", "time"]
    ).to_pylist()
    first = {}
    for row in rows:
        phase = row["request_id"].split("-")[0]
        ms = int(row["time"].timestamp() * 1000)
        first[phase] = min(first.get(phase, ms), ms)
    return first["routine"], first["shift"]


def test_monitoring_lists_the_demo_deployment_with_its_drift_and_alerts(demo: Any) -> None:
    with _page(demo) as http:
        answer = http.get("/monitoring")
    assert answer.status_code == 200, answer.text
    assert f'data-deployment="{DEPLOYMENT}"' in answer.text
    with demo.server.http() as api:
        latest = api.get(f"/deployments/{DEPLOYMENT}/monitor-runs", params={"limit": 1}).json()[0]
    assert f"{100 * latest['share_drifted']:.0f}%" in answer.text


def test_heatmap_marks_the_shifted_features_and_not_the_unshifted_before_the_shift(
    demo: Any, browser: Any
) -> None:
    routine, shift = _phases(demo)
    # the first window holds exactly the traffic before the shift
    query = f"start={routine}&window={(shift - routine) / 1000}"
    with open_page(browser, demo.server.url) as page:
        log_in(page, demo.server.url, demo.server.admin_token)
        page.goto(f"{demo.server.url}/monitoring/{DEPLOYMENT}?{query}")
        page.wait_for_selector("#heatmap[data-ready='1']")
        page.wait_for_selector("#traffic figure.chart[data-ready='1']")
        screenshot(page, "monitoring")
        windows = page.eval_on_selector_all(
            "#heatmap thead th[data-start]",
            "ths => ths.map(t => ({end: +t.dataset.end, rows: +t.dataset.rows}))",
        )
        drifted = page.eval_on_selector_all(
            "#heatmap tbody tr",
            "trs => Object.fromEntries(trs.map(tr => [tr.dataset.column,"
            " [...tr.querySelectorAll('td')].map(td => td.dataset.drifted === '1')]))",
        )
        coloured = page.eval_on_selector_all(
            "#heatmap td[data-score]:not(.empty)",
            "tds => tds.filter(td => td.style.background).length",
        )
        assert page.locator("#no-labels").is_visible()  # the demo sends no labels
    before = [k for k, w in enumerate(windows) if w["rows"] and w["end"] <= shift]
    after = [k for k, w in enumerate(windows) if w["rows"] and w["end"] > shift]
    assert before and after, windows
    assert coloured > 0
    for feature in SHIFTED:
        assert any(drifted[feature][k] for k in after), (feature, drifted[feature])
        assert not any(drifted[feature][k] for k in before), (feature, drifted[feature])
    assert not any(drifted[UNSHIFTED][k] for k in before), drifted[UNSHIFTED]


def test_heatmap_of_one_version_shows_only_its_rows(demo: Any) -> None:
    with _page(demo) as http:
        answer = http.get(f"/monitoring/{DEPLOYMENT}", params={"version": "3"})
    assert answer.status_code == 200, answer.text
    versions = {part.split('"')[0] for part in answer.text.split('data-version="')[1:]}
    assert versions <= {"", "screening/3"} and "screening/3" in versions


def test_monitoring_of_an_unknown_deployment_is_a_404_page(demo: Any) -> None:
    with _page(demo) as http:
        answer = http.get("/monitoring/no-such-api")
    assert answer.status_code == 404
    assert "no deployment named 'no-such-api'" in html.unescape(answer.text)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"version": "latest"}, "version must be a model version number"),
        ({"window": "soon"}, "window must be like"),
        ({"start": "yesterday"}, "start must be epoch milliseconds or ISO-8601"),
    ],
)
def test_monitoring_bad_input_is_a_400_page_saying_what_to_give(
    demo: Any, query: dict[str, str], message: str
) -> None:
    with _page(demo) as http:
        answer = http.get(f"/monitoring/{DEPLOYMENT}", params=query)
    assert answer.status_code == 400
    assert message in html.unescape(answer.text)
    assert 'role="alert"' in answer.text
