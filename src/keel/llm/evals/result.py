"""``EvalResult``: what an evaluation measured and decided, apart from how it was run.

The runner builds one; the HTML report, the CLI and the gates read it. It lives
in its own module so that the report can import it without importing the runner.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.llm.evals.stats import PairedDiff

if TYPE_CHECKING:
    import pandas as pd

    from keel.checks import Gate

__all__ = ["EvalResult", "case_records"]

#: Per-case columns holding JSON text (a case's variables and expected value may be any shape).
_JSON_COLUMNS = ("vars", "expected")


@dataclass
class EvalResult:
    """What an evaluation measured and decided.

    Attributes:
        prompt: the candidate, ``prompts:/NAME/VERSION``.
        dataset: the eval set, ``datasets:/NAME@VERSION``.
        against: the compared version, ``prompts:/NAME/VERSION``, or ``None``.
        scorers: each scorer's ``name``, ``spec`` and ``threshold``.
        metrics: every metric, flat (as logged to the run).
        diffs: per scorer, the paired comparison with ``against``.
        gates: each gate's verdict.
        cases: one row per case (what ``eval/cases.parquet`` holds).
        run_id: the tracked run, or ``None`` when not tracked.
        notes: things worth knowing about this evaluation.
    """

    prompt: str
    dataset: str
    against: str | None
    scorers: list[dict[str, Any]]
    metrics: dict[str, float]
    diffs: dict[str, PairedDiff]
    gates: list[Gate]
    cases: pd.DataFrame
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every gate passed (and trivially when there are none)."""
        return all(g.passed for g in self.gates)

    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def summary(self) -> str:
        """One line: the verdict, with the failed gates and by how much."""
        if not self.gates:
            return "no gates: measured only"
        if self.passed:
            return f"passed all {len(self.gates)} gate(s)"
        failed = self.failed_gates()
        return f"failed {len(failed)} of {len(self.gates)} gate(s): " + "; ".join(
            f"{g.name}: {g.detail}" for g in failed
        )

    def to_dict(self, *, cases: bool = True) -> dict[str, Any]:
        """The whole result as JSON-ready data (NaN as ``None``); ``cases`` adds per-case rows."""
        doc: dict[str, Any] = {
            "passed": self.passed,
            "run_id": self.run_id,
            "prompt": self.prompt,
            "against": self.against,
            "dataset": self.dataset,
            "scorers": self.scorers,
            "metrics": {k: _finite(v) for k, v in self.metrics.items()},
            "diffs": {
                k: {f: _finite(v) for f, v in d.to_dict().items()} for k, d in self.diffs.items()
            },
            "gates": [g.to_dict() for g in self.gates],
            "notes": self.notes,
        }
        if cases:
            doc["cases"] = case_records(self.cases)
        return doc


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def case_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per-case rows as JSON-ready dicts (NaN and missing values as ``None``)."""
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    records = []
    for row in rows:
        record = {str(k): _finite(v) for k, v in row.items()}
        for key in _JSON_COLUMNS:  # JSON text in Parquet (cells of any shape), values here
            if isinstance(record.get(key), str):
                record[key] = json.loads(record[key])
        records.append(record)
    return records
