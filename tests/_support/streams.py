"""``keel stream`` as a child process, and polling for what it should reach."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _support.cli import keel_command, keel_environ

__all__ = ["StreamProcess", "wait_for"]


class StreamProcess:
    """``keel stream …`` as a child process, output to a file (a pipe could fill and block it)."""

    def __init__(self, args: list[str], settings: Any, log: Path) -> None:
        self.log = log
        self._file = log.open("ab")
        self.proc = subprocess.Popen(
            keel_command("stream", *args),
            env=keel_environ(settings),
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, and the exit code once it is gone."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._file.close()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 120.0, *procs: Any) -> Any:
    """Poll ``condition`` until it is truthy; fail saying ``what`` (and a dead child's output)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for proc in procs:
            if not proc.alive():
                pytest.fail(f"keel stream exited while waiting for {what}:\n{proc.output()}")
        if time.monotonic() > deadline:
            outputs = "\n".join(p.output() for p in procs)
            pytest.fail(f"timed out waiting for {what}\n{outputs}")
        time.sleep(0.05)
