"""Freshness of an index: is its source dataset still the one it was built from?

An index version records the dataset version it was built from (name, version
and manifest digest). Its freshness compares that with the dataset's newest
version, file by file (:func:`keel.data.manifest.diff_manifests` over the two
manifests): the documents **added**, **changed** and **removed** since, counting
the files an index reads (:data:`keel.llm.rag.documents.TEXT_TYPES`; other files
are counted apart). An index whose source has any such document is **stale**; one
whose source is the newest version (or a newer version with the same documents)
is **fresh**.

Two ages are reported:

- ``age``: how long ago the index version was built;
- ``behind``: how long the index has lagged its source: since the first source
  version after the indexed one was added (``None`` while fresh).

``max_age`` (a watch's setting, :mod:`keel.monitoring.indexes`) is how long an index
may lag before that counts: a stale index is **overdue** once it has been behind
for at least ``max_age`` (at once when ``max_age`` is 0). The ``index_stale`` alert
fires for an overdue index and clears when the index is fresh again (rebuilt on
the newest source, its alias moved).

Freshness reads only what the catalog stores (the index's document and two
manifests): no document is read, nothing is embedded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput
from keel.uris import RagURI, parse_rag_uri

if TYPE_CHECKING:
    from keel.client import Client
    from keel.llm.rag.index import RagIndex

__all__ = ["Freshness", "human_age", "index_freshness", "indexed_source", "source_documents"]

#: How many paths of each kind of change a report lists (the counts are always complete).
LISTED = 20


def human_age(seconds: float | None) -> str:
    """``3d 4h``, ``2h 5m``, ``40s``: the two largest units of a duration."""
    if seconds is None:
        return "-"
    left = max(int(seconds), 0)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


@dataclass(frozen=True)
class IndexedSource:
    """What an index version was built from and how (from its index document)."""

    name: str
    version: int
    built_at: int
    dataset: str
    dataset_version: int
    dataset_digest: str
    chunker: str
    embedder: str


@dataclass(frozen=True)
class Freshness:
    """An index version against its source dataset's newest version.

    Attributes:
        index: the reference checked, ``rag:/kb@production`` or ``rag:/kb/3``.
        name, alias, version: the index, the alias checked (if any) and the version it holds.
        built_at: when that version was registered (ms since the epoch).
        source: the source dataset's name.
        source_version, source_digest: the dataset version indexed.
        latest_version, latest_digest: the dataset's newest version.
        added, changed, removed: document paths (at most :data:`LISTED` of each).
        counts: the full counts: ``added``, ``changed``, ``removed``.
        behind_since: when the first source version after the indexed one was added
            (ms), or ``None`` when the index is not behind.
        other_files: files of other types added, changed or removed (the index reads
            none of them, so they do not make it stale).
        checked_at: when this was measured (ms).
        max_age: seconds an index may lag its source before it is overdue.
        chunker, embedder: how the version was built (a rebuild uses the same).
    """

    index: str
    name: str
    alias: str | None
    version: int
    built_at: int
    source: str
    source_version: int
    source_digest: str
    latest_version: int
    latest_digest: str
    counts: dict[str, int]
    checked_at: int
    chunker: str
    embedder: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    behind_since: int | None = None
    max_age: float = 0.0
    other_files: int = 0

    @property
    def documents_changed(self) -> int:
        """Documents added, changed or removed since the indexed source version."""
        return sum(self.counts.values())

    @property
    def stale(self) -> bool:
        """The source's newest version has documents the index does not reflect."""
        return self.documents_changed > 0

    @property
    def state(self) -> str:
        """``fresh`` or ``stale``."""
        return "stale" if self.stale else "fresh"

    @property
    def age_seconds(self) -> float:
        """Seconds since the index version was built."""
        return max(self.checked_at - self.built_at, 0) / 1000

    @property
    def behind_seconds(self) -> float | None:
        """Seconds the index has lagged its source (``None`` when fresh)."""
        if not self.stale or self.behind_since is None:
            return None
        return max(self.checked_at - self.behind_since, 0) / 1000

    @property
    def overdue(self) -> bool:
        """Stale for at least ``max_age``: what fires the ``index_stale`` alert."""
        behind = self.behind_seconds
        return self.stale and (behind is None or behind >= self.max_age)

    @property
    def rebuild_command(self) -> str:
        """The command that builds this index on the newest source version."""
        return (
            f"keel rag build --source datasets:/{self.source}@{self.latest_version} "
            f"--chunker '{self.chunker}' --embedder {self.embedder} --name {self.name}"
        )

    def summary(self) -> str:
        """One line for people: fresh or stale, the counts, the ages."""
        source = f"datasets:/{self.source}@{self.source_version}"
        if not self.stale:
            newest = (
                "its newest version"
                if self.latest_version == self.source_version
                else f"the same documents as the newest version {self.latest_version}"
            )
            return (
                f"{self.index} is fresh: version {self.version} indexes {source}, {newest}; "
                f"built {human_age(self.age_seconds)} ago"
            )
        c = self.counts
        text = (
            f"{self.index} is stale: version {self.version} indexes {source}, and the newest "
            f"version {self.latest_version} has {self.documents_changed} document(s) changed "
            f"({c['added']} added, {c['changed']} changed, {c['removed']} removed); behind for "
            f"{human_age(self.behind_seconds)}, built {human_age(self.age_seconds)} ago"
        )
        if not self.overdue:
            text += f" (within its max age of {human_age(self.max_age)})"
        return text

    def to_dict(self) -> dict[str, Any]:
        def iso(ms: int | None) -> str | None:
            if ms is None:
                return None
            return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")

        return {
            "index": self.index,
            "name": self.name,
            "alias": self.alias,
            "version": self.version,
            "state": self.state,
            "stale": self.stale,
            "overdue": self.overdue,
            "documents_changed": self.documents_changed,
            "counts": dict(self.counts),
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "other_files": self.other_files,
            "source": {
                "dataset": self.source,
                "version": self.source_version,
                "digest": self.source_digest,
            },
            "latest": {"version": self.latest_version, "digest": self.latest_digest},
            "built_at": iso(self.built_at),
            "age_seconds": self.age_seconds,
            "behind_since": iso(self.behind_since),
            "behind_seconds": self.behind_seconds,
            "max_age_seconds": self.max_age,
            "checked_at": iso(self.checked_at),
            "chunker": self.chunker,
            "embedder": self.embedder,
            "rebuild": self.rebuild_command if self.stale else None,
        }


def indexed_source(client: Client, ref: str | RagURI) -> tuple[RagURI, IndexedSource]:
    """The parsed reference and what the version it names was built from.

    Raises:
        InvalidInput: ``ref`` is not an index reference.
        NotFound: no such index, version or alias.
    """
    uri = ref if isinstance(ref, RagURI) else parse_rag_uri(ref)
    version = client.rag.resolve(str(uri))
    source = version.document["source"]
    return uri, IndexedSource(
        name=version.name,
        version=int(version.version),
        built_at=int(version.created_at),
        dataset=str(source["dataset"]),
        dataset_version=int(source["version"]),
        dataset_digest=str(source["digest"]),
        chunker=version.chunker,
        embedder=version.embedder,
    )


def _readable(path: str) -> bool:
    """Whether an index reads the file at ``path`` (its type is one of the text types)."""
    from keel.llm.rag.documents import TEXT_TYPES

    name = path.rsplit("/", 1)[-1]
    return "." in name and "." + name.rsplit(".", 1)[-1].lower() in TEXT_TYPES


def _manifest(client: Client, digest: str) -> Any:
    from keel.data.manifest import read_manifest

    return read_manifest(client.artifacts, digest, client.settings.home / "cache" / "manifests")


def source_documents(index: RagIndex, client: Client) -> set[str]:
    """The paths of every file of the dataset version ``index`` was built from."""
    digest = index.document["source"]["digest"]
    return set(_manifest(client, str(digest)).files)


def index_freshness(
    client: Client,
    ref: str | RagURI,
    *,
    max_age: float = 0.0,
    now: int | None = None,
) -> Freshness:
    """How the version ``ref`` names compares with its source dataset's newest version.

    Args:
        client: a ``keel.Client``.
        ref: ``kb@production``, ``rag:/kb@production`` or ``rag:/kb/3``.
        max_age: seconds the index may lag its source before it is overdue.
        now: the time of the check (ms since the epoch; default: now).

    Raises:
        InvalidInput: a malformed reference or a negative ``max_age``.
        NotFound: no such index, version or alias, or the source dataset is gone.
    """
    from keel.data.manifest import diff_manifests
    from keel.store.sql import now_ms

    if isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age < 0:
        raise InvalidInput(f"max_age must be seconds >= 0, got {max_age!r}")
    uri, built = indexed_source(client, ref)
    checked_at = now_ms() if now is None else int(now)
    latest = client.data.get_version(built.dataset)
    counts = {"added": 0, "changed": 0, "removed": 0}
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    behind_since = None
    other_files = 0
    if latest.digest != built.dataset_digest:
        diff = diff_manifests(
            _manifest(client, built.dataset_digest), _manifest(client, latest.digest)
        )
        added, changed, removed = (
            [path for path in paths if _readable(path)]
            for paths in (diff.added, diff.changed, diff.removed)
        )
        other_files = len(diff.added) + len(diff.changed) + len(diff.removed)
        counts = {"added": len(added), "changed": len(changed), "removed": len(removed)}
        other_files -= sum(counts.values())
        added, changed, removed = added[:LISTED], changed[:LISTED], removed[:LISTED]
        newer = [
            v.created_at
            for v in client.data.list_versions(built.dataset)
            if v.version > built.dataset_version and v.digest != built.dataset_digest
        ]
        if any(counts.values()):
            behind_since = min(newer) if newer else int(latest.created_at)
    return Freshness(
        index=str(uri),
        name=built.name,
        alias=uri.alias,
        version=built.version,
        built_at=built.built_at,
        source=built.dataset,
        source_version=built.dataset_version,
        source_digest=built.dataset_digest,
        latest_version=int(latest.version),
        latest_digest=latest.digest,
        counts=counts,
        checked_at=checked_at,
        chunker=built.chunker,
        embedder=built.embedder,
        added=added,
        changed=changed,
        removed=removed,
        behind_since=behind_since,
        max_age=float(max_age),
        other_files=other_files,
    )
