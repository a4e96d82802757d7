"""Retrieval evaluation: recall@k, MRR and nDCG of an index version on labelled questions.

A question set is an ordinary dataset version (``keel data add kb-questions.jsonl``),
so it is versioned and pinned like any eval set. Each line is one question and the
documents that answer it, as paths of the indexed source dataset::

    {"question": "How do I rotate an API token?", "sources": ["guide/tokens.md"]}
    {"id": "q7", "question": "Which ports must be open?", "sources": ["ops/net.md", "faq.md"]}

A table version (``keel.log_dataset``) with ``question`` and ``sources`` columns
reads the same. Every line is checked before any query is made, and an error
names the file and line.

**Relevance is per document.** An index returns chunks; a chunk is relevant when
its source path is one of the question's ``sources``. The ``k`` chunks retrieved
are mapped to their documents, and a document counts once, at the rank of its
first chunk (so five chunks of one relevant document do not score five times).
On that ranking of distinct documents, for one question with relevant set ``R``:

- ``recall@k``: the share of ``R`` among the documents of the top ``k`` chunks;
- ``mrr@k``: ``1 / rank`` of the first relevant document (0 when none is retrieved);
- ``ndcg@k``: binary-gain DCG, ``sum(1 / log2(rank + 1))`` over the relevant
  documents retrieved, divided by the best possible, ``sum(1 / log2(i + 1))`` for
  ``i = 1 .. min(|R|, k)``;
- ``hit_rate@k``: 1 when any relevant document is retrieved.

The set's figure of each metric is the mean over questions. With ``against`` (another
version or alias of the index) both are queried with the same questions, and each
metric gets ``against.<metric>`` and ``diff.<metric>`` (candidate minus compared,
with a paired bootstrap interval from :mod:`keel.llm.evals.stats`).

Each index answers one warm-up query before the timed ones (``latency_p50_ms``,
``latency_p95_ms``: embedding plus search), and an evaluation's queries are not
traced: they are not users' traffic.

Gates are the eval gates' grammar (:mod:`keel.llm.evals.gates`) on these metrics:
``recall@10 >= 0.8``, ``ndcg@10 >= 0.6``, and "no worse than the compared version by
more than 0.02" as ``diff.recall@10 >= -0.02``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.checks import Gate
from keel.errors import InvalidInput
from keel.llm.evals.cases import parse_jsonl, read_jsonl_version
from keel.llm.evals.gates import Bound, check_bounds, decide, parse_gate
from keel.uris import parse_rag_uri

if TYPE_CHECKING:
    from keel.client import Client
    from keel.llm.evals.stats import PairedDiff
    from keel.llm.rag.index import RagIndex

__all__ = [
    "QUESTION_FIELDS",
    "Question",
    "QuestionScore",
    "QuestionSet",
    "RetrievalEval",
    "check_retrieval_gates",
    "distinct_documents",
    "evaluate_retrieval",
    "load_questions",
    "ndcg_at_k",
    "parse_questions",
    "parse_retrieval_gates",
    "recall_at_k",
    "reciprocal_rank",
    "retrieval_metrics",
    "score_question",
]

#: The fields a question may have; ``question`` and ``sources`` are required.
QUESTION_FIELDS = ("question", "sources", "id", "metadata")
_EXAMPLE = '{"question": "How do I rotate a token?", "sources": ["guide/tokens.md"]}'
_GATE_EXAMPLES = "'recall@10 >= 0.8', 'ndcg@10 >= 0.6' or 'diff.recall@10 >= -0.02'"
#: The per-question scores averaged into the set's metrics, as ``<name>@<k>``.
_SCORES = ("recall", "mrr", "ndcg", "hit_rate")


# -- question sets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """One labelled question.

    Attributes:
        index: its position in the set (from 0).
        question: the text sent to the index.
        sources: the documents (source paths) that answer it.
        id: the set's own id for it, if it gives one.
        metadata: anything else the set records about it.
    """

    index: int
    question: str
    sources: tuple[str, ...]
    id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QuestionSet:
    """The questions of one dataset version.

    Attributes:
        uri: ``datasets:/<name>@<version>``.
        digest: the version's manifest digest (names its bytes).
        questions: in order.
    """

    uri: str
    digest: str
    questions: list[Question]


def _question(doc: Any, index: int, where: str) -> Question:
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"{where}: a question must be a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(QUESTION_FIELDS))
    if unknown:
        raise InvalidInput(
            f"{where}: unknown field(s) {', '.join(map(str, unknown))}; a question has "
            f"{', '.join(QUESTION_FIELDS)}, e.g. {_EXAMPLE}"
        )
    text = doc.get("question")
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(
            f"{where}: 'question' must be non-empty text, e.g. {_EXAMPLE}; got {text!r:.80}"
        )
    sources = doc.get("sources")
    if isinstance(sources, str):
        sources = [sources]
    if (
        not isinstance(sources, list | tuple)
        or not sources
        or not all(isinstance(s, str) and s.strip() for s in sources)
    ):
        raise InvalidInput(
            f"{where}: 'sources' must be a non-empty list of the document paths that answer "
            f"the question, e.g. {_EXAMPLE}; got {sources!r:.80}"
        )
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InvalidInput(f"{where}: 'metadata' must be an object, got {type(metadata).__name__}")
    ident = doc.get("id")
    return Question(
        index=index,
        question=text,
        # a path as the manifest spells it: relative, forward slashes, no leading "./"
        sources=tuple(dict.fromkeys(s.strip().removeprefix("./") for s in sources)),
        id=None if ident is None else str(ident),
        metadata=dict(metadata),
    )


def parse_questions(lines: Iterable[str], source: str, start: int = 0) -> list[Question]:
    """Questions from JSONL text lines (blank lines are skipped).

    Args:
        lines: the file's lines.
        source: the file's name, for messages.
        start: the index of the first question (questions of earlier files come before).

    Raises:
        InvalidInput: a line is not JSON or not a question; the message names the line.
    """
    return parse_jsonl(lines, source, _question, start)


def _cell(value: Any) -> Any:
    """A table cell as plain Python (NumPy arrays and scalars; a missing value as None)."""
    if isinstance(value, np.ndarray):
        return [_cell(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _from_frame(frame: Any, source: str) -> list[Question]:
    questions = []
    for i, record in enumerate(frame.to_dict(orient="records")):
        doc = {k: _cell(v) for k, v in record.items()}
        if isinstance(doc.get("sources"), str) and doc["sources"].lstrip().startswith("["):
            try:  # a JSON list kept as text
                doc["sources"] = json.loads(doc["sources"])
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{source} row {i}: 'sources' is not JSON: {exc.msg}") from None
        doc = {k: v for k, v in doc.items() if v is not None}
        questions.append(_question(doc, i, f"{source} row {i}"))
    return questions


def load_questions(ref: str, *, client: Client) -> QuestionSet:
    """The questions of dataset version ``ref`` (``datasets:/kb-questions@2``, ``name@2``, ``name``).

    Raises:
        NotFound: no such dataset version.
        InvalidInput: the version holds no ``.jsonl`` file or no question, or a
            malformed one (the message names its file and line).
    """
    from keel.data.tables import load_dataset

    version = client.data.get_version(ref)
    # pinned to the number just resolved, so a version added meanwhile is not read instead
    loaded = load_dataset(version.uri, settings=client.settings)
    if not isinstance(loaded, Path):
        questions = _from_frame(loaded, version.uri)
    else:
        questions = read_jsonl_version(
            loaded,
            version.uri,
            _question,
            no_files=f"{version.uri} holds no .jsonl file; a question set is JSONL, one question "
            f"a line ({_EXAMPLE}): keel data add kb-questions.jsonl",
        )
    if not questions:
        raise InvalidInput(
            f"{version.uri} holds no questions; add one JSON object a line, e.g. {_EXAMPLE}"
        )
    return QuestionSet(uri=version.uri, digest=version.digest, questions=questions)


# -- metrics -------------------------------------------------------------------------------------


def distinct_documents(paths: Sequence[str], k: int) -> list[str]:
    """The documents of the top ``k`` chunks, each once, at the rank of its first chunk."""
    return list(dict.fromkeys(paths[:k]))


def recall_at_k(paths: Sequence[str], relevant: Collection[str], k: int) -> float:
    """The share of ``relevant`` documents among those of the top ``k`` chunks."""
    if not relevant:
        raise InvalidInput("recall needs at least one relevant document")
    found = set(distinct_documents(paths, k)) & set(relevant)
    return len(found) / len(set(relevant))


def reciprocal_rank(paths: Sequence[str], relevant: Collection[str], k: int) -> float:
    """``1 / rank`` of the first relevant document in the top ``k`` chunks (0 if none)."""
    wanted = set(relevant)
    for rank, path in enumerate(distinct_documents(paths, k), 1):
        if path in wanted:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(paths: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Binary-gain nDCG of the distinct documents of the top ``k`` chunks."""
    wanted = set(relevant)
    if not wanted:
        raise InvalidInput("nDCG needs at least one relevant document")
    dcg = sum(
        1.0 / math.log2(rank + 1)
        for rank, path in enumerate(distinct_documents(paths, k), 1)
        if path in wanted
    )
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(wanted), k) + 1))
    return dcg / ideal


@dataclass(frozen=True)
class QuestionScore:
    """One question's scores on one index version.

    Attributes:
        documents: the distinct documents retrieved, in rank order.
        recall, mrr, ndcg, hit_rate: the question's scores at the eval's ``k``.
        latency_ms: how long its query took.
    """

    documents: list[str]
    recall: float
    mrr: float
    ndcg: float
    hit_rate: float
    latency_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "recall": self.recall,
            "mrr": self.mrr,
            "ndcg": self.ndcg,
            "hit_rate": self.hit_rate,
            "latency_ms": self.latency_ms,
        }


def score_question(
    paths: Sequence[str], relevant: Collection[str], k: int, latency_ms: float = 0.0
) -> QuestionScore:
    """Every metric of one question, from the source paths of its retrieved chunks."""
    recall = recall_at_k(paths, relevant, k)
    return QuestionScore(
        documents=distinct_documents(paths, k),
        recall=recall,
        mrr=reciprocal_rank(paths, relevant, k),
        ndcg=ndcg_at_k(paths, relevant, k),
        hit_rate=1.0 if recall > 0 else 0.0,
        latency_ms=latency_ms,
    )


def retrieval_metrics(k: int) -> tuple[str, ...]:
    """The names of the retrieval metrics at ``k``: ``recall@k``, ``mrr@k``, ``ndcg@k``, ``hit_rate@k``."""
    return tuple(f"{name}@{k}" for name in _SCORES)


def _means(scores: Sequence[QuestionScore], k: int) -> dict[str, float]:
    metrics = {
        f"{name}@{k}": float(np.mean([getattr(s, name) for s in scores])) for name in _SCORES
    }
    latencies = np.asarray([s.latency_ms for s in scores], dtype=np.float64)
    metrics["latency_p50_ms"] = float(np.percentile(latencies, 50))
    metrics["latency_p95_ms"] = float(np.percentile(latencies, 95))
    return metrics


# -- gates ---------------------------------------------------------------------------------------

# The eval gates name metrics with letters, digits, '_', '-' and '.': "@k" is spelled
# "_at_k" for their parser and back, so there is one gate grammar in Keel.
_AT_RE = re.compile(r"@(\d+)")
_AT_BACK_RE = re.compile(r"_at_(\d+)$")


def parse_retrieval_gates(gates: Sequence[str] | str | None) -> list[Bound]:
    """Bounds from gate texts such as ``"recall@10 >= 0.8"`` or ``"diff.ndcg@10 >= -0.02"``.

    Raises:
        InvalidInput: a text that is not ``METRIC >= NUMBER`` or ``METRIC <= NUMBER``.
    """
    texts = [gates] if isinstance(gates, str) else list(gates or [])
    bounds = []
    for text in texts:
        if not isinstance(text, str):
            raise InvalidInput(f"a gate is text like {_GATE_EXAMPLES}; got {text!r}")
        try:
            bound = parse_gate(_AT_RE.sub(r"_at_\1", text))
        except InvalidInput:
            raise InvalidInput(
                f"gate {text!r} is not METRIC >= NUMBER or METRIC <= NUMBER (a minimum or a "
                f"maximum); e.g. {_GATE_EXAMPLES}"
            ) from None
        bounds.append(Bound(_AT_BACK_RE.sub(r"@\1", bound.metric), bound.kind, bound.value))
    return bounds


def _known_metrics(k: int) -> list[str]:
    own = [*retrieval_metrics(k), "latency_p50_ms", "latency_p95_ms", "questions"]
    compared = [f"{prefix}.{m}" for prefix in ("against", "diff") for m in own[:-1]]
    return own + compared


def check_retrieval_gates(
    gates: Sequence[str] | str | None, k: int, *, against: bool
) -> list[Bound]:
    """The bounds of ``gates``, each on a metric an eval at ``k`` measures.

    Args:
        against: the eval compares with another version (``diff.``/``against.`` gates
            need one).

    Raises:
        InvalidInput: a malformed gate, or one on a metric the eval does not measure
            (``recall@5`` when ``k`` is 10); the message lists the metrics it does.
    """
    bounds = parse_retrieval_gates(gates)
    check_bounds(bounds, _known_metrics(k), against=against)
    return bounds


# -- the evaluation ------------------------------------------------------------------------------


@dataclass
class RetrievalEval:
    """One index version evaluated on a question set (and compared with another).

    Attributes:
        index: the candidate, as ``rag:/<name>/<version>``.
        against: the compared version as ``rag:/<name>/<version>``, or ``None``.
        questions: the question set's ``datasets:/`` URI; ``questions_digest`` names its bytes.
        k: the chunks retrieved per question.
        metrics: the candidate's means, and ``against.*`` / ``diff.*`` when compared.
        diffs: per metric, the paired comparison (:class:`keel.llm.evals.stats.PairedDiff`).
        gates: each gate's verdict.
        notes: what the reader should know (sources the index has no document for).
        results: per question: its text, sources and scores (``against`` when compared).
    """

    index: str
    against: str | None
    questions: str
    questions_digest: str
    k: int
    metrics: dict[str, float]
    diffs: dict[str, PairedDiff] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every gate passed (true when there are none)."""
        return all(g.passed for g in self.gates)

    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def summary(self) -> str:
        """One line: the headline metrics and the gates' outcome."""
        shown = ", ".join(f"{m} {self.metrics[m]:.3f}" for m in retrieval_metrics(self.k)[:3])
        head = f"{self.index} on {self.questions}: {shown}"
        if not self.gates:
            return head
        failed = self.failed_gates()
        if not failed:
            return f"{head}; passed {len(self.gates)} gate(s)"
        return f"{head}; failed " + "; ".join(f"{g.name}: {g.detail}" for g in failed)

    def to_dict(self, *, questions: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "index": self.index,
            "against": self.against,
            "questions": self.questions,
            "questions_digest": self.questions_digest,
            "k": self.k,
            "metrics": self.metrics,
            "diffs": {k: v.to_dict() for k, v in self.diffs.items()},
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
            "notes": self.notes,
        }
        if questions:
            doc["results"] = self.results
        return doc


Progress = Callable[[str, int, int | None], None]


def _uri(index: RagIndex) -> str:
    return index.version.uri


def _against_ref(index: str, against: str | int) -> str:
    """``production`` or ``3`` name a version of the candidate's index; a full reference any."""
    text = str(against).strip()
    if text.isdigit():
        return f"rag:/{parse_rag_uri(index).name}/{int(text)}"
    if any(c in text for c in "@/:"):
        return text
    return f"rag:/{parse_rag_uri(index).name}@{text}"


def _run(
    index: RagIndex,
    questions: Sequence[Question],
    k: int,
    label: str,
    progress: Progress | None,
) -> list[QuestionScore]:
    index.tracer = None  # an evaluation's queries are not traffic: the traces stay the users'
    if questions:  # the latencies are warm queries', not the table's and the model's loading
        index.open().query(questions[0].question, k=1)
    scores = []
    for n, q in enumerate(questions):
        started = time.perf_counter()
        hits = index.query(q.question, k=k)
        latency = (time.perf_counter() - started) * 1000
        scores.append(score_question([h.path for h in hits], q.sources, k, latency))
        if progress is not None:
            progress(label, n + 1, len(questions))
    return scores


def _unknown_sources(index: RagIndex, questions: Sequence[Question], client: Client) -> list[str]:
    """Sources no document of the indexed source version has: they can never be retrieved."""
    from keel.llm.rag.freshness import source_documents

    known = source_documents(index, client)
    # a line of a JSONL source is the document "<file>#<line>"
    return sorted({s for q in questions for s in q.sources if s.partition("#")[0] not in known})


def evaluate_retrieval(
    client: Client,
    index: str,
    questions: str | QuestionSet,
    *,
    k: int = 10,
    against: str | int | None = None,
    gates: Sequence[str] | str | None = None,
    progress: Progress | None = None,
) -> RetrievalEval:
    """Query ``index`` with every question of a set; score it, compare it, gate it.

    Everything the call is given is checked before the first query: ``k``, the gates
    (a gate on ``diff.``/``against.`` metrics needs ``against``), the question set,
    and both index versions.

    Args:
        client: a ``keel.Client``.
        index: the candidate: ``kb@candidate``, ``rag:/kb/4``.
        questions: a question set's dataset version (``datasets:/kb-questions@2``), or one
            already read.
        k: chunks retrieved per question (1 to 1000).
        against: a version or alias of the same index (``production``, ``3``) or any index
            reference to compare with.
        gates: conditions on the metrics, e.g. ``["recall@10 >= 0.8", "diff.recall@10 >= -0.02"]``.
        progress: ``progress(stage, done, total)`` as questions are answered.

    Raises:
        InvalidInput: a bad ``k``, gate or question set.
        NotFound: no such index version or alias, or no such dataset version.
    """
    from keel.llm.evals.stats import paired_difference
    from keel.llm.rag.index import check_k

    k = check_k(k)
    bounds = check_retrieval_gates(gates, k, against=against is not None)
    asked = (
        questions
        if isinstance(questions, QuestionSet)
        else load_questions(questions, client=client)
    )
    candidate = client.rag.load(index)
    compared = None if against is None else client.rag.load(_against_ref(index, against))

    scores = _run(candidate, asked.questions, k, "candidate", progress)
    metrics: dict[str, float] = {**_means(scores, k), "questions": float(len(scores))}
    diffs: dict[str, PairedDiff] = {}
    other: list[QuestionScore] | None = None
    if compared is not None:
        same = _uri(compared) == _uri(candidate)  # one version under two names: query it once
        other = scores if same else _run(compared, asked.questions, k, "against", progress)
        theirs = _means(other, k)
        for name in theirs:
            metrics[f"against.{name}"] = theirs[name]
            metrics[f"diff.{name}"] = metrics[name] - theirs[name]
        for name in _SCORES:
            diffs[f"{name}@{k}"] = paired_difference(
                np.asarray([getattr(s, name) for s in scores]),
                np.asarray([getattr(s, name) for s in other]),
            )

    notes = []
    unknown = _unknown_sources(candidate, asked.questions, client)
    if unknown:
        shown = ", ".join(unknown[:5]) + (", …" if len(unknown) > 5 else "")
        notes.append(
            f"{len(unknown)} source(s) of the questions are no document of the index's source, "
            f"so they can never be retrieved: {shown}"
        )
    results = []
    for i, q in enumerate(asked.questions):
        row: dict[str, Any] = {
            "index": q.index,
            "id": q.id,
            "question": q.question,
            "sources": list(q.sources),
            **scores[i].to_dict(),
        }
        if other is not None:
            row["against"] = other[i].to_dict()
        results.append(row)
    return RetrievalEval(
        index=_uri(candidate),
        against=None if compared is None else _uri(compared),
        questions=asked.uri,
        questions_digest=asked.digest,
        k=k,
        metrics=metrics,
        diffs=diffs,
        gates=decide(bounds, metrics),
        notes=notes,
        results=results,
    )
