"""The fast paths of a run's start and end, and the search: they must never answer wrong.

The git state is cached while the repository is unchanged (see
``keel.tracking.gitstate``); these tests change a real repository between
captures in every way that must show (a commit, a checkout, an edit that
keeps the size and the time, a new file where only ignored files lived) and
check the answer is git's. Captures use a short "racy" window and wait it out
first, so that answers are really cached and the cache, not git, is tested.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import keel
from keel.errors import Conflict
from keel.home import init_home
from keel.tracking import gitstate
from keel.tracking.entities import Metric
from keel.tracking.gitstate import GitCapture, GitState

#: Short enough to wait out in a test, longer than a file system's clock tick.
WINDOW_NS = 50_000_000


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def _settle() -> None:
    """Let every change made so far age past the racy window, so the next capture is kept."""
    time.sleep(2 * WINDOW_NS / 1e9)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "build").mkdir()
    (root / "venv" / "lib").mkdir(parents=True)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    (root / ".gitignore").write_text("build/*.o\nvenv/\n")
    (root / "src" / "train.py").write_text("print('v1')\n")
    (root / "build" / "x.o").write_text("object\n")
    (root / "venv" / "lib" / "site.py").write_text("installed\n")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "v1")
    return root


def _truth(root: Path) -> GitState | None:
    """What an uncached capture says: the reference every cached answer must equal."""
    return GitCapture(racy_window_ns=WINDOW_NS)(root)


def _warm(capture: GitCapture, root: Path) -> GitState | None:
    """Capture until the answer is cached, and check the next capture is a hit."""
    _settle()
    state = capture(root)
    hits = capture.hits
    assert capture(root) == state
    assert capture.hits == hits + 1, "an unchanged repository was not answered from the cache"
    return state


def test_an_unchanged_repository_is_answered_without_git(repo: Path):
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    state = _warm(capture, repo)
    misses = capture.misses
    for _ in range(5):
        assert capture(repo) == state
    assert capture.misses == misses
    assert state is not None and state.commit == _git(repo, "rev-parse", "HEAD")
    assert not state.dirty


def test_a_commit_between_captures_is_recorded(repo: Path):
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    first = _warm(capture, repo)
    (repo / "src" / "train.py").write_text("print('v2')\n")
    _git(repo, "commit", "-qam", "v2")
    second = capture(repo)
    assert first is not None and second is not None
    assert second.commit == _git(repo, "rev-parse", "HEAD") != first.commit
    assert not second.dirty


def test_a_commit_that_moves_only_the_branch_is_recorded(repo: Path):
    # An empty commit and a soft reset leave the index and the files alone: only the ref
    # (loose, or packed after `git pack-refs`) tells.
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    first = _warm(capture, repo)
    _git(repo, "commit", "-q", "--allow-empty", "-m", "empty")
    moved = capture(repo)
    assert moved is not None and moved.commit == _git(repo, "rev-parse", "HEAD") != first.commit  # type: ignore[union-attr]
    _git(repo, "pack-refs", "--all")
    _warm(capture, repo)
    _git(repo, "reset", "-q", "--soft", "HEAD~1")
    back = capture(repo)
    assert back == first


def test_a_checkout_of_another_branch_is_recorded(repo: Path):
    _git(repo, "checkout", "-qb", "other")
    (repo / "src" / "train.py").write_text("print('other')\n")
    _git(repo, "commit", "-qam", "other")
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    on_other = _warm(capture, repo)
    _git(repo, "checkout", "-q", "main")
    on_main = capture(repo)
    assert on_other is not None and on_main is not None
    assert on_main.commit == _git(repo, "rev-parse", "main") != on_other.commit


def test_a_detached_head_moving_is_recorded(repo: Path):
    first_commit = _git(repo, "rev-parse", "HEAD")
    (repo / "src" / "train.py").write_text("print('v2')\n")
    _git(repo, "commit", "-qam", "v2")
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    _warm(capture, repo)
    _git(repo, "checkout", "-q", "--detach", first_commit)
    state = capture(repo)
    assert state is not None and state.commit == first_commit


def test_editing_a_tracked_file_changes_the_dirty_digest(repo: Path):
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    assert _warm(capture, repo) == GitState(_git(repo, "rev-parse", "HEAD"), False, None)
    (repo / "src" / "train.py").write_text("print('v2')\n")
    edited = capture(repo)
    assert edited is not None and edited.dirty and edited == _truth(repo)
    warm_edited = _warm(capture, repo)
    (repo / "src" / "train.py").write_text("print('v3')\n")
    again = capture(repo)
    assert again is not None and again.diff_digest != warm_edited.diff_digest  # type: ignore[union-attr]
    assert again == _truth(repo)


def test_an_edit_that_keeps_size_and_modification_time_is_still_seen(repo: Path):
    target = repo / "src" / "train.py"
    before = target.stat()
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    clean = _warm(capture, repo)
    target.write_text("print('v9')\n")  # same length as v1
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime back
    assert target.stat().st_size == before.st_size
    assert target.stat().st_mtime_ns == before.st_mtime_ns
    edited = capture(repo)
    assert edited is not None and edited.dirty and edited != clean
    assert edited == _truth(repo)


def test_a_new_file_among_only_ignored_files_counts_as_untracked(repo: Path):
    # build/ holds nothing but ignored *.o files, so git lists it among the ignored; a new
    # file there is not ignored and must change the digest.
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    clean = _warm(capture, repo)
    (repo / "build" / "notes.txt").write_text("counts\n")
    state = capture(repo)
    assert state is not None and state.dirty and state != clean
    assert state == _truth(repo)


def test_a_new_untracked_folder_and_edits_inside_it_count(repo: Path):
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    _warm(capture, repo)
    (repo / "data" / "raw").mkdir(parents=True)
    (repo / "data" / "raw" / "prep.py").write_text("a = 1\n")
    added = capture(repo)
    assert added is not None and added.dirty and added == _truth(repo)
    warm = _warm(capture, repo)
    (repo / "data" / "raw" / "prep.py").write_text("a = 2\n")
    edited = capture(repo)
    assert edited is not None and edited.diff_digest != warm.diff_digest  # type: ignore[union-attr]
    assert edited == _truth(repo)


def test_files_in_an_ignored_folder_do_not_invalidate_the_cache(repo: Path):
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    state = _warm(capture, repo)
    misses = capture.misses
    (repo / "venv" / "lib" / "new_package.py").write_text("x = 1\n")
    (repo / "venv" / "bin").mkdir()
    assert capture(repo) == state == _truth(repo)
    assert capture.misses == misses


def test_a_new_ignore_rule_is_seen(repo: Path):
    (repo / "scratch.txt").write_text("notes\n")
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    dirty = _warm(capture, repo)
    assert dirty is not None and dirty.dirty
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("scratch.txt\n")
    state = capture(repo)
    assert state is not None and not state.dirty and state == _truth(repo)


def test_untracked_files_outside_the_working_folder_count(repo: Path):
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    inside = repo / "src"
    clean = _warm(capture, inside)
    (repo / "helper.py").write_text("y = 2\n")
    state = capture(inside)
    assert state is not None and state.dirty and state != clean
    assert state == capture(repo)


def test_a_recent_change_is_not_cached(repo: Path):
    capture = GitCapture(racy_window_ns=60_000_000_000)  # everything in this repo is "recent"
    first = capture(repo)
    second = capture(repo)
    assert first == second
    assert (capture.hits, capture.misses) == (0, 2)


def test_outside_a_repository_there_is_no_git_state_and_no_git_process(tmp_path: Path):
    capture = GitCapture()
    plain = tmp_path / "plain"
    plain.mkdir()
    assert capture(plain) is None
    assert (capture.hits, capture.misses) == (0, 0)


def test_a_repository_without_commits_gains_its_first(tmp_path: Path):
    root = tmp_path / "fresh"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    capture = GitCapture(racy_window_ns=WINDOW_NS)
    _settle()
    assert capture(root) is None
    (root / "a.py").write_text("a = 1\n")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "first")
    state = capture(root)
    assert state is not None and state.commit == _git(root, "rev-parse", "HEAD")


def test_runs_record_each_new_commit_and_edit(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.chdir(repo)
    monkeypatch.setattr(gitstate.git_capture, "racy_window_ns", WINDOW_NS)
    gitstate.git_capture.clear()
    keel.init(home=tmp_path / "home")
    client = keel.Client()

    def run_state() -> tuple[str, bool, str | None]:
        with keel.start_run() as run:
            pass
        env = client.get_environment(run.id)
        return env["git_commit"], env["git_dirty"], env["git_diff_digest"]

    _settle()
    first = run_state()
    hits = gitstate.git_capture.hits
    assert run_state() == first
    assert gitstate.git_capture.hits == hits + 1
    assert first == (_git(repo, "rev-parse", "HEAD"), False, None)

    (repo / "src" / "train.py").write_text("print('v2')\n")
    _git(repo, "commit", "-qam", "v2")
    committed = run_state()
    assert committed == (_git(repo, "rev-parse", "HEAD"), False, None) != first

    _settle()
    run_state()
    (repo / "src" / "train.py").write_text("print('v3')\n")
    edited = run_state()
    truth = _truth(repo)
    assert truth is not None and edited == (truth.commit, True, truth.diff_digest)


def test_a_keel_home_inside_the_repository_does_not_invalidate_the_cache(
    repo: Path, monkeypatch: pytest.MonkeyPatch
):
    # `keel init` makes .keel/ in the working folder: its database changes with every run,
    # but its own .gitignore ignores it all, so runs keep hitting the cache.
    monkeypatch.chdir(repo)
    monkeypatch.setattr(gitstate.git_capture, "racy_window_ns", WINDOW_NS)
    gitstate.git_capture.clear()
    home = init_home(repo)["home"]
    keel.init(home=home)
    with keel.start_run():
        keel.log_param("lr", 0.1)
    _settle()
    with keel.start_run():
        keel.log_param("lr", 0.2)
    misses = gitstate.git_capture.misses
    for n in range(3):
        with keel.start_run() as run:
            keel.log_param("lr", n)
            keel.log_dict({"n": n}, "n.json")
    assert gitstate.git_capture.misses == misses
    env = keel.Client().get_environment(run.id)
    assert env["git_dirty"] is False and env["git_commit"] == _git(repo, "rev-parse", "HEAD")


# -- one transaction per transition ---------------------------------------------------


def test_a_params_batch_with_one_conflicting_key_writes_nothing(keel_env):
    client = keel.Client()
    run = client.create_run(client.create_experiment("params"), capture=False)
    client.log_params(run.id, {"lr": 0.1, "depth": 3})
    client.log_params(run.id, {"lr": 0.1})  # the same value again is fine
    with pytest.raises(Conflict, match=r"param 'lr' .* is already '0\.1'"):
        client.log_params(run.id, {"batch": 32, "lr": 0.2, "seed": 7})
    assert client.get_run(run.id).params == {"depth": "3", "lr": "0.1"}
    client.log_params(run.id, {"batch": 32})
    assert client.get_run(run.id).params == {"batch": "32", "depth": "3", "lr": "0.1"}


def test_run_start_and_end_each_write_one_audit_entry(keel_env):
    from keel.governance import audit

    client = keel.Client()
    keel.set_experiment("audited")
    with keel.start_run(tags={"stage": "dev"}) as run:
        pass
    entries = audit.list_entries(client.store, object_type="run", object_id=run.id)
    assert [(e.action, e.before, e.after["status"]) for e in reversed(entries)] == [
        ("run.create", None, "RUNNING"),
        ("run.status", {"status": "RUNNING"}, "FINISHED"),
    ]
    info = client.get_run(run.id)
    assert info.info.status == "FINISHED" and info.info.end_time is not None
    assert info.tags == {"stage": "dev"}
    assert audit.verify(client.store).ok


def test_a_cached_experiment_id_that_vanished_is_looked_up_again(tmp_path: Path):
    keel.init(home=tmp_path / "home")
    keel.set_experiment("sweep")
    with keel.start_run():
        pass
    # The database is replaced under the process (a test fixture emptying it, a restore):
    # the remembered experiment id is gone.
    from keel.store import reset_stores

    reset_stores()
    (tmp_path / "home" / "keel.db").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / "home" / f"keel.db{suffix}").unlink(missing_ok=True)
    with keel.start_run() as run:
        keel.log_param("lr", 0.1)
    found = keel.Client().get_run(run.id)
    assert keel.Client().get_experiment(found.info.experiment_id).name == "sweep"


# -- loading search results -------------------------------------------------------------

EXACT = {
    "third": 0.30000000000000004,  # printed with 15 digits it would read 0.3
    "pi": 3.141592653589793,
    "big": 123456789.12345679,
    "tiny": 5e-324,
    "small": 8.924415426536159e-302,
    "inf": math.inf,
    "neg_inf": -math.inf,
    "nan": math.nan,
}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_search_returns_metric_values_bit_for_bit(keel_env):
    client = keel.Client()
    experiment = client.create_experiment("exact")
    run = client.create_run(experiment, capture=False)
    client.log_batch(
        run.id,
        metrics=[Metric(k, v, 0, 1) for k, v in EXACT.items()],
        params={"quote": 'it\'s "quoted"', "unicode": "naïve ✓", "number": 1e-7},
        tags={"empty_looking": "null", "json": "[1, 2]"},
    )
    found = client.search_runs([experiment]).runs[0]
    assert all(_same(found.metrics[k], v) for k, v in EXACT.items()), found.metrics
    assert found.params == {"number": "1e-07", "quote": 'it\'s "quoted"', "unicode": "naïve ✓"}
    assert found.tags == {"empty_looking": "null", "json": "[1, 2]"}
    frame = client.search_runs_frame([experiment])
    for key, value in EXACT.items():
        assert _same(frame[f"metrics.{key}"].iloc[0], value), key
    assert frame["params.quote"].iloc[0] == 'it\'s "quoted"'
    assert frame["tags.empty_looking"].iloc[0] == "null"


def test_a_large_page_keeps_its_order_and_each_runs_values(keel_env):
    client = keel.Client()
    experiment = client.create_experiment("large")
    expected = {}
    for n in range(700):  # more than one chunk of the old IN lists, in one parameter now
        run = client.create_run(experiment, capture=False)
        params = {"n": n, "model": ("rf", "gb", "lr")[n % 3]}
        if n % 7:
            params["odd"] = "yes"
        client.log_batch(run.id, metrics=[Metric("score", n / 7, 0, 1)], params=params)
        expected[run.id] = (n, params)
    frame = client.search_runs_frame(
        [experiment], "params.model != 'lr'", order_by="metrics.score DESC"
    )
    wanted = sorted(
        ((n, p) for n, p in expected.values() if p["model"] != "lr"), key=lambda x: -x[0]
    )
    assert list(frame["params.n"]) == [str(n) for n, _ in wanted]
    assert list(frame["metrics.score"]) == [n / 7 for n, _ in wanted]
    assert [None if pd.isna(v) else v for v in frame["params.odd"]] == [
        p.get("odd") for _, p in wanted
    ]
    pairs = zip(frame["run_id"], frame["params.n"], strict=True)
    assert all(expected[i][0] == int(n) for i, n in pairs)
    page = client.search_runs([experiment], "params.model = 'lr'", max_results=1000)
    assert [r.params["n"] for r in page] == [
        str(n) for n, p in sorted(expected.values(), key=lambda x: -x[0]) if p["model"] == "lr"
    ]
    assert all(r.metrics == {"score": int(r.params["n"]) / 7} for r in page)


def test_an_empty_search_has_the_run_columns_only(keel_env):
    client = keel.Client()
    experiment = client.create_experiment("empty")
    frame = client.search_runs_frame([experiment])
    assert list(frame.columns) == [
        "run_id",
        "experiment_id",
        "name",
        "status",
        "start_time",
        "end_time",
        "parent_id",
        "user",
    ]
    assert len(frame) == 0
