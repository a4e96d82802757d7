"""Comparing runs, a run's artifacts with their previews, and a run's lineage, in the web UI.

A real ``keel server`` (the ``seeded`` fixture) holds two runs, ``fast`` (lr 0.1) and
``slow`` (lr 0.01), both with model rf; this module logs artifacts of every kind the
previews know to ``fast`` through the http client. Pages are read over HTTP with a
session cookie, and driven in a real Chromium.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import keel
from _support.browser import log_in, open_page, screenshot
from keel.config import load_settings
from keel.transport.http import HttpTransport

#: Rows of the logged CSV and Parquet tables.
ROWS = 250


def _png(width: int, height: int) -> bytes:
    """A real RGB PNG (a gradient), written with zlib."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 90))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@dataclass
class Logged:
    """The run the artifacts were logged to, and the server."""

    server: Any
    run_id: str
    experiment_id: int
    client: keel.Client


@pytest.fixture(scope="module")
def logged(seeded: Any, tmp_path_factory: pytest.TempPathFactory) -> Logged:
    folder = tmp_path_factory.mktemp("artifacts")
    settings = load_settings(
        home=folder / "home", server_url=seeded.server.url, token=seeded.server.admin_token
    )
    client = keel.Client(transport=HttpTransport(settings))
    run_id = seeded.run_ids["fast"]
    files = folder / "files"
    (files / "plots").mkdir(parents=True)
    (files / "data").mkdir()
    (files / "notes").mkdir()
    (files / "plots" / "curve.png").write_bytes(_png(48, 32))
    (files / "plots" / "shape.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
        '<script>window.parent.owned = 1</script><rect width="40" height="20" fill="teal"/></svg>'
    )
    ids = np.arange(ROWS)
    table = pa.table({"id": ids, "score": ids / 10.0, "label": [f"row-{i}" for i in range(ROWS)]})
    pq.write_table(table, files / "data" / "table.parquet", row_group_size=60)
    lines = ["id,score,label", *(f"{i},{i / 10.0},row-{i}" for i in range(ROWS))]
    (files / "data" / "table.csv").write_text("\n".join(lines) + "\n")
    (files / "config.json").write_text('{"lr": 0.1, "layers": [64, 32], "name": "fast"}')
    (files / "notes" / "big.txt").write_text("line of the log\n" * 30_000)  # ~450 KB
    (files / "notes" / "small.txt").write_text("<b>not markup</b>\nsecond line\n")
    (files / "report.html").write_text(
        "<html><body><h1 id='report'>Drift report</h1>"
        "<script>document.getElementById('report').textContent = 'drawn by script';"
        "try { parent.document.title = 'owned'; } catch (e) {}</script></body></html>"
    )
    (files / "weights.bin").write_bytes(bytes(range(256)))
    client.log_artifacts(run_id, files)
    return Logged(seeded.server, run_id, seeded.experiment_id, client)


@contextmanager
def _session(server: Any, token: str | None = None) -> Iterator[httpx.Client]:
    with server.pages(token) as http:
        yield http


def _stats(client: keel.Client, run_id: str, key: str) -> tuple[str, str, str]:
    values = [m.value for m in client.get_metric_history(run_id, key)]
    return f"{min(values):.6g}", f"{max(values):.6g}", f"{values[-1]:.6g}"


# -- compare over HTTP ---------------------------------------------------------------------


def test_compare_shows_only_differing_params_and_min_max_last(seeded: Any, logged: Logged) -> None:
    fast, slow = seeded.run_ids["fast"], seeded.run_ids["slow"]
    with _session(seeded.server) as http:
        page = http.get("/compare", params={"runs": f"{fast},{slow}"})
    assert page.status_code == 200, page.text
    text = page.text
    diff = text[text.index('id="param-diff"') : text.index('id="metric-stats"')]
    assert 'data-key="lr"' in diff and 'data-key="model"' not in diff
    assert diff.count('class="differs"') == 2
    assert "0.1" in diff and "0.01" in diff
    for run_id in (fast, slow):
        low, high, last = _stats(logged.client, run_id, "loss")
        row = text[text.index(f'data-key="loss" data-run="{run_id}"') :]
        row = row[: row.index("</tr>")]
        assert f'<td class="min">{low}</td>' in row
        assert f'<td class="max">{high}</td>' in row
        assert f'<td class="last">{last}</td>' in row
        assert '<td class="points">5000</td>' in row
    assert low != high  # the stats are not one number shown three times


def test_compare_chart_json_answers_every_run_in_one_request(seeded: Any) -> None:
    fast, slow = seeded.run_ids["fast"], seeded.run_ids["slow"]
    with _session(seeded.server) as http:
        whole = http.get(
            "/ui/api/compare/metrics/loss", params={"runs": f"{fast},{slow}", "width": 100}
        ).json()
        assert [r["run"] for r in whole["runs"]] == [fast, slow]
        assert [r["name"] for r in whole["runs"]] == ["fast", "slow"]
        assert all(r["points"] == 5_000 and not r["exact"] for r in whole["runs"])
        assert all(len(r["steps"]) <= 200 for r in whole["runs"])
        assert whole["range"] == [0, 4_999] and whole["key"] == "loss"
        zoom = http.get(
            "/ui/api/compare/metrics/loss",
            params={"runs": f"{fast},{slow}", "width": 100, "start": 100, "end": 149},
        ).json()
        assert zoom["range"] == [100, 149]
        assert all(r["exact"] and r["steps"] == list(range(100, 150)) for r in zoom["runs"])
        timed = http.get(
            "/ui/api/compare/metrics/loss", params={"runs": fast, "width": 50, "x": "time"}
        ).json()
        assert timed["x"] == "time" and timed["runs"][0]["x"] == "time"


def test_compare_refuses_more_than_100_runs(seeded: Any) -> None:
    ids = ",".join(f"{i:032x}" for i in range(101))
    with _session(seeded.server) as http:
        page = http.get("/compare", params={"runs": ids})
        assert page.status_code == 400
        assert "up to 100 runs, got 101" in page.text and 'class="error"' in page.text
        answer = http.get("/ui/api/compare/metrics/loss", params={"runs": ids})
        assert answer.status_code == 400 and "up to 100 runs" in answer.json()["error"]
        assert http.get("/compare").status_code == 400  # no runs at all: said, not a 500


# -- artifacts over HTTP -------------------------------------------------------------------


def test_artifact_folders_list_sizes_and_a_breadcrumb(logged: Logged) -> None:
    base = f"/runs/{logged.run_id}/artifacts"
    with _session(logged.server) as http:
        root = http.get(base)
        assert root.status_code == 200
        for folder in ("plots/", "data/", "notes/"):
            assert f">{folder}</a>" in root.text
        size = (len(_png(48, 32)) + len(http.get(
            f"/ui/api/runs/{logged.run_id}/artifacts/raw", params={"path": "plots/shape.svg"}
        ).content))  # fmt: skip
        assert 'data-path="plots"' in root.text and f'data-bytes="{size}"' in root.text
        plots = http.get(base, params={"path": "plots"})
        assert "curve.png" in plots.text and "table.csv" not in plots.text
        assert f'href="/runs/{logged.run_id}/artifacts">artifacts</a>' in plots.text
        a_file = http.get(base, params={"path": "plots/curve.png"})
        assert a_file.status_code == 303 and "/artifacts/view?" in a_file.headers["location"]
        assert http.get(base, params={"path": "nothing/here"}).status_code == 404


def test_artifact_path_escape_is_a_400_with_the_reason(logged: Logged) -> None:
    with _session(logged.server) as http:
        for route in ("", "/view"):
            page = http.get(
                f"/runs/{logged.run_id}/artifacts{route}", params={"path": "../../keel.db"}
            )
            assert page.status_code == 400
            assert "must be relative and stay inside the folder" in page.text
            assert "&#39;..&#39; segment" in page.text
        raw = http.get(
            f"/ui/api/runs/{logged.run_id}/artifacts/raw", params={"path": "plots/../../x"}
        )
        assert raw.status_code == 400 and "'..' segment" in raw.json()["error"]


def test_table_previews_page_csv_and_parquet(logged: Logged) -> None:
    view = f"/runs/{logged.run_id}/artifacts/view"
    with _session(logged.server) as http:
        for name in ("data/table.csv", "data/table.parquet"):
            first = http.get(view, params={"path": name}).text
            assert f"Rows 1 to 100 of {ROWS}" in first and "3 columns" in first
            assert "<th>id</th><th>score</th><th>label</th>" in first
            assert "<td>row-99</td>" in first and "<td>row-100</td>" not in first
            last = http.get(view, params={"path": name, "page": 3}).text
            assert f"Rows 201 to {ROWS} of {ROWS}" in last
            assert "<td>row-200</td>" in last and f"<td>row-{ROWS - 1}</td>" in last
            assert 'rel="next"' not in last and 'rel="prev"' in last
            assert "<td>24.9</td>" in last  # score 249 / 10, a float cell


def test_json_and_text_previews(logged: Logged) -> None:
    view = f"/runs/{logged.run_id}/artifacts/view"
    with _session(logged.server) as http:
        pretty = http.get(view, params={"path": "config.json"}).text
        assert '"layers": [\n    64,\n    32\n  ]' in pretty.replace("&#34;", '"')
        small = http.get(view, params={"path": "notes/small.txt"}).text
        assert "&lt;b&gt;not markup&lt;/b&gt;" in small and 'id="truncated"' not in small
        big = http.get(view, params={"path": "notes/big.txt"}).text
        assert 'id="truncated"' in big
        shown = big[big.index('id="preview-text">') : big.index("</pre>")]
        assert 200_000 < len(shown) < 270_000  # the first 256 KiB, not the whole 450 KB


def test_raw_artifacts_never_run_as_this_servers_pages(logged: Logged) -> None:
    raw = f"/ui/api/runs/{logged.run_id}/artifacts/raw"
    with _session(logged.server) as http:
        png = http.get(raw, params={"path": "plots/curve.png"})
        assert png.content == _png(48, 32) and png.headers["content-type"] == "image/png"
        svg = http.get(raw, params={"path": "plots/shape.svg"})
        assert svg.headers["content-type"] == "image/svg+xml"
        report = http.get(raw, params={"path": "report.html"})
        assert report.headers["content-type"].startswith("text/html")
        assert report.headers["content-security-policy"].startswith("sandbox allow-scripts;")
        assert "connect-src" not in report.headers["content-security-policy"]  # default 'none'
        text = http.get(raw, params={"path": "notes/small.txt"})
        assert text.headers["content-type"].startswith("text/plain")
        binary = http.get(raw, params={"path": "weights.bin"})
        assert binary.headers["content-type"] == "application/octet-stream"
        assert binary.headers["content-disposition"].startswith("attachment;")
        assert binary.content == bytes(range(256))
        for answer in (png, svg, report, text, binary):
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["content-security-policy"].startswith("sandbox")
            assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert http.get(raw, params={"path": "plots"}).status_code == 400  # a folder
        assert http.get(raw, params={"path": "plots/none.png"}).status_code == 404
    with httpx.Client(base_url=logged.server.url) as anonymous:
        assert anonymous.get(raw, params={"path": "config.json"}).status_code == 401


def test_html_report_is_shown_in_a_sandboxed_frame(logged: Logged) -> None:
    with _session(logged.server) as http:
        page = http.get(
            f"/runs/{logged.run_id}/artifacts/view", params={"path": "report.html"}
        ).text
    frame = page[page.index("<iframe") : page.index("</iframe>")]
    assert 'sandbox="allow-scripts"' in frame and "allow-same-origin" not in frame
    assert "Drift report" not in page  # the report's markup is never part of the page


def test_a_viewer_without_read_on_the_experiment_gets_403(seeded: Any, logged: Logged) -> None:
    token = seeded.server.make_user("elsewhere")
    with seeded.server.http() as admin:
        granted = admin.post(
            "/roles",
            json={"user": "elsewhere", "role": "viewer", "scope_kind": "experiment",
                  "scope_name": "another"},
        )  # fmt: skip
        assert granted.status_code == 200, granted.text
    fast, slow = seeded.run_ids["fast"], seeded.run_ids["slow"]
    with _session(seeded.server, token) as http:
        for path, params in (
            (f"/runs/{fast}/artifacts", {}),
            (f"/runs/{fast}/artifacts/view", {"path": "config.json"}),
            ("/compare", {"runs": f"{fast},{slow}"}),
        ):
            page = http.get(path, params=params)
            assert page.status_code == 403, path
            assert "lacks permission 'read'" in page.text.replace("&#39;", "'")
        for path, params in (
            (f"/ui/api/runs/{fast}/artifacts/raw", {"path": "config.json"}),
            ("/ui/api/compare/metrics/loss", {"runs": f"{fast},{slow}"}),
        ):
            answer = http.get(path, params=params)
            assert answer.status_code == 403 and "lacks permission" in answer.json()["error"]


def test_run_page_links_its_artifacts_and_says_what_lineage_it_lacks(logged: Logged) -> None:
    with _session(logged.server) as http:
        page = http.get(f"/runs/{logged.run_id}").text
    assert f'href="/runs/{logged.run_id}/artifacts"' in page
    assert 'id="inputs"' in page and "No dataset versions recorded" in page
    assert "Nothing recorded downstream of this run" in page


@pytest.mark.slow
@pytest.mark.xdist_group("ui-demo")
def test_run_page_shows_inputs_and_lineage_of_a_demo_run(demo: Any, tmp_path: Path) -> None:
    settings = load_settings(
        home=tmp_path, server_url=demo.server.url, token=demo.server.admin_token
    )
    client = keel.Client(transport=HttpTransport(settings))
    trained = client.get_model_version("screening", 1).run_id
    assert trained
    upstream = client.lineage.upstream(f"runs:/{trained}")
    reader = next(
        uri.removeprefix("runs:/")
        for uri in upstream.uris("run")
        if client.data.run_inputs(uri.removeprefix("runs:/"))
    )
    dataset = client.data.run_inputs(reader)[0]
    with _session(demo.server) as http:
        page = http.get(f"/runs/{trained}").text
        read = http.get(f"/runs/{reader}").text
    down = page[page.index('id="downstream"') :]
    assert 'href="/models/screening/versions/1"' in down
    up = page[page.index('id="upstream"') : page.index('id="downstream"')]
    assert f'data-uri="runs:/{reader}"' in up and f'href="/runs/{reader}"' in up
    assert 'data-uri="datasets:/screening@' in up
    inputs = read[read.index('id="inputs"') : read.index('id="upstream"')]
    assert f'href="/data/{dataset.name}/versions/{dataset.version}"' in inputs
    assert f"{dataset.name}@{dataset.version}" in inputs


# -- in the browser ------------------------------------------------------------------------


@pytest.fixture
def page(browser: Any, seeded: Any) -> Iterator[Any]:
    with open_page(browser, seeded.server.url) as opened:
        yield opened


_INKED = """(selector) => { const c = document.querySelector(selector);
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let inked = 0; for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) inked++; }
    return inked; }"""


@pytest.mark.slow
def test_compare_two_runs_in_the_browser(page: Any, seeded: Any) -> None:
    url = seeded.server.url
    log_in(page, url, seeded.server.admin_token)
    page.goto(f"{url}/experiments/{seeded.experiment_id}")
    assert page.locator("#compare").is_disabled()
    for name in ("fast", "slow"):
        page.check(f"#runs input.pick[value='{seeded.run_ids[name]}']")
    page.click("#compare")
    page.wait_for_url("**/compare?runs=*")
    page.wait_for_selector("figure.chart[data-ready='1'] canvas")

    diff = page.locator("#param-diff")
    assert diff.locator("tr[data-key='lr'] td.differs").count() == 2
    assert diff.locator("tr[data-key='model']").count() == 0
    assert "model" not in diff.inner_text()

    chart = page.evaluate(
        """() => { const u = window.keelCharts.loss;
                   return { labels: u.series.slice(1).map(s => s.label), columns: u.data.length,
                            filled: u.data.slice(1).map(c => c.filter(v => v != null).length),
                            scale: [u.scales.x.min, u.scales.x.max] }; }"""
    )
    assert chart["labels"] == ["fast", "slow"] and chart["columns"] == 3
    assert all(count > 100 for count in chart["filled"])  # both series hold points
    assert chart["scale"] == [0, 4_999]
    assert page.evaluate(_INKED, "figure.chart canvas") > 500  # something was drawn
    legend = page.locator("figure.chart .u-legend").inner_text()
    assert "fast" in legend and "slow" in legend

    # a drag zooms every run's series to that range, in one request
    box = page.locator("figure.chart .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    page.wait_for_function("() => window.keelCharts.loss.scales.x.max < 3000")
    page.dblclick("figure.chart .u-over")
    page.wait_for_function("() => window.keelCharts.loss.scales.x.max === 4999")
    screenshot(page, "compare")

    # the x axis can count time: the chart is drawn again over the points' times
    page.check("#x-axis input[value='time']")
    page.wait_for_selector("figure.chart[data-x='time'][data-ready='1']")
    timed = page.evaluate(
        "() => { const u = window.keelCharts.loss; return [u.scales.x.time, u.series[0].label]; }"
    )
    assert timed == [True, "time"]  # a time scale now (the seeded points' times are their steps)


@pytest.mark.slow
def test_image_and_csv_previews_in_the_browser(page: Any, logged: Logged) -> None:
    url = logged.server.url
    log_in(page, url, logged.server.admin_token)
    page.goto(f"{url}/runs/{logged.run_id}")
    page.click("#artifacts-link")
    page.click("text=plots/")
    page.click("text=curve.png")
    page.wait_for_function(
        "() => { const i = document.getElementById('preview-image'); "
        "return i && i.complete && i.naturalWidth > 0; }"
    )
    assert page.evaluate("() => document.getElementById('preview-image').naturalWidth") == 48
    page.goto(f"{url}/runs/{logged.run_id}/artifacts/view?path=plots/shape.svg")
    page.wait_for_function(
        "() => { const i = document.getElementById('preview-image'); "
        "return i && i.complete && i.naturalWidth > 0; }"
    )
    assert page.evaluate("() => window.owned") is None  # the SVG's script never ran

    page.goto(f"{url}/runs/{logged.run_id}/artifacts?path=data")
    page.click("text=table.csv")
    headers = page.locator("#preview-table thead th").all_inner_texts()
    assert headers == ["#", "id", "score", "label"]
    assert page.locator("#preview-table tbody tr").count() == 100
    assert f"of {ROWS}" in page.locator("#table-count").inner_text()
    screenshot(page, "artifacts-csv")
    page.click("a[rel=next]")
    page.wait_for_url("**page=2*")
    first = page.locator("#preview-table tbody tr").first.inner_text()
    assert first.split("\t")[:2] == ["101", "100"]


@pytest.mark.slow
def test_html_report_runs_only_inside_its_sandbox(page: Any, logged: Logged) -> None:
    url = logged.server.url
    log_in(page, url, logged.server.admin_token)
    page.goto(f"{url}/runs/{logged.run_id}/artifacts/view?path=report.html")
    frame = page.frame_locator("#preview-frame")
    assert frame.locator("#report").inner_text() == "drawn by script"
    assert page.title() != "owned"  # the report could not reach the page around it
    assert page.get_attribute("#preview-frame", "sandbox") == "allow-scripts"
    assert json.loads(page.evaluate("() => JSON.stringify(document.cookie)")) == ""
