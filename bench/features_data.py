"""The data of bench/features.py: feature views' Parquet files and an entity frame.

At ``scale`` 1.0 (the issue's sizes):

* 3 feature views of 10 ``float64`` features each, 10,000,000 feature rows in all
  (3,333,334 + 3,333,333 + 3,333,333), one Parquet file per view with the columns
  ``entity_id`` (int64, 100,000 distinct ids), ``event_ts`` (event time, spread
  uniformly over the 30 days before the data's end), ``created_ts`` (``event_ts``
  plus 0-10 minutes) and the features (standard normal);
* an entity frame of 1,000,000 rows: ``row_id`` (0…n-1, to match the tools'
  answers row by row), ``entity_id`` and ``event_timestamp``, spread over the
  same 30 days, with no (entity_id, event_timestamp) pair twice (Feast's Dask
  store collapses such pairs into one row);
* the entity ids of the online reads, drawn from the ids that have rows.

``scale`` multiplies every count, ids included, so each entity has about 33 rows
per view at any scale and about 8 within the views' 7-day TTL. Timestamps have
millisecond precision and are stored as ``timestamp[us, UTC]``. The data ends a
minute before it is generated (so the online store's TTL sees live values);
everything else comes from a fixed seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY_MS = 86_400_000
SPAN_MS = 30 * DAY_MS
TTL_SECONDS = 7 * 86_400
FEATURES_PER_VIEW = 10
VIEW_LETTERS = ("a", "b", "c")
JOIN_KEY = "entity_id"
TIMESTAMP = "event_ts"
CREATED = "created_ts"
SEED = 18
CHUNK = 1_000_000


@dataclass(frozen=True)
class Sizes:
    """The counts at a scale."""

    entity_rows: int
    feature_rows: int
    entity_ids: int

    @classmethod
    def at(cls, scale: float) -> Sizes:
        return cls(
            entity_rows=max(100, round(1_000_000 * scale)),
            feature_rows=max(300, round(10_000_000 * scale)),
            entity_ids=max(10, round(100_000 * scale)),
        )

    def per_view(self) -> list[int]:
        """The feature rows of each view: the total split as evenly as it goes."""
        base, extra = divmod(self.feature_rows, len(VIEW_LETTERS))
        return [base + (1 if i < extra else 0) for i in range(len(VIEW_LETTERS))]


@dataclass(frozen=True)
class ViewData:
    name: str
    path: Path
    features: list[str]
    rows: int


@dataclass(frozen=True)
class BenchData:
    """What :func:`generate` wrote."""

    views: list[ViewData]
    entity_df: Path
    entity_rows: int
    start_ms: int
    end_ms: int
    online_keys: list[int]

    @property
    def feature_rows(self) -> int:
        return sum(v.rows for v in self.views)


def feature_names(letter: str) -> list[str]:
    return [f"{letter}{i}" for i in range(FEATURES_PER_VIEW)]


def _ts(ms: np.ndarray) -> pa.Array:
    return pa.array(ms * 1000, type=pa.timestamp("us", tz="UTC"))


def write_view(path: Path, letter: str, rows: int, ids: int, start_ms: int, seed: int) -> None:
    """One view's Parquet file, written ``CHUNK`` rows at a time."""
    rng = np.random.default_rng([seed, ord(letter)])
    names = feature_names(letter)
    schema = pa.schema(
        [
            (JOIN_KEY, pa.int64()),
            (TIMESTAMP, pa.timestamp("us", tz="UTC")),
            (CREATED, pa.timestamp("us", tz="UTC")),
            *[(n, pa.float64()) for n in names],
        ]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for done in range(0, rows, CHUNK):
            n = min(CHUNK, rows - done)
            event = start_ms + rng.integers(0, SPAN_MS, n)
            created = event + rng.integers(0, 600_000, n)
            values = rng.standard_normal((FEATURES_PER_VIEW, n))
            columns = [
                pa.array(rng.integers(0, ids, n), pa.int64()),
                _ts(event),
                _ts(created),
                *[pa.array(v) for v in values],
            ]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))


def write_entity_df(path: Path, rows: int, ids: int, start_ms: int, seed: int) -> None:
    """The entity frame: ``rows`` distinct (entity_id, event_timestamp) pairs in random order."""
    rng = np.random.default_rng([seed, 0])
    extra = rows + rows // 50 + 10
    entity = rng.integers(0, ids, extra)
    offset = rng.integers(0, SPAN_MS, extra)
    # offset < 2**32 and the ids are small, so (id, offset) packs into one int64
    _, first = np.unique((entity << 32) | offset, return_index=True)
    keep = np.sort(first)[:rows]
    table = pa.table(
        {
            "row_id": pa.array(np.arange(rows), pa.int64()),
            JOIN_KEY: pa.array(entity[keep], pa.int64()),
            "event_timestamp": _ts(start_ms + offset[keep]),
        }
    )
    pq.write_table(table, path)


def generate(folder: Path, scale: float, reads: int, prefix: str) -> BenchData:
    """Write the views and the entity frame under ``folder``; view names start with ``prefix``."""
    sizes = Sizes.at(scale)
    folder.mkdir(parents=True, exist_ok=True)
    # the data ends a minute ago, on a whole minute
    end_ms = (int(time.time() * 1000) // 60_000 - 1) * 60_000
    start_ms = end_ms - SPAN_MS
    views = []
    for letter, rows in zip(VIEW_LETTERS, sizes.per_view(), strict=True):
        path = folder / f"{prefix}{letter}.parquet"
        write_view(path, letter, rows, sizes.entity_ids, start_ms, SEED)
        views.append(ViewData(f"{prefix}{letter}", path, feature_names(letter), rows))
    entity_df = folder / "entity_df.parquet"
    write_entity_df(entity_df, sizes.entity_rows, sizes.entity_ids, start_ms, SEED)
    rng = np.random.default_rng([SEED, 1])
    present = pq.read_table(views[0].path, columns=[JOIN_KEY]).column(0).to_numpy()
    candidates = np.unique(present)
    online_keys = [int(k) for k in rng.choice(candidates, reads)]
    return BenchData(views, entity_df, sizes.entity_rows, start_ms, end_ms, online_keys)
