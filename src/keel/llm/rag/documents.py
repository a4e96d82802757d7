"""The index document, the records of index versions, and the text a source holds.

An index version's content is its **index document**: canonical JSON in the
content-addressed artifact store, named by its BLAKE3 digest (the version's
``manifest_digest``)::

    {
      "format": "keel-rag-index/1",
      "key": "<BLAKE3 of source digest, chunker config and embedder name>",
      "source": {"dataset": "docs", "version": 3, "digest": "<manifest digest>"},
      "chunker": {"kind": "tokens", "size": 400, "overlap": 50, "algorithm": 1},
      "embedder": {"name": "local-minilm", "dimension": 384},
      "chunks": {"digest": "<Parquet blob>", "rows": 1234},
      "vectors": {"digest": "<Parquet blob>", "rows": 1200},
      "documents": 87,
      "skipped": 2
    }

The chunks blob holds one row per chunk (``digest``, ``path``, ``position``,
``text``, ``document``: the digest of the source file it came from); the vectors
blob one row per distinct chunk digest (``digest``, ``vector``: float32 of the
embedder's dimension), sorted by digest. A chunk's digest is the BLAKE3 of its
UTF-8 text, so vectors are shared by every chunk, version and index with the same
text and embedder.

**Which source files are read** (:data:`TEXT_TYPES`): ``.txt``, ``.text``, ``.md``,
``.markdown``, ``.rst`` as they are; ``.html``/``.htm`` as their visible text
(scripts, styles and tags dropped); ``.jsonl``, one document per line, from each
line's ``text`` field (the document's path is ``<file>#<line number>``). A file of
another type, or one that is not UTF-8 text (it holds a NUL byte or does not
decode), is skipped and counted in ``skipped``. The ``algorithm`` of the chunker
config versions this reading as well as the chunking.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

from keel.artifacts import canonical_json, check_digest, hash_bytes
from keel.errors import IntegrityError, InvalidInput, NotFound
from keel.registry.entities import RegisteredModel

if TYPE_CHECKING:
    from keel.artifacts import ArtifactStore
    from keel.data.catalog import DatasetVersion
    from keel.data.client import DataClient

__all__ = [
    "DOCUMENT_FORMAT",
    "TEXT_TYPES",
    "IndexVersion",
    "RegisteredIndex",
    "Source",
    "SourceDocument",
    "check_document",
    "extract_text",
    "index_key",
    "read_source",
]

#: The ``format`` of a stored index document; a reader refuses others.
DOCUMENT_FORMAT = "keel-rag-index/1"
#: File suffixes read as text, and how.
TEXT_TYPES: dict[str, str] = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".markdown": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".jsonl": "jsonl",
}
#: The ``registered_models.kind`` of an index; ``model_versions.source`` is this, ':', key.
KIND = "rag-index"


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def index_key(source_digest: str, chunker: dict[str, Any], embedder: str) -> str:
    """An index version's address: BLAKE3 of its source, chunker config and embedder name."""
    return hash_bytes(
        canonical_json({"source": source_digest, "chunker": chunker, "embedder": embedder})
    )


# -- records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexVersion:
    """One immutable version of a RAG index, with its whole index document.

    ``digest`` names the stored document (verified on read); the document's
    ``key`` is the version's address.
    """

    name: str
    version: int
    digest: str
    document: dict[str, Any]
    description: str | None
    created_at: int
    created_by: str
    aliases: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"rag:/{self.name}/{self.version}"

    @property
    def key(self) -> str:
        return str(self.document["key"])

    @property
    def source(self) -> str:
        """The dataset version it was built from, as ``datasets:/NAME@VERSION``."""
        source = self.document["source"]
        return f"datasets:/{source['dataset']}@{source['version']}"

    @property
    def embedder(self) -> str:
        return str(self.document["embedder"]["name"])

    @property
    def chunker(self) -> str:
        """The chunker as a spec (``tokens:400,overlap:50``)."""
        config = self.document["chunker"]
        spec = f"{config['kind']}:{config['size']}"
        return spec + (f",overlap:{config['overlap']}" if config["overlap"] else "")

    @property
    def chunks(self) -> int:
        return int(self.document["chunks"]["rows"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "key": self.key,
            "source": self.source,
            "chunker": self.chunker,
            "embedder": self.embedder,
            "chunks": self.chunks,
            "documents": self.document["documents"],
            "skipped": self.document["skipped"],
            "digest": self.digest,
            "description": self.description,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "aliases": self.aliases,
        }


class RegisteredIndex(RegisteredModel):
    """An index's name, its latest version number and its aliases (the registry's record)."""


# -- the index document ----------------------------------------------------------------


def _need(ok: bool, what: str, where: str) -> None:
    if not ok:
        raise InvalidInput(f"{where} is not a {DOCUMENT_FORMAT} document: {what}")


def check_document(document: Any, where: str = "the index document") -> dict[str, Any]:
    """``document`` if it has the index document's shape and its key matches, else InvalidInput.

    Used on every read and by the server before it registers a document a client
    stored, so a malformed or mislabelled document never becomes a version.
    """
    _need(isinstance(document, dict), "not an object", where)
    _need(document.get("format") == DOCUMENT_FORMAT, f"format {document.get('format')!r}", where)
    source, chunker, embedder = (document.get(k) for k in ("source", "chunker", "embedder"))
    _need(
        isinstance(source, dict)
        and isinstance(source.get("dataset"), str)
        and isinstance(source.get("version"), int)
        and isinstance(source.get("digest"), str),
        "source must name dataset, version and digest",
        where,
    )
    _need(isinstance(chunker, dict), "chunker must be an object", where)
    _need(
        isinstance(embedder, dict)
        and isinstance(embedder.get("name"), str)
        and isinstance(embedder.get("dimension"), int)
        and embedder["dimension"] > 0,
        "embedder must have a name and a positive dimension",
        where,
    )
    for blob in ("chunks", "vectors"):
        entry = document.get(blob)
        _need(
            isinstance(entry, dict)
            and isinstance(entry.get("digest"), str)
            and isinstance(entry.get("rows"), int)
            and entry["rows"] > 0,
            f"{blob} must name a blob digest and a positive row count",
            where,
        )
        check_digest(entry["digest"])
    for count in ("documents", "skipped"):
        _need(isinstance(document.get(count), int), f"{count} must be a count", where)
    key = index_key(source["digest"], chunker, embedder["name"])
    if document.get("key") != key:
        raise InvalidInput(
            f"{where} says its key is {document.get('key')!r}, but its source, chunker and "
            f"embedder make {key}; build the index again rather than editing a document"
        )
    return document


def read_document(artifacts: ArtifactStore, digest: str, where: str) -> dict[str, Any]:
    """The stored index document ``digest`` (verified by the artifact store, then checked)."""
    try:
        document = artifacts.get_json(digest)
    except NotFound:
        raise IntegrityError(
            f"{where} names index document {digest}, which the artifact store does not "
            "hold; restore the artifact store from a backup"
        ) from None
    try:
        return check_document(document, where)
    except InvalidInput as exc:
        raise IntegrityError(str(exc)) from None


# -- the source's text -------------------------------------------------------------------


@dataclass(frozen=True)
class SourceDocument:
    """One text document of a source: its path, the digest of its file, its text."""

    path: str
    digest: str
    text: str


@dataclass(frozen=True)
class Source:
    """The text documents of a dataset version, and how many files were skipped."""

    version: DatasetVersion
    documents: list[SourceDocument]
    skipped: int
    skipped_paths: list[str]


class _HtmlText(HTMLParser):
    _HIDDEN = frozenset({"script", "style", "head", "noscript", "template"})
    _BLOCKS = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "pre"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def _html_text(markup: str) -> str:
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def extract_text(path: str, data: bytes) -> list[tuple[str, str]] | None:
    """The ``(path, text)`` documents a source file holds, or ``None`` when it is skipped.

    Raises:
        InvalidInput: a ``.jsonl`` line that is not an object with a text ``text`` field.
    """
    how = TEXT_TYPES.get(_suffix(path))
    if how is None or b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if how == "html":
        return [(path, _html_text(text))]
    if how == "jsonl":
        return list(_jsonl_documents(path, text))
    return [(path, text)]


def _jsonl_documents(path: str, text: str) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InvalidInput(
                f"line {number} of {path} is not a JSON object with a text field 'text'; "
                "every line of a .jsonl source must be one (or rename the file to skip it)"
            )
        yield f"{path}#{number}", record["text"]


def read_source(data: DataClient, artifacts: ArtifactStore, ref: str) -> Source:
    """The text documents of the dataset version ``ref`` (``datasets:/docs@3``, ``docs@3``).

    Files stored in packs are sliced out of their pack and verified, as a checkout does.

    Raises:
        NotFound: no such dataset or version.
        InvalidInput: ``ref`` is not a dataset reference, or a ``.jsonl`` line is malformed.
    """
    from keel.data.packs import read_pack_index, slice_of

    version = data.get_version(ref)
    entries = artifacts.read_manifest(version.digest)
    packs = read_pack_index(artifacts, version.packs_digest)
    pack_bytes: dict[str, bytes] = {}
    documents: list[SourceDocument] = []
    skipped: list[str] = []
    for entry in entries:
        if _suffix(entry.path) not in TEXT_TYPES:
            skipped.append(entry.path)
            continue
        at = packs.get(entry.digest)
        if at is None:
            raw = artifacts.get_bytes(entry.digest)
        else:
            if at.pack not in pack_bytes:
                pack_bytes[at.pack] = artifacts.get_bytes(at.pack)
            raw = slice_of(pack_bytes[at.pack], at, entry.digest, artifacts.url)
        found = extract_text(entry.path, raw)
        if found is None:
            skipped.append(entry.path)
            continue
        documents.extend(SourceDocument(path, entry.digest, text) for path, text in found)
    return Source(version, documents, len(skipped), skipped)
