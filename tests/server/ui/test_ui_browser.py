"""The web UI in a real Chromium against a real ``keel server``: log in, filter, open a run, see its chart.

Playwright drives Debian's Chromium (``executable_path``); no browser is downloaded.
Every request the pages make is recorded, and each must go to the server itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from _support.browser import log_in, open_page, screenshot


@pytest.fixture
def page(browser: Any, seeded: Any) -> Iterator[Any]:
    with open_page(browser, seeded.server.url) as opened:
        yield opened


def _log_in(page: Any, seeded: Any, token: str) -> None:
    log_in(page, seeded.server.url, token)


def _run_names(page: Any) -> list[str]:
    return sorted(page.locator("#runs tbody tr[data-run] td:first-child").all_inner_texts())


def test_login_filter_and_run_chart(page: Any, seeded: Any) -> None:
    url = seeded.server.url
    _log_in(page, seeded, seeded.server.admin_token)
    page.click("text=churn")
    page.wait_for_selector("#runs")
    assert _run_names(page) == ["fast", "slow"]

    page.fill("#filter", "params.lr = '0.1'")
    page.fill("#columns", "params.lr,metrics.loss")
    page.click("#runs-form button[type=submit]")
    page.wait_for_load_state()
    assert _run_names(page) == ["fast"]
    assert "params.lr" in page.locator("#runs thead").inner_text()

    page.fill("#filter", "params.lr = = 3")
    page.click("#runs-form button[type=submit]")
    page.wait_for_selector("#filter-error")
    assert "expected" in page.locator("#filter-error").inner_text()

    # the chosen columns come back from localStorage on a bare visit
    page.goto(f"{url}/experiments/{seeded.experiment_id}")
    page.wait_for_url("**columns=*")
    assert "metrics.loss" in page.locator("#runs thead").inner_text()

    page.click("text=fast")
    page.wait_for_selector("figure.chart[data-ready='1'] canvas")
    canvas_size = page.evaluate(
        "() => document.querySelector('figure.chart canvas').toDataURL().length"
    )
    blank_size = page.evaluate(
        """() => { const c = document.querySelector('figure.chart canvas');
                   const b = document.createElement('canvas'); b.width = c.width;
                   b.height = c.height; return b.toDataURL().length; }"""
    )
    assert canvas_size > blank_size + 1_000  # something was drawn on it
    drawn = page.evaluate(
        """() => { const c = document.querySelector('figure.chart canvas');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let inked = 0; for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) inked++; }
                   return inked; }"""
    )
    assert drawn > 500
    scale = page.evaluate(
        "() => { const s = window.keelCharts.loss.scales.x; return [s.min, s.max]; }"
    )
    assert scale == [0, 4_999]
    assert "5000 points" in page.locator("figure.chart .note").inner_text()
    assert page.locator("#params").inner_text().count("0.1") == 1

    # a drag zooms in: the chart asks the server again for that step range, exactly
    box = page.locator("figure.chart .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    page.wait_for_function("() => window.keelCharts.loss.scales.x.max < 3000")
    low, high = page.evaluate(
        "() => { const s = window.keelCharts.loss.scales.x; return [s.min, s.max]; }"
    )
    assert 1_500 < low < high < 3_000
    assert "drawn" not in page.locator("figure.chart .note").inner_text()  # exact points
    # a double-click zooms back out to the whole series
    page.dblclick("figure.chart .u-over")
    page.wait_for_function("() => window.keelCharts.loss.scales.x.max === 4999")
    assert screenshot(page, "run").stat().st_size > 10_000


def test_a_viewer_sees_the_runs(page: Any, seeded: Any) -> None:
    token = seeded.server.make_user("vic", "viewer")
    _log_in(page, seeded, token)
    page.goto(f"{seeded.server.url}/experiments/{seeded.experiment_id}")
    assert _run_names(page) == ["fast", "slow"]


def test_no_session_is_sent_to_login(page: Any, seeded: Any) -> None:
    page.goto(f"{seeded.server.url}/runs/{seeded.run_ids['fast']}")
    assert urlsplit(page.url).path == "/login"
    assert page.locator("#token").is_visible()
