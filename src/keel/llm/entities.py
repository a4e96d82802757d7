"""Prompt records, and the one check that turns what a caller gives into a prompt document.

A prompt version's content is a canonical JSON document (sorted keys, no
spaces) stored content-addressed in the artifact store; its BLAKE3 digest is
the version's ``manifest_digest``. :func:`prompt_document` checks every field
in one place and builds that document, so the embedded API, the server and
the CLI refuse bad input with the same message.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from keel.errors import InvalidInput
from keel.llm.templates import check_variables, render_text, template_variables
from keel.registry.entities import RegisteredModel

__all__ = [
    "DOCUMENT_FORMAT",
    "ROLES",
    "PromptVersion",
    "RegisteredPrompt",
    "RenderedPrompt",
    "diff_versions",
    "prompt_document",
]

#: The ``format`` of a stored prompt document; a reader refuses others.
DOCUMENT_FORMAT = "keel-prompt/1"
#: The roles a chat message may have (OpenAI's chat completions roles).
ROLES = ("system", "developer", "user", "assistant", "tool")
#: Parameters that a prompt's other fields set, so a parameter must not set them too.
_RESERVED_PARAMETERS = ("model", "messages", "prompt", "tools", "response_format", "stream")
#: A prompt document's largest canonical size; longer context belongs in a variable.
MAX_DOCUMENT_BYTES = 1_000_000


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _json_value(value: Any, what: str) -> Any:
    """``value`` if JSON can carry it exactly (no NaN, no objects), else ``InvalidInput``."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be JSON (text, numbers, lists, objects): {exc}") from None


def _check_template(template: Any) -> str | list[dict[str, str]]:
    if isinstance(template, str):
        if not template.strip():
            raise InvalidInput("a prompt's template must not be empty")
        template_variables(template)
        return template
    if not isinstance(template, list | tuple) or not template:
        raise InvalidInput(
            "a prompt's template must be text, or a non-empty list of chat messages "
            f'({{"role": "system", "content": "..."}}); got {type(template).__name__}'
        )
    messages = []
    for i, message in enumerate(template):
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            keys = sorted(message) if isinstance(message, Mapping) else type(message).__name__
            raise InvalidInput(
                f"message {i} of the template must be an object with exactly 'role' and "
                f"'content'; got {keys}"
            )
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise InvalidInput(
                f"message {i}'s role must be one of {', '.join(ROLES)}; got {role!r}"
            )
        if not isinstance(content, str):
            raise InvalidInput(f"message {i}'s content must be text; got {type(content).__name__}")
        template_variables(content, f"content of message {i}")
        messages.append({"role": role, "content": content})
    return messages


def prompt_document(
    template: Any,
    model: Any,
    parameters: Any = None,
    tools: Any = None,
    response_schema: Any = None,
) -> dict[str, Any]:
    """The stored document of a prompt, every field checked.

    Raises:
        InvalidInput: a field has the wrong shape; the message names it and the rule.
    """
    if not isinstance(model, str) or not model.strip() or len(model) > 256:
        raise InvalidInput(
            f"a prompt's model must be a model name of 1-256 characters (e.g. 'gpt-4o-mini'); "
            f"got {model!r}"
        )
    params = {} if parameters is None else parameters
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise InvalidInput(
            "a prompt's parameters must be an object of named values "
            f"(temperature, max_tokens, …); got {type(params).__name__}"
        )
    reserved = sorted(set(params) & set(_RESERVED_PARAMETERS))
    if reserved:
        raise InvalidInput(
            f"parameter(s) {', '.join(map(repr, reserved))} are set by the prompt itself "
            "(model, template, tools, response_schema); remove them from parameters"
        )
    if tools is not None and (
        not isinstance(tools, list | tuple) or not all(isinstance(t, Mapping) for t in tools)
    ):
        raise InvalidInput(f"a prompt's tools must be a list of objects; got {tools!r:.80}")
    if response_schema is not None and not isinstance(response_schema, Mapping):
        raise InvalidInput(
            f"a prompt's response_schema must be a JSON schema object; got {response_schema!r:.80}"
        )
    document = {
        "format": DOCUMENT_FORMAT,
        "template": _check_template(template),
        "model": model,
        "parameters": _json_value(dict(params), "parameters"),
        "tools": None if tools is None else _json_value(list(tools), "tools"),
        "response_schema": (
            None
            if response_schema is None
            else _json_value(dict(response_schema), "response_schema")
        ),
    }
    size = len(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidInput(
            f"a prompt may hold at most {MAX_DOCUMENT_BYTES:,} bytes, this one holds {size:,}; "
            "pass long context as a variable instead"
        )
    return document


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt with its variables filled in: what an OpenAI-style call sends.

    ``messages`` is set for a chat template, ``text`` for a text template.
    """

    prompt: str
    model: str
    parameters: dict[str, Any]
    messages: list[dict[str, str]] | None = None
    text: str | None = None
    tools: list[dict[str, Any]] | None = None
    response_schema: dict[str, Any] | None = None

    def request(self) -> dict[str, Any]:
        """The body of a chat completions (or, for text, a completions) request."""
        body: dict[str, Any] = {"model": self.model, **self.parameters}
        if self.messages is not None:
            body["messages"] = self.messages
        else:
            body["prompt"] = self.text
        if self.tools is not None:
            body["tools"] = self.tools
        if self.response_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": self.response_schema},
            }
        return body


@dataclass(frozen=True)
class PromptVersion:
    """One immutable version of a prompt: its template, model, parameters, tools and schema.

    ``digest`` names the stored document the version was read from (verified on read).
    """

    name: str
    version: int
    template: str | list[dict[str, str]]
    model: str
    parameters: dict[str, Any]
    tools: list[dict[str, Any]] | None
    response_schema: dict[str, Any] | None
    digest: str
    description: str | None
    created_at: int
    created_by: str
    aliases: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"

    @property
    def variables(self) -> list[str]:
        """The template's variables, in order of first use."""
        texts = (
            [self.template]
            if isinstance(self.template, str)
            else [m["content"] for m in self.template]
        )
        return list(dict.fromkeys(v for text in texts for v in template_variables(text)))

    def render(self, **variables: Any) -> RenderedPrompt:
        """Fill in the template's variables.

        Raises:
            InvalidInput: a variable is missing or is not one of the template's; the
                message names it.
        """
        check_variables(self.variables, variables, self.uri)
        messages = None
        text = None
        if isinstance(self.template, str):
            text = render_text(self.template, variables)
        else:
            messages = [
                {"role": m["role"], "content": render_text(m["content"], variables)}
                for m in self.template
            ]
        return RenderedPrompt(
            self.uri,
            self.model,
            dict(self.parameters),
            messages=messages,
            text=text,
            tools=self.tools,
            response_schema=self.response_schema,
        )

    def document(self) -> dict[str, Any]:
        """The stored document of this version (what its digest names)."""
        return {
            "format": DOCUMENT_FORMAT,
            "template": self.template,
            "model": self.model,
            "parameters": self.parameters,
            "tools": self.tools,
            "response_schema": self.response_schema,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            **{k: v for k, v in self.document().items() if k != "format"},
            "variables": self.variables,
            "digest": self.digest,
            "description": self.description,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "aliases": self.aliases,
        }


@dataclass(frozen=True)
class RegisteredPrompt(RegisteredModel):
    """A prompt's name, its latest version number and its aliases.

    The registry's record of a model, as a prompt: the same fields on the same rows.
    """


def _template_lines(template: str | list[dict[str, str]]) -> list[str]:
    if isinstance(template, str):
        return template.splitlines(keepends=True)
    lines = []
    for message in template:
        lines.append(f"[{message['role']}]\n")
        lines.extend(line for line in message["content"].splitlines(keepends=True))
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
    return lines


def _settings_lines(version: PromptVersion) -> list[str]:
    settings = {
        "model": version.model,
        "parameters": version.parameters,
        "tools": version.tools,
        "response_schema": version.response_schema,
    }
    return [line + "\n" for line in json.dumps(settings, indent=2, sort_keys=True).splitlines()]


def diff_versions(a: PromptVersion, b: PromptVersion) -> str:
    """A unified diff of two versions' templates, then of their model and parameters.

    Empty when the two hold the same document.
    """
    parts: list[str] = []
    for what, old, new in (
        ("template", _template_lines(a.template), _template_lines(b.template)),
        ("settings", _settings_lines(a), _settings_lines(b)),
    ):
        parts.extend(
            difflib.unified_diff(
                [line if line.endswith("\n") else line + "\n" for line in old],
                [line if line.endswith("\n") else line + "\n" for line in new],
                fromfile=f"{a.uri} ({what})",
                tofile=f"{b.uri} ({what})",
            )
        )
    return "".join(parts)
