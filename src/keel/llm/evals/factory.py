"""Scorers built from their spelling: the built-in kinds, and custom scorers from the user's code.

:func:`build_builtin` makes a built-in scorer from ``(kind, options)`` as
:func:`keel.llm.evals.scorers.parse_scorer_spec` returns them (the judge,
which needs a gateway, is :class:`keel.llm.evals.judge.JudgeScorer`).

A custom scorer is the user's own code, named explicitly as
``module:attribute`` (``--scorer my_package.scorers:tone``) and imported from
the working directory as ``python -m`` would: a function ``(output: str,
case: Case) -> float | bool``, or a class (made with no arguments) or object
with a ``score`` method, and optionally ``score_all``, ``name`` and
``threshold``. It runs in the evaluating process with that process's rights;
Keel imports nothing the user did not name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, NotFound
from keel.llm.evals.scorers import (
    SCORER_KINDS,
    ContainsScorer,
    CustomScorer,
    ExactScorer,
    JsonSchemaScorer,
    NumericScorer,
    RegexScorer,
    Scorer,
    SimilarityScorer,
    kinds_help,
)
from keel.targets import import_user_module

if TYPE_CHECKING:
    from keel.llm.entities import PromptVersion

__all__ = ["build_builtin", "load_custom", "scorer_catalog"]


_CATALOG: dict[str, tuple[float, str]] = {
    "exact": (1.0, "1 if the answer equals the expected value (spaces trimmed)"),
    "contains": (1.0, "1 if the expected text (or every text of a list) is in the answer"),
    "regex": (1.0, "1 if the answer matches the pattern (default: the expected value)"),
    "json_schema": (1.0, "1 if the answer is JSON valid against the prompt's response_schema"),
    "numeric": (1.0, "1 if the answer's first number is within tolerance of the expected"),
    "similarity": (0.8, "cosine similarity of answer and reference embeddings (MiniLM-L6)"),
    "judge": (0.75, "an LLM judge prompt's SCORE: 1-5, mapped to 0-1"),
}


def scorer_catalog() -> list[dict[str, Any]]:
    """The built-in scorers: kind, options, default pass threshold and what each scores."""
    return [
        {
            "kind": kind,
            "options": list(options),
            "threshold": _CATALOG[kind][0],
            "summary": _CATALOG[kind][1],
        }
        for kind, options in SCORER_KINDS.items()
    ]


def _threshold(options: dict[str, Any], kind: str) -> float | None:
    value = options.pop("threshold", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"scorer {kind!r}: threshold must be a number, got {value!r}")
    return float(value)


def _load_schema(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    path = Path(str(value)).expanduser()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"json_schema: no schema file {path}") from None
    except ValueError as exc:
        raise InvalidInput(f"json_schema: {path} is not JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise InvalidInput(f"json_schema: {path} must hold a JSON object (a schema)")
    return doc


def build_builtin(kind: str, options: dict[str, Any], prompt: PromptVersion) -> Scorer:
    """A built-in scorer (not the judge, which needs a gateway: see :mod:`.judge`)."""
    options = dict(options)
    name = options.pop("name", None)
    threshold = _threshold(options, kind)
    for flag in ("ignore_case",):
        if flag in options and not isinstance(options[flag], bool):
            raise InvalidInput(f"scorer {kind!r}: {flag} must be true or false")
    scorer: Scorer
    if kind == "exact":
        scorer = ExactScorer(name, threshold, **options)
    elif kind == "contains":
        scorer = ContainsScorer(name, threshold, **options)
    elif kind == "regex":
        scorer = RegexScorer(name, threshold, **options)
    elif kind == "numeric":
        scorer = NumericScorer(name, threshold, **options)
    elif kind == "similarity":
        scorer = SimilarityScorer(name, threshold)
    elif kind == "json_schema":
        if "schema" in options:
            schema = _load_schema(options["schema"])
        elif prompt.response_schema is not None:
            schema = prompt.response_schema
        else:
            raise InvalidInput(
                f"json_schema: {prompt.uri} has no response_schema; pass a schema file "
                "(json_schema:schema=schema.json)"
            )
        scorer = JsonSchemaScorer(name, threshold, schema=schema)
    else:  # pragma: no cover - the judge and custom scorers are built elsewhere
        raise InvalidInput(f"unknown scorer {kind!r}; expected one of {kinds_help()}")
    scorer.spec = _spec_text(kind, {"name": name, **options, "threshold": threshold})
    return scorer


def _spec_text(kind: str, options: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in options.items() if v is not None and not isinstance(v, Mapping)}
    if not shown:
        return kind
    return kind + ":" + ",".join(f"{k}={v}" for k, v in shown.items())


def load_custom(target: str) -> CustomScorer:
    """The custom scorer ``module:attribute`` names, imported from the working directory.

    Raises:
        NotFound: no such module or attribute.
        InvalidInput: the attribute is not callable and has no ``score`` method.
    """
    where, _, attr = target.rpartition(":")
    module = import_user_module(
        where, target, "scorer", "run from the folder that holds it, or install it"
    )
    found = getattr(module, attr, None)
    if found is None:
        raise NotFound(f"module {where!r} has no attribute {attr!r} (scorer {target!r})")
    if isinstance(found, type):
        found = found()
    if not (callable(found) or callable(getattr(found, "score", None))):
        raise InvalidInput(
            f"{target} is a {type(found).__name__}; a custom scorer is a function "
            "(output, case) -> number, or an object with a score(output, case) method"
        )
    return CustomScorer(target, found)
