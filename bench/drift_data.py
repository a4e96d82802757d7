"""Data for bench/drift.py: a reference table and a drifted current table, as Parquet.

Each table has 20 numeric columns of assorted shapes and 5 categorical
ones. The current table is drawn from the same distributions with another
seed, except for:

- **location shifts**: 5 numeric columns moved by 0.25 of their standard
  deviation (``SHIFTED``);
- **a scale shift**: one normal column spread 1.3 times wider around the same
  mean (``SCALED``), which a test of means alone misses;
- **a re-weighted category**: one categorical column's shares changed
  (``REWEIGHTED``);
- **a new category**: one categorical column gains a value the reference
  never had, on 6% of rows (``NEW_CATEGORY``);
- **a KS trap**: one column moved by 0.03 standard deviations (``KS_TRAP``).
  On 150,000 rows a Kolmogorov-Smirnov test calls that significant (p far
  below 0.01), though the change is immaterial; a correct report at this size
  must *not* flag it.

Tables are written in chunks of ``chunk_rows`` rows, so 10 million rows never
sit in memory at once.

    python bench/drift_data.py --rows 150000 --out drift-data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "CATEGORICAL",
    "KS_TRAP",
    "NEW_CATEGORY",
    "NUMERIC",
    "REWEIGHTED",
    "SCALED",
    "SHIFTED",
    "drifted_columns",
    "write_pair",
]

NUMERIC = [f"num_{i:02d}" for i in range(20)]
CATEGORICAL = [f"cat_{i}" for i in range(5)]
#: The numeric columns moved by 0.25 standard deviations, and the re-weighted category.
SHIFTED = ["num_00", "num_03", "num_07", "num_12", "num_18"]
REWEIGHTED = "cat_0"
SHIFT_SD = 0.25
#: A normal column whose spread grows by ``SCALE`` around the same mean.
SCALED = "num_05"
SCALE = 1.3
#: A categorical column that gains ``NEW_VALUE`` on ``NEW_SHARE`` of the rows.
NEW_CATEGORY = "cat_1"
NEW_VALUE = "desktop"
NEW_SHARE = 0.06
#: A column moved by an immaterial ``TRAP_SD`` standard deviations (see the module's docstring).
KS_TRAP = "num_10"
TRAP_SD = 0.03

_CATEGORIES = {
    "cat_0": (["basic", "plus", "pro", "team"], [0.4, 0.3, 0.2, 0.1]),
    "cat_1": (["web", "ios", "android"], [0.5, 0.3, 0.2]),
    "cat_2": ([f"region-{i}" for i in range(8)], [0.125] * 8),
    "cat_3": (["yes", "no"], [0.15, 0.85]),
    "cat_4": ([f"campaign-{i}" for i in range(30)], list(np.full(30, 1 / 30))),
}
_REWEIGHTED_P = [0.2, 0.3, 0.2, 0.3]
_NORMAL_MEAN = 50.0  # columns 0, 5, 10, 15: normal(50, 10)


def drifted_columns() -> set[str]:
    """What a correct drift report flags on these tables."""
    return {*SHIFTED, SCALED, REWEIGHTED, NEW_CATEGORY}


def _numeric(i: int, rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    """Column ``i``'s values and its distribution's standard deviation."""
    kind = i % 5
    if kind == 0:
        return rng.normal(_NORMAL_MEAN, 10, size=n), 10.0
    if kind == 1:
        sigma = 0.5
        values = rng.lognormal(3, sigma, size=n)
        return values, float(np.sqrt((np.exp(sigma**2) - 1) * np.exp(6 + sigma**2)))
    if kind == 2:
        return rng.exponential(2.0, size=n), 2.0
    if kind == 3:
        return rng.uniform(0, 100, size=n), 100 / np.sqrt(12)
    return rng.poisson(20, size=n).astype(np.float64), float(np.sqrt(20))


def _chunk(rng: np.random.Generator, n: int, drifted: bool) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for i, name in enumerate(NUMERIC):
        values, sd = _numeric(i, rng, n)
        if drifted and name in SHIFTED:
            values = values + SHIFT_SD * sd
        elif drifted and name == SCALED:
            values = _NORMAL_MEAN + (values - _NORMAL_MEAN) * SCALE
        elif drifted and name == KS_TRAP:
            values = values + TRAP_SD * sd
        columns[name] = pa.array(values)
    for name, (values, p) in _CATEGORIES.items():
        weights = _REWEIGHTED_P if drifted and name == REWEIGHTED else p
        if drifted and name == NEW_CATEGORY:
            values = [*values, NEW_VALUE]
            weights = [*(np.asarray(p) * (1 - NEW_SHARE)), NEW_SHARE]
        codes = rng.choice(len(values), size=n, p=np.asarray(weights) / np.sum(weights))
        columns[name] = pa.DictionaryArray.from_arrays(
            pa.array(codes, pa.int32()), pa.array(values)
        ).cast(pa.string())
    return pa.table(columns)


def write_table(path: Path, rows: int, *, seed: int, drifted: bool, chunk_rows: int) -> Path:
    rng = np.random.default_rng(seed)
    writer: pq.ParquetWriter | None = None
    try:
        done = 0
        while done < rows:
            n = min(chunk_rows, rows - done)
            chunk = _chunk(rng, n, drifted)
            if writer is None:
                writer = pq.ParquetWriter(path, chunk.schema, compression="snappy")
            writer.write_table(chunk)
            done += n
    finally:
        if writer is not None:
            writer.close()
    return path


def write_pair(
    folder: Path, rows: int, *, seed: int = 0, chunk_rows: int = 250_000
) -> tuple[Path, Path]:
    """Write ``reference.parquet`` and ``current.parquet`` of ``rows`` rows into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    reference = write_table(
        folder / "reference.parquet", rows, seed=seed, drifted=False, chunk_rows=chunk_rows
    )
    current = write_table(
        folder / "current.parquet", rows, seed=seed + 1, drifted=True, chunk_rows=chunk_rows
    )
    return reference, current


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ref, cur = write_pair(args.out, args.rows, seed=args.seed)
    print(f"wrote {ref} and {cur}; drifted: {', '.join(sorted(drifted_columns()))}")


if __name__ == "__main__":
    main()
