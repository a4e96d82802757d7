"""A real ``keel server`` process on a free port, with its first admin's token.

``start_control_plane`` runs ``keel server init-admin`` and ``keel server start``
as users run them (the installed command, in a child process), waits for
``/ready``, and stops the process when the context ends. Tests then act through
:func:`client_settings` (an http-transport client) or plain HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from _support.cli import keel_command, keel_environ, run_keel
from _support.network import free_port

__all__ = ["ControlPlane", "start_control_plane"]


@dataclass
class ControlPlane:
    """A running server: its URL, the admin's token, the process and its home."""

    url: str
    admin_token: str
    process: subprocess.Popen[bytes]
    home: Path
    store_url: str
    artifacts_url: str

    def http(self, token: str | None = None) -> httpx.Client:
        """An HTTP client on ``/api/v1`` with ``token`` (default: the admin's; "" for none)."""
        token = self.admin_token if token is None else token
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=60.0)

    def pages(self, token: str | None = None) -> httpx.Client:
        """An HTTP client of the web UI, logged in as ``token`` (default: the admin's).

        It sends the session cookie the login page sets and does not follow redirects,
        so a test sees a page's own answer (a 303 to the login page, a 403 …).
        """
        http = httpx.Client(base_url=self.url, timeout=120.0, follow_redirects=False)
        http.cookies.set("keel_session", self.admin_token if token is None else token)
        return http

    def make_user(self, name: str, *roles: str, scopes: list[str] | None = None) -> str:
        """Create ``name`` with global ``roles`` and return a new token of theirs."""
        with self.http() as http:
            answer = http.post("/users", json={"name": name, "roles": list(roles)})
            assert answer.status_code == 201, answer.text
            answer = http.post("/tokens", json={"user": name, "scopes": scopes})
            assert answer.status_code == 201, answer.text
            return str(answer.json()["token"])

    def settings(self, home: Path, token: str | None = None):  # type: ignore[no-untyped-def]
        """Make this process's Keel a client of the server (``keel.init(server=…)``)."""
        import keel

        return keel.init(home=home, server_url=self.url, token=token or self.admin_token)

    def environ(self, token: str | None = None, **variables: str) -> dict[str, str]:
        """The environment of a ``keel`` child process that works through this server."""
        return keel_environ(
            KEEL_SERVER_URL=self.url, KEEL_TOKEN=token or self.admin_token, **variables
        )


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keel server exited with {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"keel server did not become ready in {timeout} s: {log.read_text()}")


@contextmanager
def start_control_plane(
    home: Path,
    *,
    store_url: str | None = None,
    artifacts_url: str | None = None,
    s3_endpoint_url: str | None = None,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Iterator[ControlPlane]:
    """Run a real ``keel server`` on a free loopback port until the block ends."""
    home.mkdir(parents=True, exist_ok=True)
    store_url = store_url or f"sqlite:///{home / 'keel.db'}"
    artifacts_url = artifacts_url or str(home / "artifacts")
    env = keel_environ(KEEL_HOME=str(home), **(extra_env or {}))
    if s3_endpoint_url:
        env["KEEL_S3_ENDPOINT_URL"] = s3_endpoint_url
    made = run_keel("server", "init-admin", "--store", store_url, "--json", env=env, check=True)
    token = json.loads(made.stdout)["token"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = home / "server.log"
    args = [
        "server", "start", "--port", str(port), "--store", store_url,
        "--artifacts", artifacts_url, "--workers", str(workers),
    ]  # fmt: skip
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            keel_command(*args), env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(url, process, log, timeout=60.0)
        yield ControlPlane(url, token, process, home, store_url, artifacts_url)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
