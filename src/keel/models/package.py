"""The model package on disk: ``keel-model.json`` and the files it pins.

``keel-model.json`` records the flavor and its settings, the signature, an
input example, the requirements, the Python and Keel versions, the time it
was written and, under ``files``, the BLAKE3 digest and size of every other
file in the package. Its own digest (the BLAKE3 of its bytes, which is also
its object key in the artifact store) therefore pins the whole package: it
is the package's *manifest digest*.

A package is only deserialized after :func:`verify_folder` has checked that
the folder holds exactly the listed files (no more, no fewer, no symlinks)
and that each one hashes to its recorded digest.
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from keel.artifacts import hash_file
from keel.errors import IntegrityError, InvalidInput

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "Package",
    "build_manifest",
    "detect_requirements",
    "file_table",
    "merge_requirements",
    "parse_manifest",
    "requirement_mismatches",
    "verify_folder",
    "write_manifest",
]

MANIFEST_NAME = "keel-model.json"
FORMAT = "keel.model/v1"

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*?)\s*$")


@dataclass(frozen=True)
class Package:
    """A verified package folder and its parsed ``keel-model.json``."""

    folder: Path
    metadata: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        """The flavor's own settings (``flavor_config`` in ``keel-model.json``)."""
        return dict(self.metadata.get("flavor_config") or {})

    def file(self, relpath: str) -> Path:
        """The path of a file the manifest lists; a flavor opens nothing else."""
        if relpath not in self.metadata["files"]:
            raise IntegrityError(
                f"{MANIFEST_NAME} points the flavor at {relpath!r}, which is not one of the "
                "package's listed files; the package is malformed, re-log the model"
            )
        return self.folder / relpath


# -- writing ---------------------------------------------------------------------


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relpath: {"digest", "size"}}`` for every file under ``folder``, sorted by path."""
    table: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise InvalidInput(f"model files must be regular files; {rel!r} is a symlink")
        if path.is_file():
            table[rel] = {"digest": hash_file(path), "size": path.stat().st_size}
    return table


def build_manifest(
    *,
    flavor: str,
    flavor_config: Mapping[str, Any],
    signature: Mapping[str, Any] | None,
    input_example: Mapping[str, Any] | None,
    files: Mapping[str, Mapping[str, Any]],
    requirements: list[str],
) -> dict[str, Any]:
    from keel import __version__

    return {
        "format": FORMAT,
        "flavor": flavor,
        "flavor_config": dict(flavor_config),
        "signature": None if signature is None else dict(signature),
        "input_example": None if input_example is None else dict(input_example),
        "files": {k: dict(v) for k, v in files.items()},
        "requirements": requirements,
        "python_version": platform.python_version(),
        "keel_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


def write_manifest(folder: Path, doc: Mapping[str, Any]) -> str:
    """Write ``keel-model.json`` (indented, sorted keys) and return its digest."""
    path = folder / MANIFEST_NAME
    try:
        text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"the model's metadata cannot be stored as JSON: {exc}") from None
    path.write_text(text + "\n", encoding="utf-8")
    return hash_file(path)


# -- reading and verifying -----------------------------------------------------------


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """Parse and structurally check the bytes of a ``keel-model.json``."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{where}: {MANIFEST_NAME} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or "format" not in doc:
        raise IntegrityError(f"{where}: {MANIFEST_NAME} is not a Keel model manifest")
    if doc["format"] != FORMAT:
        raise InvalidInput(
            f"{where}: package format {doc['format']!r} is not one this Keel reads "
            f"({FORMAT}); upgrade Keel to load it"
        )
    files = doc.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("digest"), str) and isinstance(v.get("size"), int)
        for v in files.values()
    ):
        raise IntegrityError(
            f"{where}: {MANIFEST_NAME} has no valid 'files' table "
            '({"path": {"digest": "…", "size": N}}); re-log the model'
        )
    if MANIFEST_NAME in files:
        raise IntegrityError(f"{where}: {MANIFEST_NAME} lists itself among the package's files")
    return doc


def verify_folder(folder: Path, metadata: Mapping[str, Any], where: str) -> None:
    """Check that ``folder`` holds exactly the listed files, each with its recorded digest.

    Raises:
        IntegrityError: naming the first file that is missing, unlisted, a
            symlink, or whose size or digest differs; nothing is deserialized.
    """
    files: Mapping[str, Mapping[str, Any]] = metadata["files"]
    present: set[str] = set()
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise IntegrityError(f"{where}: {rel!r} is a symlink; a model package holds files only")
        if path.is_file():
            present.add(rel)
    present.discard(MANIFEST_NAME)
    unlisted = sorted(present - set(files))
    if unlisted:
        raise IntegrityError(
            f"{where}: file(s) {', '.join(map(repr, unlisted))} are not listed in "
            f"{MANIFEST_NAME}; a package holds exactly the files it lists, so it was "
            "modified after it was logged. Re-log the model"
        )
    missing = sorted(set(files) - present)
    if missing:
        raise IntegrityError(
            f"{where}: file(s) {', '.join(map(repr, missing))} listed in {MANIFEST_NAME} "
            "are missing; re-log the model"
        )
    for rel in sorted(files):
        path = folder / rel
        expected = files[rel]
        size = path.stat().st_size
        digest = hash_file(path) if size == expected["size"] else None
        if digest != expected["digest"]:
            got = f"hashes to {digest}" if digest else f"is {size} bytes"
            raise IntegrityError(
                f"{where}: model file {rel!r} does not match {MANIFEST_NAME}: it {got}, "
                f"the package recorded {expected['digest']} ({expected['size']} bytes). "
                "It was changed after the model was logged; nothing was loaded. "
                "Re-log the model from a trusted copy"
            )


# -- requirements -----------------------------------------------------------------


def canonical_name(name: str) -> str:
    """A distribution name as PEP 503 compares them (``scikit_learn`` → ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def detect_requirements(distributions: Iterable[str]) -> list[str]:
    """``name==version`` for each of ``distributions`` that is installed."""
    found = []
    for name in distributions:
        try:
            found.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def merge_requirements(detected: list[str], explicit: Iterable[Any] | None) -> list[str]:
    """Detected pins plus the caller's; a caller's requirement replaces a detected one
    for the same distribution, and is recorded exactly as given.

    Raises:
        InvalidInput: a requirement that is not a string naming a distribution.
    """
    if explicit is None:
        return sorted(detected, key=lambda r: canonical_name(_split(r)[0]))
    if isinstance(explicit, str):
        raise InvalidInput(
            f"requirements must be a list of strings like 'scikit-learn==1.5.0', "
            f"got the single string {explicit!r}; wrap it in a list"
        )
    merged = {canonical_name(_split(r)[0]): r for r in detected}
    for item in explicit:
        if not isinstance(item, str) or not _REQUIREMENT.match(item) or "\n" in item:
            raise InvalidInput(
                "each requirement must be a string like 'scikit-learn==1.5.0' or "
                f"'torch>=2', got {item!r}"
            )
        merged[canonical_name(_split(item)[0])] = item.strip()
    return [merged[k] for k in sorted(merged)]


def _split(requirement: str) -> tuple[str, str]:
    match = _REQUIREMENT.match(requirement)
    if match is None:
        return requirement, ""
    return match.group(1), match.group(3)


def requirement_mismatches(metadata: Mapping[str, Any]) -> list[str]:
    """What differs between the recorded ``==`` pins (and Python version) and this process."""
    problems = []
    for requirement in metadata.get("requirements") or []:
        name, spec = _split(requirement)
        if not spec.startswith("==") or spec.startswith("==="):
            continue  # only exact pins say which version the model was saved with
        wanted = spec[2:].strip()
        try:
            installed = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            problems.append(f"{name} {wanted} (not installed)")
            continue
        if installed != wanted:
            problems.append(f"{name} {wanted} (installed: {installed})")
    recorded = str(metadata.get("python_version") or "")
    current = platform.python_version()
    if recorded and recorded.split(".")[:2] != current.split(".")[:2]:
        problems.append(f"Python {recorded} (running: {current})")
    return problems
