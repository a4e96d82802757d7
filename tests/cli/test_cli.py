"""The ``keel`` command, run as users run it: a real process, real exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import keel


@pytest.fixture
def populated(tmp_path: Path):
    settings = keel.init(home=tmp_path / "home")
    keel.set_experiment("cli")
    ids = []
    for n, model in enumerate(["rf", "gb", "rf"]):
        with keel.start_run(name=f"r{n}") as run:
            keel.log_params({"model": model, "depth": n + 2})
            keel.log_metric("acc", 0.8 + n / 100)
            keel.log_metric("nan", float("nan"))
            keel.set_tag("team", "fraud")
        ids.append(run.id)
    keel.init(home=tmp_path / "elsewhere")  # release the home: the CLI opens it itself
    return settings.home, ids


def test_init_creates_a_home_and_is_idempotent(tmp_path: Path, run_keel):
    first = run_keel("init", str(tmp_path), "--json")
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    assert info["created"] is True and Path(info["home"]) == tmp_path / ".keel"
    assert (tmp_path / ".keel" / "keel.db").is_file()
    assert (tmp_path / ".keel" / "config.toml").is_file()
    again = json.loads(run_keel("init", str(tmp_path), "--json").stdout)
    assert again["created"] is False


def test_commands_find_the_home_by_walking_up(tmp_path: Path, run_keel):
    run_keel("init", str(tmp_path))
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    made = run_keel("experiments", "create", "walk", "--json", cwd=nested)
    assert made.returncode == 0, made.stderr
    listed = json.loads(run_keel("experiments", "list", "--json", cwd=tmp_path).stdout)
    assert [e["name"] for e in listed] == ["walk"]


def test_experiments_and_runs_list_json(populated, run_keel):
    home, ids = populated
    experiments = json.loads(
        run_keel("experiments", "list", "--json", env={"KEEL_HOME": str(home)}).stdout
    )
    assert [(e["name"], e["runs"]) for e in experiments] == [("cli", 3)]
    listed = json.loads(run_keel("runs", "list", "--json", env={"KEEL_HOME": str(home)}).stdout)
    assert [r["run_id"] for r in listed["runs"]] == ids[::-1]  # newest first
    assert listed["runs"][0]["metrics"]["nan"] == "NaN"


def test_runs_search_with_or_and_order(populated, run_keel):
    home, ids = populated
    result = run_keel(
        "runs",
        "search",
        "params.model = 'gb' OR params.depth >= 4",
        "--order-by",
        "metrics.acc DESC",
        "--json",
        env={"KEEL_HOME": str(home)},
    )
    assert result.returncode == 0, result.stderr
    assert [r["run_id"] for r in json.loads(result.stdout)["runs"]] == [ids[2], ids[1]]


def test_runs_search_pages(populated, run_keel):
    home, ids = populated
    first = json.loads(
        run_keel(
            "runs", "search", "metrics.acc > 0", "-n", "2", "--json", env={"KEEL_HOME": str(home)}
        ).stdout
    )
    assert len(first["runs"]) == 2 and first["next_page_token"]
    rest = json.loads(
        run_keel(
            "runs",
            "search",
            "metrics.acc > 0",
            "-n",
            "2",
            "--page-token",
            first["next_page_token"],
            "--json",
            env={"KEEL_HOME": str(home)},
        ).stdout
    )
    assert {r["run_id"] for r in first["runs"] + rest["runs"]} == set(ids)
    assert rest["next_page_token"] is None


def test_runs_show_by_prefix_includes_environment(populated, run_keel):
    home, ids = populated
    shown = json.loads(
        run_keel("runs", "show", ids[0][:8], "--json", env={"KEEL_HOME": str(home)}).stdout
    )
    assert shown["run_id"] == ids[0]
    assert shown["params"] == {"depth": "2", "model": "rf"}
    env = shown["environment"]
    assert env["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert any(d.startswith("sqlalchemy==") for d in env["distributions"])
    human = run_keel("runs", "show", ids[0], env={"KEEL_HOME": str(home)})
    assert human.returncode == 0 and "model" in human.stdout and "rf" in human.stdout


def test_runs_compare_marks_differences(populated, run_keel):
    home, ids = populated
    result = json.loads(
        run_keel(
            "runs", "compare", ids[0], ids[1], "--diff", "--json", env={"KEEL_HOME": str(home)}
        ).stdout
    )
    keys = {(row["kind"], row["key"]) for row in result["rows"]}
    assert keys == {("params", "depth"), ("params", "model"), ("metrics", "acc")}
    assert all(row["differs"] for row in result["rows"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("runs", "search", "metrics.acc >"), "invalid filter at position 14"),
        (("runs", "show", "ffffffffff"), "no run with id"),
        (("runs", "compare", "abcdefabcdef"), "at least two run ids"),
        (
            ("runs", "search", "metrics.acc > 1", "--experiment", "nope"),
            "no experiment named 'nope'",
        ),
        (("experiments", "create", "cli"), "already exists"),
    ],
)
def test_errors_are_one_line_and_exit_non_zero(populated, args, message, run_keel):
    home, _ = populated
    result = run_keel(*args, env={"KEEL_HOME": str(home)})
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_help_explains_the_filter_grammar(run_keel):
    result = run_keel("runs", "search", "--help")
    assert result.returncode == 0
    assert "ILIKE" in result.stdout and "parentheses" in result.stdout


@pytest.mark.slow
def test_demo_runs_the_whole_loop_and_leaves_no_process(tmp_path: Path, run_keel):
    result = run_keel("demo", "--home", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert "Done in" in result.stdout and "loop-report.html" in result.stdout
    assert f"keel --home {tmp_path / 'demo'} ui" in result.stdout  # how to open the UI on it
    keel.init(home=tmp_path / "demo")
    from keel.automation import history

    events = [(e.kind, e.version) for e in history("screening-loop") if e.kind != "resumed"]
    assert events == [
        ("triggered", 1),
        ("retrain_started", None),
        ("retrain_finished", 2),
        ("gate_passed", 2),
        ("canary_started", 2),
        ("promoted", 2),
        ("triggered", 2),
        ("retrain_started", None),
        ("retrain_finished", 3),
        ("gate_passed", 3),
        ("canary_started", 3),
        ("rolled_back", 3),
    ]
    client = keel.Client()
    assert client.get_alias("screening", "champion") == 2
    assert (tmp_path / "demo" / "loop-report.html").stat().st_size > 100_000
    from keel.governance import audit
    from keel.store import get_store

    assert audit.verify(get_store(client.settings)).ok
    assert _processes_with_env(f"KEEL_HOME={tmp_path / 'demo'}") == []  # its server stopped


def _processes_with_env(entry: str) -> list[int]:
    """Live processes whose environment holds ``entry`` (Linux /proc)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found
