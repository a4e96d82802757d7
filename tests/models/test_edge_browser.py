"""The browser bundle of ``keel models export --edge`` in a real headless Chromium.

The exported ``web/`` folder is served by Python's ``http.server`` on a free port, as
a user would host it; every request the page makes must go to that server (nothing
from a CDN), and ``window.keelPredict`` must give the real server's classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import keel
from _support.browser import CHROMIUM, open_page
from _support.edge import (
    StaticSite,
    json_records,
    register_cancer,
    register_kind,
)
from _support.serving import Server
from keel.errors import NotFound
from keel.models.edge import export_edge
from keel.models.edge.web import FETCH_COMMAND, find_web_runtime

pytest.importorskip("skl2onnx", reason="compiling to ONNX needs pip install 'keel[compile]'")
pytest.importorskip("skops", reason="scikit-learn packages need skops")

ROWS = 100


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright; skips, saying why, when it or onnxruntime-web is missing."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (dev extra)"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    try:
        find_web_runtime()
    except NotFound:
        pytest.skip(f"onnxruntime-web is not fetched ({FETCH_COMMAND})")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _server_predictions(name: str, records: list[dict[str, Any]]) -> list[Any]:
    import httpx

    from keel.serving.server import app_for_target

    app = app_for_target(f"models:/{name}@champion", runtime="native", log_predictions=False)
    with Server(app) as server:
        answer = httpx.post(
            f"{server.url}/invocations", json={"dataframe_records": records}, timeout=60
        )
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hist_gradient_boosting", "column_transformer"])
def test_the_browser_bundle_gives_the_servers_classes_for_100_rows(
    kind, sqlite_env, breast_cancer, browser, tmp_path
):
    x, y = breast_cancer
    name, rows = register_kind(kind, x, y)
    sample = rows.sample(ROWS, random_state=11)
    records = json_records(sample)
    bundle = export_edge(f"{name}@champion", tmp_path / "edge")

    with StaticSite(bundle.path / "web") as site, open_page(browser, site.url) as page:
        page.goto(f"{site.url}/index.html")
        answer = page.evaluate("records => window.keelPredict(records)", records)
        status = page.evaluate(
            "() => window.keelModel().then(() => document.getElementById('status').textContent)"
        )
        one_by_one = page.evaluate(
            "async records => { const out = [];"
            " for (const r of records) out.push((await window.keelPredict([r])).predictions[0]);"
            " return out; }",
            records[:10],
        )
    assert answer["predictions"] == _server_predictions(name, records)
    assert one_by_one == answer["predictions"][:10]
    native = keel.load_model(f"models:/{name}@champion")
    assert answer["classes"] == np.asarray(native.classes_).tolist()
    gap = np.max(np.abs(np.asarray(answer["probabilities"]) - native.predict_proba(sample)))
    assert gap <= 1e-5
    assert f"{name} version 1 (SHA-256 verified" in status


def test_the_page_predicts_what_is_typed_into_it(sqlite_env, breast_cancer, browser, tmp_path):
    from playwright.sync_api import expect

    x, y = breast_cancer
    register_cancer(x, y)
    bundle = export_edge("cancer@champion", tmp_path / "edge")
    with StaticSite(bundle.path / "web") as site, open_page(browser, site.url) as page:
        page.goto(f"{site.url}/index.html")
        expect(page.locator("#records")).not_to_have_value("")
        example = page.input_value("#records")
        page.click("#predict")
        expect(page.locator("#predictions")).to_contain_text("predictions")
        shown = page.text_content("#predictions")
    native = keel.load_model("models:/cancer@champion")
    assert '"mean radius"' in example
    assert f'"predictions": [\n    {native.predict(x.head(5)).tolist()[0]}' in str(shown)


def test_the_page_refuses_a_changed_model(sqlite_env, breast_cancer, browser, tmp_path):
    x, y = breast_cancer
    register_cancer(x, y)
    bundle = export_edge("cancer@champion", tmp_path / "edge")
    model = bundle.path / "web" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0x01
    model.write_bytes(bytes(data))
    with StaticSite(bundle.path / "web") as site, open_page(browser, site.url) as page:
        page.goto(f"{site.url}/index.html")
        error = page.evaluate(
            "records => window.keelPredict(records).then(() => 'answered', e => e.message)",
            json_records(x.head(1)),
        )
    assert error.startswith("model.onnx was changed after it was exported: its SHA-256 is ")
