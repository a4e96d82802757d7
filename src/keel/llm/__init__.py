"""LLM applications: versioned prompts on the registry's aliases and approvals.

``keel.prompts`` (this package's :mod:`~keel.llm.prompts` module) is the short
API; ``keel.Client().prompts`` (:class:`Prompts`) is the same on any client.
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

__all__ = ["PromptVersion", "Prompts", "RegisteredPrompt", "RenderedPrompt", "prompts"]

if TYPE_CHECKING:
    from keel.llm import prompts
    from keel.llm.entities import PromptVersion, RegisteredPrompt, RenderedPrompt
    from keel.llm.part import Prompts

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, submodules={"prompts"})
