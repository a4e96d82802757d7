"""Reading never creates a home: run in the wrong folder, a command says where it looked.

Every case runs the installed ``keel`` command in a folder with no ``.keel``
above it and ``KEEL_HOME`` unset, as a newcomer's typo would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from _support.cli import keel_command, keel_environ

#: One of each kind of read: listings, lookups by name or id, lineage, the audit chain.
READ_COMMANDS = [
    ("runs", "list"),
    ("runs", "search", "metrics.acc > 0.9"),
    ("runs", "show", "0123456789ab"),
    ("experiments", "list"),
    ("models", "list"),
    ("models", "show", "wine"),
    ("models", "versions", "wine"),
    ("data", "list"),
    ("data", "show", "wine@1"),
    ("lineage", "show", "models:/wine/1"),
    ("audit", "verify"),
    ("policy", "list"),
    ("models", "list", "--json"),
]


@pytest.fixture
def stray(tmp_path: Path) -> Path:
    """An empty folder with no Keel home in it or above it."""
    folder = tmp_path / "not-my-project"
    folder.mkdir()
    assert not any((p / ".keel").exists() for p in (folder, *folder.parents)), (
        "a .keel folder above the test's temporary folder would hide what this test checks"
    )
    return folder


def test_read_commands_outside_a_home_fail_saying_where_they_looked(stray: Path):
    # Started together: each is a separate process, and none may create anything.
    running = [
        (
            args,
            subprocess.Popen(
                keel_command(*args),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=stray,
                env=keel_environ(),
            ),
        )
        for args in READ_COMMANDS
    ]
    for args, process in running:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 1, (args, stdout, stderr)
        assert stdout == "", args
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (args, stderr)
        assert lines[0].startswith("error: no Keel home here: "), (args, stderr)
        assert f"looked for .keel in {stray} and every folder above it" in lines[0], args
        assert "run `keel init`" in lines[0] and "KEEL_HOME" in lines[0], args
    assert list(stray.iterdir()) == []


def test_a_read_command_does_not_create_the_home_keel_home_names(stray: Path, run_keel):
    missing = stray / "typo-home"
    result = run_keel("models", "list", cwd=stray, env={"KEEL_HOME": str(missing)})
    assert result.returncode == 1
    assert f"error: no Keel home at {missing} (named by KEEL_HOME or --home)" in result.stderr
    assert "run `keel init` to create it there" in result.stderr
    assert not missing.exists()

    via_option = run_keel("--home", str(missing), "runs", "search", "metrics.acc > 0", cwd=stray)
    assert via_option.returncode == 1 and f"no Keel home at {missing}" in via_option.stderr
    assert not missing.exists()


def test_keel_init_creates_the_home_keel_home_names_as_the_message_says(stray: Path, run_keel):
    home = stray / "team-home"
    made = run_keel("init", cwd=stray, env={"KEEL_HOME": str(home)})
    assert made.returncode == 0, made.stderr
    assert (home / "keel.db").is_file() and not (stray / ".keel").exists()
    listed = run_keel("models", "list", cwd=stray, env={"KEEL_HOME": str(home)})
    assert listed.returncode == 0, listed.stderr
    assert "No registered models yet" in listed.stdout


def test_write_commands_still_create_the_home_on_first_use(stray: Path, run_keel):
    made = run_keel("experiments", "create", "first", cwd=stray)
    assert made.returncode == 0, made.stderr
    assert (stray / ".keel" / "keel.db").is_file()
    listed = run_keel("experiments", "list", "--json", cwd=stray)
    assert listed.returncode == 0, listed.stderr
    assert '"name": "first"' in listed.stdout


def test_help_of_a_read_command_works_anywhere_and_creates_nothing(stray: Path, run_keel):
    result = run_keel("runs", "search", "--help", cwd=stray)
    assert result.returncode == 0, result.stderr
    assert "FILTER" in result.stdout
    assert list(stray.iterdir()) == []
