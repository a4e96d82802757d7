"""Pages in a real Chromium for the UI's tests: no request may leave for another host.

Playwright drives Debian's Chromium (``executable_path``), so no browser is
downloaded; the ``browser`` fixture (``tests/server/ui/conftest.py``) launches it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ARTIFACTS", "CHROMIUM", "log_in", "open_page", "screenshot"]


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Where screenshots are kept: a test artifact, never compared, never committed from here.
ARTIFACTS = Path(
    os.environ.get("KEEL_TEST_ARTIFACTS") or Path(__file__).parents[2] / ".test-artifacts"
)


@contextmanager
def open_page(browser: Any, server_url: str) -> Iterator[Any]:
    """A new page in its own context; on leaving, every request it made went to ``server_url``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    requests: list[str] = []
    opened.on("request", lambda request: requests.append(request.url))
    try:
        yield opened
    finally:
        context.close()
    server = urlsplit(server_url).netloc
    strangers = [url for url in requests if urlsplit(url).netloc != server]
    assert requests and not strangers, f"requests left the server: {strangers}"


def log_in(page: Any, server_url: str, token: str) -> None:
    """Log in through the login page, as a user would, and land on the experiments."""
    page.goto(f"{server_url}/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server_url}/experiments")


def screenshot(page: Any, name: str) -> Path:
    """Keep a full-page picture of ``page`` as ``<artifacts>/ui/<name>.png``."""
    path = ARTIFACTS / "ui" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
