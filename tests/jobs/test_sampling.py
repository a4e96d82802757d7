"""Sampling what a job uses (recorded NVML readings, psutil on real processes) and hardware discovery.

This machine has no GPU: the NVML path is exercised only as far as its absence.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from keel.errors import BackendUnavailable, InvalidInput, NotFound
from keel.jobs.hardware import discover_inventory, nvml_gpus
from keel.jobs.sampling import (
    GpuReading,
    NvmlReader,
    ProcessReading,
    ProcessSampler,
    RecordedGpuReader,
    UsageMeter,
    merge_usage,
)

GiB = 1024**3


def nvml_works() -> bool:
    try:
        NvmlReader().read([])
    except (BackendUnavailable, InvalidInput):
        return False
    return True


# -- recorded GPU readings -------------------------------------------------------------


def test_recorded_readings_replay_per_device_in_order_and_start_over(recorded_gpus: Path):
    reader = RecordedGpuReader(recorded_gpus)
    assert reader.devices == [0, 1, 2, 3, 4, 5]
    utils = [[r.util_percent for r in reader.read([0, 4])] for _ in range(5)]
    assert utils == [[38.0, 22.0], [91.0, 31.0], [97.0, 18.0], [64.0, 27.0], [38.0, 22.0]]
    # Each device keeps its own place: device 1, read first now, starts at its first reading.
    assert reader.read([1]) == [GpuReading(12.0, int(8.1 * GiB))]


def test_a_recorded_file_with_a_bad_line_is_refused_with_its_line_number(tmp_path: Path):
    path = tmp_path / "gpus.jsonl"
    path.write_text(
        '{"device": 0, "util": 10, "memory": 1}\n\n{"device": 0, "util": 140, "memory": 1}\n'
    )
    with pytest.raises(InvalidInput, match=r'gpus.jsonl:3: expected .*util 0-100.*"util": 140'):
        RecordedGpuReader(path)
    path.write_text("device 0 util 10\n")
    with pytest.raises(InvalidInput, match=r"gpus.jsonl:1: not JSON"):
        RecordedGpuReader(path)
    with pytest.raises(NotFound, match="no recorded GPU readings file"):
        RecordedGpuReader(tmp_path / "missing.jsonl")


def test_reading_a_device_the_recording_lacks_names_the_devices_it_has(recorded_gpus: Path):
    with pytest.raises(
        NotFound, match=r"no readings of GPU device 7; it has devices \[0, 1, 2, 3, 4, 5\]"
    ):
        RecordedGpuReader(recorded_gpus).read([0, 7])


# -- folding samples into usage --------------------------------------------------------


def test_usage_has_means_peaks_and_gpu_seconds_of_an_attempt():
    meter = UsageMeter(gpus=2)
    meter.add(ProcessReading(50.0, 100), [GpuReading(10.0, 4 * GiB), GpuReading(30.0, 8 * GiB)])
    meter.add(ProcessReading(150.0, 300), [GpuReading(90.0, 2 * GiB), GpuReading(70.0, 6 * GiB)])
    meter.add(None, None)  # nothing read: not a sample
    usage = meter.usage(10.0)
    assert usage == {
        "samples": 2,
        "seconds": 10.0,
        "gpu_seconds": 20.0,
        "cpu_percent_mean": 100.0,
        "cpu_percent_peak": 150.0,
        "rss_peak": 300,
        "gpu_util_mean": 50.0,
        "gpu_util_peak": 90.0,
        "gpu_memory_mean": 5 * GiB,
        "gpu_memory_peak": 8 * GiB,
        "gpu_readings": 4,
    }


def test_an_attempt_without_gpus_has_no_gpu_readings_in_its_usage():
    meter = UsageMeter()
    meter.add(ProcessReading(20.0, 10))
    usage = meter.usage(1.0)
    assert usage["gpu_seconds"] == 0.0
    assert not {"gpu_util_mean", "gpu_util_peak", "gpu_memory_mean", "gpu_memory_peak"} & set(usage)


def test_usage_over_attempts_sums_time_weights_means_by_samples_and_keeps_peaks():
    first = {"samples": 1, "seconds": 5.0, "gpu_seconds": 5.0, "cpu_percent_mean": 10.0,
             "cpu_percent_peak": 10.0, "rss_peak": 900, "gpu_util_mean": 20.0, "gpu_util_peak": 20.0,
             "gpu_memory_mean": 100.0, "gpu_memory_peak": 100, "gpu_readings": 1}  # fmt: skip
    second = {"samples": 3, "seconds": 15.0, "gpu_seconds": 15.0, "cpu_percent_mean": 50.0,
              "cpu_percent_peak": 80.0, "rss_peak": 500, "gpu_util_mean": 60.0,
              "gpu_util_peak": 95.0, "gpu_memory_mean": 300.0, "gpu_memory_peak": 400,
              "gpu_readings": 3}  # fmt: skip
    merged = merge_usage(first, second)
    assert merged == {
        "samples": 4,
        "seconds": 20.0,
        "gpu_seconds": 20.0,
        "cpu_percent_mean": 40.0,
        "cpu_percent_peak": 80.0,
        "rss_peak": 900,
        "gpu_util_mean": 50.0,
        "gpu_util_peak": 95.0,
        "gpu_memory_mean": 250.0,
        "gpu_memory_peak": 400,
        "gpu_readings": 4,
    }
    assert merge_usage({}, second) == second


# -- processes -------------------------------------------------------------------------

PARENT = """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
        "import sys, time; block = bytearray(96 * 2**20); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE)
    child.stdout.readline()
    print(child.pid, flush=True)
    time.sleep(60)
"""


def test_a_process_sample_sums_rss_and_cpu_over_the_whole_tree():
    root = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PARENT)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert root.stdout is not None
        child = psutil.Process(int(root.stdout.readline()))
        reading = ProcessSampler([root.pid]).sample()
        own = psutil.Process(root.pid).memory_info().rss
        assert reading.rss_bytes >= own + 96 * 2**20  # the child's block is counted
        assert reading.cpu_percent >= 0.0
    finally:
        child.kill()
        root.kill()
        root.wait()


def test_sampling_a_tree_that_has_ended_reads_nothing():
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()  # reaped: nothing is left to read
    assert ProcessSampler([done.pid]).sample() == ProcessReading(0.0, 0)


# -- NVML and discovery ----------------------------------------------------------------


def test_nvml_without_the_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(InvalidInput, match=r"pip install 'keel\[jobs\]'"):
        NvmlReader().read([0])
    assert nvml_gpus() == ({}, {})


@pytest.mark.skipif(nvml_works(), reason="this machine has NVIDIA GPUs")
def test_nvml_on_a_machine_without_gpus_fails_clearly_and_discovery_finds_none():
    with pytest.raises(BackendUnavailable, match="NVML did not start"):
        NvmlReader().read([0])
    inventory = discover_inventory()
    assert inventory.gpus == {} and inventory.gpu_memory == {}
    assert inventory.cpus == float(len(os.sched_getaffinity(0)))
    assert inventory.memory == psutil.virtual_memory().total


def test_a_declared_inventory_file_wins_over_discovery(inventory_file: Path, virtual_inventory):
    assert discover_inventory(inventory_file) == virtual_inventory
    assert virtual_inventory.gpus == {"a100": (0, 1, 2, 3), "l4": (4, 5)}


def test_a_bad_inventory_file_is_refused_with_the_key_and_the_fix(tmp_path: Path):
    path = tmp_path / "inventory.yaml"
    path.write_text("cpus: 8\ngpu: {a100: 4}\n")
    with pytest.raises(InvalidInput, match=r"inventory.yaml: unknown key\(s\) gpu; expected cpus"):
        discover_inventory(path)
    with pytest.raises(InvalidInput, match=r"no inventory file .*missing\.yaml"):
        discover_inventory(tmp_path / "missing.yaml")
