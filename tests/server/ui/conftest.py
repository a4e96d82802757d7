"""What the UI's tests share: real servers with data on them, and a real Chromium.

- ``seeded``: a ``keel server`` on SQLite with two runs logged through the client.
- ``demo``: ``keel demo``'s whole loop run once, then a server over its home. Tests
  that use it carry ``pytest.mark.xdist_group("ui-demo")``, so one worker runs them all
  and the demo runs once.
- ``browser`` and :func:`open_page`: Playwright drives Debian's Chromium
  (``executable_path``), with no browser download. Every request a page makes is
  recorded, and each must go to the server itself.
- :func:`screenshot` keeps a picture of a page as a test artifact (``KEEL_TEST_ARTIFACTS``,
  default ``.test-artifacts/`` at the repository's root, not committed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import keel
from _support.browser import CHROMIUM
from _support.cli import keel_environ, run_keel
from _support.control_plane import ControlPlane, start_control_plane
from keel.config import load_settings
from keel.tracking.entities import Metric
from keel.transport.http import HttpTransport

#: Steps of the ``loss`` metric each seeded run logs.
STEPS = 5_000


@dataclass
class Seeded:
    """The server, its experiment and the two runs logged to it."""

    server: ControlPlane
    experiment_id: int
    run_ids: dict[str, str]  # by run name


def _log(client: keel.Client, experiment_id: int, name: str, lr: str, shift: float) -> str:
    run = client.create_run(experiment_id, name, capture=True)
    points = [
        Metric("loss", math.exp(-step / 1_000) + shift + 0.01 * math.sin(step), step, step)
        for step in range(STEPS)
    ]
    client.log_batch(run.id, points, params={"lr": lr, "model": "rf"}, tags={"stage": "dev"})
    client.set_terminated(run.id)
    return run.id


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    home = tmp_path_factory.mktemp("ui-server")
    with start_control_plane(home / "server") as server:
        settings = load_settings(
            home=home / "client", server_url=server.url, token=server.admin_token
        )
        client = keel.Client(transport=HttpTransport(settings))
        experiment_id = client.create_experiment("churn")
        run_ids = {
            "fast": _log(client, experiment_id, "fast", "0.1", 0.0),
            "slow": _log(client, experiment_id, "slow", "0.01", 0.5),
        }
        yield Seeded(server, experiment_id, run_ids)


@dataclass
class Demo:
    """``keel demo``'s home, served by a real ``keel server`` on it."""

    server: ControlPlane
    home: Path


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo's whole loop, run once (about a minute), then a server over its home.

    The home holds what the pages show: dataset versions, runs, the screening model's
    three versions, the deployment's revisions, predictions with the documented shift,
    the policy's decisions (promoted, then rolled_back) and the audit log.
    """
    home = tmp_path_factory.mktemp("ui-demo") / "demo"
    result = run_keel("demo", "--home", str(home), env=keel_environ(), timeout=600.0)
    assert result.returncode == 0, result.stdout + result.stderr
    with start_control_plane(home) as server:
        yield Demo(server, home)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright; the test skips, saying why, when either is missing."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (dev extra)"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()
