"""The HTML report: one self-contained file that a real headless Chromium draws."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from keel.monitoring import DriftReport, compare


@pytest.fixture
def report() -> DriftReport:
    rng = np.random.default_rng(0)
    n = 2_000
    reference = {
        "age": rng.normal(40, 10, size=n),
        "income": rng.lognormal(10, 1, size=n),
        "plan": rng.choice(["free", "pro", "team"], size=n),
        "<img src=x onerror=alert(1)>": rng.normal(size=n),
    }
    current = {
        "age": rng.normal(45, 10, size=n),
        "income": rng.lognormal(10, 1, size=n),
        "plan": rng.choice(["free", "pro", "team", "enterprise"], size=n),
        "<img src=x onerror=alert(1)>": rng.normal(size=n),
    }
    return compare(reference, current)


def test_the_report_is_one_file_with_plotly_inline_and_no_remote_resources(
    report: DriftReport, tmp_path: Path
):
    path = tmp_path / "report.html"
    report.to_html(path, title="Weekly drift")
    text = path.read_text(encoding="utf-8")
    assert "<title>Weekly drift</title>" in text
    assert re.search(r"<script[^>]+src=", text) is None  # nothing to fetch
    assert "https://" not in text.split("<script>", 2)[2].split("</script>")[-1]
    assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js itself is inside
    assert "Dataset drift" in text and "age" in text
    # A column name is data: it is escaped in the page, never markup.
    assert "<img src=x onerror" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "enterprise" in text and list(tmp_path.iterdir()) == [path]  # no temporary left


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.mark.slow
def test_headless_chromium_draws_every_chart(report: DriftReport, tmp_path: Path):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium binary (apt-get install chromium) to render the report with")
    path = tmp_path / "report.html"
    report.to_html(path)
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    charts = len(report.columns)
    # Plotly marks each div it drew and adds its SVG layers; bars are <path> points.
    assert len(re.findall(r'class="[^"]*js-plotly-plot', dom)) == charts
    assert dom.count('class="main-svg"') >= charts
    assert len(re.findall(r'<g class="point">', dom)) >= charts * 4
    assert "Dataset drift detected" in dom or "Dataset drift not detected" in dom
