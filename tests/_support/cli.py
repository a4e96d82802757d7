"""The installed ``keel`` command as a child process, run as users run it.

Every child gets this process's environment without its ``KEEL_*`` variables, so
a developer's settings never reach a test; a test names the home and the store it
means (``settings=``) and any other variable (``env=``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.config import Settings

#: The console script next to the interpreter running the tests: the entry point users run.
KEEL = Path(sys.executable).with_name("keel")

#: Seconds a command may take before the test fails with its output so far; a command
#: that hangs (a server that should have refused to start) fails instead of stalling.
TIMEOUT = 120.0


def keel_command(*args: str) -> list[str]:
    """The argument list that runs ``keel *args``, for ``subprocess.Popen``."""
    return [str(KEEL), *args]


def keel_environ(settings: Settings | None = None, **variables: str) -> dict[str, str]:
    """The environment of a ``keel`` child process.

    Args:
        settings: When given, the child opens this home (``KEEL_HOME``) and metadata
            store (``KEEL_STORE_URL``), or goes through the server they name
            (``KEEL_SERVER_URL`` and ``KEEL_TOKEN``).
        **variables: Further variables for the child, e.g. ``KEEL_USER="alice"``.

    Returns:
        This process's environment without its ``KEEL_*`` variables, plus the above.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    if settings is not None:
        environ.update(KEEL_HOME=str(settings.home))
        if settings.server_url:
            environ.update(KEEL_SERVER_URL=settings.server_url, KEEL_TOKEN=settings.token or "")
        else:
            environ.update(KEEL_STORE_URL=settings.store_url)
    environ.update(variables)
    return environ


def run_keel(
    *args: str,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
    check: bool = False,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``keel *args`` to completion and capture its output as text.

    Args:
        *args: The command line after ``keel``.
        settings: The home and store the child opens (see ``keel_environ``).
        env: Further variables for the child, on top of the clean environment.
        cwd: The child's working directory (default: the test's, its temporary folder).
        input: Text written to the child's standard input.
        check: Raise ``subprocess.CalledProcessError`` on a non-zero exit.
        timeout: Seconds before the child is killed and ``subprocess.TimeoutExpired`` raised.

    Returns:
        The finished process: ``returncode``, ``stdout`` and ``stderr``.
    """
    return subprocess.run(
        keel_command(*args),
        env=keel_environ(settings, **(env or {})),
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )
