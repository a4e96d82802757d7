"""The OpenAI-compatible stand-in upstream (:mod:`keel.demo.upstream`) and the Keel gateway,
each in a process of its own."""

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

from _support.network import free_port


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


@dataclass
class Gateway:
    """A running ``keel gateway start``: ``base_url`` is what an OpenAI client takes."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the process to exit; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=timeout)
        return int(self.process.returncode)

    def output(self) -> str:
        """What the process printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def start_gateway(
    config_path: Path, env: dict[str, str], *, log: Path | None = None, timeout: float = 90.0
) -> Iterator[Gateway]:
    """Run ``keel gateway start --config config_path`` on a free loopback port until the block ends.

    ``env`` is the child's whole environment (``keel_environ(settings)`` gives one on a
    test's home); the block starts once ``/health`` answers.
    """
    from _support.cli import keel_command

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = log or config_path.with_name(f"gateway-{port}.log")
    command = keel_command("gateway", "start", "--config", str(config_path), "--port", str(port))
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    gateway = Gateway(url, process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"keel gateway exited with {process.returncode}: {gateway.output()}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"keel gateway did not start in {timeout} s: {gateway.output()}")
            time.sleep(0.05)
        yield gateway
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_traces(
    root: str | Path,
    partition: str,
    request_ids: list[str],
    timeout: float = 60.0,
    *,
    s3_endpoint_url: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The trace rows of ``request_ids`` in ``partition``, once every one of them is written.

    The gateway's trace logger writes in the background (about once a second); this reads
    the ``traces`` dataset until all the ids are there.
    """
    from keel.predictions import TRACES, PredictionReader

    wanted = set(request_ids)
    deadline = time.monotonic() + timeout
    while True:
        reader = PredictionReader(str(root), s3_endpoint_url=s3_endpoint_url)
        table = reader.read(partition, dataset=TRACES)
        rows = {r["request_id"]: r for r in table.to_pylist() if r["request_id"] in wanted}
        if len(rows) == len(wanted):
            return rows
        if time.monotonic() > deadline:
            missing = sorted(wanted - set(rows))
            raise AssertionError(f"no trace in {partition!r} for request(s) {missing}")
        time.sleep(0.2)
