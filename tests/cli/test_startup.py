"""What ``keel`` loads before it answers: a command imports only what it uses.

Start-up time is whatever the imports cost, so these tests pin the imports (and that
the answers did not change), never the time. Each run is a real process through the
same ``main`` the console script calls; a probe records ``sys.modules`` as it exits.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from _support.cli import TIMEOUT, keel_environ
from keel.cli import tree as cli_tree

if TYPE_CHECKING:
    from keel.config import Settings

#: Records every module loaded by the time the process exits (``sys.exit`` included).
_PROBE = """
import atexit, json, sys
argv, out = json.loads(sys.argv[1]), sys.argv[2]

def record():
    with open(out, "w", encoding="utf-8") as f:
        json.dump(sorted(sys.modules), f)

atexit.register(record)
sys.argv = ["keel", *argv]
from keel.cli.main import main
sys.exit(main())
"""

#: Libraries no command needs to parse its arguments or print its help.
HEAVY = ("pandas", "pyarrow", "numpy", "scipy", "sqlalchemy", "pydantic")
#: Wide enough that no help row or error panel wraps a name or a path.
WIDE = {"COLUMNS": "250"}


def probe(
    tmp_path: Path, *argv: str, settings: Settings | None = None, cwd: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``keel *argv``; return the finished process and the modules it had loaded."""
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), str(out)],
        capture_output=True,
        text=True,
        env=keel_environ(settings, **WIDE),
        cwd=cwd or tmp_path,
        timeout=TIMEOUT,
        check=False,
    )
    return result, set(json.loads(out.read_text(encoding="utf-8")))


def packages(modules: set[str]) -> set[str]:
    """The top-level packages among ``modules``."""
    return {name.split(".")[0] for name in modules}


def listed_commands(help_text: str) -> set[str]:
    """The names in the Commands panel of a help page."""
    panel = help_text.split("Commands")[-1]
    return set(re.findall(r"^│ ([a-z][a-z-]*)\s", panel, flags=re.MULTILINE))


# -- keel --version --------------------------------------------------------------------


def test_version_prints_the_installed_distributions_version(run_keel):
    result = run_keel("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"keel {importlib.metadata.version('keel')}\n"
    assert result.stderr == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["--version"],
        ["--home", "elsewhere", "--version"],
        ["--server=http://127.0.0.1:9", "--version"],
        ["--version", "data", "status"],
    ],
)
def test_version_loads_neither_typer_nor_rich_nor_any_store(tmp_path: Path, argv):
    result, modules = probe(tmp_path, *argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"keel {importlib.metadata.version('keel')}\n"
    assert packages(modules).isdisjoint({"typer", "rich", "click", *HEAVY})
    # nothing of Keel's beyond the package and the entry point (with its command table)
    assert {m for m in modules if m.startswith("keel")} <= {
        "keel",
        "keel.lazy",
        "keel.cli",
        "keel.cli.main",
        "keel.cli.tree",
    }


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        # --home takes "--version" as its value, so no version is asked for
        (["--home", "--version"], 2, "Missing command."),
        (["--bogus", "--version"], 2, "No such option: --bogus"),
        (["--version", "--bogus"], 2, "No such option: --bogus"),
        (["data", "--version"], 2, "No such option: --version"),
    ],
)
def test_version_among_other_arguments_gets_typers_answer(run_keel, argv, code, says):
    result = run_keel(*argv, env=WIDE)
    assert result.returncode == code
    assert says in result.stderr
    assert result.stdout == ""


def test_help_before_version_prints_the_help(run_keel):
    result = run_keel("--help", "--version", env=WIDE)
    assert result.returncode == 0, result.stderr
    assert "Usage: keel [OPTIONS] COMMAND [ARGS]..." in result.stdout
    assert "keel 0." not in result.stdout


# -- help ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["--help", "data"]])
def test_root_help_lists_every_group_and_command(run_keel, argv):
    result = run_keel(*argv, env=WIDE)
    assert result.returncode == 0, result.stderr
    expected = {*cli_tree.GROUPS, *cli_tree.COMMANDS, "init", "demo"}
    assert listed_commands(result.stdout) == expected
    # an outline keeps the group's own help line
    assert "Version files and folders: add, status, diff, checkout, list, show, push, pull." in (
        result.stdout
    )


def test_no_arguments_prints_the_root_help(tmp_path: Path):
    result, _modules = probe(tmp_path)
    assert result.returncode == 2
    assert listed_commands(result.stdout) == {
        *cli_tree.GROUPS,
        *cli_tree.COMMANDS,
        "init",
        "demo",
    }


def test_data_help_lists_its_commands_and_loads_no_data_library(tmp_path: Path):
    from keel.cli.data import app as data_app

    result, modules = probe(tmp_path, "data", "--help")
    assert result.returncode == 0, result.stderr
    assert listed_commands(result.stdout) == {info.name for info in data_app.registered_commands}
    assert packages(modules).isdisjoint(HEAVY)
    assert not any(m.startswith("keel.data.") for m in modules)


def test_drift_help_shows_its_options_and_loads_no_data_library(tmp_path: Path):
    result, modules = probe(tmp_path, "drift", "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: keel drift [OPTIONS]" in result.stdout
    for option in ("--columns", "--drift-share", "--fail-on-drift", "--json"):
        assert option in result.stdout
    assert packages(modules).isdisjoint(HEAVY)
    assert not any(m.startswith(("keel.monitoring.drift", "keel.data")) for m in modules)


def test_group_help_loads_no_other_group(tmp_path: Path):
    _result, modules = probe(tmp_path, "jobs", "--help")
    groups = {module for module, _attr in cli_tree.GROUPS.values()}
    loaded = {m for m in modules if m in groups | {"keel.cli.predict", "keel.cli.ui"}}
    # jobs registers its operator commands from jobs_ops
    assert loaded == {"keel.cli.jobs"}


# -- running a command -----------------------------------------------------------------


@pytest.fixture
def tracked(sqlite_env: Settings, tmp_path: Path) -> Path:
    """A folder of two files, added as dataset ``raw``; the working folder holds it."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.csv").write_text("x\n1\n")
    (raw / "b.csv").write_text("x\n2\n")
    from keel.data.snapshot import add

    add(raw, "raw", settings=sqlite_env)
    return raw


def test_data_status_json_is_answered_without_typer_rich_or_any_group(
    tmp_path: Path, sqlite_env: Settings, tracked: Path
):
    (tracked / "b.csv").write_text("x\n22\n")
    result, modules = probe(tmp_path, "data", "status", "--json", settings=sqlite_env)
    assert result.returncode == 0, result.stderr
    (report,) = json.loads(result.stdout)
    assert (report["added"], report["changed"], report["removed"]) == ([], ["b.csv"], [])
    assert packages(modules).isdisjoint({"typer", "click", "rich", "pydantic", *HEAVY})
    cli_modules = {m for m in modules if m.startswith("keel.cli.")}
    assert cli_modules == {"keel.cli.main", "keel.cli.tree", "keel.cli.output", "keel.cli.quick"}


def test_data_status_for_people_is_answered_without_typer_or_rich_too(
    tmp_path: Path, sqlite_env: Settings, tracked: Path
):
    result, modules = probe(tmp_path, "data", "status", settings=sqlite_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tracked}  (raw@1): unchanged\n"
    assert packages(modules).isdisjoint({"typer", "click", "rich"})


def test_data_status_of_a_path_as_given_or_spelled_otherwise_reports_the_same(
    tmp_path: Path, sqlite_env: Settings, tracked: Path
):
    (tracked / "c.csv").write_text("x\n3\n")
    reports = []
    for spelling in ("raw", "./raw", "raw/", str(tracked)):
        result, _modules = probe(tmp_path, "data", "status", spelling, settings=sqlite_env)
        assert result.returncode == 0, result.stderr
        reports.append(result.stdout)
    assert reports[0] == reports[1] == reports[2] == reports[3]
    assert "1 added, 0 changed, 0 removed" in reports[0] and "A c.csv" in reports[0]


def test_a_group_command_that_does_not_exist_is_still_matched_against_its_siblings(run_keel):
    result = run_keel("data", "stauts", env=WIDE)
    assert result.returncode == 2
    assert "No such command 'stauts'. Did you mean 'status'?" in result.stderr


@pytest.mark.parametrize(
    ("given", "quoted"), [("nosuch.csv", "'nosuch.csv'"), ("./nosuch.csv", "'./nosuch.csv'")]
)
def test_a_missing_path_is_quoted_as_given(run_keel, given, quoted):
    result = run_keel("models", "convert", "m", "--example", given, env=WIDE)
    assert result.returncode == 2
    assert f"Invalid value for '--example': file {quoted} does not exist." in result.stderr


def test_a_folder_where_a_file_is_expected_is_refused(run_keel, tmp_path: Path):
    (tmp_path / "rows").mkdir()
    result = run_keel("models", "convert", "m", "--example", "rows", env=WIDE, cwd=tmp_path)
    assert result.returncode == 2
    assert "Invalid value for '--example': file 'rows' is a directory." in result.stderr


@pytest.fixture
def tables(tmp_path: Path) -> tuple[Path, Path]:
    """Two small Parquet tables, the second with its numbers shifted."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    paths = []
    for name, shift in (("ref", 0.0), ("cur", 3.0)):
        frame = pd.DataFrame(
            {"x": rng.normal(shift, 1.0, 500), "kind": rng.choice(["a", "b"], 500)}
        )
        paths.append(tmp_path / f"{name}.parquet")
        frame.to_parquet(paths[-1])
    return paths[0], paths[1]


def test_drift_with_paths_and_defaults_needs_no_pydantic(tmp_path: Path, tables):
    result, modules = probe(tmp_path, "drift", tables[0].name, tables[1].name, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["drift_share"] == 0.5
    assert report["number_of_columns"] == 2
    assert "pydantic" not in packages(modules)


def test_drift_options_typed_on_the_command_line_are_checked_as_before(
    tmp_path: Path, tables, run_keel
):
    ref, cur = (p.name for p in tables)
    given = run_keel("drift", ref, cur, "--json", "--drift-share", "0.9", "-c", "x", cwd=tmp_path)
    assert given.returncode == 0, given.stderr
    report = json.loads(given.stdout)
    assert (report["drift_share"], report["number_of_columns"]) == (0.9, 1)
    wrong = run_keel("drift", ref, cur, "--drift-share", "x", env=WIDE, cwd=tmp_path)
    assert wrong.returncode == 2
    assert "Invalid value for '--drift-share'" in wrong.stderr
    assert "valid number" in wrong.stderr
