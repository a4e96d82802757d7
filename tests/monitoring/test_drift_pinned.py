"""compare() gives the same answers as the version these figures were recorded with.

The data is generated from fixed seeds (its digest is checked first, so a
change of generator fails here, not as a wrong drift figure); the expected
reports and profiles sit beside this file in ``drift_pinned.json``. Verdicts,
methods, counts, bin edges and messages must match exactly; floats to 1e-9
relative (a sum of squares may add in another order). Long lists (bin edges,
histograms, plot data, category counts) hold values that must match exactly,
so the file keeps their length and a digest of their text.

Regenerate the expectations, only when a change of results is meant, with
``python tests/monitoring/test_drift_pinned.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from keel.monitoring import compare, profile

PINNED = Path(__file__).with_name("drift_pinned.json")
REL = 1e-9


def tables(n: int, seed: int) -> tuple[pa.Table, pa.Table]:
    """A reference and a current table with every kind of column and change ``compare`` reads."""
    return _table(n, seed, drifted=False), _table(n, seed + 1, drifted=True)


def _table(n: int, seed: int, drifted: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    normal = rng.normal(50, 10, size=n) + (2.0 if drifted else 0.0)  # a 0.2 sd shift
    normal[rng.random(n) < 0.03] = np.nan
    scaled = rng.normal(0, 1, size=n) * (1.4 if drifted else 1.0)  # wider, same mean
    trap = rng.normal(0, 1, size=n) + (0.03 if drifted else 0.0)  # immaterial
    heavy = rng.lognormal(3, 1, size=n)
    if drifted:
        heavy[:7] = np.inf
    counts = rng.poisson(6, size=n)  # few distinct values: one bin per value
    nullable = pa.array(rng.integers(0, 1000, size=n), pa.int32(), mask=rng.random(n) < 0.1)
    plans = ["free", "pro", "team"] + (["enterprise"] if drifted else [])
    shares = [0.6, 0.3, 0.1] if not drifted else [0.55, 0.27, 0.1, 0.08]
    plan = pa.array(rng.choice(plans, size=n, p=shares), mask=rng.random(n) < 0.02)
    region = pa.array(rng.choice([f"r{i}" for i in range(12)], size=n)).dictionary_encode()
    ids = pa.array([f"id-{v}" for v in rng.integers(0, 5 * n, size=n)])
    return pa.table(
        {
            "normal": normal,
            "scaled": scaled,
            "trap": trap,
            "heavy": heavy,
            "counts": counts,
            "nullable": nullable,
            "narrow": pa.array(rng.normal(size=n).astype(np.float32)),
            "constant": np.full(n, 3.0),
            "plan": plan,
            "region": region,
            "active": pa.array(rng.random(n) < (0.45 if drifted else 0.3)),
            "ids": ids,
            "output.score": rng.beta(2, 5 if not drifted else 4, size=n),
            "when": pa.array(np.arange(n).astype("datetime64[s]")),
        }
    )


def digest(table: pa.Table) -> str:
    """The table's values, hashed as text (stable across Arrow versions)."""
    h = hashlib.blake2b(digest_size=16)
    for name in table.column_names:
        h.update(name.encode())
        h.update(repr(table.column(name).to_pylist()).encode())
    return h.hexdigest()


def scenarios(folder: Path) -> dict[str, dict[str, Any]]:
    """Each case: the data's digest, the report as JSON and, for some, the reference profile."""
    big_ref, big_cur = tables(30_000, seed=1)
    small_ref, small_cur = tables(4_000, seed=11)
    paths = {}
    for label, table, group in (
        ("big_ref", big_ref, 7_000),
        ("big_cur", big_cur, 9_000),
        ("small_ref", small_ref, 4_000),
        ("small_cur", small_cur, 4_000),
    ):
        paths[label] = folder / f"{label}.parquet"
        pq.write_table(table, paths[label], row_group_size=group)
    csv_ref, csv_cur = folder / "ref.csv", folder / "cur.csv"
    pacsv.write_csv(small_ref.drop_columns(["when"]), csv_ref)
    pacsv.write_csv(small_cur.drop_columns(["when"]), csv_cur)

    digests = {
        "big": [digest(big_ref), digest(big_cur)],
        "small": [digest(small_ref), digest(small_cur)],
    }
    cases: dict[str, dict[str, Any]] = {}

    def case(name: str, data: str, reference: Any, current: Any, **kwargs: Any) -> None:
        report = compare(reference, current, **kwargs)
        cases[name] = {"data": digests[data], "report": report.to_dict(detail=True)}

    case("parquet_large", "big", paths["big_ref"], paths["big_cur"])
    case("parquet_small", "small", paths["small_ref"], paths["small_cur"])
    case("csv_small", "small", csv_ref, csv_cur)
    case("tables_large", "big", big_ref, big_cur)
    case(
        "parquet_large_methods",
        "big",
        paths["big_ref"],
        paths["big_cur"],
        overrides={"normal": "ks", "scaled": "psi", "plan": "chisquare", "region": "psi"},
        categorical=["counts"],
    )
    case("parquet_large_psi", "big", paths["big_ref"], paths["big_cur"], method="psi")
    for name, source in (("profile_parquet", paths["big_ref"]), ("profile_table", big_ref)):
        doc = profile(source).to_dict()
        for column in doc["columns"].values():
            column.pop("sketch", None)  # 1,024 hashes: the cardinality estimate stands for it
        cases[name] = {"data": digests["big"][:1], "profile": doc}
    return cases


def _same(expected: Any, actual: Any, where: str) -> None:
    if isinstance(expected, float) or isinstance(actual, float):
        assert isinstance(actual, int | float) and isinstance(expected, int | float), where
        if math.isinf(expected) or math.isinf(actual):
            assert expected == actual, where
        else:
            assert actual == pytest.approx(expected, rel=REL, abs=1e-12), where
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), where
        for key in expected:
            _same(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _same(e, a, f"{where}[{i}]")
    else:
        assert actual == expected, where


def _jsonable(doc: Any) -> Any:
    """``inf`` as a string (strict JSON), long lists as their length and digest."""
    if isinstance(doc, float) and math.isinf(doc):
        return "inf" if doc > 0 else "-inf"
    if isinstance(doc, dict):
        return {k: _jsonable(v) for k, v in doc.items()}
    if isinstance(doc, list):
        if len(doc) > 24:
            text = repr(doc).encode()
            return {
                "length": len(doc),
                "blake2b": hashlib.blake2b(text, digest_size=12).hexdigest(),
            }
        return [_jsonable(v) for v in doc]
    return doc


def test_drift_reports_and_profiles_match_the_pinned_results(tmp_path: Path):
    expected = json.loads(PINNED.read_text())
    actual = _jsonable(scenarios(tmp_path))
    assert list(actual) == list(expected)
    for name, case in expected.items():
        assert actual[name]["data"] == case["data"], (
            f"{name}: the generated data changed (NumPy's generator?); the pinned results no "
            "longer apply. Regenerate them from a version whose results are trusted"
        )
        _same(case, actual[name], name)


def test_the_pinned_large_case_keeps_its_verdicts():
    # Readable in a diff: the headline of the large case, beside the full comparison above.
    report = json.loads(PINNED.read_text())["parquet_large"]["report"]
    # "ids" holds mostly values each side has once: its categories barely overlap.
    assert report["drifted_columns"] == [
        "normal",
        "scaled",
        "plan",
        "active",
        "ids",
        "output.score",
    ]
    assert report["columns"]["trap"]["drifted"] is False
    assert report["skipped"] == {"when": "type timestamp[ms] is neither numeric nor categorical"}
    checks = {(i["check"], i["column"]) for i in report["issues"]}
    assert {("new_categories", "plan"), ("infinite", "heavy")} <= checks


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        PINNED.write_text(json.dumps(_jsonable(scenarios(Path(tmp))), indent=1) + "\n")
    print(f"wrote {PINNED}", file=sys.stderr)
