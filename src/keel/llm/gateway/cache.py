"""The gateway's exact-match response cache: bounded, with a time to live.

A request is a hit only when everything that reaches the upstream is the same:
the gateway model and the whole request body as the gateway would send it
(after a prompt is rendered and its parameters applied), compared by a digest
of its canonical JSON. An entry lives ``ttl_s`` seconds; beyond ``max_entries``
the least recently used goes first, so memory stays bounded however varied
the traffic. Only whole, successful, non-streamed answers are kept.

The cache lives in one process and is used from its event loop only, so it
takes no lock; each worker of a multi-process gateway has its own.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import blake3
import orjson

__all__ = ["CachedAnswer", "ResponseCache", "cache_key"]


@dataclass(frozen=True)
class CachedAnswer:
    """An upstream's answer as it was returned, with what its trace needs."""

    body: bytes
    provider: str
    upstream_model: str
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool
    output: str | None


def cache_key(endpoint: str, model: str, body: dict[str, Any]) -> bytes:
    """The digest naming a request: the endpoint, the gateway model and the body sent."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    digest = blake3.blake3(endpoint.encode())
    digest.update(b"\0" + model.encode() + b"\0")
    digest.update(canonical)
    return digest.digest()


class ResponseCache:
    """Answers by request digest, for ``ttl_s`` seconds, at most ``max_entries`` of them.

    Args:
        ttl_s: seconds an answer is reused.
        max_entries: answers kept; the least recently used goes first beyond it.
    """

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[float, CachedAnswer]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> CachedAnswer | None:
        """The live answer for ``key``, or None (an expired one is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        expires, answer = entry
        if expires <= time.monotonic():
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return answer

    def put(self, key: bytes, answer: CachedAnswer) -> None:
        """Keep ``answer`` for ``ttl_s`` seconds, evicting the least recently used if full."""
        self._entries[key] = (time.monotonic() + self.ttl_s, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
