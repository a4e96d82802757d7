"""The OpenAI-compatible stand-in upstream (:mod:`keel.demo.upstream`) in a process of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tests._support.network import free_port


@dataclass
class Upstream:
    """A running stand-in: ``base_url`` is what an OpenAI client or a gateway provider takes."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def control(self, model: str, **behaviour: Any) -> dict[str, Any]:
        """Change what ``model`` does from now on (latency_ms, fail_rate, usage, rules …)."""
        answer = httpx.post(f"{self.url}/control", json={"model": model, **behaviour})
        answer.raise_for_status()
        return dict(answer.json())

    def requests(self, model: str | None = None) -> int:
        """Requests the stand-in received (for ``model``, or in all)."""
        counts = httpx.get(f"{self.url}/stats").json()["requests"]
        return int(counts.get(model, 0) if model else sum(counts.values()))


@contextmanager
def start_upstream(
    models: dict[str, dict[str, Any]] | None = None, log: Path | None = None
) -> Iterator[Upstream]:
    """Run the stand-in on a free loopback port until the block ends.

    ``models`` maps model names to behaviours (see ``keel.demo.upstream.Behaviour``).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    spec = json.dumps(models or {"stand-in": {}})
    command = [sys.executable, "-m", "keel.demo.upstream", "--port", str(port), "--models", spec]
    sink = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the stand-in upstream exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the stand-in upstream did not start in 30 s")
            time.sleep(0.05)
        yield Upstream(url, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if log:
            sink.close()  # type: ignore[union-attr]
