"""Content-addressed artifact storage (BLAKE3) over a local folder or fsspec (``s3://``)."""

from __future__ import annotations

from keel.artifacts.backends import Backend, FsspecBackend, LocalBackend, backend_for_url
from keel.artifacts.store import (
    ArtifactStore,
    Blob,
    ManifestEntry,
    canonical_json,
    check_digest,
    check_manifest_entry,
    folder_files,
    hash_bytes,
    hash_file,
)

__all__ = [
    "ArtifactStore",
    "Backend",
    "Blob",
    "FsspecBackend",
    "LocalBackend",
    "ManifestEntry",
    "backend_for_url",
    "canonical_json",
    "check_digest",
    "check_manifest_entry",
    "folder_files",
    "get_artifact_store",
    "hash_bytes",
    "hash_file",
]


def get_artifact_store(settings: object | None = None) -> ArtifactStore:
    """The artifact store the settings point at (the process's settings by default)."""
    from keel.config import Settings, get_settings

    resolved = settings if isinstance(settings, Settings) else get_settings()
    return ArtifactStore.from_url(resolved.artifacts_url, resolved.s3_endpoint_url)
