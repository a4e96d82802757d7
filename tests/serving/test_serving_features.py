"""A deployment with features, served for real: requests carry keys, the server reads the rest.

Definitions are applied from a file, the source is Parquet written with pyarrow,
the values are materialized into a real online store (SQLite; Redis when
``KEEL_TEST_REDIS_URL`` is set), and the model is a scikit-learn regressor served
by uvicorn on a free port.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

import keel
from _support.features import ETA_DEFINITIONS, register_champion, write_definitions, write_rates
from keel.errors import InvalidInput, NotFound
from keel.predictions import read_predictions
from keel.serving import Deployments, DeploymentSpec, build_spec

HOUR_MS = 3_600_000
FEATURES = "driver_stats:conv_rate,driver_stats:acc_rate,fares:fare_per_km"
INPUTS = ["conv_rate", "acc_rate", "fare_per_km", "km"]  # the model's signature


@dataclass
class World:
    settings: Any
    folder: Path
    stats: pd.DataFrame  # the source rows written so far
    model: Any  # the fitted estimator behind eta/1


def now_ms() -> int:
    from keel.store.sql import now_ms as now

    return now()


def stats_rows(drivers: list[int], event_ms: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "driver_id": drivers,
            "event_ms": [event_ms] * len(drivers),
            "conv_rate": rng.uniform(0, 1, len(drivers)).round(6),
            "acc_rate": rng.uniform(0, 1, len(drivers)).round(6),
        }
    )


def expected_inputs(stats: pd.DataFrame, trips: pd.DataFrame) -> pd.DataFrame:
    """The model's input for ``trips`` (driver_id, fare, km) from the latest source rows."""
    latest = stats.sort_values("event_ms").groupby("driver_id").last()
    joined = trips.join(latest, on="driver_id")
    fare_per_km = joined["fare"] / joined["km"] * (1 + joined["conv_rate"])
    return pd.DataFrame(
        {
            "conv_rate": joined["conv_rate"],
            "acc_rate": joined["acc_rate"],
            "fare_per_km": fare_per_km,
            "km": joined["km"],
        }
    ).reset_index(drop=True)


def build_world(tmp_path: Path, online_store: str | None = None) -> World:
    """Keel on a fresh home; definitions applied; 20 drivers materialized; eta/1 registered."""
    pytest.importorskip("skops", reason="scikit-learn packages need skops")
    from sklearn.ensemble import HistGradientBoostingRegressor

    options = {} if online_store is None else {"online_store": online_store}
    settings = keel.init(home=tmp_path / ".keel", **options)
    drivers, event_ms = list(range(1, 21)), now_ms() - 3 * HOUR_MS
    stats = stats_rows(drivers, event_ms, seed=0)
    write_rates(tmp_path, "part-0", drivers, event_ms, stats["conv_rate"], stats["acc_rate"])
    client = keel.Client()
    client.features.apply(write_definitions(tmp_path, ETA_DEFINITIONS))
    client.features.materialize()

    rng = np.random.default_rng(1)
    x = pd.DataFrame(rng.uniform(0.1, 3, size=(400, 4)), columns=INPUTS)
    x.iloc[::7, 0] = np.nan  # the model takes gaps: a missing feature is still answered
    y = 3 * x["conv_rate"].fillna(0.5) + x["acc_rate"] - 0.5 * x["fare_per_km"] + x["km"]
    model = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(x, y)
    assert register_champion(model, x.head(3)) == 1
    return World(settings, tmp_path, stats, model)


def trips(drivers: list[int], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "driver_id": drivers,
            "fare": rng.uniform(5, 50, len(drivers)).round(2),
            "km": rng.uniform(1, 20, len(drivers)).round(2),
        }
    )


def v2_body(frame: pd.DataFrame) -> dict[str, Any]:
    kinds = {"i": "INT64", "f": "FP64", "O": "BYTES"}
    return {
        "inputs": [
            {
                "name": c,
                "shape": [len(frame)],
                "datatype": kinds[frame[c].dtype.kind],
                "data": frame[c].tolist(),
            }
            for c in frame.columns
        ]
    }


@pytest.fixture(params=["sqlite", "redis"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    if request.param == "sqlite":
        return build_world(tmp_path)
    url = os.environ.get("KEEL_TEST_REDIS_URL")
    if not url:
        pytest.skip("KEEL_TEST_REDIS_URL is not set")
    prefix = f"t{uuid.uuid4().hex[:12]}"  # keys of this test only
    world = build_world(tmp_path, f"{url}{'&' if '?' in url else '?'}prefix={prefix}")
    request.addfinalizer(lambda: _drop_keys(url, prefix))
    return world


@pytest.fixture
def local_world(tmp_path: Path) -> World:
    """The world on the embedded SQLite online store only (for what no store changes)."""
    return build_world(tmp_path)


def _drop_keys(url: str, prefix: str) -> None:
    """Delete this test's keys by name (a SCAN of a shared Redis would take seconds)."""
    import redis

    client = redis.Redis.from_url(url.split("?")[0])
    client.delete(*(f"keel:{prefix}:driver_stats:{driver}" for driver in range(1, 1000)))
    client.close()


def _deploy(features: str = FEATURES) -> None:
    Deployments().create("eta", build_spec("eta@champion", features=features))


# -- the spec ----------------------------------------------------------------------------------


def test_features_are_kept_in_the_spec_only_when_declared():
    plain = build_spec("eta@champion")
    assert "features" not in plain.to_dict()  # specs without features read as before
    spec = build_spec("eta@champion", features=FEATURES + ", driver_stats:conv_rate2")
    assert spec.features == (
        "driver_stats:conv_rate",
        "driver_stats:acc_rate",
        "fares:fare_per_km",
        "driver_stats:conv_rate2",
    )
    assert DeploymentSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["features"][0] == "driver_stats:conv_rate"
    with pytest.raises(InvalidInput, match="expected a feature reference such as"):
        build_spec("eta@champion", features="conv_rate")
    with pytest.raises(InvalidInput, match="would both be the model's input column 'rate'"):
        build_spec("eta@champion", features="a:rate,b:rate")
    with pytest.raises(InvalidInput, match="a prompt deployment takes no --features"):
        build_spec("support@production", kind="prompt", features="a:x")


def test_create_checks_the_views_exist(local_world: World):
    deployments = Deployments()
    with pytest.raises(NotFound, match=r"the deployment's features: .*driver_stat.*keel features"):
        deployments.create("eta", build_spec("eta@champion", features="driver_stat:conv_rate"))
    with pytest.raises(InvalidInput, match="has no feature 'speed'"):
        deployments.create("eta", build_spec("eta@champion", features="driver_stats:speed"))
    _deploy()
    assert deployments.get("eta").spec.features == tuple(FEATURES.split(","))
    updated = deployments.update("eta", features="driver_stats:conv_rate")
    assert updated.spec.features == ("driver_stats:conv_rate",)
    cleared = deployments.update("eta", clear_features=True)
    assert cleared.spec.features is None and "features" not in cleared.spec.to_dict()


def test_cli_deploy_create_and_update_take_features(local_world: World, run_keel):
    world = local_world
    done = run_keel(
        "deploy",
        "create",
        "eta",
        "--model",
        "eta@champion",
        "--features",
        FEATURES,
        "--json",
        settings=world.settings,
    )
    assert done.returncode == 0, done.stderr
    assert '"fares:fare_per_km"' in done.stdout
    bad = run_keel(
        "deploy", "update", "eta", "--features", "driver_stats:nope", settings=world.settings
    )
    assert bad.returncode != 0
    assert "has no feature 'nope'" in bad.stderr + bad.stdout
    assert len((bad.stderr + bad.stdout).strip().splitlines()) == 1
    assert Deployments().get("eta").revision == 1  # nothing written


# -- serving -----------------------------------------------------------------------------------


def test_requests_carry_keys_and_the_log_holds_the_served_values(world: World, serve):
    _deploy()
    server = serve("eta")
    batch = trips([3, 7, 11, 20], seed=2)
    expected = world.model.predict(expected_inputs(world.stats, batch))
    with httpx.Client(base_url=server.url) as http:
        v2 = http.post("/v2/models/eta/infer", json={"id": "v2-1", **v2_body(batch)})
        assert v2.status_code == 200, v2.text
        np.testing.assert_allclose(v2.json()["outputs"][0]["data"], expected)
        records = batch.to_dict(orient="records")
        inv = http.post(
            "/invocations",
            json={"dataframe_records": [{**r, "color": "red"} for r in records]},
            headers={"x-request-id": "inv-1"},
        )
        assert inv.status_code == 200, inv.text
        np.testing.assert_allclose(inv.json()["predictions"], expected)
        assert inv.headers["x-keel-ignored-inputs"] == "1"  # color: neither declared nor used
        v1 = http.post(
            "/v1/models/eta:predict", json={"instances": records}, headers={"x-request-id": "v1-1"}
        )
        assert v1.status_code == 200, v1.text
        np.testing.assert_allclose(v1.json()["predictions"], expected)
        assert "x-keel-ignored-inputs" not in v1.headers  # keys and request data are not
    server.app.state.logger.flush()
    logged = read_predictions(str(world.settings.artifacts_url), "eta").to_pandas()
    inputs = sorted(c for c in logged.columns if c.startswith("input."))
    assert inputs == sorted(f"input.{c}" for c in ["driver_id", "fare", *INPUTS])
    served = expected_inputs(world.stats, batch)
    for request_id in ("v2-1", "inv-1", "v1-1"):
        rows = logged[logged["request_id"] == request_id].sort_values("row")
        assert rows["input.driver_id"].tolist() == batch["driver_id"].tolist()
        np.testing.assert_allclose(rows["input.fare"], batch["fare"])
        for column in INPUTS:  # exactly the values the model was given
            np.testing.assert_allclose(rows[f"input.{column}"], served[column], rtol=1e-12)
        np.testing.assert_allclose(rows["output.prediction"], expected)


def test_a_feature_missing_online_is_null_and_counted(world: World, serve):
    _deploy()
    server = serve("eta")
    batch = trips([5, 999], seed=3)  # driver 999 was never materialized
    frame = expected_inputs(world.stats, batch)
    assert frame.loc[1, ["conv_rate", "acc_rate", "fare_per_km"]].isna().all()
    with httpx.Client(base_url=server.url) as http:
        answer = http.post("/invocations", json={"dataframe_split": batch.to_dict("split")})
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["predictions"], world.model.predict(frame))
        metrics = http.get("/metrics").text
    counted = re.search(
        r'keel_missing_features_total\{deployment="eta",view="driver_stats"\} (\S+)', metrics
    )
    assert counted is not None and float(counted.group(1)) == 1.0
    server.app.state.logger.flush()
    logged = read_predictions(str(world.settings.artifacts_url), "eta").to_pandas()
    row = logged[logged["input.driver_id"] == 999].iloc[0]
    assert pd.isna(row["input.conv_rate"]) and pd.isna(row["input.fare_per_km"])


def test_a_request_without_a_join_key_is_a_400_and_the_server_keeps_serving(world: World, serve):
    _deploy()
    server = serve("eta")
    batch = trips([1, 2], seed=4)
    with httpx.Client(base_url=server.url) as http:
        no_key = http.post("/v2/models/eta/infer", json=v2_body(batch.drop(columns="driver_id")))
        assert no_key.status_code == 400
        assert "lacks join key 'driver_id'" in no_key.json()["error"]
        no_field = http.post(
            "/invocations", json={"dataframe_records": batch.drop(columns="km").to_dict("records")}
        )
        assert no_field.status_code == 400
        assert "lacks request field 'km'" in no_field.json()["error"]
        unnamed = http.post("/invocations", json={"instances": [[1, 10.0, 2.0]]})
        assert unnamed.status_code == 400
        assert "send the join keys (driver_id) as named columns" in unnamed.json()["error"]
        fractional = http.post(
            "/invocations", json={"dataframe_records": [{"driver_id": 1.5, "fare": 1, "km": 1}]}
        )
        assert fractional.status_code == 400
        assert "join key 'driver_id' holds whole numbers" in fractional.json()["error"]
        good = http.post("/invocations", json={"dataframe_records": batch.to_dict("records")})
        assert good.status_code == 200, good.text
        expected = world.model.predict(expected_inputs(world.stats, batch))
        np.testing.assert_allclose(good.json()["predictions"], expected)


def test_a_new_view_version_is_picked_up_without_a_restart(world: World, serve):
    _deploy()
    runtime_server = serve("eta")
    runtime = runtime_server.app.state.runtime
    first = runtime.table.features
    runtime.refresh()
    assert runtime.table.features is first  # nothing changed: the same reader
    defs = world.folder / "defs.py"
    defs.write_text(defs.read_text().replace("timedelta(days=2)", "timedelta(days=3)"))
    keel.Client().features.apply(defs)
    assert runtime.refresh() is True
    assert runtime.table.features is not first
    batch = trips([4], seed=5)
    with httpx.Client(base_url=runtime_server.url) as http:
        answer = http.post("/invocations", json={"dataframe_records": batch.to_dict("records")})
    assert answer.status_code == 200, answer.text


def test_keys_sent_as_floats_are_read_as_their_entity_type(local_world: World, serve):
    _deploy()
    server = serve("eta")
    batch = trips([2, 9], seed=6)
    floats = batch.astype({"driver_id": "float64"})  # one FP64 matrix on the wire
    expected = local_world.model.predict(expected_inputs(local_world.stats, batch))
    with httpx.Client(base_url=server.url) as http:
        answer = http.post("/v2/models/eta/infer", json=v2_body(floats))
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["outputs"][0]["data"], expected)


def test_a_shadow_logs_the_assembled_frame_too(local_world: World, serve):
    Deployments().create("eta", build_spec("eta@champion", shadow="eta/1", features=FEATURES))
    server = serve("eta")
    batch = trips([6], seed=7)
    with httpx.Client(base_url=server.url) as http:
        answer = http.post("/invocations", json={"dataframe_records": batch.to_dict("records")})
    assert answer.status_code == 200, answer.text
    app = server.app
    deadline = time.monotonic() + 30
    while (
        app.state.metrics.registry.get_sample_value(
            "keel_shadow_predictions_total", {"deployment": "eta", "outcome": "ok"}
        )
        != 1.0
    ):
        assert time.monotonic() < deadline, "the shadow never answered"
        time.sleep(0.01)
    app.state.logger.flush()
    logged = read_predictions(str(local_world.settings.artifacts_url), "eta").to_pandas()
    assert sorted(logged["route"]) == ["primary", "shadow"]
    served = expected_inputs(local_world.stats, batch)
    for column in ("input.driver_id", "input.fare", *(f"input.{c}" for c in INPUTS)):
        values = logged[column]  # the shadow logs what the primary logged
        assert values.notna().all() and values.nunique() == 1, column
    assert logged["input.driver_id"][0] == 6
    assert logged["input.conv_rate"][0] == served["conv_rate"][0]
