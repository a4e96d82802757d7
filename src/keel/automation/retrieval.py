"""An index policy's gates: the retrieval eval a rebuilt index must pass before its alias moves.

``gates: {retrieval: {questions: datasets:/kb-questions@latest, gates: ["recall@10 >= 0.8"]}}``
in an ``index:`` policy (:mod:`keel.automation.policy`); :mod:`keel.automation.indexes`
runs them. The conditions are checked with the eval's own parser when the policy is
applied, so a misspelt one fails then, not at 3 a.m.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keel.errors import InvalidInput
from keel.uris import is_dataset_uri, parse_dataset_uri

__all__ = ["RetrievalGates"]


@dataclass(frozen=True)
class RetrievalGates:
    """An index candidate's gates: a retrieval eval against the version the alias holds.

    Attributes:
        questions: the question set (``datasets:/kb-questions@latest`` is pinned to its
            newest version when a cycle starts).
        gates: conditions that must all hold (``"recall@10 >= 0.8"``; ``diff.`` compares
            with the alias's version on the same questions).
        k: chunks retrieved per question.
    """

    questions: str
    gates: tuple[str, ...]
    k: int = 10

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> RetrievalGates:
        from keel.llm.rag.evaluation import check_retrieval_gates
        from keel.llm.rag.index import check_k

        if not isinstance(doc, Mapping):
            raise InvalidInput(f"{where}: expected a mapping, got {type(doc).__name__} {doc!r}")
        unknown = sorted(set(doc) - {"questions", "gates", "k"})
        if unknown:
            raise InvalidInput(
                f"{where}: unknown field(s) {', '.join(map(str, unknown))}; expected questions, "
                "gates, k"
            )
        questions = doc.get("questions")
        if not isinstance(questions, str) or not is_dataset_uri(questions.strip()):
            raise InvalidInput(
                f"{where}.questions: expected the question set as a dataset URI like "
                f"datasets:/kb-questions@latest, got {questions!r}"
            )
        parse_dataset_uri(questions.strip())  # a malformed URI's message shows the shapes
        gates = doc.get("gates")
        if not isinstance(gates, list) or not gates:
            # Without a condition the evaluation could never fail: it would gate nothing.
            raise InvalidInput(
                f"{where}.gates: expected a non-empty list of conditions like "
                f"'recall@10 >= 0.8', got {gates!r}"
            )
        try:
            k = check_k(doc.get("k", 10))
        except InvalidInput as exc:
            raise InvalidInput(f"{where}.k: {exc}") from None
        for n, gate in enumerate(gates):
            try:  # the eval's own check, so a policy fails when applied, not at 3 a.m.
                check_retrieval_gates([gate], k, against=True)
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.gates[{n}]: {exc}") from None
        return cls(questions.strip(), tuple(str(g).strip() for g in gates), k)

    def to_dict(self) -> dict[str, Any]:
        return {"questions": self.questions, "gates": list(self.gates), "k": self.k}
