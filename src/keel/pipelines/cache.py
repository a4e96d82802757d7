"""Step cache keys and the cache table.

A step's cache key is BLAKE3 over the canonical JSON of:

- the step's qualified name and its code digest (``keel.pipelines.code``),
- its arguments with every step output replaced by that output's content
  digest and every dataset reference by the version's manifest digest
  (canonical JSON: sorted keys, so ``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}``
  are one key),
- the content digests of its declared ``external`` files and folders
  (hashed through the data state cache, so unchanged files cost a ``stat``),
- the seed the run starts every step from, if one was given.

A step whose key is in the cache table, and whose outputs are all still in
the content store, is not run: its outputs are reused. Two runs that
produce the same key at once both succeed; the last row written stays
(``INSERT … ON CONFLICT DO UPDATE``), and either row describes equal content.
A row whose objects were deleted is simply replaced by the next run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from keel.artifacts import ArtifactStore, canonical_json, hash_bytes
from keel.errors import NotFound
from keel.pipelines.materialize import Materialized
from keel.store import Store
from keel.store import schema as s
from keel.store.sql import insert_on_conflict, now_ms

__all__ = ["CACHE_FORMAT", "CacheHit", "cache_key", "external_digests", "lookup", "remember"]

CACHE_FORMAT = "keel.step-cache/v1"


def cache_key(
    *, step: str, code: str, arguments: Any, external: dict[str, str], seed: int | None = None
) -> str:
    """The cache key of one step call (``arguments`` already resolved to digests)."""
    doc = {
        "format": CACHE_FORMAT,
        "step": step,
        "code": code,
        "arguments": arguments,
        "external": dict(sorted(external.items())),
    }
    if seed is not None:  # a seeded step may compute something else than an unseeded one
        doc["seed"] = seed
    return hash_bytes(canonical_json(doc))


def external_digests(paths: tuple[str, ...], where: str) -> dict[str, str]:
    """``{path: content digest}`` for a step's declared external files and folders.

    Raises:
        NotFound: a declared path does not exist (checked before anything runs).
    """
    if not paths:
        return {}
    from keel.data.snapshot import observe_path

    out = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise NotFound(
                f"{where}: external input {raw!r} does not exist (relative paths are "
                f"resolved from {os.getcwd()})"
            )
        out[raw] = observe_path(path).tree
    return out


@dataclass(frozen=True)
class CacheHit:
    """Outputs a previous step run produced for the same key."""

    run_id: str
    outputs: list[Materialized]


def lookup(store: Store, artifacts: ArtifactStore, key: str) -> CacheHit | None:
    """The cached outputs for ``key`` if every one of them is still stored."""
    with store.read() as conn:
        row = conn.execute(
            select(s.step_cache.c.run_id, s.step_cache.c.outputs).where(
                s.step_cache.c.cache_key == key
            )
        ).first()
    if row is None:
        return None
    outputs = [Materialized.from_dict(d) for d in json.loads(row.outputs)]
    if not all(artifacts.exists(o.object) for o in outputs):
        return None  # objects were deleted: run the step again (its new row replaces nothing)
    return CacheHit(row.run_id, outputs)


def remember(
    conn: Connection, key: str, step: str, run_id: str, outputs: list[Materialized]
) -> None:
    """Add or replace the cache row for ``key`` in the caller's transaction."""
    stmt = insert_on_conflict(conn, s.step_cache).values(
        cache_key=key,
        step=step,
        run_id=run_id,
        outputs=json.dumps([o.to_dict() for o in outputs]),
        created_at=now_ms(),
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[s.step_cache.c.cache_key],
            set_={"run_id": stmt.excluded.run_id, "outputs": stmt.excluded.outputs},
        )
    )
