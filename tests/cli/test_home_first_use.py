"""A home made on first use is the home ``keel init`` makes: same ``.gitignore``.

Each case runs the installed ``keel`` command (or a Python child) in a fresh
folder with ``KEEL_HOME`` unset, as a user starting a project would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _support.cli import keel_environ, run_keel


def _fresh(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def _initialised_gitignore(tmp_path: Path) -> str:
    folder = _fresh(tmp_path, "initialised")
    run_keel("init", cwd=folder, check=True)
    return (folder / ".keel" / ".gitignore").read_text()


def test_a_command_that_writes_in_a_fresh_folder_makes_the_gitignore_keel_init_makes(
    tmp_path: Path,
) -> None:
    folder = _fresh(tmp_path, "first-use")
    run_keel("experiments", "create", "first", cwd=folder, check=True)
    made = folder / ".keel" / ".gitignore"
    assert made.is_file(), "the home made on first use has no .gitignore"
    assert made.read_text() == _initialised_gitignore(tmp_path)


def test_the_first_run_logged_from_python_makes_the_gitignore_keel_init_makes(
    tmp_path: Path,
) -> None:
    folder = _fresh(tmp_path, "first-run")
    script = "import keel\nwith keel.start_run():\n    keel.log_metric('loss', 0.5)\n"
    subprocess.run(
        [sys.executable, "-c", script], cwd=folder, env=keel_environ(), check=True, timeout=120
    )
    made = folder / ".keel" / ".gitignore"
    assert made.is_file(), "the home made on first use has no .gitignore"
    assert made.read_text() == _initialised_gitignore(tmp_path)
