"""The consumer's loop on the in-process source and sink: answers, poison, redelivery, routing.

The source and sink are Keel's own in-memory implementations (not stand-ins for a
broker's client); models, deployments and prediction logs are real.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import numpy as np
import orjson
import pytest

from keel.errors import InvalidInput
from keel.predictions import ERRORS, PredictionLogger, PredictionReader
from keel.serving import Deployments, build_spec
from keel.serving.server import runtime_for_target
from keel.serving.streams import Event, MemorySink, MemorySource, Sink, StreamConsumer


def _consumer(settings: Any, target: str, source: MemorySource, **kwargs: Any) -> StreamConsumer:
    root = settings.artifacts_url
    return StreamConsumer(
        runtime_for_target(target),
        source,
        kwargs.pop("sink", None) or MemorySink(),
        MemorySink(),
        logger=PredictionLogger(root, flush_interval=60),
        reader=PredictionReader(root),
        error_logger=PredictionLogger(root, flush_interval=60, dataset=ERRORS),
        **kwargs,
    )


def _drain(consumer: StreamConsumer, source: MemorySource) -> None:
    while source.lag():
        consumer.step()
    consumer.commit()


def _outputs(sink: Any) -> dict[str, dict[str, Any]]:
    return {key: orjson.loads(value) for key, value in sink.outputs.items()}


def _logged(settings: Any, deployment: str, dataset: str = "predictions") -> Any:
    return PredictionReader(settings.artifacts_url).read(deployment, dataset=dataset)


def test_streamed_events_get_the_models_batched_predictions(registered):
    rows = registered.features  # 569 rows
    source = MemorySource([orjson.dumps(r) for r in rows.to_dict(orient="records")], "events")
    consumer = _consumer(registered.settings, "models:/cancer@champion", source, batch_size=200)
    _drain(consumer, source)

    outputs = _outputs(consumer.sink)
    assert list(outputs) == [f"events:{n}" for n in range(569)]
    expected = registered.models[1].predict(rows)
    assert [outputs[f"events:{n}"]["prediction"] for n in range(569)] == expected.tolist()
    assert outputs["events:7"] == {
        "event_id": "7",
        "request_id": "events:7",
        "model": "cancer",
        "version": 1,
        "route": "primary",
        "prediction": int(expected[7]),
    }
    assert source.acked == {str(n) for n in range(569)}
    logged = _logged(registered.settings, "cancer")
    assert sorted(logged["request_id"].to_pylist()) == sorted(outputs)
    assert set(logged["row"].to_pylist()) == {0}  # each event is a request of one row
    by_id = dict(
        zip(logged["request_id"].to_pylist(), logged["output.prediction"].to_pylist(), strict=True)
    )
    assert [by_id[f"events:{n}"] for n in range(569)] == expected.tolist()
    radius = dict(
        zip(logged["request_id"].to_pylist(), logged["input.mean radius"].to_pylist(), strict=True)
    )
    assert [radius[f"events:{n}"] for n in range(569)] == rows["mean radius"].tolist()


def test_an_event_with_an_id_of_its_own_gets_it_back_in_its_output(registered):
    row = registered.features.iloc[0].to_dict()
    source = MemorySource([orjson.dumps({"id": "order-17", "inputs": row})], "orders")
    consumer = _consumer(registered.settings, "models:/cancer@champion", source)
    _drain(consumer, source)
    assert _outputs(consumer.sink)["orders:0"]["id"] == "order-17"


def test_poison_events_go_to_the_dead_letter_sink_with_the_error_and_the_rest_flow(registered):
    rows = registered.features.iloc[:300].to_dict(orient="records")
    payloads = [orjson.dumps(r) for r in rows]
    payloads[3] = b"{not json"
    payloads[50] = b"[1, 2, 3]"
    payloads[120] = orjson.dumps({**rows[120], "mean radius": "large"})
    payloads[121] = orjson.dumps({k: v for k, v in rows[121].items() if k != "mean texture"})
    source = MemorySource(payloads, "events")
    consumer = _consumer(registered.settings, "models:/cancer@champion", source, batch_size=100)
    _drain(consumer, source)

    dead = _outputs(consumer.dead_letter)
    assert sorted(dead) == ["events:120", "events:121", "events:3", "events:50"]
    assert dead["events:3"]["error"].startswith("the event is not valid JSON")
    assert dead["events:3"]["payload"] == "{not json"
    assert "must be a JSON object" in dead["events:50"]["error"]
    assert dead["events:120"]["error"].startswith(
        "the event does not fit the signature of cancer/1"
    )
    assert "'mean radius'" in dead["events:120"]["error"]
    assert "'mean texture'" in dead["events:121"]["error"]
    outputs = _outputs(consumer.sink)
    assert len(outputs) == 296 and not set(outputs) & set(dead)
    assert source.acked == {str(n) for n in range(300)}  # poison is acknowledged too
    errors = _logged(registered.settings, "cancer", ERRORS)
    assert sorted(errors["request_id"].to_pylist()) == ["events:120", "events:121"]
    assert set(errors["status"].to_pylist()) == {422}
    assert consumer.stats.dead_lettered == 4 and consumer.stats.answered == 296


def test_a_redelivered_event_gets_its_output_again_and_keeps_its_one_log_row(registered):
    rows = registered.features.iloc[:400].to_dict(orient="records")
    source = MemorySource([orjson.dumps(r) for r in rows], "events")
    first = _consumer(
        registered.settings,
        "models:/cancer@champion",
        source,
        batch_size=400,
        commit_interval=3600,  # a slow step must not acknowledge before the "death"
    )
    first.step()  # answered and logged, then the process "dies" before acknowledging
    assert first.logger is not None
    first.logger.flush()
    assert source.acked == set()

    source.redeliver()
    second = _consumer(registered.settings, "models:/cancer@champion", source, sink=first.sink)
    _drain(second, source)

    assert second.stats.redelivered == 400 and second.stats.already_logged == 400
    assert len(second.sink.outputs) == 400
    logged = _logged(registered.settings, "cancer")
    assert logged.num_rows == 400
    assert sorted(logged["request_id"].to_pylist()) == sorted(second.sink.outputs)


def test_a_redelivered_event_whose_row_never_reached_the_log_is_logged_once(registered):
    rows = registered.features.iloc[:100].to_dict(orient="records")
    source = MemorySource([orjson.dumps(r) for r in rows], "events")
    # No logger: its rows are lost as a killed process's queue would be.
    lost = StreamConsumer(
        runtime_for_target("models:/cancer@champion"),
        source,
        MemorySink(),
        MemorySink(),
        commit_interval=3600,  # a slow step must not acknowledge before the "death"
    )
    lost.step()
    assert source.acked == set()
    source.redeliver()
    second = _consumer(registered.settings, "models:/cancer@champion", source, sink=lost.sink)
    _drain(second, source)
    assert second.stats.redelivered == 100 and second.stats.already_logged == 0
    assert _logged(registered.settings, "cancer").num_rows == 100


def test_a_redelivered_event_a_version_refused_keeps_its_one_error_row(registered):
    rows = registered.features.iloc[:20].to_dict(orient="records")
    payloads = [orjson.dumps(r) for r in rows]
    for n in (4, 9):  # refused by the signature: dead letters and rows of the errors log
        payloads[n] = orjson.dumps({**rows[n], "mean radius": "large"})
    source = MemorySource(payloads, "events")
    first = _consumer(registered.settings, "models:/cancer@champion", source, commit_interval=3600)
    first.step()  # answered and logged, then the process "dies" before acknowledging
    assert first.error_logger is not None and first.logger is not None
    first.error_logger.flush()
    first.logger.flush()
    assert source.acked == set()

    source.redeliver()
    second = _consumer(registered.settings, "models:/cancer@champion", source)
    _drain(second, source)

    errors = _logged(registered.settings, "cancer", ERRORS)
    assert sorted(errors["request_id"].to_pylist()) == ["events:4", "events:9"]
    assert second.stats.already_logged == 20  # 18 prediction rows and 2 error rows
    assert sorted(_outputs(second.dead_letter)) == ["events:4", "events:9"]  # still dead-lettered


def test_an_event_delivered_again_while_the_consumer_holds_it_is_answered_once(registered):
    rows = registered.features.iloc[:50].to_dict(orient="records")
    source = MemorySource([orjson.dumps(r) for r in rows], "events")
    consumer = _consumer(
        registered.settings, "models:/cancer@champion", source, commit_interval=3600
    )
    consumer.step()  # held: answered, not yet committed
    source.redeliver()  # the broker's redelivery timer ran out meanwhile
    consumer.step()
    consumer.commit()
    assert consumer.stats.duplicates == 50 and consumer.stats.answered == 50
    assert _logged(registered.settings, "cancer").num_rows == 50
    assert source.lag() == 0


def test_canary_weights_and_the_shadow_apply_to_streamed_events(registered):
    Deployments().create(
        "cancer-stream",
        build_spec("cancer@champion", canary=["cancer/2:30"], shadow="cancer/2"),
    )
    rows = registered.features.to_dict(orient="records")
    events = [rows[n % len(rows)] for n in range(2000)]
    source = MemorySource([orjson.dumps(r) for r in events], "events")
    consumer = _consumer(registered.settings, "cancer-stream", source, batch_size=500)
    _drain(consumer, source)

    outputs = _outputs(consumer.sink)
    table = consumer.runtime.table
    for key, output in outputs.items():  # the route HTTP would choose for the same request id
        role, handle = table.choose(key)
        assert (output["route"], output["version"]) == (role, handle.version)
    versions = collections.Counter(o["version"] for o in outputs.values())
    assert 0.24 < versions[2] / 2000 < 0.36  # 30% of 2000, with room for chance
    for n in (0, 1, 2):
        output = outputs[f"events:{n}"]
        model = registered.models[output["version"]]
        assert output["prediction"] == int(model.predict(registered.features.iloc[[n]])[0])

    logged = _logged(registered.settings, "cancer-stream")
    routes = collections.Counter(logged["route"].to_pylist())
    assert routes["shadow"] == 2000  # every event, once, by the shadow
    assert routes["primary"] + routes["canary"] == 2000
    assert routes["canary"] == versions[2]
    shadow = logged.filter(np.array(logged["route"].to_pylist()) == "shadow")
    assert set(shadow["version"].to_pylist()) == {2}


class _BlockingSink(Sink):
    """A sink that takes its first write only when the test lets it (a slow broker)."""

    url = "memory://blocking"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.records = 0

    def write(self, records: Any) -> None:
        self.entered.set()
        assert self.release.wait(60)
        self.records += len(records)


class _CountingSource(MemorySource):
    def __init__(self, payloads: Any) -> None:
        super().__init__(payloads, "events")
        self.reads: list[int] = []

    def read(self, max_events: int, timeout: float) -> list[Event]:
        events = super().read(max_events, timeout)
        self.reads.append(len(events))
        return events


def test_a_slow_sink_holds_back_reading(registered):
    rows = registered.features.to_dict(orient="records")
    source = _CountingSource([orjson.dumps(r) for r in rows])
    sink = _BlockingSink()
    consumer = _consumer(
        registered.settings, "models:/cancer@champion", source, sink=sink, batch_size=100
    )
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        assert sink.entered.wait(60)
        # While the sink holds the first batch, nothing more is read.
        thread.join(0.5)
        assert source.reads == [100]
    finally:
        sink.release.set()
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert sink.records == sum(source.reads)
    assert max(source.reads) <= 100


def test_the_consumer_refuses_a_batch_size_below_one(registered):
    with pytest.raises(InvalidInput, match=r"batch_size must be a whole number >= 1, got 0"):
        _consumer(registered.settings, "models:/cancer@champion", MemorySource(), batch_size=0)


def test_the_streams_package_exports_the_interfaces_the_consumer_and_the_runner():
    import keel.serving.streams as streams

    assert sorted(streams.__all__) == [
        "Event",
        "MemorySink",
        "MemorySource",
        "Record",
        "Sink",
        "Source",
        "StreamConsumer",
        "StreamMetrics",
        "StreamStats",
        "default_group",
        "open_sink",
        "open_source",
        "stream",
    ]
    assert streams.default_group("cancer.live v2") == "keel-cancer_live_v2"
