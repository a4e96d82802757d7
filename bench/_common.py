"""What the benchmarks share: a peer's interpreter and environment, and the report's end.

Peers (MLflow, Evidently, DVC) live in virtualenvs of their own beside the
repository (``make bench-venvs``), because their pins clash with Keel's.
The benchmarks run them as child processes with that interpreter.

A benchmark against a peer ends the same way whatever it measured: a table
of Keel's figure, the peer's and the speedup (:class:`Table`), then the
issue's targets, each met, MISSED or not measured (:func:`print_verdicts`),
or the same as JSON, and any search whose results differ between the tools
(:func:`finish`). Standard library only: peers' interpreters import it too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

__all__ = [
    "REPO",
    "Server",
    "Table",
    "clean_env",
    "dig",
    "finish",
    "fmt",
    "fmt_ratio",
    "peer_python",
    "peer_unavailable",
    "print_verdicts",
    "ratio",
    "search_mismatches",
]

Result = dict[str, Any]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``KEEL_*``/``MLFLOW_*`` overrides, writing bytecode;
    peers quiet and offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "MLFLOW_"))}
    # Bytecode as an installed package has it (pip compiles a wheel's modules): without
    # it, every process compiles Keel's editable sources again and start-up doubles.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        MLFLOW_LOGGING_LEVEL="WARNING",
        PYTHONWARNINGS="ignore",
    )
    env.update(extra)
    return env


def peer_python(venv: str, given: Path | None = None) -> Path | None:
    """The interpreter of ``<repo>/<venv>`` (or ``given``), as an absolute path; None if absent.

    Absolute, not resolved: a virtualenv's ``python`` is a symlink whose target
    would leave the virtualenv.
    """
    if given is not None:
        return given.absolute()
    for candidate in (REPO / venv / "bin" / "python", REPO / venv / "Scripts" / "python.exe"):
        if candidate.exists():
            return candidate
    return None


def peer_unavailable(python: Path | None, venv: str, modules: str) -> str | None:
    """Why the peer cannot run (no interpreter, or ``import <modules>`` fails), or None."""
    if python is None:
        return f"no {venv} interpreter (run `make bench-venvs` or pass its python)"
    if not python.exists():
        return f"{python} does not exist"
    probe = subprocess.run(
        [str(python), "-c", f"import {modules}"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"`import {modules}` failed under {python}: {last}"
    return None


# -- the report -----------------------------------------------------------------------------------


def dig(result: Result | None, *path: str) -> Any:
    """``result[path[0]][path[1]]…``, or None where any step is missing."""
    node: Any = result
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def ratio(keel: float | None, peer: float | None, higher_is_better: bool) -> float | None:
    """Keel's speedup: keel/peer for throughput, peer/keel for latency; None if either is missing."""
    if not keel or not peer:
        return None
    return keel / peer if higher_is_better else peer / keel


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}x"


class Table:
    """Rows of a label, Keel's figure, the peer's figure and the speedup, printed aligned."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, label: str, keel: str, peer: str, speedup: str = "") -> None:
        self.rows.append((label, keel, peer, speedup))

    def print(self, keel_name: str, peer_name: str) -> None:
        header = ("", keel_name, peer_name, "keel speedup")
        lines = [header, *self.rows]
        widths = [max(len(row[i]) for row in lines) for i in range(4)]
        for n, row in enumerate(lines):
            print(
                f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
                f"{row[3]:>{widths[3]}}".rstrip()
            )
            if n == 0:
                print("-" * (sum(widths) + 6))


def print_verdicts(
    targets: Mapping[str, bool | None], peer: str, skipped: str | None, notes: Sequence[str] = ()
) -> None:
    """The lines under the table: what the speedup means, a skipped peer, notes, the targets."""
    print()
    print(
        f"keel speedup: throughput keel/{peer}, latency {peer}/keel; above 1 means Keel is faster."
    )
    if skipped:
        print(f"{peer} was skipped: {skipped}.")
    for note in notes:
        print(note)
    verdicts = {True: "met", False: "MISSED", None: "not measured"}
    print(
        "Targets: " + "; ".join(f"{goal}: {verdicts[met]}" for goal, met in targets.items()) + "."
    )


def search_mismatches(keel: Result, peer: Result | None, names: Sequence[str]) -> list[str]:
    """Searches whose row count or sum of ``m1`` differ between the tools (same data)."""
    tool = dig(peer, "tool") or "the peer"
    problems = []
    for name in names:
        k = dig(keel, "search", "queries", name)
        m = dig(peer, "search", "queries", name)
        if k and m and (k["rows"], k["m1_sum"]) != (m["rows"], m["m1_sum"]):
            problems.append(
                f"{name}: keel returned {k['rows']} rows (sum m1 {k['m1_sum']}), "
                f"{tool} {m['rows']} rows (sum m1 {m['m1_sum']})"
            )
    return problems


def finish(
    as_json: bool,
    combined: Callable[[], Result],
    table: Callable[[], None],
    problems: Sequence[str],
) -> int:
    """Print the results (``combined()`` as JSON, or ``table()``), then mismatches; the exit code."""
    if as_json:
        print(json.dumps({**combined(), "mismatches": list(problems)}, indent=2))
    else:
        table()
    for problem in problems:
        print(f"MISMATCH between the tools' search results: {problem}", file=sys.stderr)
    return 1 if problems else 0


class Server:
    """A server process in its own session (so its children stop with it); output to a log file."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        cwd: Path,
        port: int,
        ready: str = "/ping",
    ) -> None:
        self.name = name
        self.port = port
        self.ready_path = ready
        self.log_path = cwd / f"{name}-server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> str | None:
        """None once GET ``ready_path`` answers 200, else why not."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return (
                    f"the {self.name} server exited with code {self.proc.returncode}: {self.tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return None
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        return (
            f"the {self.name} server did not answer GET {self.ready_path} "
            f"within {timeout:.0f} s: {self.tail()}"
        )

    def tail(self, lines: int = 5) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of every process in the server's session (Linux /proc)."""
        proc = Path("/proc")
        if not proc.is_dir():
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # After the command: state ppid pgrp session … utime (12th) stime (13th).
            if int(fields[3]) == self.proc.pid:
                total += int(fields[11]) + int(fields[12])
        return total / ticks

    def settle(self, timeout: float = 180.0) -> None:
        """Wait until the server is idle (under 5% of a core for half a second).

        A proxy that fell behind its load still works off the requests the
        generator gave up on; measuring the next path meanwhile would charge it
        for that work.
        """
        deadline = time.monotonic() + timeout
        before = self.cpu_seconds()
        while before is not None and time.monotonic() < deadline:
            time.sleep(0.5)
            after = self.cpu_seconds()
            if after is None or after - before < 0.025:
                return
            before = after
        if before is not None:
            print(
                f"    the {self.name} server was still busy {timeout:.0f} s after its load",
                file=sys.stderr,
                flush=True,
            )

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 30 s."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()
