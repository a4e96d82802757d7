"""Shared fixtures of the jobs tests: a virtual machine of GPUs and queues on the test's store.

- ``virtual_inventory``: 8 CPUs, 64Gi, 4 x a100 (80Gi, devices 0-3) and 2 x l4
  (24Gi, devices 4-5); ``inventory_file`` is the same as a YAML file.
- ``recorded_gpus``: a JSON-lines file of NVML readings of those six devices
  (``keel.jobs.sampling.RecordedGpuReader`` replays it): the hardware we do not have.
- ``make_queue(name, quotas, **fields)``: applies a queue on the current Keel.
- ``turn_until(worker, predicate, timeout=60)``: turns a worker until ``predicate()``
  holds; fails the test (not a timing assertion: a hang guard) when it never does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.jobs import Inventory, Queue

DATA = Path(__file__).parent / "data"


@pytest.fixture
def virtual_inventory() -> Inventory:
    """4 x a100 (80Gi) and 2 x l4 (24Gi), 8 CPUs, 64Gi."""
    return Inventory.from_dict(
        {
            "cpus": 8,
            "memory": "64Gi",
            "gpus": {"a100": 4, "l4": 2},
            "gpu_memory": {"a100": "80Gi", "l4": "24Gi"},
        }
    )


@pytest.fixture
def inventory_file() -> Path:
    """The virtual inventory as a declared file (YAML)."""
    return DATA / "inventory-4xa100-2xl4.yaml"


@pytest.fixture
def recorded_gpus() -> Path:
    """Recorded NVML readings of devices 0-5 (four per device)."""
    return DATA / "nvml-4xa100-2xl4.jsonl"


@pytest.fixture
def make_queue() -> Callable[..., Queue]:
    """``make_queue(name, quotas, **fields)``: a queue applied on the test's Keel."""

    def make(name: str, quotas: dict[str, Any], **fields: Any) -> Queue:
        return keel.Client().jobs.apply_queue({"name": name, "quotas": quotas, **fields})

    return make


@pytest.fixture
def turn_until() -> Callable[..., None]:
    """``turn_until(worker, predicate, timeout=60)``: ``worker.run_once()`` until it holds."""

    def turn(worker: Any, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            worker.run_once()
            if predicate():
                return
            if time.monotonic() > deadline:
                states = {j.id: (j.state, j.reason) for j in keel.Client().jobs.list(limit=20)}
                pytest.fail(f"the worker never got there in {timeout:g} s; jobs: {states}")
            time.sleep(worker.poll_seconds)

    return turn
