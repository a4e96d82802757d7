"""``keel.rag``: versioned RAG indexes in a few functions, on the process's client.

::

    import keel

    keel.data.add("docs")                                   # datasets:/docs@1
    built = keel.rag.build(
        "kb", source="datasets:/docs@1", chunker="tokens:200,overlap:20",
        embedder="local-minilm",
    )
    print(built.version.uri, built.embedded, built.reused, built.hit_rate)
    keel.rag.set_alias("kb", "production", built.version.version)
    for hit in keel.rag.load("rag:/kb@production").query("How do I roll back?", k=5):
        print(f"{hit.score:.3f} {hit.path}#{hit.position}")

An index version is immutable and addressed by its key (the source version, the
chunker and the embedder); its chunks and vectors are content-addressed, so a
rebuild after a source change embeds only the changed chunks. Its aliases move
through the registry's compare-and-set, approvals and audit. Each function is the
method of the same name on ``keel.Client().rag`` (:class:`RagIndexes`), so it
works embedded and through ``keel server``.

The pieces: :mod:`~keel.llm.rag.chunking` (chunker specs),
:mod:`~keel.llm.rag.embedders`, :mod:`~keel.llm.rag.documents` (the index document
and which source files are read), :mod:`~keel.llm.rag.build`,
:mod:`~keel.llm.rag.index` (queries and traces) and :mod:`~keel.llm.rag.backends`
(LanceDB, DuckDB).
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

# Imported first, so that the module ``keel.llm.rag.build`` is loaded before the function
# ``build`` below is defined: loading a submodule later would set the package's ``build``
# attribute to the module, hiding the function.
import keel.llm.rag.build as _build_module  # noqa: F401
from keel.lazy import lazy_exports
from keel.registry.client import UNSET, Unset

if TYPE_CHECKING:
    from keel.llm.rag.build import BuildResult, Progress
    from keel.llm.rag.chunking import Chunker, parse_chunker
    from keel.llm.rag.documents import IndexVersion, RegisteredIndex
    from keel.llm.rag.embedders import Embedder, get_embedder
    from keel.llm.rag.index import Hit, RagIndex, flush_traces
    from keel.llm.rag.part import RagIndexes
    from keel.registry.entities import AliasChange, Approval

__all__ = [
    "BuildResult",
    "Chunker",
    "Embedder",
    "Hit",
    "IndexVersion",
    "RagIndex",
    "RagIndexes",
    "RegisteredIndex",
    "alias_history",
    "approve",
    "build",
    "flush_traces",
    "get",
    "get_alias",
    "get_embedder",
    "list",
    "load",
    "parse_chunker",
    "query",
    "set_alias",
    "versions",
]

_EXPORTS = {
    "BuildResult": "keel.llm.rag.build",
    "Chunker": "keel.llm.rag.chunking",
    "parse_chunker": "keel.llm.rag.chunking",
    "Embedder": "keel.llm.rag.embedders",
    "get_embedder": "keel.llm.rag.embedders",
    "IndexVersion": "keel.llm.rag.documents",
    "RegisteredIndex": "keel.llm.rag.documents",
    "Hit": "keel.llm.rag.index",
    "RagIndex": "keel.llm.rag.index",
    "flush_traces": "keel.llm.rag.index",
    "RagIndexes": "keel.llm.rag.part",
}


def _part() -> RagIndexes:
    from keel.client import Client

    return Client().rag


def build(
    name: str,
    *,
    source: str,
    chunker: str,
    embedder: str,
    backend: str | None = None,
    progress: Progress | None = None,
    description: str | None = None,
) -> BuildResult:
    """Build (or find) a version of index ``name``; see :func:`keel.llm.rag.build.build_index`.

    Args:
        name: the index's name (created on first build).
        source: a dataset version, ``datasets:/docs@3``.
        chunker: a chunker spec, ``tokens:200,overlap:20``.
        embedder: an embedder's name, ``local-minilm``.
        backend: the backend whose table is written now (default ``lance``).
        progress: called with (stage, done, total).
        description: what the version is for.
    """
    return _part().build(
        name,
        source=source,
        chunker=chunker,
        embedder=embedder,
        backend=backend,
        progress=progress,
        description=description,
    )


def load(uri: str, *, backend: str | None = None) -> RagIndex:
    """The index version ``rag:/NAME@ALIAS`` or ``rag:/NAME/VERSION`` names, ready to query."""
    return _part().load(uri, backend=backend)


def query(uri: str, text: str, k: int = 10) -> builtins.list[Hit]:
    """The ``k`` chunks of index ``uri`` closest to ``text`` (loads the index each call)."""
    return _part().query(uri, text, k)


def get(name: str, version: int) -> IndexVersion:
    """One version of index ``name``."""
    return _part().get(name, version)


def list() -> builtins.list[RegisteredIndex]:
    """Every RAG index, by name."""
    return _part().list()


def versions(name: str) -> builtins.list[IndexVersion]:
    """Every version of index ``name``, oldest first."""
    return _part().versions(name)


def get_alias(name: str, alias: str) -> int | None:
    """The version ``alias`` of index ``name`` points at, or ``None``."""
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
    """Every move of the index's aliases (or of one), oldest first."""
    return _part().alias_history(name, alias)


def approve(name: str, version: int, alias: str, comment: str | None = None) -> Approval:
    """Approve ``version`` of index ``name`` for the protected ``alias``."""
    return _part().approve(name, version, alias, comment)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
