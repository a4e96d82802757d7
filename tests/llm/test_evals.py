"""``run_eval`` end to end: prompts through the stand-in upstream, scored, tracked and compared."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from _support.evals import CASES, TEMPLATE, eval_set, register_support, standin
from _support.llm import Upstream
from _support.network import free_port
from keel.errors import InvalidInput, NotFound
from keel.llm.evals import register_judge_prompt, run_eval


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with standin() as up:
        yield up


def _parquet(run_id: str, tmp_path: Path) -> pd.DataFrame:
    folder = keel.Client().download_artifacts(run_id, "eval/cases.parquet", tmp_path / "dl")
    path = folder if folder.is_file() else folder / "cases.parquet"
    return pd.read_parquet(path)


def test_an_eval_is_a_run_with_one_parquet_row_per_case_and_the_eval_set_as_input(
    any_env, upstream, tmp_path
):
    register_support()
    uri = eval_set(tmp_path)
    result = run_eval("prompts:/support/2", uri, ["exact", "contains"], gateway=upstream.base_url)
    client = keel.Client()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.params["prompt"] == "prompts:/support/2"
    assert run.params["dataset"] == uri
    assert run.params["scorers"] == "exact, contains"
    assert run.metrics["exact"] == 1.0
    assert run.metrics["cases"] == len(CASES)
    assert run.tags["keel.eval.passed"] == "true"
    assert [v.uri for v in client.data.run_inputs(result.run_id)] == [uri]
    frame = _parquet(result.run_id, tmp_path)
    assert len(frame) == len(CASES)
    assert frame["case"].tolist() == list(range(len(CASES)))
    assert frame["output"].tolist() == ["Paris", "4", "Shakespeare", "blue"]
    assert frame["exact"].tolist() == [1.0] * len(CASES)
    listed = {a.path for a in client.list_artifacts(result.run_id, "eval")}
    assert {"eval/cases.parquet", "eval/report.html", "eval/result.json"} <= listed
    assert upstream.requests("new") == len(CASES)


def test_a_failing_upstream_call_is_counted_and_listed_not_dropped(sqlite_env, upstream, tmp_path):
    register_support()
    uri = eval_set(tmp_path)
    upstream.control("new", fail_rate=0.5)
    result = run_eval(
        "prompts:/support/2",
        uri,
        ["exact"],
        gateway=upstream.base_url,
        gates=["failures <= 0"],
    )
    assert result.metrics["failures"] == 2
    assert result.metrics["failure_rate"] == 0.5
    # a failed call has no answer: it scores 0, so it pulls the mean down
    assert result.metrics["exact"] == 0.5
    assert result.metrics["pass_rate"] == 0.5
    frame = _parquet(result.run_id, tmp_path)
    assert len(frame) == len(CASES)
    failed = frame[frame["error"].notna()]
    assert len(failed) == 2
    assert failed["error"].str.contains("HTTP 500").all()
    assert failed["output"].isna().all() and (failed["exact"] == 0.0).all()
    assert not result.passed
    assert result.gates[0].detail == "failures 2 > 0 (off by 2)"
    assert any("2 of 4 calls" in note for note in result.notes)


def test_against_gives_paired_differences_with_the_right_sign(sqlite_env, upstream, tmp_path):
    register_support()
    uri = eval_set(tmp_path)
    better = run_eval(
        "prompts:/support/2", uri, ["exact"], against="production", gateway=upstream.base_url
    )
    assert better.against == "prompts:/support/1"
    assert better.metrics["exact"] == 1.0
    assert better.metrics["against.exact"] == 0.25  # the old model knows only Hamlet
    assert better.metrics["diff.exact"] == pytest.approx(0.75)
    diff = better.diffs["exact"]
    assert (diff.wins, diff.losses, diff.ties) == (3, 0, 1)
    assert diff.ci_low <= diff.mean <= diff.ci_high
    assert upstream.requests("old") == upstream.requests("new") == len(CASES)
    frame = better.cases
    assert frame["diff.exact"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert frame["against.output"][0] == "Lyon"

    worse = run_eval(
        "prompts:/support@production", uri, ["exact"], against="2", gateway=upstream.base_url
    )
    assert worse.metrics["diff.exact"] == pytest.approx(-0.75)
    assert (worse.diffs["exact"].wins, worse.diffs["exact"].losses) == (0, 3)


def test_a_gate_on_the_paired_difference_decides_the_comparison(sqlite_env, upstream, tmp_path):
    register_support()
    uri = eval_set(tmp_path)
    result = run_eval(
        "prompts:/support@production",
        uri,
        ["exact"],
        against="2",
        gates=["exact - against.exact >= -0.02", "mean(exact) <= 1"],
        gateway=upstream.base_url,
    )
    [difference, mean] = result.gates
    assert difference.name == "diff.exact >= -0.02"
    assert not difference.passed and difference.value == pytest.approx(-0.75)
    assert mean.passed
    assert not result.passed
    assert keel.Client().get_run(result.run_id).tags["keel.eval.passed"] == "false"


def test_a_judge_reply_with_a_score_parses_and_one_without_is_a_failed_score(
    sqlite_env, upstream, tmp_path
):
    register_support()
    uri = eval_set(tmp_path)
    judge = register_judge_prompt("judge")
    assert judge.uri == "prompts:/judge/1"
    assert keel.prompts.get_alias("judge", "production") == 1
    # the judge sees the answer last: reply with a score to two answers, echo the others
    upstream.control(
        "judge", rules={"answer:\nparis": "Right.\nSCORE: 5", "answer:\n4": "Vague.\nSCORE: 2"}
    )
    result = run_eval("prompts:/support/2", uri, ["judge"], gateway=upstream.base_url)
    assert result.metrics["judge"] == pytest.approx((1.0 + 0.25) / 2)
    assert result.metrics["judge.failed"] == 2
    assert result.metrics["judge.pass_rate"] == 0.25
    frame = result.cases
    assert frame["judge"][0] == 1.0 and frame["judge"][1] == 0.25
    assert np.isnan(frame["judge"][2]) and np.isnan(frame["judge"][3])
    assert frame["judge.error"][2].startswith("no score in the judge's reply")
    assert frame["judge.detail"][2].startswith("You said:")
    assert frame["judge.detail"][0] == "Right.\nSCORE: 5"
    assert upstream.requests("judge") == len(CASES)
    assert result.scorers[0]["spec"] == "judge:prompt=prompts:/judge/1"


def test_a_missing_judge_prompt_says_how_to_register_one(sqlite_env, upstream, tmp_path):
    register_support()
    uri = eval_set(tmp_path)
    with pytest.raises(NotFound, match=r"keel evals judge-prompt --model MODEL"):
        run_eval("prompts:/support/2", uri, ["judge"], gateway=upstream.base_url)
    assert upstream.requests() == 0


@pytest.mark.slow  # loads the packaged embedding model (PyTorch) in this process
def test_embedding_similarity_ranks_a_paraphrase_above_an_unrelated_answer(
    sqlite_env, upstream, tmp_path
):
    keel.prompts.register(
        "paraphrase", template=[{"role": "user", "content": "{{ question }}"}], model="para"
    )
    upstream.control(
        "para",
        rules={
            "capital": "Paris is the capital city of France.",
            "weekend": "I enjoy playing the guitar on weekends.",
        },
    )
    reference = "The capital of France is Paris."
    uri = eval_set(
        tmp_path,
        [
            {"vars": {"question": "capital?"}, "reference": reference},
            {"vars": {"question": "weekend?"}, "reference": reference},
        ],
        name="paraphrases",
    )
    result = run_eval("prompts:/paraphrase/1", uri, ["similarity"], gateway=upstream.base_url)
    paraphrase, unrelated = result.cases["similarity"].tolist()
    assert paraphrase > unrelated
    assert paraphrase >= 0.8 > unrelated
    assert result.metrics["similarity.pass_rate"] == 0.5


def test_nothing_is_sent_when_a_gate_names_a_metric_the_eval_does_not_measure(
    sqlite_env, upstream, tmp_path
):
    register_support()
    uri = eval_set(tmp_path)
    with pytest.raises(InvalidInput, match=r"measures no 'bleu'; its metrics are .*exact"):
        run_eval(
            "prompts:/support/2", uri, ["exact"], gates=["bleu >= 0.5"], gateway=upstream.base_url
        )
    with pytest.raises(InvalidInput, match=r"compares with another version: pass --against"):
        run_eval(
            "prompts:/support/2",
            uri,
            ["exact"],
            gates=["diff.exact >= 0"],
            gateway=upstream.base_url,
        )
    assert upstream.requests() == 0


def test_a_case_without_a_variable_of_the_prompt_is_refused_before_any_call(
    sqlite_env, upstream, tmp_path
):
    register_support()
    uri = eval_set(
        tmp_path, [CASES[0], {"vars": {"q": "Who wrote Hamlet?"}, "expected": "Shakespeare"}]
    )
    with pytest.raises(InvalidInput, match=r"case 1 has no variable\(s\) 'question'"):
        run_eval("prompts:/support/2", uri, ["exact"], gateway=upstream.base_url)
    assert upstream.requests() == 0


def test_a_case_may_hold_variables_another_version_uses(sqlite_env, upstream, tmp_path):
    keel.prompts.register("tone", template=TEMPLATE, model="old")
    keel.prompts.register(
        "tone",
        template=[{"role": "user", "content": "{{ question }} (answer {{ style }})"}],
        model="new",
    )
    cases = [{**case, "vars": {**case["vars"], "style": "tersely"}} for case in CASES]
    result = run_eval(
        "prompts:/tone/2",
        eval_set(tmp_path, cases),
        ["exact"],
        against="1",
        gateway=upstream.base_url,
    )
    assert result.metrics["failures"] == result.metrics["against.failures"] == 0
    assert result.metrics["diff.exact"] == pytest.approx(0.75)


def test_a_scorer_needing_a_field_the_cases_lack_is_refused_naming_the_case(
    sqlite_env, upstream, tmp_path
):
    register_support()
    uri = eval_set(tmp_path, [CASES[0], {"vars": {"question": "Who wrote Hamlet?"}}])
    with pytest.raises(InvalidInput, match=r"case 1 has no 'expected'; the exact scorer"):
        run_eval("prompts:/support/2", uri, ["exact"], gateway=upstream.base_url)
    with pytest.raises(InvalidInput, match=r"two scorers are named 'contains'"):
        run_eval("prompts:/support/2", uri, ["contains", "contains"], gateway=upstream.base_url)
    assert upstream.requests() == 0


def test_a_custom_scorer_from_the_users_module_scores_each_answer(
    sqlite_env, upstream, tmp_path, monkeypatch
):
    register_support()
    uri = eval_set(tmp_path)
    (tmp_path / "house_scorers.py").write_text(
        "def letters(output, case):\n"
        "    return len(output)\n"
        "\n"
        "class Echoes:\n"
        "    name = 'echoes_question'\n"
        "    def score(self, output, case):\n"
        "        return case.vars['question'] in output\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "house_scorers", raising=False)
    result = run_eval(
        "prompts:/support/2",
        uri,
        ["house_scorers:letters", "house_scorers:Echoes"],
        gateway=upstream.base_url,
    )
    assert result.cases["letters"].tolist() == [5.0, 1.0, 11.0, 4.0]
    assert result.metrics["letters"] == pytest.approx(21 / 4)
    assert result.metrics["echoes_question"] == 0.0
    assert result.scorers[0]["spec"] == "house_scorers:letters"


def test_json_schema_scores_answers_against_the_prompts_response_schema(
    sqlite_env, upstream, tmp_path
):
    keel.prompts.register(
        "structured",
        template=TEMPLATE,
        model="json",
        response_schema={
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
        },
    )
    upstream.control("json", rules={"france": '{"answer": "Paris"}', "2 plus 2": '{"answer": 4}'})
    uri = eval_set(tmp_path, CASES[:3])
    result = run_eval(
        "prompts:/structured/1",
        uri,
        ["json_schema", "regex:pattern=Paris"],
        gateway=upstream.base_url,
    )
    assert result.cases["json_schema"].tolist() == [1.0, 0.0, 0.0]
    assert "is not of type 'string'" in result.cases["json_schema.detail"][1]
    assert result.cases["json_schema.detail"][2].startswith("not JSON")
    assert result.cases["regex"].tolist() == [1.0, 0.0, 0.0]


def test_the_html_report_shows_every_case_with_its_text_escaped(sqlite_env, upstream, tmp_path):
    register_support()
    uri = eval_set(
        tmp_path,
        [{"vars": {"question": "<script>alert(1)</script> in France?"}, "expected": "Paris"}],
    )
    report = tmp_path / "report.html"
    result = run_eval(
        "prompts:/support/2",
        uri,
        ["exact"],
        gates=["exact >= 0.5"],
        gateway=upstream.base_url,
        html=report,
    )
    page = report.read_text()
    assert "prompts:/support/2" in page and uri in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
    assert "exact &gt;= 0.5" in page and result.run_id in page


def test_the_whole_result_is_plain_json(sqlite_env, upstream, tmp_path):
    register_support()
    uri = eval_set(tmp_path)
    upstream.control("new", fail_rate=0.25)
    result = run_eval(
        "prompts:/support/2", uri, ["exact"], against="production", gateway=upstream.base_url
    )
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert len(doc["cases"]) == len(CASES)
    assert doc["cases"][0]["vars"] == CASES[0]["vars"]
    assert doc["metrics"]["failures"] == 1
    assert doc["diffs"]["exact"]["n"] == len(CASES)
    stored = keel.Client().load_dict(result.run_id, "eval/result.json")
    assert stored["metrics"]["diff.exact"] == doc["metrics"]["diff.exact"]


class _Recorder(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that answers "Paris", prices each answer, keeps headers."""

    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append({**{k.lower(): v for k, v in self.headers.items()}, "path": self.path})
        answer = json.dumps(
            {
                "choices": [{"message": {"role": "assistant", "content": "Paris"}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
                "model": body["model"],
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("x-keel-cost-usd", "0.25")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


def test_requests_name_their_prompt_version_and_carry_the_key_and_costs_add_up(
    sqlite_env, tmp_path
):
    register_support()
    uri = eval_set(tmp_path)
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = run_eval(
            "prompts:/support@production",
            uri,
            ["exact"],
            gateway=f"http://127.0.0.1:{server.server_address[1]}/v1",
            key="sk-test-123",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert len(_Recorder.seen) == len(CASES)
    assert {h["x-keel-prompt"] for h in _Recorder.seen} == {"support/1"}
    assert {h["authorization"] for h in _Recorder.seen} == {"Bearer sk-test-123"}
    assert {h["path"] for h in _Recorder.seen} == {"/v1/chat/completions"}
    assert result.metrics["cost_usd"] == 0.25 * len(CASES)
    assert result.metrics["tokens"] == 8 * len(CASES)
    run = keel.Client().get_run(result.run_id)
    assert "sk-test-123" not in json.dumps(run.to_dict())


def test_an_eval_set_may_be_a_table_whose_other_columns_are_the_variables(
    sqlite_env, upstream, tmp_path
):
    register_support()
    table = pd.DataFrame(
        {
            "question": [case["vars"]["question"] for case in CASES],
            "expected": [case["expected"] for case in CASES],
            "reference": [case["reference"] for case in CASES],
        }
    )
    uri = keel.log_dataset(table, name="table-evals").uri
    result = run_eval("prompts:/support/2", uri, ["exact"], gateway=upstream.base_url)
    assert result.metrics["exact"] == 1.0
    assert json.loads(result.cases["vars"][0]) == CASES[0]["vars"]


def test_an_eval_set_that_is_not_jsonl_is_refused_naming_the_line(sqlite_env, upstream, tmp_path):
    register_support()
    bad = tmp_path / "bad-evals.jsonl"
    bad.write_text(json.dumps(CASES[0]) + "\n" + '{"vars": {"question": "x"}, "answer": "y"}\n')
    uri = keel.data.add(bad, name="bad-evals").uri
    with pytest.raises(InvalidInput, match=r"bad-evals.jsonl line 2: unknown field\(s\) answer"):
        run_eval("prompts:/support/2", uri, ["exact"], gateway=upstream.base_url)
    assert upstream.requests() == 0
