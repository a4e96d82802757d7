"""Chunkers: how a source document is cut into the passages an index retrieves.

A chunker is written as a short spec, parsed once into a canonical config (the
config, not the spec, is part of an index's key)::

    tokens:400,overlap:50    400 tokens a chunk, consecutive chunks share 50
    chars:1000,overlap:100   1000 characters a chunk, sharing 100
    lines:20                 20 lines a chunk (``overlap:N`` lines works too)

Tokens are counted with a simple, model-independent split: a token is a run of
word characters (letters, digits, ``_``) or a single other non-space character,
so ``"don't stop."`` is five tokens (``don ' t stop .``). It is cheap, the same
for every embedder, and close to a word-piece count for English prose (the
packaged MiniLM embedder reads at most 256 word pieces a chunk and ignores the
rest, so chunks of about 200 tokens use it fully). A chunk is the text between
its first and last token, exactly as it appears in the document.

Chunks holding only whitespace are dropped. A chunk's position is its ordinal in
its document (0-based).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from keel.errors import InvalidInput

__all__ = ["CHUNKER_KINDS", "MAX_CHUNK_SIZE", "Chunker", "parse_chunker"]

#: The kinds of chunker and the unit each counts.
CHUNKER_KINDS = {"tokens": "tokens", "chars": "characters", "lines": "lines"}
#: The largest chunk size accepted, in the chunker's unit.
MAX_CHUNK_SIZE = 100_000
#: Bumped when a chunker's algorithm changes, so indexes built by the old one get new keys.
_ALGORITHM = 1
_TOKEN = re.compile(r"\w+|[^\w\s]")
_EXAMPLE = "tokens:400,overlap:50, chars:1000,overlap:100 or lines:20"


@dataclass(frozen=True)
class Chunker:
    """A parsed chunker: kind, size and overlap (in the kind's unit).

    Build one with :func:`parse_chunker`; :meth:`split` cuts a text.
    """

    kind: str
    size: int
    overlap: int = 0

    @property
    def spec(self) -> str:
        """The canonical spec (``tokens:400,overlap:50``)."""
        return f"{self.kind}:{self.size}" + (f",overlap:{self.overlap}" if self.overlap else "")

    def config(self) -> dict[str, Any]:
        """The canonical config an index's key and document record."""
        return {
            "kind": self.kind,
            "size": self.size,
            "overlap": self.overlap,
            "algorithm": _ALGORITHM,
        }

    def split(self, text: str) -> list[str]:
        """The chunks of ``text``, in order; none for a blank text."""
        if self.kind == "chars":
            step, n = self.size - self.overlap, len(text)
            spans = [(i, min(i + self.size, n)) for i in range(0, max(n - self.overlap, 1), step)]
        elif self.kind == "lines":
            lines, start = [], 0
            for line in text.splitlines(keepends=True):
                lines.append((start, start + len(line)))
                start += len(line)
            spans = _windows(lines, self.size, self.overlap)
        else:
            tokens = [m.span() for m in _TOKEN.finditer(text)]
            spans = _windows(tokens, self.size, self.overlap)
        chunks = (text[start:end].strip() for start, end in spans)
        return [chunk for chunk in chunks if chunk]


def _windows(units: list[tuple[int, int]], size: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans of windows of ``size`` units, each sharing ``overlap`` with the last."""
    if not units:
        return []
    step = size - overlap
    spans = []
    for first in range(0, len(units), step):
        last = min(first + size, len(units)) - 1
        spans.append((units[first][0], units[last][1]))
        if last == len(units) - 1:
            break
    return spans


def parse_chunker(spec: str) -> Chunker:
    """Parse a chunker spec such as ``tokens:400,overlap:50``.

    Raises:
        InvalidInput: an unknown kind, a size that is not a whole number from 1 to
            :data:`MAX_CHUNK_SIZE`, an unknown option, or an overlap not smaller than
            the size; the message shows a valid spec.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInput(f"expected a chunker spec such as {_EXAMPLE}; got {spec!r}")
    parts = [p.strip() for p in spec.strip().split(",")]
    kind, sep, size_text = parts[0].partition(":")
    kind = kind.strip()
    if kind not in CHUNKER_KINDS:
        raise InvalidInput(
            f"unknown chunker kind {kind!r} in {spec!r}; expected one of "
            f"{', '.join(CHUNKER_KINDS)} (e.g. {_EXAMPLE})"
        )
    if not sep:
        raise InvalidInput(f"chunker {spec!r} needs a size: {kind}:N (e.g. {_EXAMPLE})")
    size = _count(size_text, f"the size of chunker {spec!r}", minimum=1)
    overlap = 0
    for part in parts[1:]:
        option, sep, value = part.partition(":")
        if option.strip() != "overlap" or not sep:
            raise InvalidInput(
                f"unknown chunker option {part!r} in {spec!r}; the only option is overlap:N "
                f"(e.g. {_EXAMPLE})"
            )
        overlap = _count(value, f"the overlap of chunker {spec!r}", minimum=0)
    if overlap >= size:
        raise InvalidInput(
            f"chunker {spec!r}: the overlap ({overlap}) must be smaller than the size ({size}), "
            "or no chunk would move past the last"
        )
    return Chunker(kind, size, overlap)


def _count(text: str, what: str, *, minimum: int) -> int:
    value = text.strip()
    if not value.isdigit() or not minimum <= int(value) <= MAX_CHUNK_SIZE:
        raise InvalidInput(
            f"{what} must be a whole number from {minimum} to {MAX_CHUNK_SIZE:,}; got {value!r}"
        )
    return int(value)
