"""A real ``keel serve`` process for the demo, and clients sending it one-row requests.

The server runs as its own process on a free port (SIGTERM stops it and
flushes its prediction logs); traffic goes over HTTP with the Open Inference
Protocol v2, one row per request, from a few keep-alive connections.
"""

from __future__ import annotations

import collections
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from keel.errors import BackendUnavailable

__all__ = ["Server", "send_rows"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``keel serve DEPLOYMENT`` in a child process, stopped by :meth:`stop` (or the context).

    The child reads the home's settings; ``env`` adds ``KEEL_*`` (store and artifact URLs)
    and credentials on top.
    """

    def __init__(
        self, deployment: str, home: Path, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.deployment = deployment
        self.port = _free_port()
        self.url = f"127.0.0.1:{self.port}"
        child = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        child["KEEL_HOME"] = str(home)
        child.update(env or {})
        self._log = log.open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "keel.cli.main", "serve", deployment, "--port", str(self.port)],
            env=child,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.log_path = log

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BackendUnavailable(
                    f"the demo server exited with code {self._proc.returncode}; see {self.log_path}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BackendUnavailable(
            f"the demo server did not start in {timeout:.0f} s; see {self.log_path}"
        )

    def wait_routing(self, versions: set[int], timeout: float = 15.0) -> None:
        """Wait until the server routes exactly ``versions`` (it re-reads its deployment)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", f"/v2/models/{self.deployment}")
            doc = json.loads(conn.getresponse().read())
            if {int(v) for v in doc.get("versions", [])} == versions:
                return
            time.sleep(0.1)
        raise BackendUnavailable(f"the demo server did not route {sorted(versions)} in time")

    def stop(self) -> None:
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)  # a graceful stop flushes the logs
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()

    def __enter__(self) -> Server:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _body(names: list[str], row: list[Any], request_id: str) -> bytes:
    inputs = [
        {
            "name": name,
            "shape": [1],
            "datatype": "FP64",
            "data": [None if isinstance(v, float) and math.isnan(v) else float(v)],
        }
        for name, v in zip(names, row, strict=True)
    ]
    return json.dumps({"id": request_id, "inputs": inputs}).encode()


def send_rows(
    server: Server, frame: Any, prefix: str, connections: int = 4
) -> collections.Counter[int]:
    """POST each row of ``frame`` as one v2 request; returns the count of each HTTP status."""
    names = [str(c) for c in frame.columns]
    rows = frame.to_numpy().tolist()
    statuses: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    path = f"/v2/models/{server.deployment}/infer"

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        mine: collections.Counter[int] = collections.Counter()
        for n in range(k, len(rows), connections):
            body = _body(names, rows[n], f"{prefix}-{n}")
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            mine[response.status] += 1
        conn.close()
        with lock:
            statuses.update(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses
