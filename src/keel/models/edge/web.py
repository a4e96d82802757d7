"""onnxruntime-web: the files the browser bundle runs the model with.

They come from the npm registry when Keel is built, never from a CDN when the
page runs: ``scripts/fetch_onnxruntime_web.py`` runs ``npm pack`` on the pinned
version below, checks the tarball against the pinned integrity, and keeps only
the single build the page needs in ``keel/models/edge/web_runtime/`` (package
data, not in git), with ``onnxruntime-web.json`` recording the SHA-256 of each
file. An export copies them after checking those digests.

The build kept is the plain WebAssembly one (``ort.wasm.min.js`` and the
``ort-wasm-simd-threaded`` module and binary, which include the ``ai.onnx.ml``
operators tree ensembles need). The page sets one thread: a page served from a
plain HTTP server is not cross-origin isolated, so it could not start more.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from keel.errors import IntegrityError, NotFound

__all__ = [
    "FETCH_COMMAND",
    "ORT_WEB_INTEGRITY",
    "ORT_WEB_VERSION",
    "RUNTIME_DIR",
    "RUNTIME_FILES",
    "RUNTIME_RECORD",
    "WebRuntime",
    "find_web_runtime",
    "sha256_file",
]

#: The onnxruntime-web release the bundle ships, and its tarball's npm integrity.
ORT_WEB_VERSION = "1.31.1"
ORT_WEB_INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
#: The files of the tarball's ``dist/`` the page loads: the script, the module it
#: imports and the WebAssembly binary that module instantiates.
RUNTIME_FILES = (
    "ort.wasm.min.js",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
)
#: Written beside them: version, integrity, and each file's SHA-256 and size.
RUNTIME_RECORD = "onnxruntime-web.json"
#: onnxruntime-web's licence notice, shipped with its files.
NOTICE = "NOTICE-onnxruntime-web.txt"
#: Where Keel keeps them (package data).
RUNTIME_DIR = Path(__file__).parent / "web_runtime"
#: What fetches them, for the message of an install that lacks them.
FETCH_COMMAND = "python scripts/fetch_onnxruntime_web.py"


@dataclass(frozen=True)
class WebRuntime:
    """onnxruntime-web's files, checked against their recorded digests.

    Attributes:
        version: the onnxruntime-web release.
        files: the paths to copy beside the page (the runtime and its notice).
        size_bytes: their total size.
    """

    version: str
    files: tuple[Path, ...]
    size_bytes: int


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_web_runtime(folder: Path | None = None) -> WebRuntime:
    """onnxruntime-web's files in ``folder`` (default :data:`RUNTIME_DIR`), verified.

    Raises:
        NotFound: the folder lacks them (the message names the command that fetches them).
        IntegrityError: a file differs from the digest recorded when it was fetched.
    """
    where = RUNTIME_DIR if folder is None else Path(folder)
    record_path = where / RUNTIME_RECORD
    missing = [name for name in (RUNTIME_RECORD, *RUNTIME_FILES) if not (where / name).is_file()]
    if missing:
        raise NotFound(
            f"the browser bundle needs onnxruntime-web {ORT_WEB_VERSION}, and {where} lacks "
            f"{', '.join(missing)}; fetch it from the npm registry with `{FETCH_COMMAND}` in "
            "Keel's source checkout, or export with --no-web"
        )
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        recorded = {name: record["files"][name]["sha256"] for name in RUNTIME_FILES}
        version = str(record["version"])
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(
            f"{record_path} is not the record {FETCH_COMMAND} writes; run it again"
        ) from None
    files = []
    for name in RUNTIME_FILES:
        path = where / name
        digest = sha256_file(path)
        if digest != recorded[name]:
            raise IntegrityError(
                f"{path} hashes to {digest}, not the {recorded[name]} recorded when it was "
                f"fetched; nothing was exported. Fetch it again with `{FETCH_COMMAND}`"
            )
        files.append(path)
    if (where / NOTICE).is_file():
        files.append(where / NOTICE)
    return WebRuntime(version, tuple(files), sum(p.stat().st_size for p in files))
