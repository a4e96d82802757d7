"""The prompts part over ``keel server``: :class:`~keel.llm.part.Prompts`' methods as REST calls.

Each method is one request to a route of :mod:`keel.server.routes.prompts`,
where the server checks the caller's permissions and runs the same code on
its own stores. Loading by URI, rendering and diffing run here, on the
versions the server sends: a version carries its whole document.
"""

from __future__ import annotations

import builtins
from typing import Any
from urllib.parse import quote

from keel.errors import InvalidInput, NotFound
from keel.llm.entities import PromptVersion, RegisteredPrompt, prompt_document
from keel.llm.part import Prompts
from keel.registry.client import UNSET, Unset
from keel.registry.entities import AliasChange, Approval
from keel.registry.remote import AliasCalls
from keel.transport.http import HttpTransport
from keel.validation import check_alias, check_name

__all__ = ["RemotePrompts"]


def _seg(text: Any) -> str:
    return quote(str(text), safe="")


class RemotePrompts(Prompts):
    """Versioned prompts through ``keel server``."""

    transport: HttpTransport

    def __init__(self, transport: HttpTransport) -> None:
        super().__init__(transport)
        self._aliases = AliasCalls(transport, "prompt", self._prompt)

    def _prompt(self, name: str) -> str:
        # a name that is not one (``a/b``) would change the route: refuse it as locally
        try:
            check_name(name, "prompt name")
        except InvalidInput:
            raise NotFound(f"no prompt named {name!r}") from None
        return f"/prompts/{_seg(name)}"

    def register(
        self,
        name: str,
        *,
        template: str | builtins.list[dict[str, str]],
        model: str,
        parameters: dict[str, Any] | None = None,
        tools: builtins.list[dict[str, Any]] | None = None,
        response_schema: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> PromptVersion:
        check_name(name, "prompt name")
        # checked here too, so a bad prompt says the same thing in both modes
        document = prompt_document(template, model, parameters, tools, response_schema)
        body = {k: v for k, v in document.items() if k != "format"}
        body["description"] = description
        path = f"{self._prompt(name)}/versions"
        return self.transport.call("POST", path, PromptVersion, json=body)

    def get(self, name: str, version: int) -> PromptVersion:
        path = f"{self._prompt(name)}/versions/{_seg(version)}"
        return self.transport.call("GET", path, PromptVersion)

    def get_by_alias(self, name: str, alias: str) -> PromptVersion:
        check_alias(alias)
        path = f"{self._prompt(name)}/aliases/{_seg(alias)}"
        return self.transport.call("GET", path, PromptVersion)

    def versions(self, name: str) -> builtins.list[PromptVersion]:
        path = f"{self._prompt(name)}/versions"
        return self.transport.call("GET", path, builtins.list[PromptVersion])

    def get_prompt(self, name: str) -> RegisteredPrompt:
        return self.transport.call("GET", self._prompt(name), RegisteredPrompt)

    def list(self) -> builtins.list[RegisteredPrompt]:
        return self.transport.call("GET", "/prompts", builtins.list[RegisteredPrompt])

    def get_alias(self, name: str, alias: str) -> int | None:
        return self.get_prompt(name).aliases.get(alias)

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
    ) -> AliasChange:
        return self._aliases.set_alias(name, alias, version, expected, comment)

    def delete_alias(
        self,
        name: str,
        alias: str,
        *,
        expected: int | Unset | None = UNSET,
        comment: str | None = None,
    ) -> AliasChange:
        return self._aliases.delete_alias(name, alias, expected, comment)

    def alias_history(self, name: str, alias: str | None = None) -> builtins.list[AliasChange]:
        return self._aliases.alias_history(name, alias)

    def approve(self, name: str, version: int, alias: str, comment: str | None = None) -> Approval:
        return self._aliases.approve(name, version, alias, comment)

    def list_approvals(self, name: str, version: int | None = None) -> builtins.list[Approval]:
        return self._aliases.list_approvals(name, version)
