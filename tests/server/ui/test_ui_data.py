"""The data pages against a real server: datasets, versions, a version's profile and a diff.

Two versions of a small table are logged through the http transport; what the
pages show is compared with the library's profile of each version.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

import keel.data
from _support.browser import log_in, open_page, screenshot
from _support.control_plane import ControlPlane, start_control_plane
from keel.config import Settings, load_settings
from keel.data.profiling.profiles import Profile


@dataclass
class Served:
    server: ControlPlane
    settings: Settings


def _table(rows: int, shift: float, extra: bool) -> pa.Table:
    rng = np.random.default_rng(7)
    columns: dict[str, Any] = {
        "x": rng.normal(10.0 + shift, 2.0, rows),
        "city": [["paris", "lyon", "nice"][i % 3] for i in range(rows)],
    }
    if extra:
        columns["score"] = np.arange(rows, dtype=np.int64)
    return pa.table(columns)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("ui-data")
    with start_control_plane(home / "server") as server:
        settings = load_settings(
            home=home / "client", server_url=server.url, token=server.admin_token
        )
        keel.data.log_dataset(_table(100, 0.0, False), "tiny", settings=settings)
        keel.data.log_dataset(_table(150, 3.0, True), "tiny", settings=settings)
        yield Served(server, settings)


def _pages(served: Served) -> httpx.Client:
    return served.server.pages()


def _profile(served: Served, ref: str) -> Profile:
    doc = keel.data.get_profile(ref, settings=served.settings)
    assert doc is not None
    return Profile.from_dict(doc)


def _cell(page: str, column: str, stat: str) -> str:
    row = re.search(
        rf'<tr data-column="{column}">(.*?)</tr>\s*(?=<tr data-column|</tbody>)', page, re.S
    )
    assert row is not None, f"no row for {column}"
    found = re.search(rf'data-stat="{stat}">(.*?)</td>', row.group(1), re.S)
    assert found is not None, f"no {stat} for {column}"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def test_datasets_and_versions_pages_list_what_the_catalog_holds(served: Served) -> None:
    versions = keel.data.list_versions("tiny", settings=served.settings)
    with _pages(served) as http:
        listing = http.get("/data")
        assert listing.status_code == 200
        row = re.search(r'<tr data-dataset="tiny">(.*?)</tr>', listing.text, re.S)
        assert row is not None
        assert f">{versions[-1].version}</a>" in row.group(1)
        assert f'class="count num">{len(versions)}<' in row.group(1)
        page = http.get("/data/tiny")
    assert page.status_code == 200
    drawn = re.findall(r'<tr data-version="(\d+)">.*?class="num rows">(\d*)<', page.text, re.S)
    assert drawn == [(str(v.version), str(v.num_rows)) for v in reversed(versions)]
    for v in versions:
        assert v.digest[:12] in page.text


def test_version_page_shows_the_profile_of_that_version(served: Served) -> None:
    profile = _profile(served, "tiny@2")
    with _pages(served) as http:
        page = http.get("/data/tiny/versions/2")
    assert page.status_code == 200
    text = page.text
    assert f"{profile.rows} rows profiled" in text and profile.rows == 150
    x = profile["x"]
    summary = x.summary()
    for stat in ("min", "max", "mean", "std"):
        assert _cell(text, "x", stat) == f"{summary[stat]:.5g}"
    assert _cell(text, "x", "rows") == str(x.rows)
    assert _cell(text, "x", "missing") == str(x.missing)
    assert _cell(text, "city", "distinct") == str(profile["city"].summary()["distinct"])
    # the histogram's bars hold every value of the column
    row = re.search(r'<tr data-column="x">(.*?)</tr>', text, re.S)
    assert row is not None
    counts = [int(c) for c in re.findall(r'<span data-count="(\d+)"', row.group(1))]
    assert len(counts) > 10 and sum(counts) == x.count
    assert max(counts) > min(counts)  # equal-width bins of a normal sample are not flat


def test_diff_page_shows_added_rows_new_column_and_shifted_stats(served: Served) -> None:
    old, new = _profile(served, "tiny@1"), _profile(served, "tiny@2")
    with _pages(served) as http:
        page = http.get("/data/tiny/diff", params={"a": "1", "b": "2"})
    assert page.status_code == 200
    text = page.text
    assert re.search(r'id="rows-added">\+50<', text)
    changes = re.search(r'<table class="grid" id="schema-changes">(.*?)</table>', text, re.S)
    assert changes is not None and '<tr data-column="score"><td>score</td><td>added</td>' in (
        changes.group(1)
    )
    mean = _cell(text, "x", "mean")
    assert mean == f"{old['x'].summary()['mean']:.5g} → {new['x'].summary()['mean']:.5g}"
    shift = (new["x"].mean - old["x"].mean) / old["x"].std
    assert _cell(text, "x", "shift") == f"{shift:+.2f}"
    assert _cell(text, "x", "rows") == "100 → 150"
    assert "1 changed" in text  # the table's one Parquet file differs


def test_bad_dataset_references_answer_404_and_400_pages(served: Served) -> None:
    with _pages(served) as http:
        unknown = http.get("/data/no-such-data")
        assert unknown.status_code == 404
        assert "no dataset named 'no-such-data'" in html.unescape(unknown.text)
        missing = http.get("/data/tiny/versions/9")
        assert missing.status_code == 404
        assert "has no version 9" in missing.text
        bad = http.get("/data/tiny/versions/latest")
        assert bad.status_code == 400
        assert "a dataset version is a number from 1, got &#39;latest&#39;" in bad.text
        diff = http.get("/data/tiny/diff", params={"a": "one", "b": "2"})
        assert diff.status_code == 400
        assert 'role="alert"' in diff.text


@pytest.mark.slow
def test_version_profile_in_chromium(browser: Any, served: Served, tmp_path: Path) -> None:
    url = served.server.url
    with open_page(browser, url) as page:
        log_in(page, url, served.server.admin_token)
        page.goto(f"{url}/data")
        page.click("#datasets >> text=tiny")
        page.click('#versions tr[data-version="2"] >> text=2')
        page.wait_for_selector("#profile")
        heights = page.evaluate(
            """() => Array.from(document.querySelectorAll('tr[data-column="x"] .bars span'))
                 .map(s => s.getBoundingClientRect().height)"""
        )
        assert max(heights) > 40 and min(heights) >= 1  # drawn, tallest near the box's 48px
        screenshot(page, "dataset-version")
        page.goto(f"{url}/data/tiny/diff?a=1&b=2")
        assert page.locator("#rows-added").inner_text() == "+50"
        screenshot(page, "dataset-diff")
