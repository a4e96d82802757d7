"""``keel evals …`` as CI runs it: exit codes, gate messages, JSON, the judge prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import keel
from _support.evals import CASES, eval_set, register_support, standin
from _support.llm import Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with standin() as up:
        yield up


def _run(run_keel, settings, upstream, *args: str):
    return run_keel(
        "evals",
        "run",
        "--prompt",
        "prompts:/support@production",
        "--gateway",
        upstream.base_url,
        *args,
        settings=settings,
    )


def test_the_exit_code_is_1_when_a_gate_fails_and_0_when_it_passes(
    sqlite_env, upstream, run_keel, tmp_path
):
    register_support()
    uri = eval_set(tmp_path)
    failing = _run(
        run_keel, sqlite_env, upstream, "--dataset", uri, "--scorer", "exact", "--gate",
        "exact >= 0.9",
    )  # fmt: skip
    assert failing.returncode == 1, failing.stderr
    # which gate, what was measured, and by how much it missed
    assert "gate failed: exact >= 0.9: exact 0.25 < 0.9 (off by 0.65)" in failing.stderr
    assert "FAIL" in failing.stdout

    passing = _run(
        run_keel, sqlite_env, upstream, "--dataset", uri, "--scorer", "exact", "--gate",
        "exact >= 0.25", "--gate", "failures <= 0",
    )  # fmt: skip
    assert passing.returncode == 0, passing.stderr
    assert "passed all 2 gate(s)" in passing.stdout
    runs = keel.Client().search_runs(filter_string="tags.`keel.kind` = 'eval'").runs
    assert sorted(r.tags["keel.eval.passed"] for r in runs) == ["false", "true"]


def test_usage_errors_exit_2_with_one_line_and_send_nothing(
    sqlite_env, upstream, run_keel, tmp_path
):
    register_support()
    uri = eval_set(tmp_path)
    unknown = _run(run_keel, sqlite_env, upstream, "--dataset", uri, "--scorer", "bleu")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "error: unknown scorer 'bleu'; expected one of exact, contains, regex, json_schema, "
        "numeric, similarity, judge, or module:function for a custom scorer"
    )
    option = _run(run_keel, sqlite_env, upstream, "--dataset", uri, "--scorer", "numeric:tol=1")
    assert option.returncode == 2
    assert "it takes name, threshold, tolerance, field" in option.stderr
    operator = _run(
        run_keel, sqlite_env, upstream, "--dataset", uri, "--scorer", "exact", "--gate",
        "exact > 0.5",
    )  # fmt: skip
    assert operator.returncode == 2
    assert "the operator must be >= (a minimum) or <= (a maximum)" in operator.stderr
    missing = _run(run_keel, sqlite_env, upstream, "--dataset", "nope@1", "--scorer", "exact")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error:") and "nope" in missing.stderr
    no_scorer = _run(run_keel, sqlite_env, upstream, "--dataset", uri)
    assert no_scorer.returncode == 2  # the option is required
    assert upstream.requests() == 0


def test_json_prints_the_whole_result_with_the_comparison(sqlite_env, upstream, run_keel, tmp_path):
    register_support()
    uri = eval_set(tmp_path)
    report = tmp_path / "report.html"
    result = run_keel(
        "evals", "run", "--prompt", "prompts:/support/2", "--dataset", uri,
        "--scorer", "exact", "--scorer", "contains:ignore_case=true,name=mentions",
        "--against", "production", "--gate", "diff.exact >= 0",
        "--gateway", upstream.base_url, "--html", str(report), "--json",
        settings=sqlite_env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["passed"] is True
    assert (doc["prompt"], doc["against"], doc["dataset"]) == (
        "prompts:/support/2",
        "prompts:/support/1",
        uri,
    )
    assert doc["metrics"]["diff.exact"] == 0.75
    assert doc["diffs"]["mentions"]["wins"] == 3
    assert [s["name"] for s in doc["scorers"]] == ["exact", "mentions"]
    assert [c["case"] for c in doc["cases"]] == list(range(len(CASES)))
    assert doc["gates"][0]["passed"] is True
    assert Path(report).read_text().startswith("<!doctype html>")
    run = keel.Client().get_run(doc["run_id"])
    assert run.params["against"] == "prompts:/support/1"


def test_judge_prompt_registers_keels_judge_as_the_default_judge(sqlite_env, run_keel):
    first = run_keel("evals", "judge-prompt", "--model", "small", "--json", settings=sqlite_env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["uri"] == "prompts:/judge/1"
    again = run_keel("evals", "judge-prompt", "--model", "small", settings=sqlite_env)
    assert again.returncode == 0, again.stderr
    judge = keel.prompts.load("prompts:/judge@production")
    assert (judge.version, judge.model) == (1, "small")
    assert set(judge.variables) == {"input", "reference", "context", "output"}


def test_scorers_lists_every_builtin_with_its_options(sqlite_env, run_keel):
    listed = run_keel("evals", "scorers", "--json", settings=sqlite_env)
    assert listed.returncode == 0, listed.stderr
    kinds = {entry["kind"]: entry for entry in json.loads(listed.stdout)}
    assert list(kinds) == [
        "exact", "contains", "regex", "json_schema", "numeric", "similarity", "judge",
    ]  # fmt: skip
    assert kinds["numeric"]["options"] == ["tolerance", "field"]
    assert kinds["similarity"]["threshold"] == 0.8
