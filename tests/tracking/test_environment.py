"""Environment capture: interpreter, packages, git state, command line, seeds.

Runs record their environment on each mode (``any_env``: SQLite, PostgreSQL, and
through keel server, where the client captures its own and sends it with the run).
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import numpy as np

import keel
from keel.tracking.environment import capture_git


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    (repo / "train.py").write_text("print('v1')\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "v1")
    return repo


def test_git_state_tracks_commit_and_uncommitted_changes(tmp_path: Path):
    repo = _repo(tmp_path)
    clean = capture_git(repo)
    assert clean is not None and not clean.dirty and clean.diff_digest is None
    (repo / "train.py").write_text("print('v2')\n")
    edited = capture_git(repo)
    assert edited is not None and edited.dirty and edited.commit == clean.commit
    (repo / "train.py").write_text("print('v3')\n")
    other = capture_git(repo)
    assert other is not None and other.diff_digest != edited.diff_digest
    (repo / "train.py").write_text("print('v1')\n")
    (repo / "new.py").write_text("x = 1\n")  # untracked files count too
    untracked = capture_git(repo)
    assert untracked is not None and untracked.dirty


def test_runs_record_environment_git_command_and_seeds(any_env, tmp_path: Path, monkeypatch):
    repo = _repo(tmp_path)
    monkeypatch.chdir(repo)  # the run's code is the repo's: git state is read where it runs
    keel.seed_everything(42)
    first = random.random(), np.random.rand()
    with keel.start_run() as run:
        keel.seed_everything(7)
    keel.seed_everything(42)
    assert (random.random(), np.random.rand()) == first
    env = keel.Client().get_environment(run.id)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    assert env["git_commit"] == head and env["git_dirty"] is False
    assert env["seeds"]["python"] == 7 and env["seeds"]["numpy"] == 7
    assert any(d.startswith("numpy==") for d in env["distributions"])
    assert env["python_version"] and env["platform"] and env["command"]
    assert len(env["environment_digest"]) == 64
    (repo / "train.py").write_text("print('v2')\n")  # uncommitted work: the run says which
    with keel.start_run() as edited:
        pass
    dirty = keel.Client().get_environment(edited.id)
    assert dirty["git_commit"] == head and dirty["git_dirty"] is True
    here = capture_git(repo)
    assert here is not None and here.diff_digest is not None
    assert dirty["git_diff_digest"] == here.diff_digest


def test_runs_in_the_same_environment_share_one_environment_row(any_env):
    with keel.start_run() as a:
        pass
    with keel.start_run() as b:
        pass
    client = keel.Client()
    assert (
        client.get_environment(a.id)["environment_digest"]
        == client.get_environment(b.id)["environment_digest"]
    )


def test_distributions_read_from_folder_names_match_the_installed_metadata():
    import re
    from importlib import metadata

    from keel.tracking.environment import _distributions

    expected = {
        f"{re.sub(r'[-_.]+', '-', d.metadata['Name']).lower()}=={d.version}"
        for d in metadata.distributions()
        if d.metadata["Name"]
    }
    assert set(_distributions()) == expected
    assert any(entry.startswith("keel==") for entry in _distributions())  # the editable install
