"""``keel stream`` on NATS JetStream: a real server, real ``keel stream`` processes, real kills."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from _support.streams import wait_for
from keel.predictions import read_predictions

GROUP = "keel-cancer"  # the default durable consumer of models:/cancer@champion


class JetStream:
    """A connection to the test server, driven from synchronous test code."""

    def __init__(self, url: str) -> None:
        nats = pytest.importorskip("nats")
        # Its own thread, as keel's consumer does: the test's thread may hold another
        # test's loop as running (a server in a thread of this worker, say).
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nc = self.run(nats.connect(url))
        self.js = self.nc.jetstream()
        self.streams: list[str] = []

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def add_stream(self, name: str, subject: str) -> None:
        self.run(self.js.add_stream(name=name, subjects=[subject]))
        self.streams.append(name)

    def publish(self, subject: str, payloads: list[bytes]) -> list[int]:
        """Publish and wait for every acknowledgement; the stream sequences, in order."""

        async def publish() -> list[int]:
            seqs: list[int] = []
            for at in range(0, len(payloads), 2000):
                futures = [
                    await self.js.publish_async(subject, p) for p in payloads[at : at + 2000]
                ]
                seqs.extend(ack.seq for ack in await asyncio.gather(*futures))
            return seqs

        return self.run(publish())

    def messages(self, stream: str, subject: str) -> list[bytes]:
        """Every message of ``stream`` (read by an ephemeral consumer)."""
        count = self.run(self.js.stream_info(stream)).state.messages

        async def read() -> list[bytes]:
            from nats.js.api import AckPolicy, ConsumerConfig

            # No acks: an explicit-ack consumer would stop at its max_ack_pending.
            config = ConsumerConfig(ack_policy=AckPolicy.NONE)
            sub = await self.js.pull_subscribe(subject, stream=stream, config=config)
            out: list[bytes] = []
            while len(out) < count:
                out.extend(m.data for m in await sub.fetch(min(1000, count - len(out)), timeout=5))
            await sub.unsubscribe()
            return out

        return self.run(read()) if count else []

    def consumer(self, stream: str) -> Any:
        import nats.js.errors

        try:
            return self.run(self.js.consumer_info(stream, GROUP))
        except nats.js.errors.NotFoundError:
            return None

    def close(self) -> None:
        for name in self.streams:
            try:
                self.run(self.js.delete_stream(name))
            except Exception:
                pass
        self.run(self.nc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def jetstream(nats_url: str, names: str) -> Iterator[JetStream]:
    js = JetStream(nats_url)
    yield js
    js.streams += [f"{names.upper()}-OUT", f"DEAD-LETTER-{GROUP}"]
    js.close()


def _drained(js: JetStream, stream: str) -> bool:
    info = js.consumer(stream)
    return info is not None and info.num_pending == 0 and info.num_ack_pending == 0


@pytest.mark.slow
def test_every_event_has_one_output_and_one_log_row_after_two_sigkills_on_jetstream(
    registered, jetstream, nats_url, names, keel_stream
):
    rows = registered.features.to_dict(orient="records")
    total = 20_000
    stream, subject = f"{names.upper()}-EVENTS", f"{names}.events"
    out_stream, out_subject = f"{names.upper()}-OUT", f"{names}.out"
    jetstream.add_stream(stream, subject)
    payloads = [orjson.dumps(rows[n % len(rows)]) for n in range(total)]
    payloads[7] = b"not json"  # poison: dead-lettered, acknowledged, never redelivered
    seqs = jetstream.publish(subject, payloads)
    args = [
        "models:/cancer@champion",
        "--source",
        f"{nats_url}?stream={stream}&subject={subject}&ack_wait=2",
        "--sink",
        f"{nats_url}?stream={out_stream}&subject={out_subject}",
        "--batch",
        "250",
    ]
    for threshold in (4_000, 11_000):
        proc = keel_stream(*args, settings=registered.settings)
        wait_for(
            lambda t=threshold: (
                (info := jetstream.consumer(stream)) is not None
                and info.delivered.stream_seq >= t
                and info.num_ack_pending > 0
            ),
            f"{threshold} events delivered, some unacknowledged",
            180,
            proc,
        )
        proc.kill()
    proc = keel_stream(*args, settings=registered.settings)
    wait_for(lambda: _drained(jetstream, stream), "every event acknowledged", 300, proc)
    assert proc.stop() == 0, proc.output()

    outputs = [orjson.loads(m) for m in jetstream.messages(out_stream, out_subject)]
    request_ids = [o["request_id"] for o in outputs]
    assert collections.Counter(request_ids).most_common(1)[0][1] == 1  # no event twice
    expected_ids = {f"{stream}:{s}" for n, s in enumerate(seqs) if n != 7}
    assert set(request_ids) == expected_ids  # and none missing
    expected = registered.models[1].predict(registered.features).tolist()
    position = {f"{stream}:{s}": n for n, s in enumerate(seqs)}
    assert all(o["prediction"] == expected[position[o["request_id"]] % len(rows)] for o in outputs)

    logged = read_predictions(registered.settings.artifacts_url, "cancer", columns=["request_id"])
    log_ids = logged["request_id"].to_pylist()
    assert len(log_ids) == total - 1 and set(log_ids) == expected_ids

    [dead] = [orjson.loads(m) for m in jetstream.messages(f"DEAD-LETTER-{GROUP}", "dead-letter.>")]
    assert dead["request_id"] == f"{stream}:{seqs[7]}" and dead["payload"] == "not json"
    assert "not valid JSON" in dead["error"]
