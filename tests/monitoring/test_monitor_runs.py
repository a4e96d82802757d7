"""run_monitor over real prediction logs: windows, references per version, labels, history."""

from __future__ import annotations

import json

import numpy as np
import pytest

import keel
from _support.monitoring import HOUR, T0, Logs, Model, features
from keel.errors import Conflict, InvalidInput
from keel.governance import audit
from keel.monitoring import (
    configure_monitor,
    get_monitor_settings,
    get_reference,
    list_alerts,
    monitor_history,
    parse_window,
    reference_info,
    run_monitor,
    set_reference,
)


def test_a_logged_reference_travels_with_the_registered_version(churn: Model):
    info = reference_info("churn", churn.version)
    assert info is not None and info["source"] == "package"
    reference = get_reference("churn", churn.version)
    assert reference is not None and reference.rows == len(churn.train)
    assert set(reference.names) == {"input.age", "input.income", "input.plan", "output.prediction"}
    predicted = churn.estimator.predict(churn.train)
    output = reference["output.prediction"]
    assert output.count == len(churn.train) and output.mean == pytest.approx(predicted.mean())
    # The file is one of the package's pinned files: the version loads with it verified.
    model = keel.load_model(f"models:/churn/{churn.version}")
    assert "reference-profile.json" in model.metadata["files"]


def test_set_reference_replaces_the_packaged_one_and_is_audited(churn: Model):
    newer = features(1_000, seed=42)
    set_reference("churn", churn.version, newer)
    info = reference_info("churn", churn.version)
    assert info is not None and info["source"] == "set" and info["rows"] == 1_000
    reference = get_reference("churn", churn.version)
    assert reference is not None and reference.rows == 1_000
    assert "output.prediction" in reference.names  # the model predicted on the new data
    entries = audit.list_entries(keel.Client().store, object_id=f"churn/{churn.version}")
    assert entries[0].action == "monitor.reference.set" and entries[0].after["rows"] == 1_000
    assert audit.verify(keel.Client().store).ok


def test_a_window_is_compared_with_its_reference_and_kept_as_a_time_series(
    churn: Model, logs: Logs
):
    calm = churn.train.iloc[:600]  # traffic like the training data
    moved = features(600, seed=6, shift=1.0, plans=(0.2, 0.3, 0.5))
    logs.write("churn-api", calm, T0, predictions=churn.estimator.predict(calm))
    logs.write("churn-api", moved, T0 + HOUR, predictions=churn.estimator.predict(moved))
    logs.write("churn-api", moved.head(50), T0 + 5 * HOUR)  # outside both windows

    first = run_monitor("churn-api", end=T0 + HOUR)
    assert first.rows == 600 and first.share_drifted == 0.0 and first.alerts == []
    second = run_monitor("churn-api", window="1h", end=T0 + 2 * HOUR)
    assert second.rows == 600
    assert second.drifted_columns[:2] == ["input.age", "input.plan"]
    assert second.share_drifted == pytest.approx(2 / 3) and second.dataset_drift
    assert second.prediction_drift is True  # older customers: more positive predictions
    assert [a.rule for a in second.alerts if a.state == "firing"][:2] == [
        "drift",
        "prediction_drift",
    ]

    history = monitor_history("churn-api")
    assert [h.id for h in history] == [second.id, first.id]
    assert history[0].window_start == T0 + HOUR and history[0].window_end == T0 + 2 * HOUR
    report = history[0].report()
    assert report is not None and report.columns["input.age"].drifted
    assert report.columns["output.prediction"].role == "prediction"
    assert json.loads(json.dumps(second.to_dict()))["versions"]["churn/1"]["reference"] is True


@pytest.mark.s3
def test_a_monitor_reads_logs_and_references_from_s3(tmp_path, s3_bucket: str, s3_server: str):
    pytest.importorskip("skops", reason="scikit-learn packages need skops")
    from sklearn.linear_model import LogisticRegression

    keel.init(home=tmp_path / ".keel", artifacts_url=f"{s3_bucket}/keel", s3_endpoint_url=s3_server)
    train = features(2_000, seed=0)[["age", "income"]]
    model = LogisticRegression().fit(train, (train["age"] > 40).astype(int))
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=train.head(3), reference_data=train)
    keel.register_model(info.uri, "churn")
    logs = Logs(f"{s3_bucket}/keel", tmp_path / "spill", endpoint=s3_server)
    moved = features(500, seed=6, shift=1.0)[["age", "income"]]
    ids = logs.write("churn-api", moved, T0, predictions=model.predict(moved))
    logs.label("churn-api", ids, model.predict(moved).tolist())
    result = run_monitor("churn-api", end=T0 + HOUR)
    assert result.rows == 500 and result.drifted_columns[0] == "input.age"
    assert result.quality is not None and result.quality["metrics"]["accuracy"] == 1.0
    report = monitor_history("churn-api")[0].report()
    assert report is not None and report.columns["input.age"].drifted


def test_each_version_is_compared_with_its_own_reference(churn: Model, logs: Logs):
    with keel.start_run():
        old = features(3_000, seed=9, shift=1.0)  # version 2 was trained on older customers
        info = keel.log_model(
            churn.estimator, "model", input_example=old.head(3), reference_data=old
        )
    assert keel.register_model(info.uri, "churn") == 2
    canary = features(300, seed=12, shift=1.0)
    primary = churn.train.iloc[:900]
    logs.write("churn-api", primary, T0, predictions=churn.estimator.predict(primary))
    logs.write("churn-api", canary, T0, version=2, predictions=churn.estimator.predict(canary))
    result = run_monitor("churn-api", end=T0 + HOUR)
    assert result.versions["churn/1"]["rows"] == 900 and result.versions["churn/2"]["rows"] == 300
    assert result.versions["churn/1"]["share_drifted"] == 0.0
    # Older traffic against the older reference: no drift; against version 1's it would be.
    own = result.report("churn/2")
    assert own is not None and not own.columns["input.age"].drifted
    from keel.monitoring import compare

    reference_1 = get_reference("churn", 1)
    assert reference_1 is not None
    canary_named = canary.rename(columns=lambda c: f"input.{c}")
    assert compare(reference_1, canary_named).columns["input.age"].drifted


def test_a_version_without_a_reference_is_reported_not_compared(keel_env, logs: Logs):
    logs.write("bare", features(200, seed=1), T0, model="unregistered", version=3)
    result = run_monitor("bare", end=T0 + HOUR)
    assert result.rows == 200 and result.share_drifted is None and result.dataset_drift is None
    assert result.versions == {
        "unregistered/3": {
            "rows": 200,
            "reference": False,
            "share_drifted": None,
            "drifted_columns": [],
        }
    }
    assert result.alerts == [] and list_alerts("bare") == []


def test_an_empty_window_is_stored_as_zero_rows(keel_env, logs: Logs):
    logs.write("quiet", features(10, seed=1), T0 + 5 * HOUR)  # it exists, but not in the window
    result = run_monitor("quiet", end=T0)
    assert result.rows == 0 and result.share_drifted is None
    assert monitor_history("quiet")[0].rows == 0


def test_labels_give_quality_and_a_rising_error_rate_fires_concept_drift(churn: Model, logs: Logs):
    data = features(1_200, seed=3)
    truth = churn.estimator.predict(data)  # every prediction right at first
    ids = logs.write("churn-api", data, T0, predictions=truth)
    configure_monitor("churn-api", quality={"accuracy": 0.8})
    labels = truth.copy()
    labels[600:] = 1 - labels[600:]  # then every one wrong: the concept changed
    logs.label("churn-api", ids, labels.tolist())
    logs.label("churn-api", ids[:10], [int(1 - v) for v in truth[:10]])  # corrected later …
    logs.label("churn-api", ids[:10], truth[:10].tolist(), rows=[0] * 10)  # … and again, per row
    result = run_monitor("churn-api", end=T0 + HOUR)
    assert result.labelled_rows == 1_200
    assert result.quality is not None and result.quality["task"] == "classification"
    assert result.quality["metrics"]["accuracy"] == pytest.approx(0.5)  # newest labels won
    assert result.concept_drift is True
    fired = {a.rule for a in result.alerts if a.state == "firing"}
    assert {"concept_drift", "quality:accuracy"} <= fired
    # The detector's state carries over: the next window continues the same stream.
    state = json.loads(json.dumps(monitor_history("churn-api")[0].to_dict()))
    assert state["concept_drift"] is True


def test_regression_quality_uses_rmse_and_mae(keel_env, logs: Logs):
    pytest.importorskip("skops", reason="scikit-learn packages need skops")
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    frame = features(400, seed=1)[["age", "income"]]
    regressor = LinearRegression().fit(frame, frame["age"] * 2.5)
    with keel.start_run():
        info = keel.log_model(regressor, "model", input_example=frame.head(3))
    keel.register_model(info.uri, "price")
    predictions = rng.normal(100, 10, size=400)
    ids = logs.write("prices", frame, T0, model="price", predictions=predictions)
    logs.label("prices", ids, (predictions + 2.0).tolist())
    result = run_monitor("prices", end=T0 + HOUR)
    assert result.quality is not None and result.quality["task"] == "regression"
    assert result.quality["metrics"]["mae"] == pytest.approx(2.0)
    assert result.quality["metrics"]["rmse"] == pytest.approx(2.0)
    assert result.concept_drift is False


# -- settings ------------------------------------------------------------------------------


def test_defaults_need_no_configuration(keel_env):
    settings = get_monitor_settings("anything")
    assert (settings.window, settings.drift_share, settings.revision) == ("1h", 0.5, 0)
    assert settings.clear_below == pytest.approx(0.3) and settings.sinks() == []


def test_settings_change_by_compare_and_set_and_are_audited(keel_env, logs: Logs):
    logs.write("api", features(10, seed=1), T0)  # the deployment exists: it has logs
    first = configure_monitor("api", window="30m", drift_share=0.4)
    assert (first.window, first.drift_share, first.revision) == ("30m", 0.4, 1)
    second = configure_monitor("api", columns=["age"], expected_revision=1)
    assert second.window == "30m" and second.columns == ("age",) and second.revision == 2
    with pytest.raises(Conflict, match="changed since revision 1"):
        configure_monitor("api", window="2h", expected_revision=1)
    entries = audit.list_entries(keel.Client().store, object_id="api")
    assert [e.action for e in entries] == ["monitor.configure", "monitor.configure"]
    assert entries[0].before["window"] == "30m" and entries[0].after["columns"] == ["age"]
    assert get_monitor_settings("api") == second


def test_bad_settings_say_what_is_expected(keel_env):
    with pytest.raises(InvalidInput, match="window must be like '1h'"):
        configure_monitor("api", window="soon")
    with pytest.raises(InvalidInput, match="clear_share must be at least 0 and below drift_share"):
        configure_monitor("api", drift_share=0.5, clear_share=0.7)
    with pytest.raises(InvalidInput, match="quality metric 'auc' is not one Keel measures"):
        configure_monitor("api", quality={"auc": 0.9})
    with pytest.raises(InvalidInput, match="webhook_secret_env is the NAME"):
        configure_monitor("api", webhook_url="http://x", webhook_secret_env="s3cr3t!")
    with pytest.raises(InvalidInput, match=r"unknown monitor setting\(s\) colour"):
        configure_monitor("api", colour="red")
    with pytest.raises(InvalidInput, match=r"drift_share, window cannot be null; send a value"):
        configure_monitor("api", drift_share=None, window=None, clear_share=0.0)


def test_windows_parse_in_the_usual_units():
    assert parse_window("1h") == HOUR and parse_window("1h30m") == 90 * 60_000
    assert parse_window("2d") == 48 * HOUR and parse_window(90) == 90_000
    with pytest.raises(InvalidInput, match="longer than zero"):
        parse_window("0s")
