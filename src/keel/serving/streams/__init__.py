"""Streaming inference: ``keel stream`` answers a deployment's events from a broker.

Events come from a :class:`Source` (Redis Streams consumer groups, NATS JetStream
pull consumers) and outputs go to a :class:`Sink`, with the validation, routing
(canary and shadow) and prediction logging of HTTP serving. An event is
acknowledged only after its output is in the sink and its prediction-log row is
written; a redelivered event gets one output and one log row, not two (see
:mod:`keel.serving.streams.consumer`). The broker clients are the ``streams``
extra: ``pip install 'keel[streams]'``.
"""

from __future__ import annotations

from keel.serving.streams.base import Event, MemorySink, MemorySource, Record, Sink, Source
from keel.serving.streams.consumer import StreamConsumer, StreamStats
from keel.serving.streams.metrics import StreamMetrics
from keel.serving.streams.run import default_group, open_sink, open_source, stream

__all__ = [
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
