"""A deployment with features, streamed: events carry keys, the online store the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

import keel
from _support.features import ETA_DEFINITIONS, register_champion, write_definitions, write_rates
from keel.predictions import PredictionLogger, PredictionReader
from keel.serving import Deployments, build_spec
from keel.serving.server import runtime_for_target
from keel.serving.streams import MemorySink, MemorySource, StreamConsumer

INPUTS = ["conv_rate", "acc_rate", "fare_per_km", "km"]  # the model's signature
HOUR_MS = 3_600_000


def test_streamed_events_are_completed_from_the_online_store_as_http_requests_are(tmp_path: Path):
    pytest.importorskip("skops", reason="scikit-learn packages need skops")
    from sklearn.ensemble import HistGradientBoostingRegressor

    from keel.store.sql import now_ms

    settings = keel.init(home=tmp_path / ".keel")
    drivers, event_ms = list(range(1, 11)), now_ms() - 3 * HOUR_MS
    rng = np.random.default_rng(0)
    conv, acc = rng.uniform(0, 1, 10).round(6), rng.uniform(0, 1, 10).round(6)
    write_rates(tmp_path, "part-0", drivers, event_ms, conv, acc)
    client = keel.Client()
    client.features.apply(write_definitions(tmp_path, ETA_DEFINITIONS))
    client.features.materialize()
    x = pd.DataFrame(rng.uniform(0.1, 3, size=(200, 4)), columns=INPUTS)
    y = 3 * x["conv_rate"] + x["acc_rate"] - 0.5 * x["fare_per_km"] + x["km"]
    model = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(x, y)
    register_champion(model, x.head(3))
    Deployments().create(
        "eta",
        build_spec(
            "eta@champion",
            features="driver_stats:conv_rate,driver_stats:acc_rate,fares:fare_per_km",
        ),
    )

    trips = [{"driver_id": d, "fare": 10.0 + d, "km": 2.0 + d / 10} for d in drivers]
    payloads = [orjson.dumps(t) for t in trips] + [orjson.dumps({"fare": 3.0, "km": 2.0})]
    source = MemorySource(payloads, "trips")
    consumer = StreamConsumer(
        runtime_for_target("eta"),
        source,
        MemorySink(),
        MemorySink(),
        logger=PredictionLogger(settings.artifacts_url, flush_interval=60),
        reader=PredictionReader(settings.artifacts_url),
    )
    while source.lag():
        consumer.step()
    consumer.commit()

    expected = model.predict(
        pd.DataFrame(
            {
                "conv_rate": conv,
                "acc_rate": acc,
                "fare_per_km": [
                    t["fare"] / t["km"] * (1 + c) for t, c in zip(trips, conv, strict=True)
                ],
                "km": [t["km"] for t in trips],
            }
        )
    )
    outputs = [orjson.loads(consumer.sink.outputs[f"trips:{n}"]) for n in range(10)]
    assert np.allclose([o["prediction"] for o in outputs], expected)
    [dead] = [orjson.loads(v) for v in consumer.dead_letter.outputs.values()]
    assert dead["request_id"] == "trips:10"
    assert "lacks join key 'driver_id'" in dead["error"]
    logged = PredictionReader(settings.artifacts_url).read("eta")
    assert logged.num_rows == 10
    assert {"input.driver_id", "input.conv_rate", "input.fare_per_km"} <= set(logged.column_names)
