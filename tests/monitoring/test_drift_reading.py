"""How drift reads its inputs: every way in counts the same, and nothing heavy is loaded.

A Parquet file is profiled a whole column at a time, its text read as
dictionary codes; a table in memory chunk by chunk, its text as strings. The
two must agree to the last bit, or a reference profiled from a file and
traffic profiled from memory would differ for no reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from keel.data.profiling import profile
from keel.data.profiling.arrays import category_counts, column_floats
from keel.data.profiling.blocks import BLOCK
from keel.data.profiling.sketches import Binner, hash_strings


def mixed(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[rng.random(n) < 0.05] = np.nan
    x[:3] = [np.inf, -np.inf, np.inf]
    return pa.table(
        {
            "x": x,
            "count": rng.poisson(40, size=n),  # about 50 distinct values: one bin each
            "small": pa.array(rng.integers(-5, 5, size=n), pa.int8(), mask=rng.random(n) < 0.1),
            "narrow": rng.gamma(2.0, size=n).astype(np.float32),
            "plan": pa.array(
                rng.choice(["free", "pro", "team"], size=n), mask=rng.random(n) < 0.03
            ),
            "zone": pa.array(rng.choice([f"z{i}" for i in range(40)], size=n)).dictionary_encode(),
            # Far more distinct values than a profile keeps: which tied ones stay depends
            # on the order values arrive in, so both readers must present them alike.
            "id": pa.array([f"u{v}" for v in rng.integers(0, 6 * n, size=n)]),
        }
    )


def test_a_parquet_file_profiles_exactly_like_the_same_rows_in_memory(tmp_path: Path):
    data = mixed(33_000, seed=4)
    path = tmp_path / "data.parquet"
    pq.write_table(data, path, row_group_size=6_000)
    from_file = profile(path).to_dict()
    in_memory = profile(data, batch_rows=6_000).to_dict()  # the same groups of rows
    assert from_file == in_memory
    ids = from_file["columns"]["id"]
    assert len(ids["categories"]) == 1_000 and ids["other"] > 0  # the bound was reached
    count = from_file["columns"]["count"]
    assert sum(count["counts"]) == count["count"] == 33_000  # every value counted, once


def test_a_current_profile_on_reference_edges_reads_files_and_memory_alike(tmp_path: Path):
    reference, current = mixed(25_000, seed=1), mixed(25_000, seed=2)
    path = tmp_path / "current.parquet"
    pq.write_table(current, path, row_group_size=5_000)
    edges = profile(reference)
    from_file = profile(path, bins_from=edges).to_dict()
    assert from_file == profile(current, bins_from=edges, batch_rows=5_000).to_dict()


def test_a_folder_whose_files_lack_columns_counts_them_missing_as_in_memory(tmp_path: Path):
    rng = np.random.default_rng(6)
    first = pa.table({"x": rng.normal(size=5_000), "y": rng.normal(size=5_000)})
    first = first.append_column("s", pa.array(rng.choice(["a", "b"], size=5_000)))
    second = pa.table({"x": rng.normal(size=3_000)})  # no "y", no "s"
    (tmp_path / "data").mkdir()
    pq.write_table(first, tmp_path / "data" / "part-0.parquet")
    pq.write_table(second, tmp_path / "data" / "part-1.parquet")
    filled = second.append_column("y", pa.nulls(3_000, pa.float64()))
    filled = filled.append_column("s", pa.nulls(3_000, pa.string()))
    in_memory = pa.concat_tables([first, filled])  # chunks of 5,000 and 3,000 rows
    from_folder = profile(tmp_path / "data").to_dict()
    assert from_folder == profile(in_memory, batch_rows=5_000).to_dict()
    assert from_folder["columns"]["y"]["missing"] == from_folder["columns"]["s"]["missing"] == 3_000


def test_an_empty_parquet_file_profiles_like_an_empty_table(tmp_path: Path):
    empty = pa.table({"x": pa.array([], pa.float64()), "s": pa.array([], pa.string())})
    pq.write_table(empty, tmp_path / "empty.parquet")
    assert profile(tmp_path / "empty.parquet").to_dict() == profile(empty).to_dict()


def test_the_lookup_binner_matches_binary_search_on_discrete_values_across_blocks():
    rng = np.random.default_rng(9)
    values = rng.poisson(60, size=2 * BLOCK + 123).astype(float)
    edges = np.unique(values)  # every value sits on an edge: one edge per grid cell
    edges = np.append(edges, np.nextafter(edges[-1], np.inf))
    probe = np.concatenate([values, edges, np.nextafter(edges, -np.inf), [-1e300, 1e300]])
    binner = Binner(edges)
    assert binner.cells  # the grid is in use, not only the binary search
    expected = np.searchsorted(edges, probe, side="right")
    np.testing.assert_array_equal(binner(probe), expected)
    np.testing.assert_array_equal(
        binner.counts(probe), np.bincount(expected, minlength=len(edges) + 1)
    )


NUMBER_TYPES = [
    pa.int8(),
    pa.int16(),
    pa.int32(),
    pa.int64(),
    pa.uint8(),
    pa.uint32(),
    pa.uint64(),
    pa.float32(),
    pa.float64(),
    pa.decimal128(15, 3),  # not a NumPy type: through Arrow's cast
]


@pytest.mark.parametrize("dtype", NUMBER_TYPES, ids=str)
def test_numbers_read_as_floats_equal_arrow_cast_with_nulls_as_nan(dtype: pa.DataType):
    rng = np.random.default_rng(2)
    raw = pa.array(rng.integers(0, 120, size=5_000), pa.int32(), mask=rng.random(5_000) < 0.2)
    array = raw.cast(dtype)
    column = pa.chunked_array([array.slice(7, 2_000), array.slice(2_007)])  # offsets, chunks
    for data in (column, array.slice(3, 10)):
        expected = pc.fill_null(pc.cast(data, pa.float64()), np.nan)
        np.testing.assert_array_equal(column_floats(data), np.asarray(expected))


def test_text_counted_from_dictionary_codes_matches_value_counts_in_first_seen_order():
    words = pa.array(["b", None, "a", "c", "b", "a", None, "d", "b"] * 50)
    coded = pa.DictionaryArray.from_arrays(
        pc.index_in(words, pa.array(["unused", "a", "b", "c", "d"])),
        pa.array(["unused", "a", "b", "c", "d"]),
    ).slice(1)
    values, counts, hashes, nulls = category_counts(coded)
    counted = pc.value_counts(pc.drop_null(words.slice(1)))
    assert values == counted.field("values").to_pylist() == ["a", "c", "b", "d"]
    assert counts.tolist() == counted.field("counts").to_pylist()
    np.testing.assert_array_equal(hashes, hash_strings(counted.field("values")))
    assert nulls == words.slice(1).null_count


COMPARE = """
import json, sys
from keel.monitoring import compare
report = compare(sys.argv[1], sys.argv[2])
print(json.dumps({
    "methods": sorted({c.method for c in report.columns.values()}),
    "drifted": report.drifted_columns,
    "loaded": sorted(
        m for m in ("scipy", "pandas", "sklearn", "pyarrow.compute") if m in sys.modules
    ),
}))
"""


def test_comparing_large_parquet_files_loads_neither_scipy_nor_pandas_nor_arrow_compute(
    tmp_path: Path,
):
    # Above 10,000 effective rows the tests are distances NumPy computes, and Parquet's
    # numbers and dictionary-encoded text are read off Arrow's buffers: scipy (0.15 s to
    # import), pandas (0.4 s) and pyarrow.compute (25 ms) would only slow `keel drift` down.
    rng = np.random.default_rng(0)
    paths = []
    for name, shift in (("reference", 0.0), ("current", 0.3)):
        paths.append(str(tmp_path / f"{name}.parquet"))
        columns = {"x": rng.normal(size=30_000) + shift, "plan": rng.choice(list("abc"), 30_000)}
        pq.write_table(pa.table(columns), paths[-1])
    out = subprocess.run(
        [sys.executable, "-c", COMPARE, *paths],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc == {"methods": ["jensenshannon", "wasserstein"], "drifted": ["x"], "loaded": []}
