"""compare(): the right verdicts, the documented defaults, overrides and data-quality checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keel.errors import InvalidInput
from keel.monitoring import DriftReport, Profile, compare, profile
from keel.monitoring.stattests import LARGE_SAMPLE, default_method, effective_size


def normal(seed: int, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).normal(size=n) + shift}


# -- accuracy with fixed seeds (the issue's targets) ------------------------------------------


def test_default_test_flags_a_tenth_sd_mean_shift_at_10000_rows_in_at_least_95_of_100_seeds():
    flagged = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        reference = {"x": rng.normal(size=10_000)}
        current = {"x": rng.normal(size=10_000) + 0.1}
        column = compare(reference, current).columns["x"]
        assert column.method == "ks"
        flagged += column.drifted
    assert flagged >= 95


def test_default_test_flags_no_shift_in_at_most_5_of_100_seeds():
    flagged = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        reference = {"x": rng.normal(size=10_000)}
        current = {"x": rng.normal(size=10_000)}
        flagged += compare(reference, current).columns["x"].drifted
    assert flagged <= 5


def test_chi_square_default_sees_a_three_point_reweighting_and_rarely_cries_wolf():
    p, q = [0.4, 0.3, 0.2, 0.1], [0.37, 0.3, 0.2, 0.13]
    hits = false_alarms = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        reference = {"c": rng.choice(list("abcd"), size=10_000, p=p)}
        shifted = {"c": rng.choice(list("abcd"), size=10_000, p=q)}
        same = {"c": rng.choice(list("abcd"), size=10_000, p=p)}
        hits += compare(reference, shifted).columns["c"].drifted
        false_alarms += compare(reference, same).columns["c"].drifted
    assert hits >= 95 and false_alarms <= 5


# -- defaults by sample size -----------------------------------------------------------------


def test_defaults_switch_from_p_values_to_distances_above_the_effective_size_limit():
    assert effective_size(20_000, 20_000) == LARGE_SAMPLE
    assert default_method("numeric", 20_000, 20_000) == "ks"
    assert default_method("numeric", 20_002, 20_002) == "wasserstein"
    assert default_method("categorical", 1_000_000, 5_000) == "chisquare"  # the small side rules
    assert default_method("categorical", 100_000, 100_000) == "jensenshannon"


def test_large_samples_ignore_a_shift_too_small_to_matter_that_a_p_value_would_flag():
    reference, current = normal(1, 400_000), normal(2, 400_000, shift=0.02)
    default = compare(reference, current).columns["x"]
    assert default.method == "wasserstein" and not default.drifted
    assert default.statistic == pytest.approx(0.02, abs=0.006)
    forced = compare(reference, current, method="ks").columns["x"]
    assert forced.drifted and forced.p_value is not None and forced.p_value < 1e-6


def test_a_quarter_sd_shift_drifts_at_any_size():
    for n in (500, 5_000, 100_000):
        assert compare(normal(1, n), normal(2, n, shift=0.25)).columns["x"].drifted


# -- the statistics themselves -------------------------------------------------------------------


def test_statistics_agree_with_scipy_on_the_raw_values():
    from scipy.stats import ks_2samp, wasserstein_distance

    rng = np.random.default_rng(7)
    ref = rng.gamma(2.0, size=50_000)
    cur = rng.gamma(2.3, size=30_000)
    report = compare({"g": ref}, {"g": cur}, method="ks")
    d = report.columns["g"].details["ks_statistic"]
    assert d == pytest.approx(ks_2samp(ref, cur).statistic, abs=1 / 200)
    w = compare({"g": ref}, {"g": cur}, method="wasserstein").columns["g"]
    assert w.details["wasserstein"] == pytest.approx(wasserstein_distance(ref, cur), rel=0.02)
    assert w.statistic == pytest.approx(wasserstein_distance(ref, cur) / ref.std(), rel=0.02)


def test_distances_are_zero_for_identical_data_and_one_for_disjoint_categories():
    same = {"c": ["a", "b", "c"] * 100, "x": np.arange(300.0)}
    report = compare(same, same, overrides={"c": "jensenshannon", "x": "psi"})
    assert report.columns["c"].statistic == pytest.approx(0.0, abs=1e-12)
    assert report.columns["x"].statistic == pytest.approx(0.0, abs=1e-12)
    disjoint = compare({"c": ["a"] * 50}, {"c": ["b"] * 50}, method="jensenshannon")
    assert disjoint.columns["c"].statistic == pytest.approx(1.0)


def test_a_constant_reference_drifts_on_any_movement():
    report = compare({"x": np.ones(100)}, {"x": np.ones(100) * 2}, method="wasserstein")
    assert report.columns["x"].statistic == float("inf") and report.columns["x"].drifted


# -- overrides and arguments --------------------------------------------------------------------


def test_overrides_choose_the_method_and_threshold_per_column():
    ref = {"x": np.random.default_rng(0).normal(size=2_000), "c": ["a", "b"] * 1_000}
    cur = {"x": np.random.default_rng(1).normal(size=2_000), "c": ["a", "b"] * 1_000}
    report = compare(
        ref, cur, overrides={"x": {"method": "psi", "threshold": 0.000001}, "c": "jensenshannon"}
    )
    assert (report.columns["x"].method, report.columns["x"].threshold) == ("psi", 0.000001)
    assert report.columns["x"].drifted  # any noise passes a threshold that low
    assert report.columns["c"].method == "jensenshannon" and report.columns["c"].threshold == 0.1


def test_a_method_that_does_not_fit_the_column_kind_is_refused_with_the_ones_that_do():
    with pytest.raises(InvalidInput, match="column 'c' is categorical: use one of chisquare, "):
        compare({"c": ["a"]}, {"c": ["a"]}, overrides={"c": "ks"})
    with pytest.raises(InvalidInput, match="unknown drift method 'kl' for column 'x'"):
        compare({"x": [1.0]}, {"x": [1.0]}, overrides={"x": "kl"})
    with pytest.raises(InvalidInput, match="threshold= needs method="):
        compare({"x": [1.0]}, {"x": [1.0]}, threshold=0.2)
    with pytest.raises(InvalidInput, match=r"is a p-value .* between 0 and 1, got 5"):
        compare({"x": [1.0]}, {"x": [1.0]}, overrides={"x": {"method": "ks", "threshold": 5}})
    with pytest.raises(InvalidInput, match="drift_share must be a number in"):
        compare({"x": [1.0]}, {"x": [1.0]}, drift_share=0)


def test_method_for_all_columns_applies_only_where_it_fits():
    report = compare(
        {"x": np.arange(100.0), "c": ["a"] * 100},
        {"x": np.arange(100.0), "c": ["a"] * 100},
        method="wasserstein",
    )
    assert report.columns["x"].method == "wasserstein"
    assert report.columns["c"].method == "chisquare"


# -- the dataset and the predictions ----------------------------------------------------------------


def test_dataset_drift_is_the_share_of_drifted_features_and_predictions_stand_apart():
    rng = np.random.default_rng(0)
    n = 3_000
    ref = {f"f{i}": rng.normal(size=n) for i in range(4)} | {
        "output.prediction": rng.normal(size=n)
    }
    cur = {f"f{i}": rng.normal(size=n) + (1.0 if i < 2 else 0) for i in range(4)}
    cur["output.prediction"] = rng.normal(size=n) + 1.0
    report = compare(ref, cur)
    assert report.columns["output.prediction"].role == "prediction"
    assert report.share_drifted == 0.5 and report.dataset_drift  # 2 of the 4 features
    assert report.prediction_drift is True
    assert not compare(ref, cur, drift_share=0.75).dataset_drift
    explicit = compare(ref, cur, prediction_columns=["f0"])
    assert explicit.columns["f0"].role == "prediction" and explicit.share_drifted == 0.5


def test_a_stored_reference_profile_gives_the_same_report_as_the_raw_reference():
    ref, cur = normal(0, 30_000), normal(1, 8_000, shift=0.05)
    stored = Profile.from_dict(json.loads(json.dumps(profile(ref).to_dict())))
    a, b = compare(ref, cur), compare(stored, cur)
    assert a.to_dict(detail=True) == b.to_dict(detail=True)


def test_two_profiles_on_different_edges_still_compare():
    ref, cur = profile(normal(0, 30_000)), profile(normal(1, 30_000, shift=0.5))
    column = compare(ref, cur, method="ks").columns["x"]
    assert column.drifted and column.details["ks_statistic"] == pytest.approx(0.197, abs=0.02)


def test_the_report_reads_back_from_its_json():
    rng = np.random.default_rng(0)
    report = compare(
        {"x": rng.normal(size=500), "c": ["a"] * 500},
        {"x": rng.normal(size=500), "c": ["a", "b"] * 250},
    )
    again = DriftReport.from_dict(json.loads(json.dumps(report.to_dict(detail=True))))
    assert again.to_dict(detail=True) == report.to_dict(detail=True)


# -- data quality ----------------------------------------------------------------------------


def checks(report: DriftReport) -> dict[tuple[str, str | None], str]:
    return {(i.check, i.column): i.severity for i in report.issues}


def test_schema_changes_are_reported_and_skipped_columns_say_why():
    ref = {"a": [1.0, 2.0], "b": ["x", "y"], "gone": [1.0, 2.0]}
    cur = {"a": [1.0, 2.0], "b": [1.0, 2.0], "new": [3.0, 4.0]}
    ref["b"] = [1.5, 2.5]  # numeric in the reference …
    cur["b"] = ["x", "y"]  # … text now
    report = compare(ref, cur)
    found = checks(report)
    assert found[("missing_column", "gone")] == "fail"
    assert found[("new_column", "new")] == "warn"
    assert found[("type_change", "b")] == "fail"
    assert "numeric in the reference" in report.skipped["b"]
    assert not report.quality_ok and set(report.columns) == {"a"}


def test_missing_values_out_of_range_values_and_infinities_are_caught():
    rng = np.random.default_rng(0)
    ref = {"x": rng.uniform(0, 1, size=5_000)}
    cur_x = rng.uniform(0, 1.2, size=5_000)
    cur_x[:1_000] = np.nan
    cur_x[1_000] = np.inf
    report = compare(ref, {"x": cur_x})
    found = checks(report)
    assert found[("missing_share", "x")] == "fail"
    assert found[("out_of_range", "x")] == "fail"
    assert found[("infinite", "x")] == "warn"
    out = next(i for i in report.issues if i.check == "out_of_range")
    assert out.value == pytest.approx(1 / 6 * 4_000 / 3_999, abs=0.03)
    clean = compare(ref, {"x": rng.uniform(0, 1, size=5_000)})
    assert clean.issues == [] and clean.quality_ok


def test_new_and_vanished_categories_are_named():
    ref = {"plan": ["free"] * 500 + ["pro"] * 400 + ["team"] * 100}
    cur = {"plan": ["free"] * 500 + ["pro"] * 450 + ["enterprise"] * 50}
    report = compare(ref, cur)
    details = report.columns["plan"].details
    assert details["new_categories"] == {"enterprise": 50}
    assert details["vanished_categories"] == ["team"]
    assert report.columns["plan"].drifted
    assert {("new_categories", "plan"), ("vanished_categories", "plan")} <= set(checks(report))


def test_an_empty_current_table_is_a_failure_not_a_crash():
    report = compare({"x": [1.0, 2.0, 3.0]}, {"x": np.array([], dtype=float)})
    assert not report.columns["x"].tested and not report.dataset_drift
    assert ("empty", None) in checks(report)
    assert report.columns["x"].details["reason"] == "no values in the current data"
