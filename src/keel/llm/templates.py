"""Prompt templates: ``{{ name }}`` placeholders, substituted strictly and nothing else.

The rules, checked in one place:

- A placeholder is ``{{`` + optional spaces + an identifier (letters, digits and
  ``_``, not starting with a digit) + optional spaces + ``}}``.
- Any other ``{{`` or ``}}`` is refused when the template is registered, so a
  typo (``{{ user name }}``, a missing ``}}``) never renders as literal text.
  Single braces are plain text: a JSON example in a prompt needs no escaping.
- Rendering needs exactly the template's variables: a missing one or an extra
  one is :class:`~keel.errors.InvalidInput` naming it.
- A value is inserted as text: strings as they are, numbers and booleans by
  ``str``, lists and objects as JSON. Nothing in a value is evaluated or
  expanded again, so a variable holding ``{{ x }}`` stays those characters.

This is deliberately not Jinja: no expressions, filters, loops or attribute
access, so a template from the registry cannot run code, and Keel's core keeps
no dependency on a template engine (jinja2 is only in the server's extra).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from keel.errors import InvalidInput

__all__ = ["check_variables", "render_text", "template_variables"]

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_BRACES = re.compile(r"\{\{|\}\}")


def template_variables(text: str, where: str = "template") -> list[str]:
    """The variables ``text`` names, in order of first use.

    Raises:
        InvalidInput: ``text`` has a ``{{`` or ``}}`` that is not part of a placeholder.
    """
    found = list(_PLACEHOLDER.finditer(text))
    spans = [m.span() for m in found]
    for brace in _BRACES.finditer(text):
        if not any(start <= brace.start() < end for start, end in spans):
            near = text[max(0, brace.start() - 20) : brace.start() + 30]
            raise InvalidInput(
                f"the {where} has {brace.group()!r} outside a placeholder (near {near!r}); "
                "write a variable as {{ name }} with a name of letters, digits and '_'"
            )
    names = [m.group(1) for m in found]
    return list(dict.fromkeys(names))


def _as_text(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    if value is None or isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False)
    raise InvalidInput(
        f"variable {name!r} must be text, a number, a boolean, a list or an object; "
        f"got a {type(value).__name__}"
    )


def check_variables(expected: list[str], given: Mapping[str, Any], prompt: str) -> None:
    """Refuse ``given`` unless it names exactly the ``expected`` variables.

    Raises:
        InvalidInput: a variable is missing or not the prompt's; the message names it.
    """
    missing = [name for name in expected if name not in given]
    extra = sorted(set(given) - set(expected))
    if missing:
        raise InvalidInput(
            f"prompt {prompt} needs variable(s) {', '.join(map(repr, missing))}; "
            f"pass {', '.join(f'{n}=...' for n in missing)} to render"
        )
    if extra:
        names = ", ".join(map(repr, expected)) or "none"
        raise InvalidInput(
            f"prompt {prompt} has no variable(s) {', '.join(map(repr, extra))}; "
            f"its variables are {names}"
        )


def render_text(text: str, values: Mapping[str, Any]) -> str:
    """``text`` with each placeholder replaced by its value (all checked present already)."""
    return _PLACEHOLDER.sub(lambda m: _as_text(m.group(1), values[m.group(1)]), text)
