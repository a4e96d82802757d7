"""``keel.prompts``: the prompt registry in a few functions, on the process's client.

::

    import keel

    keel.prompts.register(
        "support",
        template=[
            {"role": "system", "content": "You answer questions about {{ product }}."},
            {"role": "user", "content": "{{ question }}"},
        ],
        model="gpt-4o-mini",
        parameters={"temperature": 0.2, "max_tokens": 400},
    )
    keel.prompts.set_alias("support", "production", 1)
    prompt = keel.prompts.load("prompts:/support@production")
    request = prompt.render(product="Keel", question="How do I roll back?").request()

Each function is the method of the same name on ``keel.Client().prompts``
(:class:`keel.llm.Prompts`), so it works embedded and through ``keel server``.
"""

from __future__ import annotations

import builtins
from typing import Any

from keel.llm.entities import PromptVersion, RegisteredPrompt
from keel.llm.part import Prompts
from keel.registry.client import UNSET, Unset
from keel.registry.entities import AliasChange, Approval

__all__ = [
    "alias_history",
    "approve",
    "diff",
    "get_alias",
    "list",
    "load",
    "register",
    "set_alias",
    "versions",
]


def _part() -> Prompts:
    from keel.client import Client

    return Client().prompts


def register(
    name: str,
    *,
    template: str | builtins.list[dict[str, str]],
    model: str,
    parameters: dict[str, Any] | None = None,
    tools: builtins.list[dict[str, Any]] | None = None,
    response_schema: dict[str, Any] | None = None,
    description: str | None = None,
) -> PromptVersion:
    """Register a new, immutable version of prompt ``name``; see :meth:`Prompts.register`.

    Args:
        name: the prompt's name (created on first registration).
        template: text, or a list of chat messages (``{"role": ..., "content": ...}``);
            variables are written ``{{ name }}``.
        model: the model the prompt is written for.
        parameters: the call's parameters (``temperature``, ``max_tokens``, …).
        tools: OpenAI-style tool definitions.
        response_schema: a JSON schema the answer must follow.
        description: what the version changes, for its readers.
    """
    return _part().register(
        name,
        template=template,
        model=model,
        parameters=parameters,
        tools=tools,
        response_schema=response_schema,
        description=description,
    )


def load(uri: str) -> PromptVersion:
    """The version ``prompts:/NAME/VERSION`` or ``prompts:/NAME@ALIAS`` names."""
    return _part().load(uri)


def list() -> builtins.list[RegisteredPrompt]:
    """Every prompt, by name."""
    return _part().list()


def versions(name: str) -> builtins.list[PromptVersion]:
    """Every version of prompt ``name``, oldest first."""
    return _part().versions(name)


def diff(name: str, a: int | str, b: int | str) -> str:
    """A unified diff of two versions (numbers or ``@alias``): templates, then parameters."""
    return _part().diff(name, a, b)


def get_alias(name: str, alias: str) -> int | None:
    """The version ``alias`` of prompt ``name`` points at, or ``None``."""
    return _part().get_alias(name, alias)


def set_alias(
    name: str,
    alias: str,
    version: int,
    *,
    expected: int | Unset | None = UNSET,
    comment: str | None = None,
) -> AliasChange:
    """Point ``alias`` at ``version`` (compare-and-set; protected aliases need approvals)."""
    return _part().set_alias(name, alias, version, expected=expected, comment=comment)


def alias_history(name: str, alias: str | None = None) -> builtins.list[AliasChange]:
    """Every move of the prompt's aliases (or of one), oldest first."""
    return _part().alias_history(name, alias)


def approve(name: str, version: int, alias: str, comment: str | None = None) -> Approval:
    """Approve ``version`` of prompt ``name`` for the protected ``alias``."""
    return _part().approve(name, version, alias, comment)
