"""Token counts the gateway estimates itself, for upstreams that report no usage.

An upstream's ``usage`` is the truth and is always preferred; when it gives
none (some local servers, a stream without ``include_usage``), the trace still
needs a count for cost and budgets. This module estimates one from text alone,
with no tokenizer and nothing downloaded at run time, and every trace that uses
it says so (``tokens_estimated``).

The estimate is the mean of two rules of thumb for English BPE vocabularies
(about four characters, or three quarters of a word, per token), plus OpenAI's
documented framing of 3 tokens per chat message and 3 for the reply. It is
within a few tens of percent of a real tokenizer on prose; budgets that must
be exact need an upstream that reports usage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["estimate_messages", "estimate_prompt", "estimate_text", "text_of"]

#: Tokens OpenAI's chat format adds per message, and once to prime the reply.
_PER_MESSAGE = 3
_REPLY_PRIMING = 3


def estimate_text(text: str) -> int:
    """Tokens in ``text`` (0 for empty text)."""
    if not text:
        return 0
    by_chars = len(text) / 4
    by_words = len(text.split()) / 0.75
    return max(1, round((by_chars + by_words) / 2))


def text_of(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def estimate_messages(messages: Sequence[Any]) -> int:
    """Input tokens of a chat request's ``messages``."""
    total = _REPLY_PRIMING
    for message in messages:
        total += _PER_MESSAGE
        if isinstance(message, dict):
            total += estimate_text(text_of(message.get("content")))
    return total


def estimate_prompt(prompt: Any) -> int:
    """Input tokens of a completions ``prompt`` or an embeddings ``input`` (text or a list)."""
    if isinstance(prompt, str):
        return estimate_text(prompt)
    if isinstance(prompt, list):
        return sum(estimate_text(p) for p in prompt if isinstance(p, str))
    return 0
