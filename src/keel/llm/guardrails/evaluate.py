"""Scoring guardrail scanners on a labelled set: precision, recall, false-positive rate, latency.

A labelled set is JSONL, one example a line: an object with ``text`` (the
prompt) and ``label`` (1 or ``true``: the scanner should trip; 0 or
``false``: it should not), and optionally ``family`` (reported per family)
and ``split`` (selected with ``split=``). It is read from a local file or
from a dataset version (``datasets:/name@3``, made by ``keel data add``; a
version logged as a table needs ``text`` and ``label`` columns). Every line
is checked before anything is scanned; an error names the file and line.

Each scanner reads every text through :func:`keel.llm.guardrails.api.scan`,
the gateway's own path, so the latency is what a request pays (per message,
one at a time; the first scan, which loads any model, is a warm-up that is
not counted). A text counts as flagged when the scanner's score is at or
over ``threshold``, or, when none is given, when the scanner tripped at its
own threshold. With label 1 as positive:

- precision = TP / (TP + FP), recall = TP / (TP + FN),
  false-positive rate = FP / (FP + TN), F1 their harmonic mean;
- a rate whose denominator is 0 is ``None`` (no flagged text, no positive,
  no negative), never a made-up 0 or 1.

:attr:`ScannerScore.curve` sweeps the threshold from 0 to 1 in steps of 0.01:
the trade-off the HTML report (:mod:`~keel.llm.guardrails.report`) plots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from keel.client import Client
    from keel.llm.guardrails.api import ScannerSpec

__all__ = [
    "CURVE_STEPS",
    "GuardrailEval",
    "LabelledText",
    "ScannerScore",
    "evaluate",
    "parse_labelled",
    "read_labelled",
    "score_scanner",
]

#: Thresholds of the sweep: 0, 0.01, …, 1.
CURVE_STEPS = 101


@dataclass(frozen=True)
class LabelledText:
    """One example: the text, whether the scanner should trip (1) or not (0), its family."""

    text: str
    label: int
    family: str | None = None


def _example(doc: Any, where: str) -> tuple[LabelledText, str | None]:
    if not isinstance(doc, Mapping):
        raise InvalidInput(
            f'{where}: an example must be a JSON object like {{"text": "...", "label": 1}}, '
            f"got {type(doc).__name__}"
        )
    text = doc.get("text")
    if not isinstance(text, str):
        raise InvalidInput(
            f"{where}: 'text' must be the text to scan, got "
            + ("nothing" if text is None else type(text).__name__)
        )
    if "label" not in doc:
        raise InvalidInput(f"{where} has no 'label'; give 1 (should trip) or 0 (should pass)")
    label = doc["label"]
    if isinstance(label, (bool, float)) and label in (0, 1):
        label = int(label)
    if not isinstance(label, int) or label not in (0, 1):
        raise InvalidInput(
            f"{where}: 'label' must be 1 or true (should trip) or 0 or false (should pass), "
            f"got {label!r}"
        )
    family = doc.get("family")
    split = doc.get("split")
    return (
        LabelledText(text, label, None if family is None else str(family)),
        None if split is None else str(split),
    )


def parse_labelled(
    lines: Iterable[str], source: str, *, split: str | None = None
) -> list[LabelledText]:
    """Examples from JSONL lines (blank lines skipped), those of ``split`` if given.

    Raises:
        InvalidInput: a line is not JSON or not an example; the message names it.
    """
    from keel.llm.evals.cases import parse_jsonl

    found = parse_jsonl(lines, source, lambda doc, _index, where: _example(doc, where))
    return [example for example, its_split in found if split is None or its_split == split]


def _from_frame(frame: Any, source: str, split: str | None) -> list[LabelledText]:
    missing = [column for column in ("text", "label") if column not in frame.columns]
    if missing:
        raise InvalidInput(
            f"{source} has no {' or '.join(map(repr, missing))} column; a labelled set has "
            "'text' and 'label' (1 should trip, 0 should pass)"
        )
    examples: list[LabelledText] = []
    for row, record in enumerate(frame.to_dict(orient="records")):
        doc = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in record.items()}
        example, its_split = _example(doc, f"{source} row {row}")
        if split is None or its_split == split:
            examples.append(example)
    return examples


def read_labelled(
    source: str | Path, *, split: str | None = None, client: Client | None = None
) -> tuple[str, list[LabelledText]]:
    """The examples of a local JSONL file or a dataset version, and what to call the source.

    Args:
        source: a path, or ``datasets:/NAME@VERSION`` (``datasets:/NAME`` for the latest).
        split: keep only the examples whose ``split`` is this (``test``, say).
        client: for a dataset version (default ``keel.Client()``).

    Raises:
        NotFound: no such file or dataset version.
        InvalidInput: a malformed example, or no example at all.
    """
    from keel.uris import is_dataset_uri

    if isinstance(source, str) and is_dataset_uri(source):
        from keel.client import Client
        from keel.data.tables import load_dataset

        client = client or Client()
        version = client.data.get_version(source)
        loaded = load_dataset(version.uri, settings=client.settings)
        name = version.uri
        if not isinstance(loaded, Path):
            examples = _from_frame(loaded, name, split)
        else:
            files = (
                [loaded]
                if loaded.is_file()
                else sorted(p for p in loaded.rglob("*") if p.suffix in (".jsonl", ".ndjson"))
            )
            if not files:
                raise InvalidInput(
                    f"{name} holds no .jsonl file; a labelled set is JSONL, one "
                    '{"text": ..., "label": 0 or 1} a line'
                )
            examples = []
            for file in files:
                label = name if loaded.is_file() else f"{name} {file.relative_to(loaded)}"
                with file.open(encoding="utf-8") as handle:
                    examples += parse_labelled(handle, label, split=split)
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise NotFound(
                f"no labelled set at {path}: give a JSONL file of "
                '{"text": ..., "label": 0 or 1} lines, or a datasets:/ URI'
            )
        with path.open(encoding="utf-8") as handle:
            examples = parse_labelled(handle, name, split=split)
    if not examples:
        chosen = f" in split {split!r}" if split is not None else ""
        raise InvalidInput(f"{name} holds no example{chosen}; add one JSON object per line")
    return name, examples


def _label(spec: Any, name: str) -> str:
    """What to call a scanner in results: its name, with the options it was given."""
    if isinstance(spec, Mapping):
        options = ",".join(f"{k}={v}" for k, v in spec.items() if k != "scanner")
        return f"{name}:{options}" if options else name
    return name


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class ScannerScore:
    """One scanner's accuracy and speed on a labelled set.

    Attributes:
        scanner: the scanner's name, with its options when it was given some
            (``injection:encoder=contextual``).
        threshold: the threshold the counts are at (None: the scanner's own trip rule).
        tp, fp, tn, fn: the confusion counts (label 1 is positive).
        precision, recall, fpr, f1: the rates (None where undefined; see the module).
        latency_p50_ms, latency_p99_ms, latency_mean_ms: per message.
        curve: per threshold of the sweep, ``threshold``, ``precision``, ``recall``, ``fpr``
            and ``f1``.
        families: per family, ``examples``, ``label`` (when all share one) and ``flagged``
            (the share flagged).
        scores: each example's score, in order.
    """

    scanner: str
    threshold: float | None
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float | None
    recall: float | None
    fpr: float | None
    f1: float | None
    latency_p50_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    curve: list[dict[str, float | None]] = field(repr=False)
    families: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    scores: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-example scores, JSON-able."""
        return {
            "scanner": self.scanner,
            "threshold": self.threshold,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "fpr": self.fpr,
            "f1": self.f1,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "latency_mean_ms": self.latency_mean_ms,
            "families": self.families,
            "curve": self.curve,
        }


def _curve(scores: np.ndarray, labels: np.ndarray) -> list[dict[str, float | None]]:
    """Precision, recall, FPR and F1 at each threshold of the sweep (vectorized)."""
    thresholds = np.linspace(0.0, 1.0, CURVE_STEPS)
    flagged = scores[None, :] >= thresholds[:, None] - 1e-12
    positives = int(labels.sum())
    negatives = len(labels) - positives
    tps = (flagged & (labels == 1)).sum(axis=1)
    fps = (flagged & (labels == 0)).sum(axis=1)
    points = []
    for threshold, tp, fp in zip(thresholds, tps.tolist(), fps.tolist(), strict=True):
        precision = _rate(tp, tp + fp)
        recall = _rate(tp, positives)
        points.append(
            {
                "threshold": round(float(threshold), 2),
                "precision": precision,
                "recall": recall,
                "fpr": _rate(fp, negatives),
                "f1": _f1(precision, recall),
            }
        )
    return points


def score_scanner(
    name: str,
    scores: Sequence[float],
    flagged: Sequence[bool],
    labels: Sequence[int],
    latencies_ms: Sequence[float],
    *,
    threshold: float | None = None,
    families: Sequence[str | None] | None = None,
) -> ScannerScore:
    """The metrics of one scanner from its scores, decisions and latencies (see the module)."""
    score_arr = np.asarray(scores, dtype=np.float64)
    label_arr = np.asarray(labels, dtype=np.int64)
    decided = np.asarray(flagged, dtype=bool)
    tp = int((decided & (label_arr == 1)).sum())
    fp = int((decided & (label_arr == 0)).sum())
    fn = int((~decided & (label_arr == 1)).sum())
    tn = int((~decided & (label_arr == 0)).sum())
    precision, recall = _rate(tp, tp + fp), _rate(tp, tp + fn)
    per_family: dict[str, dict[str, Any]] = {}
    if families is not None:
        for family in sorted({f for f in families if f is not None}):
            rows = np.asarray([f == family for f in families])
            family_labels = set(label_arr[rows].tolist())
            per_family[family] = {
                "examples": int(rows.sum()),
                "label": family_labels.pop() if len(family_labels) == 1 else None,
                "flagged": float(decided[rows].mean()),
            }
    latency = np.asarray(latencies_ms, dtype=np.float64)
    return ScannerScore(
        scanner=name,
        threshold=threshold,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        precision=precision,
        recall=recall,
        fpr=_rate(fp, fp + tn),
        f1=_f1(precision, recall),
        latency_p50_ms=float(np.percentile(latency, 50)) if len(latency) else 0.0,
        latency_p99_ms=float(np.percentile(latency, 99)) if len(latency) else 0.0,
        latency_mean_ms=float(latency.mean()) if len(latency) else 0.0,
        curve=_curve(score_arr, label_arr),
        families=per_family,
        scores=score_arr.tolist(),
    )


@dataclass(frozen=True)
class GuardrailEval:
    """Scanners scored on one labelled set.

    Attributes:
        dataset: the file or dataset version read.
        split: the split kept, if one was chosen.
        examples, positives, negatives: how many examples, with label 1 and with label 0.
        scanners: one score per scanner, in the order given.
    """

    dataset: str
    split: str | None
    examples: int
    positives: int
    negatives: int
    scanners: list[ScannerScore]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "examples": self.examples,
            "positives": self.positives,
            "negatives": self.negatives,
            "scanners": [score.to_dict() for score in self.scanners],
        }


def evaluate(
    dataset: str | Path,
    scanners: Sequence[ScannerSpec] = ("injection",),
    *,
    threshold: float | None = None,
    split: str | None = None,
    stage: str = "input",
    client: Client | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GuardrailEval:
    """Score each scanner on the labelled set ``dataset`` (see the module for the rules).

    Args:
        dataset: a JSONL path or a ``datasets:/`` URI.
        scanners: scanner specs as :func:`~keel.llm.guardrails.api.make_scanner` takes them.
        threshold: count a text as flagged when its score is at or over this (default: each
            scanner's own trip rule).
        split: keep only the examples of this split.
        stage: the stage the scanners read the texts at.
        client: for a dataset version (default ``keel.Client()``).
        progress: called with (texts scanned, texts to scan) as it goes.

    Raises:
        InvalidInput: a bad scanner spec, threshold or example, or a scanner that does not
            read ``stage``.
        NotFound: no such file or dataset version.
    """
    from keel.llm.guardrails.api import make_scanners, scan
    from keel.llm.guardrails.base import ScanContext

    if threshold is not None and (
        not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0
    ):
        raise InvalidInput(f"threshold must be a number in [0, 1], got {threshold!r}")
    specs = list(scanners)
    built = make_scanners(specs)
    if not built:
        raise InvalidInput("name at least one scanner to evaluate, e.g. injection")
    for scanner in built:
        if stage not in scanner.stages and "both" not in scanner.stages:
            raise InvalidInput(
                f"scanner {scanner.name!r} reads {', '.join(scanner.stages)} only, not {stage!r}"
            )
    name, examples = read_labelled(dataset, split=split, client=client)
    labels = [example.label for example in examples]
    families = [example.family for example in examples]
    total = len(examples) * len(built)
    results = []
    for index, scanner in enumerate(built):
        scan(examples[0].text, [scanner], stage=stage, context=ScanContext())  # warm-up
        scores, flagged, latencies = [], [], []
        for done, example in enumerate(examples, 1):
            (verdict,) = scan(example.text, [scanner], stage=stage, context=ScanContext())
            scores.append(float(verdict.score))
            flagged.append(verdict.tripped if threshold is None else verdict.score >= threshold)
            latencies.append(verdict.latency_ms)
            if progress is not None:
                progress(index * len(examples) + done, total)
        results.append(
            score_scanner(
                _label(specs[index], scanner.name),
                scores,
                flagged,
                labels,
                latencies,
                threshold=scanner.threshold if threshold is None else float(threshold),
                families=families,
            )
        )
    positives = sum(labels)
    return GuardrailEval(
        dataset=name,
        split=split,
        examples=len(examples),
        positives=positives,
        negatives=len(examples) - positives,
        scanners=results,
    )
