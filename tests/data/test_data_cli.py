"""``keel data …`` as users run it: a real process in a fresh folder, real exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_add_status_diff_checkout_list_show_from_a_fresh_folder(tmp_path: Path, run_keel):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.csv").write_text("x\n1\n")
    (raw / "b.csv").write_text("x\n2\n")
    added = json.loads(ok(run_keel("data", "add", "raw", "--json", cwd=tmp_path)))
    assert (added["uri"], added["files"]) == ("datasets:/raw@1", 2)
    assert (tmp_path / ".keel").is_dir()

    (raw / "b.csv").write_text("x\n22\n")
    (raw / "c.csv").write_text("x\n3\n")
    (status,) = json.loads(ok(run_keel("data", "status", "--json", cwd=tmp_path)))
    assert (status["added"], status["changed"], status["removed"]) == (["c.csv"], ["b.csv"], [])
    human = ok(run_keel("data", "status", "raw", cwd=tmp_path))
    assert "1 added, 1 changed, 0 removed" in human and "M b.csv" in human

    ok(run_keel("data", "add", "raw", cwd=tmp_path))
    diff = json.loads(ok(run_keel("data", "diff", "raw@1", "raw@2", "--json", cwd=tmp_path)))
    assert diff == {"added": ["c.csv"], "removed": [], "changed": ["b.csv"]}

    ok(run_keel("data", "checkout", "raw@1", "old", cwd=tmp_path))
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["a.csv", "b.csv"]
    assert (tmp_path / "old" / "b.csv").read_text() == "x\n2\n"

    listed = json.loads(ok(run_keel("data", "list", "--json", cwd=tmp_path)))
    assert [(v["name"], v["version"]) for v in listed] == [("raw", 2)]
    versions = json.loads(ok(run_keel("data", "list", "raw", "--json", cwd=tmp_path)))
    assert [v["version"] for v in versions] == [1, 2]
    shown = json.loads(ok(run_keel("data", "show", "raw@1", "--json", cwd=tmp_path)))
    assert shown["digest"] == added["digest"]


def test_errors_print_one_line_and_exit_1(tmp_path: Path, run_keel):
    ok(run_keel("init", cwd=tmp_path))  # reads outside a home fail before naming the dataset
    missing = run_keel("data", "add", "nope", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: no such file or folder")
    assert len(missing.stderr.strip().splitlines()) == 1
    unknown = run_keel("data", "show", "ghost@1", cwd=tmp_path)
    assert unknown.returncode == 1 and "no dataset named 'ghost'" in unknown.stderr
    no_remote = run_keel("data", "push", cwd=tmp_path)
    assert no_remote.returncode == 1 and "no data remote" in no_remote.stderr
