"""LLM applications: versioned prompts, guardrails and RAG indexes.

``keel.prompts`` (this package's :mod:`~keel.llm.prompts` module) is the short
API of the prompt registry; ``keel.Client().prompts`` (:class:`Prompts`) is the
same on any client. ``keel.guardrails`` (:mod:`~keel.llm.guardrails`) scans
text for prompt injection, PII and limits; ``keel.rag`` (:mod:`~keel.llm.rag`)
builds, versions and queries retrieval indexes (``keel.Client().rag``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.lazy import lazy_exports

_EXPORTS = {
    "Prompts": "keel.llm.part",
    "PromptVersion": "keel.llm.entities",
    "RegisteredPrompt": "keel.llm.entities",
    "RenderedPrompt": "keel.llm.entities",
}

__all__ = [
    "PromptVersion",
    "Prompts",
    "RegisteredPrompt",
    "RenderedPrompt",
    "guardrails",
    "prompts",
    "rag",
]

if TYPE_CHECKING:
    from keel.llm import guardrails, prompts, rag
    from keel.llm.entities import PromptVersion, RegisteredPrompt, RenderedPrompt
    from keel.llm.part import Prompts

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, submodules={"guardrails", "prompts", "rag"})
