"""Profiles: exact where they promise to be, mergeable, bounded in memory, stable through JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keel.data.profiling import CategoricalColumn, NumericColumn, Profile, profile
from keel.data.profiling.sketches import Binner, hash_strings
from keel.errors import InvalidInput, NotFound


def table(n: int, seed: int = 0, shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n) + shift
    x[rng.random(n) < 0.05] = np.nan
    return pa.table(
        {
            "x": x,
            "age": rng.integers(18, 90, size=n),
            "plan": rng.choice(["free", "pro", "team"], size=n, p=[0.6, 0.3, 0.1]),
            "active": rng.random(n) < 0.3,
        }
    )


def numeric(p: Profile, name: str) -> NumericColumn:
    col = p[name]
    assert isinstance(col, NumericColumn)
    return col


def categorical(p: Profile, name: str) -> CategoricalColumn:
    col = p[name]
    assert isinstance(col, CategoricalColumn)
    return col


def test_a_file_profiled_in_small_chunks_matches_one_chunk_exactly(tmp_path: Path):
    data = table(50_000)
    path = tmp_path / "data.parquet"
    pq.write_table(data, path, row_group_size=7_000)
    whole = profile(data, batch_rows=1 << 20)
    chunked = profile(path, batch_rows=999)
    assert chunked.rows == whole.rows == 50_000
    for name in ("x", "age"):
        a, b = numeric(whole, name), numeric(chunked, name)
        assert (a.count, a.missing, a.min, a.max) == (b.count, b.missing, b.min, b.max)
        assert a.mean == pytest.approx(b.mean, rel=1e-12)
        assert a.std == pytest.approx(b.std, rel=1e-9)
        assert b.counts.sum() == b.count  # the second pass counted every finite value
    assert categorical(whole, "plan").categories == categorical(chunked, "plan").categories
    assert categorical(chunked, "active").categories.keys() == {"true", "false"}
    x = numeric(chunked, "x")
    assert x.missing == int(np.isnan(data.column("x").to_numpy()).sum())
    # Equal-mass bins: none holds much more than its share of 1/200.
    assert x.counts[1:-1].max() / x.count < 3 / 200


def test_halves_profiled_on_shared_edges_merge_into_the_whole_exactly():
    data = table(40_000)
    whole = profile(data)
    first = profile(data.slice(0, 15_000), bins_from=whole)
    second = profile(data.slice(15_000), bins_from=whole)
    merged = first.merge(second)
    for name in ("x", "age"):
        a, b = numeric(whole, name), numeric(merged, name)
        np.testing.assert_array_equal(a.counts, b.counts)
        assert (a.count, a.missing, a.min, a.max) == (b.count, b.missing, b.min, b.max)
        assert a.mean == pytest.approx(b.mean, rel=1e-12)
        assert a.m2 == pytest.approx(b.m2, rel=1e-9)
    assert categorical(merged, "plan").categories == categorical(whole, "plan").categories


def test_profiles_on_different_edges_merge_exact_counts_and_close_quantiles():
    a = profile(table(30_000, seed=1))
    b = profile(table(30_000, seed=2, shift=1.0))
    merged = numeric(a.merge(b), "x")
    assert merged.count == numeric(a, "x").count + numeric(b, "x").count
    assert merged.counts.sum() == merged.count
    both = np.concatenate(
        [
            table(30_000, seed=1).column("x").to_numpy(),
            table(30_000, seed=2, shift=1.0).column("x").to_numpy(),
        ]
    )
    both = both[np.isfinite(both)]
    for q in (0.1, 0.5, 0.9):
        assert float(merged.quantile(q)) == pytest.approx(np.quantile(both, q), abs=0.03)


def test_merging_numeric_with_categorical_is_refused():
    a = profile({"v": np.arange(10.0)})
    b = profile({"v": np.array(["a"] * 10)})
    with pytest.raises(InvalidInput, match="'v' is numeric in one profile and categorical"):
        a.merge(b)


def test_a_profile_survives_json_unchanged():
    original = profile(table(5_000))
    restored = Profile.from_dict(json.loads(json.dumps(original.to_dict())))
    assert restored.to_dict() == original.to_dict()
    assert categorical(restored, "plan").distinct == 3


def test_from_dict_rejects_what_is_not_a_profile():
    with pytest.raises(InvalidInput, match=r"expected a Keel profile \(keel.profile/v1\), got 'x'"):
        Profile.from_dict({"format": "x"})


def test_category_counts_are_exact_and_cardinality_is_estimated_when_they_overflow():
    rng = np.random.default_rng(3)
    ids = np.char.add("user-", rng.integers(0, 50_000, size=200_000).astype(str))
    distinct = len(np.unique(ids))
    col = categorical(profile({"id": ids}, batch_rows=10_000), "id")
    assert col.count == 200_000
    assert len(col.categories) == 1_000 and col.other == 200_000 - sum(col.categories.values())
    assert abs(col.distinct - distinct) / distinct < 0.1
    small = categorical(profile({"c": ["a", "b", "a", None]}), "c")
    assert small.categories == {"a": 2, "b": 1} and small.missing == 1 and small.distinct == 2


def test_columns_no_test_reads_are_skipped_with_the_reason():
    data = pa.table(
        {
            "when": pa.array([1, 2, 3], pa.timestamp("ms")),
            "tags": pa.array([[1], [2], []]),
            "x": [1.0, 2.0, 3.0],
        }
    )
    result = profile(data)
    assert result.names == ["x"]
    assert "timestamp[ms]" in result.skipped["when"]
    assert "list" in result.skipped["tags"]


def test_numbers_can_be_profiled_as_categories():
    result = profile({"code": [1, 2, 2, 3]}, categorical=["code"])
    assert categorical(result, "code").categories == {"2": 2, "1": 1, "3": 1}
    with pytest.raises(InvalidInput, match="categorical= names column\\(s\\) 'nope'"):
        profile({"code": [1]}, categorical=["nope"])


def test_a_csv_whose_integers_gain_decimals_after_the_first_block_still_reads(tmp_path: Path):
    path = tmp_path / "data.csv"
    rows = ["n,label"] + [f"{i},a" for i in range(400_000)] + ["2.5,b", ",c"]
    path.write_text("\n".join(rows) + "\n")
    result = profile(path)
    n = numeric(result, "n")
    assert n.count == 400_001 and n.missing == 1 and n.max == 399_999
    assert categorical(result, "label").categories["b"] == 1


def test_unknown_columns_and_missing_files_are_named(tmp_path: Path):
    with pytest.raises(
        InvalidInput, match=r"column\(s\) 'nope' not in the table; its columns are x"
    ):
        profile({"x": [1.0]}, columns=["nope"])
    with pytest.raises(NotFound, match="no such file or folder"):
        profile(tmp_path / "missing.parquet")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(InvalidInput, match=r"expected a \.parquet, \.pq or \.csv file"):
        profile(tmp_path / "data.json")


def test_the_lookup_binner_agrees_with_binary_search_everywhere():
    rng = np.random.default_rng(5)
    for values in (
        rng.normal(size=100_000),
        np.exp(3 * rng.normal(size=100_000)),  # heavy tail
        rng.integers(0, 3, size=100_000).astype(float),  # ties
        np.where(rng.random(100_000) < 0.7, 0.0, rng.exponential(size=100_000)),
    ):
        edges = np.unique(np.quantile(values, np.linspace(0, 1, 201)))
        edges[-1] = np.nextafter(edges[-1], np.inf)
        probe = np.concatenate([values, edges, np.nextafter(edges, -np.inf), [-1e300, 1e300]])
        np.testing.assert_array_equal(
            Binner(edges)(probe), np.searchsorted(edges, probe, side="right")
        )


def test_string_hashes_depend_on_the_text_only():
    words = pa.array(["", "a", "ab", "ba", "abc", None, "ab"])
    hashes = hash_strings(words)
    assert len(hashes) == 6  # nulls are dropped
    assert hashes[2] == hashes[5] and len(set(hashes.tolist())) == 5
    np.testing.assert_array_equal(hash_strings(words.slice(2, 3)), hashes[2:5])


BOUNDED = """
import resource, sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
from keel.data.profiling import profile
path = sys.argv[1]
rng = np.random.default_rng(0)
with pq.ParquetWriter(path, pa.schema([(f"x{i}", pa.float64()) for i in range(10)])) as w:
    for _ in range(30):
        w.write_table(pa.table({f"x{i}": rng.normal(size=100_000) for i in range(10)}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
p = profile(path, batch_rows=50_000)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert p.rows == 3_000_000
print((after - before) // 1024)
"""


@pytest.mark.slow
def test_profiling_a_file_far_larger_than_a_chunk_stays_in_bounded_memory(tmp_path: Path):
    # 3M rows x 10 columns is 240 MB of floats; a chunked profile holds a few chunks.
    out = subprocess.run(
        [sys.executable, "-c", BOUNDED, str(tmp_path / "big.parquet")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert int(out.stdout.strip()) < 120, out.stdout


@pytest.mark.slow
def test_ray_profiles_partitions_to_the_same_counts_as_the_local_pass(tmp_path: Path):
    pytest.importorskip("ray", reason="the Ray executor needs ray installed")
    data = table(60_000)
    path = tmp_path / "data.parquet"
    pq.write_table(data, path, row_group_size=10_000)
    local = profile(path)
    distributed = profile(path, executor="ray", batch_rows=10_000)
    for name in ("x", "age"):
        a, b = numeric(local, name), numeric(distributed, name)
        assert (a.count, a.missing, a.min, a.max) == (b.count, b.missing, b.min, b.max)
        assert a.mean == pytest.approx(b.mean, rel=1e-12)
        assert b.counts.sum() == b.count
        assert float(b.quantile(0.5)) == pytest.approx(float(a.quantile(0.5)), abs=0.02)
    assert categorical(local, "plan").categories == categorical(distributed, "plan").categories
