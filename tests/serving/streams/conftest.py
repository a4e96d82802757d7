"""Real brokers for the stream tests, and a ``keel stream`` child process.

Redis Streams tests need ``KEEL_TEST_REDIS_URL`` and NATS JetStream tests
``KEEL_TEST_NATS_URL``; without them they skip, saying so. Every test gets
stream and subject names of its own and removes what it created.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _support.streams import StreamProcess

REDIS_ENV = "KEEL_TEST_REDIS_URL"
NATS_ENV = "KEEL_TEST_NATS_URL"


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set")
    return url


@pytest.fixture
def nats_url() -> str:
    url = os.environ.get(NATS_ENV)
    if not url:
        pytest.skip(f"{NATS_ENV} is not set")
    return url


@pytest.fixture
def names() -> str:
    """A prefix unique to this test for streams, subjects and groups."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_client(redis_url: str, names: str) -> Iterator[Any]:
    """A client on the test Redis; every key starting with the test's names is removed after."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(redis_url)
    yield client
    for pattern in (f"{names}*", f"keel:stream-output:{names}*"):
        keys = list(client.scan_iter(match=pattern, count=10_000))
        for at in range(0, len(keys), 10_000):
            client.delete(*keys[at : at + 10_000])
    client.close()


@pytest.fixture
def keel_stream(tmp_path: Path) -> Iterator[Callable[..., StreamProcess]]:
    """``keel_stream(*args, settings=)`` starts ``keel stream``; all are killed at the end."""
    started: list[StreamProcess] = []

    def start(*args: str, settings: Any) -> StreamProcess:
        process = StreamProcess(list(args), settings, tmp_path / f"stream-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        if process.alive():
            process.kill()
