"""Fetch onnxruntime-web from the npm registry for the browser bundle of ``keel models export --edge``.

Runs ``npm pack onnxruntime-web@<pinned version>`` (npm's own client, so the
registry and proxy settings of npm apply), checks the tarball against the pinned
integrity, and writes the few files the page needs into
``src/keel/models/edge/web_runtime/`` with a record of their SHA-256 digests.
Run it once before building or installing Keel::

    python scripts/fetch_onnxruntime_web.py
    python scripts/fetch_onnxruntime_web.py --tarball onnxruntime-web-1.31.1.tgz   # offline

The page never loads anything from a CDN: these files are copied beside it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from keel.models.edge.web import (
    NOTICE,
    ORT_WEB_INTEGRITY,
    ORT_WEB_VERSION,
    RUNTIME_DIR,
    RUNTIME_FILES,
    RUNTIME_RECORD,
)

PACKAGE = "onnxruntime-web"

# onnxruntime-web's package.json declares the MIT licence; its tarball carries no licence
# file, so the notice travels with the files as the licence asks.
MIT_NOTICE = f"""\
{PACKAGE} {ORT_WEB_VERSION} (https://github.com/microsoft/onnxruntime), from the npm registry.

MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def integrity(path: Path) -> str:
    """npm's integrity string (``sha512-<base64>``) of a file."""
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode("ascii")


def npm_pack(folder: Path) -> Path:
    """``npm pack`` the pinned release into ``folder``; the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit(
            "npm is not installed: install Node.js and npm (apt-get install npm), or download "
            f"{PACKAGE}-{ORT_WEB_VERSION}.tgz elsewhere and pass it with --tarball"
        )
    done = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{ORT_WEB_VERSION}", "--pack-destination", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"npm pack {PACKAGE}@{ORT_WEB_VERSION} failed: {done.stderr.strip()}")
    return folder / f"{PACKAGE}-{ORT_WEB_VERSION}.tgz"


def extract(tarball: Path, target: Path) -> dict[str, dict[str, object]]:
    """Write the page's files from ``tarball`` into ``target``; their digests and sizes."""
    got = integrity(tarball)
    if got != ORT_WEB_INTEGRITY:
        sys.exit(
            f"{tarball} has integrity {got}, not the pinned {ORT_WEB_INTEGRITY} of "
            f"{PACKAGE}@{ORT_WEB_VERSION}; nothing was written"
        )
    target.mkdir(parents=True, exist_ok=True)
    record: dict[str, dict[str, object]] = {}
    with tarfile.open(tarball, "r:gz") as archive:
        for name in RUNTIME_FILES:
            member = archive.getmember(f"package/dist/{name}")  # by exact name: no path tricks
            source = archive.extractfile(member)
            if source is None:
                sys.exit(f"{tarball}: package/dist/{name} is not a regular file")
            data = source.read()
            partial = target / f".{name}.part"
            partial.write_bytes(data)
            partial.replace(target / name)
            record[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help="an already downloaded .tgz of the release")
    parser.add_argument("--dest", type=Path, default=RUNTIME_DIR, help="where to write the files")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keel-ort-web-") as tmp:
        tarball = args.tarball if args.tarball is not None else npm_pack(Path(tmp))
        files = extract(tarball, args.dest)
        size = tarball.stat().st_size
    (args.dest / NOTICE).write_text(MIT_NOTICE, encoding="utf-8")
    doc = {
        "package": PACKAGE,
        "version": ORT_WEB_VERSION,
        "integrity": ORT_WEB_INTEGRITY,
        "tarball_bytes": size,
        "files": files,
    }
    (args.dest / RUNTIME_RECORD).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    kept = sum(int(str(f["size"])) for f in files.values())
    print(
        f"{PACKAGE} {ORT_WEB_VERSION}: kept {len(files)} files ({kept / 1e6:.1f} MB) of the "
        f"{size / 1e6:.1f} MB tarball in {args.dest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
