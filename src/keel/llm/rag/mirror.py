"""A local copy of an index table that lives on a remote artifact store.

An index's queryable table is immutable and named by the index's key, so a copy
of it never goes stale. A team's index lives on its artifact store (S3), where
every client can read it; each client keeps a copy under
``<home>/cache/rag/<key>.lance`` and queries that, so a warm query reads local
pages instead of paying one ranged GET per candidate vector.

- :func:`upload` publishes a table written locally (building the ANN index on
  local disk, which is much faster than through S3): the data and index files
  first, the table's version manifests last, so a reader never opens a table
  whose files are not all there yet.
- :func:`download` fills the local copy: every file under the remote folder,
  each path checked to stay inside the copy, into a temporary sibling folder
  that is renamed into place when complete. A folder at the copy's name is
  therefore always a whole table; a download cut short leaves only a temporary
  folder, removed on the next try.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from keel.artifacts.backends import Backend
from keel.errors import NotFound
from keel.validation import safe_join, safe_joins

__all__ = ["download", "upload"]

#: Files copied at once.
_WORKERS = 8
#: Folders of a Lance table that name its versions: published after everything else.
_LAST = ("_versions/",)


def upload(backend: Backend, prefix: str, folder: Path) -> int:
    """Copy the table in ``folder`` to ``prefix`` on ``backend``; the number of files.

    The version manifests go last, so the remote table appears complete or not at all.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    rels = [p.relative_to(folder).as_posix() for p in files]
    first = [r for r in rels if not r.startswith(_LAST)]
    last = [r for r in rels if r.startswith(_LAST)]
    with ThreadPoolExecutor(_WORKERS) as pool:
        for batch in (first, last):
            list(pool.map(lambda rel: backend.put_file(f"{prefix}/{rel}", folder / rel), batch))
    return len(rels)


def download(backend: Backend, prefix: str, dest: Path) -> Path:
    """The local copy at ``dest`` of the table at ``prefix``, downloaded unless it is there.

    Raises:
        NotFound: no file under ``prefix``.
        InvalidInput: a remote path that would land outside ``dest``.
    """
    if dest.is_dir():
        return dest
    keys = list(backend.keys(prefix))
    if not keys:
        raise NotFound(f"no index table at {backend.url}/{prefix}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.*.part"):  # a download cut short
        shutil.rmtree(stale, ignore_errors=True)
    staging = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.part"
    rels = [key[len(prefix) + 1 :] for key in keys]
    targets = safe_joins(staging, rels, "index table file")
    try:
        for folder in {t.parent for t in targets}:
            folder.mkdir(parents=True, exist_ok=True)

        def fetch(item: tuple[str, Path]) -> None:
            key, target = item
            with backend.open(key) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)

        with ThreadPoolExecutor(_WORKERS) as pool:
            list(pool.map(fetch, zip(keys, targets, strict=True)))
        try:
            os.rename(staging, safe_join(dest.parent, dest.name, "index table"))
        except OSError:
            if not dest.is_dir():  # not another process's copy that landed first
                raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
    return dest
