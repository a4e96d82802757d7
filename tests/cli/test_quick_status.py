"""``keel data status`` answered before Typer starts (:mod:`keel.cli.quick`).

The quick path must take exactly the forms it can answer as Typer would, print the
same bytes, and hand every other form to Typer, whose help and errors users know.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from _support.cli import run_keel
from keel.cli.quick import StatusCall, parse_status

if TYPE_CHECKING:
    from keel.config import Settings


@pytest.mark.parametrize(
    ("argv", "call"),
    [
        (["data", "status"], StatusCall()),
        (["data", "status", "raw"], StatusCall(path="raw")),
        (["data", "status", "--json"], StatusCall(as_json=True)),
        (["data", "status", "--json", "raw"], StatusCall(path="raw", as_json=True)),
        (["data", "status", ""], StatusCall(path="")),
        (["--home", "h", "data", "status"], StatusCall(home="h")),
        (["--home=h", "--server", "http://s", "data", "status"], StatusCall("h", "http://s")),
    ],
)
def test_the_forms_it_answers(argv, call):
    assert parse_status(argv) == call


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["data"],
        ["data", "add", "raw"],
        ["runs", "status"],
        ["status", "data"],
        ["data", "status", "--help"],
        ["data", "status", "-h"],
        ["data", "status", "raw", "other"],
        ["data", "status", "--json", "--json"],
        ["data", "status", "--jsn"],
        ["data", "status", "--", "-odd"],
        ["--home", "data", "status"],  # --home takes "data": the command is "status"
        ["--home", "a", "--home", "b", "data", "status"],
        ["--help", "data", "status"],
        ["--verbose", "data", "status"],
        ["--home"],
    ],
)
def test_every_other_form_is_left_to_typer(argv):
    assert parse_status(argv) is None


@pytest.fixture
def tracked(sqlite_env: Settings, tmp_path: Path) -> Path:
    """Dataset ``raw`` of 60 files, then 53 added, one changed and one removed."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for n in range(60):
        (raw / f"f{n:02}.csv").write_text(f"x\n{n}\n")
    from keel.data.snapshot import add

    add(raw, "raw", settings=sqlite_env)
    for n in range(53):
        (raw / f"new{n:02}.csv").write_text(f"y\n{n}\n")
    (raw / "f00.csv").write_text("x\n100\n")
    (raw / "f01.csv").unlink()
    return raw


def test_a_changed_tree_lists_fifty_of_a_kind_then_counts_the_rest(
    tmp_path: Path, sqlite_env: Settings, tracked: Path
):
    out = run_keel("data", "status", "raw", settings=sqlite_env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"{tracked}  (raw@1): 53 added, 1 changed, 1 removed"
    assert lines[1:51] == [f"  A new{n:02}.csv" for n in range(50)]
    assert lines[51:] == ["  … 3 more (--json lists all)", "  M f00.csv", "  D f01.csv"]
    assert "\x1b[" not in out.stdout  # not a terminal: no colour


def test_colour_follows_force_color_and_no_color(
    tmp_path: Path, sqlite_env: Settings, tracked: Path
):
    forced = run_keel("data", "status", settings=sqlite_env, cwd=tmp_path, env={"FORCE_COLOR": "1"})
    assert forced.returncode == 0, forced.stderr
    first = forced.stdout.splitlines()[0]
    assert first == f"{tracked}  (raw@1): \x1b[33m53 added, 1 changed, 1 removed\x1b[0m"
    plain = run_keel(
        "data", "status", settings=sqlite_env, cwd=tmp_path,
        env={"FORCE_COLOR": "1", "NO_COLOR": "1"},
    )  # fmt: skip
    assert "\x1b[" not in plain.stdout


def test_a_path_that_looks_like_markup_prints_as_it_is(tmp_path: Path, sqlite_env: Settings):
    odd = tmp_path / "[red]x"
    odd.mkdir()
    (odd / "[b].csv").write_text("1\n")
    from keel.data.snapshot import add

    add(odd, "odd", settings=sqlite_env)
    (odd / "[b].csv").write_text("2\n")
    out = run_keel("data", "status", str(odd), settings=sqlite_env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"{odd}  (odd@1): 0 added, 1 changed, 0 removed",
        "  M [b].csv",
    ]


def test_home_given_as_an_option_is_the_home_read(tmp_path: Path, sqlite_env: Settings, tracked):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"KEEL_HOME": str(elsewhere / "nowhere")}  # the option wins over the variable
    out = run_keel(
        "--home", str(sqlite_env.home), "data", "status", str(tracked), "--json",
        settings=None, cwd=elsewhere, env={**env, "KEEL_STORE_URL": sqlite_env.store_url},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (report,) = json.loads(out.stdout)
    assert (report["dataset"], len(report["added"])) == ("raw", 53)


def test_forms_left_to_typer_get_its_help_and_errors(tmp_path: Path, sqlite_env: Settings):
    helped = run_keel("data", "status", "--help", settings=sqlite_env, cwd=tmp_path)
    assert helped.returncode == 0 and "--json" in helped.stdout and "Usage" in helped.stdout
    extra = run_keel("data", "status", "a", "b", settings=sqlite_env, cwd=tmp_path)
    assert extra.returncode == 2 and "unexpected extra argument" in extra.stderr
    unknown = run_keel("data", "status", "--jsn", settings=sqlite_env, cwd=tmp_path)
    assert unknown.returncode == 2 and "No such option" in unknown.stderr


def test_nothing_tracked_is_one_line_and_exit_1(tmp_path: Path, sqlite_env: Settings):
    out = run_keel("data", "status", str(tmp_path), settings=sqlite_env, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith("error: no dataset is tracked at or under")
    assert len(out.stderr.strip().splitlines()) == 1


def test_typer_prints_the_same_bytes_for_a_form_it_is_left(
    tmp_path: Path, sqlite_env: Settings, tracked: Path
):
    quick = run_keel("data", "status", "--json", settings=sqlite_env, cwd=tmp_path)
    typer = run_keel("data", "status", "--json", "--json", settings=sqlite_env, cwd=tmp_path)
    assert quick.returncode == typer.returncode == 0, typer.stderr
    # "hashed" counts files the state cache could not vouch for: it may fall between runs
    # (a file written this very instant is hashed until its time is safely past)
    ((quick_report,), (typer_report,)) = json.loads(quick.stdout), json.loads(typer.stdout)
    assert quick_report.pop("hashed") >= typer_report.pop("hashed")
    assert quick_report == typer_report
    assert quick.stdout.startswith('[\n  {\n    "path": ') and typer.stdout.startswith(
        '[\n  {\n    "path": '
    )
    human = run_keel("data", "status", settings=sqlite_env, cwd=tmp_path, env={"FORCE_COLOR": "1"})
    # --home given twice is left to Typer (the last one wins there)
    home = str(sqlite_env.home)
    typer_human = run_keel(
        "--home", home, "--home", home, "data", "status",
        settings=sqlite_env, cwd=tmp_path, env={"FORCE_COLOR": "1"},
    )  # fmt: skip
    assert typer_human.returncode == 0, typer_human.stderr
    assert human.stdout == typer_human.stdout
