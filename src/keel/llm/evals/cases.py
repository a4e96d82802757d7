"""Eval sets: the cases of an evaluation, read from a dataset version.

An eval set is an ordinary dataset version, so it is versioned, diffed and
pushed like any data, and an eval run records the exact version it read as its
input. Two shapes are read:

- **JSONL** (``keel data add support-evals.jsonl``, or a folder of ``*.jsonl``
  files read in path order): one case per line, an object with ``vars`` (the
  prompt's variables) and any of ``expected`` (the answer, or what it must
  contain or match), ``reference`` (a model answer to compare with, for
  similarity and judges), ``context`` (material the answer should rest on),
  ``id`` and ``metadata``::

      {"vars": {"question": "Capital of France?"}, "expected": "Paris",
       "reference": "The capital of France is Paris."}

- **a table** (``keel.log_dataset(df, name=...)``): a ``vars`` column of
  objects (or JSON text), or else every column other than ``expected``,
  ``reference``, ``context``, ``id`` and ``metadata`` is a variable.

Every line is checked when the set is read; an error names the file and line,
so nothing is sent to a model before the whole set is known to be well formed.
Case numbers (``Case.index``) are positions in the set, from 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from keel.errors import InvalidInput

if TYPE_CHECKING:
    from keel.client import Client

__all__ = [
    "CASE_FIELDS",
    "Case",
    "EvalSet",
    "load_cases",
    "parse_cases",
    "parse_jsonl",
    "read_jsonl_version",
]

#: The fields a case may have; ``vars`` is required.
CASE_FIELDS = ("vars", "expected", "reference", "context", "id", "metadata")
T = TypeVar("T")
#: Files of a folder version that hold cases.
_CASE_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Case:
    """One evaluation case.

    Attributes:
        index: its position in the eval set (from 0).
        vars: the prompt's variables.
        expected: the expected answer (text, a number, a list of texts, an object …).
        reference: a reference answer, for similarity and judges.
        context: material the answer should rest on (for judges).
        id: the case's own id, if the set gives one.
        metadata: anything else the set records about the case.
    """

    index: int
    vars: dict[str, Any]
    expected: Any = None
    reference: str | None = None
    context: Any = None
    id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> Any:
        """The case's ``expected``, ``reference`` or ``context`` field."""
        if name not in ("expected", "reference", "context"):
            raise InvalidInput(
                f"a case field must be one of expected, reference, context; got {name!r}"
            )
        return getattr(self, name)

    @property
    def target(self) -> Any:
        """What an answer is compared with: the reference, else the expected answer."""
        return self.reference if self.reference is not None else self.expected

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "vars": self.vars,
            "expected": self.expected,
            "reference": self.reference,
            "context": self.context,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class EvalSet:
    """The cases of one dataset version.

    Attributes:
        uri: ``datasets:/<name>@<version>``.
        digest: the version's manifest digest (names its bytes).
        cases: the cases, in order.
    """

    uri: str
    digest: str
    cases: list[Case]


def _case(doc: Any, index: int, where: str) -> Case:
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"{where}: a case must be a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(CASE_FIELDS))
    if unknown:
        raise InvalidInput(
            f"{where}: unknown field(s) {', '.join(unknown)}; a case has {', '.join(CASE_FIELDS)}"
        )
    variables = doc.get("vars")
    if not isinstance(variables, Mapping) or not all(isinstance(k, str) for k in variables):
        raise InvalidInput(
            f"{where}: 'vars' must be an object of the prompt's variables, "
            f'e.g. {{"vars": {{"question": "..."}}}}; got {variables!r:.80}'
        )
    reference = doc.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise InvalidInput(f"{where}: 'reference' must be text, got {type(reference).__name__}")
    ident = doc.get("id")
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InvalidInput(f"{where}: 'metadata' must be an object, got {type(metadata).__name__}")
    return Case(
        index=index,
        vars=dict(variables),
        expected=doc.get("expected"),
        reference=reference,
        context=doc.get("context"),
        id=None if ident is None else str(ident),
        metadata=dict(metadata),
    )


def parse_cases(lines: Iterable[str], source: str, start: int = 0) -> list[Case]:
    """Cases from JSONL text lines (blank lines are skipped).

    Args:
        lines: the file's lines.
        source: the file's name, for messages.
        start: the index of the first case (cases of earlier files come before).

    Raises:
        InvalidInput: a line is not JSON or not a case; the message names the line.
    """
    return parse_jsonl(lines, source, _case, start)


def parse_jsonl(
    lines: Iterable[str], source: str, make: Callable[[Any, int, str], T], start: int = 0
) -> list[T]:
    """Records from JSONL text lines: ``make(doc, index, where)`` for each non-blank line.

    Raises:
        InvalidInput: a line is not JSON (naming it), or whatever ``make`` refuses.
    """
    records: list[T] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{where} is not JSON: {exc.msg}") from None
        records.append(make(doc, start + len(records), where))
    return records


def read_jsonl_version(
    loaded: Path, uri: str, make: Callable[[Any, int, str], T], *, no_files: str
) -> list[T]:
    """The records of a dataset version's ``.jsonl`` files, read in path order.

    Args:
        loaded: the version's file, or its folder, as checked out.
        uri: the version's URI, for messages.
        make: builds one record from a line's object (see :func:`parse_jsonl`).
        no_files: the message when the version holds no ``.jsonl`` file.
    """
    files = (
        [loaded]
        if loaded.is_file()
        else sorted(p for p in loaded.rglob("*") if p.suffix.lower() in _CASE_SUFFIXES)
    )
    if not files:
        raise InvalidInput(no_files)
    records: list[T] = []
    for file in files:
        name = file.name if loaded.is_file() else str(file.relative_to(loaded))
        with file.open(encoding="utf-8") as handle:
            records.extend(parse_jsonl(handle, f"{uri} {name}", make, start=len(records)))
    return records


def _from_frame(frame: Any, source: str) -> list[Case]:
    columns = [str(c) for c in frame.columns]
    records = frame.to_dict(orient="records")
    cases = []
    for i, record in enumerate(records):
        doc = {k: _plain(v) for k, v in record.items()}
        if "vars" in columns:
            if isinstance(doc["vars"], str):
                try:
                    doc["vars"] = json.loads(doc["vars"])
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"{source} row {i}: 'vars' is not JSON: {exc.msg}") from None
        else:
            doc = {
                "vars": {k: v for k, v in doc.items() if k not in CASE_FIELDS},
                **{k: v for k, v in doc.items() if k in CASE_FIELDS},
            }
        cases.append(_case({k: v for k, v in doc.items() if v is not None}, i, f"{source} row {i}"))
    return cases


def _plain(value: Any) -> Any:
    """A Parquet cell as plain Python (NumPy arrays and scalars, missing values as None)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN: a missing cell
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_cases(ref: str, *, client: Client) -> EvalSet:
    """The cases of dataset version ``ref`` (``datasets:/name@3``, ``name@3``, ``name``).

    Raises:
        NotFound: no such dataset version.
        InvalidInput: the version holds no ``.jsonl`` file, or a malformed case.
    """
    from keel.data.tables import load_dataset

    version = client.data.get_version(ref)
    # pinned to the number just resolved, so a version added meanwhile is not read instead
    loaded = load_dataset(version.uri, settings=client.settings)
    if not isinstance(loaded, Path):
        cases = _from_frame(loaded, version.uri)
    else:
        cases = read_jsonl_version(
            loaded,
            version.uri,
            _case,
            no_files=f"{version.uri} holds no .jsonl file; an eval set is JSONL, one case a line "
            '({"vars": {...}, "expected": ...}): keel data add cases.jsonl',
        )
    if not cases:
        raise InvalidInput(f"{version.uri} holds no cases; add one JSON object per line")
    return EvalSet(uri=version.uri, digest=version.digest, cases=cases)
