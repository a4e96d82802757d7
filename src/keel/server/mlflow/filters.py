"""MLflow's search syntax, read and translated into Keel's.

MLflow's filter is a conjunction of comparisons::

    filter     := comparison ("AND" comparison)*
    comparison := identifier op value
                | identifier ["NOT"] "IN" "(" value ("," value)* ")"
                | identifier "IS" ["NOT"] "NULL"
    identifier := entity "." key | attribute
    entity     := metrics | params | tags | attributes | datasets (and their singulars)
    key        := name | `quoted` | "quoted"

:func:`run_filter` and :func:`run_order_by` turn it into the filter and
order of :mod:`keel.tracking.search`, renaming what MLflow calls otherwise
(``attributes.run_name`` and ``tags.mlflow.runName`` are Keel's run ``name``,
``user_id`` is ``user``, ``created`` is ``start_time``). A term Keel cannot
answer (``datasets.*``, ``attributes.artifact_uri``) is refused with
:class:`~keel.errors.InvalidInput` naming it, never dropped: a search that
silently ignored a term would return runs the caller excluded.

:func:`record_matcher` reads the same syntax for listings kept as records
(experiments by name, logged models, registered models and their versions),
where a few attributes are allowed, and tags where the caller can read them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keel.errors import InvalidInput

__all__ = ["Comparison", "parse", "record_matcher", "run_filter", "run_order_by"]

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
  | (?P<backtick>`[^`]*`)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_]))
  | (?P<op>==|!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),])
  | (?P<word>[A-Za-z_][A-Za-z0-9_\-/:.]*\.?)
    """,
    re.VERBOSE,
)
_OPS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

_ENTITIES = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "parameter": "params",
    "parameters": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
    "dataset": "datasets",
    "datasets": "datasets",
}

#: MLflow's run attributes and Keel's name for each (None: Keel cannot search it).
_RUN_ATTRIBUTES: dict[str, str | None] = {
    "run_id": "run_id",
    "run_name": "name",
    "run name": "name",
    "status": "status",
    "user_id": "user",
    "start_time": "start_time",
    "created": "start_time",
    "end_time": "end_time",
    "artifact_uri": None,
    "lifecycle_stage": None,
}
_TEXT_OPS = {"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"}
_NUMBER_OPS = {"=", "!=", "<", "<=", ">", ">="}


@dataclass(frozen=True)
class Comparison:
    """One term of an MLflow filter: ``entity.key op value``."""

    entity: str  # metrics, params, tags, attributes or datasets
    key: str
    op: str  # = != < <= > >= LIKE ILIKE IN NOT IN IS NULL IS NOT NULL
    value: Any  # a str, a number, a tuple of them (IN), or None (IS NULL)
    text: str  # the term as written, for messages

    @property
    def field(self) -> str:
        return f"{self.entity}.{self.key}"


def _error(source: str, message: str) -> InvalidInput:
    shown = source if len(source) <= 120 else source[:117] + "..."
    return InvalidInput(f"invalid MLflow filter {shown!r}: {message}")


def _unquote(text: str) -> str:
    quote = text[0]
    return re.sub(r"\\(.)", r"\1", text[1:-1].replace(quote * 2, quote))


def _tokens(source: str) -> list[tuple[str, str, int]]:
    found: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN_RE.match(source, pos)
        if match is None:
            raise _error(source, f"unexpected character {source[pos]!r} at position {pos + 1}")
        if match.lastgroup != "ws":
            found.append((match.lastgroup or "", match.group(), pos))
        pos = match.end()
    return found


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokens(source)
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", len(self.source))

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        self.i += 1
        return token

    def word(self, *words: str) -> str | None:
        kind, text, _ = self.peek()
        if kind == "word" and text.upper() in words:
            self.i += 1
            return text.upper()
        return None

    def fail(self, expected: str) -> InvalidInput:
        kind, text, pos = self.peek()
        got = "the end" if kind == "end" else repr(text)
        return _error(self.source, f"expected {expected} at position {pos + 1}, got {got}")

    def identifier(self) -> tuple[str, str]:
        kind, text, _ = self.take()
        if kind == "backtick" or kind == "string":  # a bare quoted attribute: `Run name`
            return "attributes", _unquote(text) if kind == "string" else text[1:-1]
        if kind != "word":
            self.i -= 1
            raise self.fail("a field such as metrics.<key>, params.<key> or tags.<key>")
        head, dot, rest = text.partition(".")
        if not dot:
            return "attributes", head
        entity = _ENTITIES.get(head.lower())
        if entity is None:
            raise _error(
                self.source,
                f"unknown entity {head!r} in {text!r}; expected metrics, params, tags, "
                "attributes or datasets",
            )
        if rest:
            return entity, rest
        kind, quoted, _ = self.take()  # tags.`my key` or tags."my key"
        if kind == "backtick":
            return entity, quoted[1:-1]
        if kind == "string":
            return entity, _unquote(quoted)
        self.i -= 1
        raise self.fail(f"a key after {text!r}")

    def value(self) -> Any:
        kind, text, _ = self.take()
        if kind == "string":
            return _unquote(text)
        if kind == "number":
            return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
        self.i -= 1
        raise self.fail("a value (a number or a 'quoted string')")

    def comparison(self) -> Comparison:
        start = self.peek()[2]
        entity, key = self.identifier()
        kind, text, _ = self.peek()
        op: str
        value: Any
        if kind == "op":
            self.take()
            op, value = _OPS[text], self.value()
        elif self.word("IS"):
            op = "IS NOT NULL" if self.word("NOT") else "IS NULL"
            if not self.word("NULL"):
                raise self.fail("NULL after IS")
            value = None
        else:
            negated = self.word("NOT") is not None
            word = self.word("IN", "LIKE", "ILIKE")
            if word is None:
                raise self.fail("a comparison (=, !=, <, <=, >, >=, LIKE, ILIKE, IN or IS NULL)")
            if word == "IN":
                if self.take()[1] != "(":
                    self.i -= 1
                    raise self.fail("'(' to open the IN list")
                items = [self.value()]
                while self.peek()[1] == ",":
                    self.take()
                    items.append(self.value())
                if self.take()[1] != ")":
                    self.i -= 1
                    raise self.fail("',' or ')' in the IN list")
                value = tuple(items)
            else:
                value = self.value()
            op = f"NOT {word}" if negated else word
        end = self.peek()[2]
        return Comparison(entity, key, op, value, self.source[start:end].strip())

    def parse(self) -> list[Comparison]:
        terms = [self.comparison()]
        while self.word("AND"):
            terms.append(self.comparison())
        if self.peek()[0] != "end":
            if self.word("OR"):
                raise _error(self.source, "OR is not part of MLflow's filter syntax; use AND")
            raise self.fail("AND or the end of the filter")
        return terms


def parse(source: str | None) -> list[Comparison]:
    """The comparisons of an MLflow filter (an empty filter has none).

    Raises:
        InvalidInput: the filter does not follow MLflow's syntax; the message says where.
    """
    if source is None or not source.strip():
        return []
    return _Reader(source).parse()


# -- runs ------------------------------------------------------------------------------


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def _run_field(term: Comparison, source: str) -> tuple[str, bool]:
    """Keel's field for a term, and whether it holds numbers."""
    if term.entity == "datasets":
        raise _error(
            source,
            f"{term.text!r}: Keel does not search runs by MLflow dataset fields "
            "(datasets.*); drop the term or search dataset inputs with `keel data`",
        )
    if term.entity == "attributes" or (term.entity == "tags" and term.key == "mlflow.runName"):
        name = "run_name" if term.entity == "tags" else term.key
        if name not in _RUN_ATTRIBUTES and name.lower() in _RUN_ATTRIBUTES:
            name = name.lower()  # MLflow also takes `Created` and `Run Name`
        if name not in _RUN_ATTRIBUTES:
            raise _error(
                source,
                f"{term.text!r}: unknown run attribute {term.key!r}; expected one of "
                + ", ".join(k for k, v in _RUN_ATTRIBUTES.items() if v and " " not in k),
            )
        keel = _RUN_ATTRIBUTES[name]
        if keel is None:
            raise _error(source, f"{term.text!r}: Keel cannot search runs by {name!r}")
        return f"attributes.{keel}", keel in ("start_time", "end_time")
    return f"{term.entity}.`{term.key}`", term.entity == "metrics"


def _run_term(term: Comparison, source: str) -> str:
    field, numeric = _run_field(term, source)
    allowed = _NUMBER_OPS if numeric else _TEXT_OPS
    if term.op not in allowed:
        raise _error(
            source,
            f"{term.text!r}: {term.field} takes {', '.join(sorted(allowed))}, not {term.op}",
        )
    values = term.value if isinstance(term.value, tuple) else (term.value,)
    if term.value is not None and numeric != all(not isinstance(v, str) for v in values):
        wanted = "a number" if numeric else "a 'quoted string'"
        raise _error(source, f"{term.text!r}: compare {term.field} with {wanted}")
    if term.value is None:
        return f"{field} {term.op}"
    if isinstance(term.value, tuple):
        return f"{field} {term.op} ({', '.join(_quote(v) for v in term.value)})"
    return f"{field} {term.op} {_quote(term.value)}"


def run_filter(source: str | None) -> str | None:
    """Keel's run filter for an MLflow run filter (``None`` when it has no terms).

    Raises:
        InvalidInput: a syntax error, or a term Keel cannot answer, named in the message.
    """
    terms = parse(source)
    if not terms:
        return None
    assert source is not None
    return " AND ".join(_run_term(term, source) for term in terms)


def run_order_by(clauses: Sequence[str] | None) -> list[str] | None:
    """Keel's ``order_by`` for MLflow's (``"metrics.acc DESC"``, ``"attributes.start_time"``).

    Raises:
        InvalidInput: a clause is not ``<field> [ASC|DESC]`` or names a field Keel cannot order by.
    """
    if not clauses:
        return None
    ordered = []
    for clause in clauses:
        reader = _Reader(clause)
        entity, key = reader.identifier()
        direction = reader.word("ASC", "DESC") or "ASC"
        if reader.peek()[0] != "end":
            raise reader.fail("ASC, DESC or the end of the order_by clause")
        term = Comparison(entity, key, "=", None, clause.strip())
        field, _ = _run_field(term, clause)
        ordered.append(f"{field} {direction}")
    return ordered


# -- records (experiments, logged models, registered models and versions) ------------------


def _like(pattern: str, text: str, *, fold: bool) -> bool:
    # SQL's LIKE: % is any run of characters, _ is one character
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL | (re.IGNORECASE if fold else 0)) is not None


_COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _test(term: Comparison, value: Any, source: str) -> bool:
    """Whether a record's ``value`` passes ``term`` (a missing value passes only IS NULL).

    Raises:
        InvalidInput: the term compares a number with a string, or a string with a number.
    """
    op, wanted = term.op, term.value
    if op in ("IS NULL", "IS NOT NULL"):
        return (value is None) == (op == "IS NULL")
    if value is None:
        return False
    if op in ("IN", "NOT IN"):
        # as text: an IN list of 'quoted' numbers still finds version 3
        return (str(value) in {str(v) for v in wanted}) == (op == "IN")
    if op.endswith("LIKE"):
        hit = _like(str(wanted), str(value), fold="ILIKE" in op)
        return hit != op.startswith("NOT")
    numeric = isinstance(value, int | float)
    if numeric != isinstance(wanted, int | float):
        shown = term.key if term.entity == "attributes" else term.field
        wants = "a number" if numeric else "a 'quoted string'"
        raise _error(source, f"{term.text!r}: compare {shown} with {wants}")
    return _COMPARE[op](value, wanted)


Reader = Callable[[Any], Any]


def record_matcher(
    source: str | Sequence[Comparison] | None,
    fields: Mapping[str, str | Reader],
    what: str,
    *,
    tags: Reader | None = None,
) -> Callable[[Any], bool]:
    """A test of records against an MLflow filter over a few of their fields.

    Args:
        source: the filter, e.g. ``"name LIKE 'churn%' AND attributes.status = 'READY'"``,
            or its terms as :func:`parse` returns them (a caller that drops a term first).
        fields: MLflow attribute name -> the record's key (``{"name": "name"}``), or a
            function reading the value from a record.
        what: what the records are, for messages (``"experiments"``).
        tags: reads a record's tags (a mapping), so ``tags.<key>`` terms compare the
            tag's value; without it a ``tags.`` term is refused.

    Raises:
        InvalidInput: a syntax error, or a term on a field not in ``fields``. The
            matcher raises it too for a term that compares a number with a string.
    """
    if isinstance(source, str) or source is None:
        text, terms = source or "", parse(source)
    else:
        terms = list(source)
        text = " AND ".join(term.text for term in terms)
    for term in terms:
        if term.entity == "tags" and tags is not None:
            continue
        if term.entity != "attributes" or term.key not in fields:
            raise _error(
                text,
                f"{term.text!r}: Keel filters {what} only by "
                + ", ".join(sorted(fields))
                + " (plain or as attributes.<name>)"
                + (" or tags.<key>" if tags is not None else ""),
            )
    # a key names a dict's item; a dict without it holds no value there
    readers = {
        name: field if callable(field) else operator.methodcaller("get", field)
        for name, field in fields.items()
    }

    def read(record: Any, term: Comparison) -> Any:
        if term.entity == "tags":
            assert tags is not None  # checked above: tags terms need the reader
            return tags(record).get(term.key)
        return readers[term.key](record)

    def matches(record: Any) -> bool:
        return all(_test(term, read(record, term), text) for term in terms)

    return matches
