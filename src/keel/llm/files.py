"""Prompt files: a prompt written as YAML or JSON, for ``keel prompts register --file``.

::

    model: gpt-4o-mini
    parameters: {temperature: 0.2, max_tokens: 400}
    messages:
      - role: system
        content: You answer questions about {{ product }}.
      - role: user
        content: "{{ question }}"
    response_schema: {type: object, properties: {answer: {type: string}}}

``template`` (text) or ``messages`` (chat) holds the template; ``model`` is
required; ``parameters``, ``tools``, ``response_schema`` and ``description``
are optional. Any other key is refused, so a misspelt one is not silently lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from keel.errors import InvalidInput, NotFound

__all__ = ["read_prompt_file"]

_KEYS = ("template", "messages", "model", "parameters", "tools", "response_schema", "description")


def read_prompt_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The keyword arguments of :meth:`keel.llm.Prompts.register` that a prompt file holds.

    Raises:
        NotFound: no such file.
        InvalidInput: the file is not YAML/JSON of a prompt; the message says what is wrong.
    """
    import yaml

    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"no prompt file {str(source)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read prompt file {str(source)!r}: {exc}") from None
    try:
        data = json.loads(text) if source.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(f"prompt file {str(source)!r} is not valid YAML/JSON: {first}") from None
    if not isinstance(data, dict):
        raise InvalidInput(
            f"prompt file {str(source)!r} must hold an object with model and template or "
            f"messages; got {type(data).__name__}"
        )
    unknown = sorted(set(map(str, data)) - set(_KEYS))
    if unknown:
        raise InvalidInput(
            f"prompt file {str(source)!r} has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(_KEYS)}"
        )
    if ("template" in data) == ("messages" in data):
        raise InvalidInput(
            f"prompt file {str(source)!r} needs exactly one of 'template' (text) or "
            "'messages' (a chat)"
        )
    if "model" not in data:
        raise InvalidInput(f"prompt file {str(source)!r} needs a 'model'")
    arguments = {k: v for k, v in data.items() if k != "messages"}
    if "messages" in data:
        arguments["template"] = data["messages"]
    return arguments
