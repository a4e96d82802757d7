"""What the eval tests share (no tests here): the stand-in's answers, prompts and eval sets."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import keel
from _support.llm import Upstream, start_upstream

#: What the stand-in's models answer (the first rule whose text is in the question wins).
#: ``new`` knows all four answers, ``old`` only Hamlet's and a wrong capital.
MODELS: dict[str, dict[str, Any]] = {
    "new": {
        "rules": {
            "france": "Paris",
            "2 plus 2": "4",
            "hamlet": "Shakespeare",
            "sky": "blue",
        }
    },
    "old": {"rules": {"france": "Lyon", "hamlet": "Shakespeare"}},
}
#: Four cases with an expected answer and a reference sentence.
CASES: list[dict[str, Any]] = [
    {
        "vars": {"question": "What is the capital of France?"},
        "expected": "Paris",
        "reference": "The capital of France is Paris.",
    },
    {"vars": {"question": "What is 2 plus 2?"}, "expected": "4", "reference": "2 plus 2 is 4."},
    {
        "vars": {"question": "Who wrote Hamlet?"},
        "expected": "Shakespeare",
        "reference": "Hamlet was written by Shakespeare.",
    },
    {
        "vars": {"question": "What colour is the sky?"},
        "expected": "blue",
        "reference": "The sky is blue.",
    },
]
TEMPLATE = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "{{ question }}"},
]


def standin() -> AbstractContextManager[Upstream]:
    """The stand-in with the models ``old`` and ``new`` (and ``judge``, which echoes)."""
    return start_upstream({**MODELS, "judge": {}})


def register_support() -> None:
    """``support`` v1 on model ``old`` (alias production) and v2 on model ``new``."""
    keel.prompts.register("support", template=TEMPLATE, model="old")
    keel.prompts.register("support", template=TEMPLATE, model="new")
    keel.prompts.set_alias("support", "production", 1)


def eval_set(folder: Path, cases: list[dict[str, Any]] = CASES, name: str = "support-evals") -> str:
    """``cases`` as a JSONL dataset version; its ``datasets:/`` URI."""
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(case) + "\n" for case in cases))
    return keel.data.add(path, name=name).uri
