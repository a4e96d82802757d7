"""Retrieval evaluation: recall@k, MRR and nDCG by hand, question sets, gates, and ``keel rag eval``.

The metrics are checked against values worked out on paper for a small labelled
set. The end-to-end tests build real indexes (LanceDB tables in the artifact
store) of three short documents with the ``hash-384`` embedder, which retrieves by
shared words, so which document answers each question is known in advance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import keel
from keel.errors import InvalidInput, NotFound
from keel.llm.rag.evaluation import (
    evaluate_retrieval,
    load_questions,
    ndcg_at_k,
    parse_questions,
    parse_retrieval_gates,
    recall_at_k,
    reciprocal_rank,
    score_question,
)

DOCS = {
    "install.md": "Install the package with pip, then initialise a project folder with init.",
    "tokens.md": "Rotate an API token with the rotate subcommand; expired tokens stop working.",
    "ports.md": "The server listens on port 5000 and the gateway on port 4000: open both.",
}
QUESTIONS = [
    {"question": "how do I rotate an api token", "sources": ["tokens.md"]},
    {"question": "which port does the gateway listen on", "sources": ["ports.md"]},
    {"question": "install the package with pip", "sources": ["install.md"]},
]


# -- the metrics, by hand --------------------------------------------------------------------


def test_metrics_of_one_question_match_the_values_worked_out_by_hand():
    # chunks of a, b, a again, c; relevant: c and x (x never retrieved)
    paths, relevant = ["a", "b", "a", "c"], {"c", "x"}
    # distinct documents a, b, c: c at rank 3
    assert recall_at_k(paths, relevant, 4) == 0.5
    assert reciprocal_rank(paths, relevant, 4) == pytest.approx(1 / 3)
    # DCG 1/log2(4) = 0.5; ideal for 2 relevant: 1 + 1/log2(3)
    assert ndcg_at_k(paths, relevant, 4) == pytest.approx(0.5 / (1 + 1 / math.log2(3)))
    # the top 2 chunks hold only a and b
    assert recall_at_k(paths, relevant, 2) == 0.0
    assert reciprocal_rank(paths, relevant, 2) == 0.0
    assert ndcg_at_k(paths, relevant, 2) == 0.0


def test_a_document_counts_once_however_many_of_its_chunks_are_retrieved():
    # three chunks of a: one relevant document of two retrieved, at rank 1
    score = score_question(["a", "a", "a"], {"a", "b"}, 3)
    assert score.documents == ["a"]
    assert score.recall == 0.5
    assert score.mrr == 1.0
    assert score.ndcg == pytest.approx(1 / (1 + 1 / math.log2(3)))  # 0.6131
    assert score.hit_rate == 1.0
    # both relevant, at document ranks 1 and 3: (1 + 1/2) / (1 + 1/log2(3))
    assert ndcg_at_k(["a", "b", "b", "c"], {"a", "c"}, 4) == pytest.approx(
        1.5 / (1 + 1 / math.log2(3))
    )
    # the ideal ranking scores 1, and the ideal counts no more relevant documents than k
    assert ndcg_at_k(["a", "c"], {"a", "c", "d"}, 2) == pytest.approx(1.0)


def test_the_means_of_a_small_labelled_set_are_the_hand_computed_ones():
    retrieved = [["a", "b", "a", "c"], ["r", "s", "t"], ["u", "v"]]
    relevant = [{"c", "x"}, {"r"}, {"w"}]
    scores = [score_question(p, r, 4) for p, r in zip(retrieved, relevant, strict=True)]
    assert sum(s.recall for s in scores) / 3 == pytest.approx((0.5 + 1 + 0) / 3)
    assert sum(s.mrr for s in scores) / 3 == pytest.approx((1 / 3 + 1 + 0) / 3)
    first = 0.5 / (1 + 1 / math.log2(3))
    assert sum(s.ndcg for s in scores) / 3 == pytest.approx((first + 1 + 0) / 3)
    assert sum(s.hit_rate for s in scores) / 3 == pytest.approx(2 / 3)


# -- gates --------------------------------------------------------------------------------------


def test_gates_read_metrics_at_k_and_differences_against_the_compared_version():
    bounds = parse_retrieval_gates(
        [
            "recall@10>=0.8",
            "diff.ndcg@10 >= -0.02",
            "mrr@10 - against.mrr@10 >= 0",
            "latency_p95_ms <= 50",
        ]
    )
    assert [(b.metric, b.kind, b.value) for b in bounds] == [
        ("recall@10", "min", 0.8),
        ("diff.ndcg@10", "min", -0.02),
        ("diff.mrr@10", "min", 0.0),
        ("latency_p95_ms", "max", 50.0),
    ]


def test_a_gate_that_is_not_a_minimum_or_a_maximum_is_refused():
    with pytest.raises(InvalidInput, match=r"gate 'recall@10 > 0.8' is not METRIC >= NUMBER"):
        parse_retrieval_gates(["recall@10 > 0.8"])


# -- question sets ----------------------------------------------------------------------------


def test_a_question_without_sources_is_refused_naming_its_line():
    lines = ['{"question": "a?", "sources": ["a.md"]}', '{"question": "b?", "sources": []}']
    with pytest.raises(
        InvalidInput,
        match=r"q.jsonl line 2: 'sources' must be a non-empty list of the document paths that "
        r"answer the question",
    ):
        parse_questions(lines, "q.jsonl")
    with pytest.raises(InvalidInput, match=r"q.jsonl line 1: unknown field\(s\) answer"):
        parse_questions(['{"question": "a?", "sources": ["a.md"], "answer": "x"}'], "q.jsonl")
    with pytest.raises(InvalidInput, match=r"q.jsonl line 1 is not JSON"):
        parse_questions(["{question"], "q.jsonl")


def test_an_empty_question_set_is_refused(sqlite_env, tmp_path: Path):
    empty = tmp_path / "empty-questions.jsonl"
    empty.write_text("\n\n")
    uri = keel.data.add(empty, name="empty-questions").uri
    with pytest.raises(
        InvalidInput, match=r"datasets:/empty-questions@1 holds no questions; add one JSON object"
    ):
        load_questions(uri, client=keel.Client())


def test_a_table_version_reads_as_questions(sqlite_env):
    import pandas as pd

    frame = pd.DataFrame(
        {"question": ["a?", "b?"], "sources": [["a.md"], ["b.md", "./c.md"]], "id": ["q1", "q2"]}
    )
    uri = keel.log_dataset(frame, name="table-questions").uri
    found = load_questions(uri, client=keel.Client())
    assert [(q.id, q.question, q.sources) for q in found.questions] == [
        ("q1", "a?", ("a.md",)),
        ("q2", "b?", ("b.md", "c.md")),
    ]


# -- end to end on real indexes ----------------------------------------------------------------


def _folder(root: Path, docs: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        old.unlink()
    for name, text in docs.items():
        (root / name).write_text(text)
    return root


@pytest.fixture
def indexes(sqlite_env, tmp_path: Path) -> dict[str, str]:
    """``kb@production`` on all three documents, ``kb@candidate`` on a source without ports.md,
    and the question set; the URIs by role."""
    client = keel.Client()
    docs = _folder(tmp_path / "docs", DOCS)
    full = keel.data.add(docs, name="docs").uri
    production = client.rag.build("kb", source=full, chunker="tokens:40", embedder="hash-384")
    client.rag.set_alias("kb", "production", production.version.version)
    _folder(docs, {k: v for k, v in DOCS.items() if k != "ports.md"})
    partial = keel.data.add(docs, name="docs").uri
    candidate = client.rag.build("kb", source=partial, chunker="tokens:40", embedder="hash-384")
    client.rag.set_alias("kb", "candidate", candidate.version.version)
    questions = tmp_path / "kb-questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return {"questions": keel.data.add(questions, name="kb-questions").uri}


def test_an_index_is_scored_and_compared_with_its_production_alias(indexes):
    result = evaluate_retrieval(
        keel.Client(),
        "kb@candidate",
        indexes["questions"],
        k=1,
        against="production",
        gates=["recall@1 >= 0.5", "diff.recall@1 >= -0.02"],
    )
    assert (result.index, result.against) == ("rag:/kb/2", "rag:/kb/1")
    m = result.metrics
    # production answers all three at rank 1; the candidate has no ports.md to retrieve
    assert m["against.recall@1"] == 1.0 and m["against.mrr@1"] == 1.0
    assert m["recall@1"] == pytest.approx(2 / 3)
    assert m["mrr@1"] == pytest.approx(2 / 3) and m["ndcg@1"] == pytest.approx(2 / 3)
    assert m["diff.recall@1"] == pytest.approx(-1 / 3)
    assert result.diffs["recall@1"].losses == 1 and result.diffs["recall@1"].ties == 2
    assert [(g.name, g.passed) for g in result.gates] == [
        ("recall@1 >= 0.5", True),
        ("diff.recall@1 >= -0.02", False),
    ]
    assert not result.passed
    assert [r["recall"] for r in result.results] == [1.0, 0.0, 1.0]
    # the candidate's source has no ports.md: the note says it can never be retrieved
    assert result.notes == [
        "1 source(s) of the questions are no document of the index's source, so they can "
        "never be retrieved: ports.md"
    ]


def test_gates_on_a_comparison_need_against_and_metrics_the_eval_measures(indexes):
    client = keel.Client()
    with pytest.raises(InvalidInput, match=r"compares with another version: pass --against"):
        evaluate_retrieval(
            client, "kb@candidate", indexes["questions"], gates=["diff.recall@10 >= 0"]
        )
    with pytest.raises(InvalidInput, match=r"this eval measures no 'recall@5'; its metrics are"):
        evaluate_retrieval(
            client, "kb@candidate", indexes["questions"], k=10, gates=["recall@5 >= 1"]
        )


def test_bad_input_gets_clear_errors_before_any_query(indexes):
    client = keel.Client()
    with pytest.raises(InvalidInput, match=r"k must be a whole number from 1 to 1000 .*got 0"):
        evaluate_retrieval(client, "kb@candidate", indexes["questions"], k=0)
    with pytest.raises(NotFound, match=r"'kb' has no alias 'staging'; the aliases of 'kb' are"):
        evaluate_retrieval(client, "kb@staging", indexes["questions"])
    with pytest.raises(NotFound, match=r"no RAG index named 'kd'; the RAG indexes are: kb"):
        evaluate_retrieval(client, "kd@production", indexes["questions"])
    with pytest.raises(NotFound, match=r"no dataset named 'no-such-questions'"):
        evaluate_retrieval(client, "kb@candidate", "datasets:/no-such-questions@1")


def test_keel_rag_eval_exits_1_naming_the_gate_that_failed(indexes, sqlite_env, run_keel):
    done = run_keel(
        "rag", "eval", "kb@candidate", "--set", indexes["questions"], "--against", "production",
        "--k", "1", "--gate", "recall@1 >= 0.5", "--gate", "diff.recall@1 >= -0.02",
        settings=sqlite_env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "recall@1" in done.stdout and "0.6667" in done.stdout
    failed = [line for line in done.stderr.splitlines() if line.startswith("gate failed")]
    assert failed == [
        "gate failed: diff.recall@1 >= -0.02: diff.recall@1 -0.3333 < -0.02 (off by 0.3133)"
    ]


def test_keel_rag_eval_passes_with_json_and_refuses_bad_input_with_exit_2(
    indexes, sqlite_env, run_keel
):
    done = run_keel(
        "rag", "eval", "kb@production", "--set", indexes["questions"], "--k", "1",
        "--gate", "recall@1 >= 0.9", "--json", settings=sqlite_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["passed"] and doc["metrics"]["recall@1"] == 1.0 and doc["against"] is None
    bad = run_keel(
        "rag", "eval", "kb@production", "--set", indexes["questions"], "--k", "0",
        settings=sqlite_env,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: k must be a whole number from 1 to 1000")
