"""What a running job uses: GPU utilisation and memory (NVML), CPU and resident memory.

A worker samples each running attempt every few seconds:

- its process tree with psutil (:class:`ProcessSampler`): CPU percent summed over
  the tree (100 is one CPU busy) and resident memory (RSS) summed over it;
- its GPUs through a :class:`GpuReader`: :class:`NvmlReader` asks NVML for the
  devices the job was given; :class:`RecordedGpuReader` replays readings from a
  JSON-lines file, one reading per device and call (the stand-in for GPUs in
  tests and on machines without them).

:class:`UsageMeter` folds one attempt's samples into the usage keys stored on the
job (``jobs.usage``); :func:`merge_usage` adds an attempt to the job's earlier
attempts::

    {"samples": 12, "seconds": 24.1, "cpu_percent_mean": 97.5, "cpu_percent_peak": 180.0,
     "rss_peak": 2147483648, "gpu_seconds": 48.2, "gpu_util_mean": 61.0,
     "gpu_util_peak": 99.0, "gpu_memory_mean": 21474836480.0, "gpu_memory_peak": 32212254720}

The GPU keys (but ``gpu_seconds``) are present only when GPUs were read.
``gpu_memory_*`` are per device: the peak is the most one device held.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from keel.errors import BackendUnavailable, InvalidInput, NotFound

__all__ = [
    "GpuReader",
    "GpuReading",
    "NvmlReader",
    "ProcessReading",
    "ProcessSampler",
    "RecordedGpuReader",
    "UsageMeter",
    "import_psutil",
    "merge_usage",
]

_INSTALL = "pip install 'keel[jobs]'"


def import_psutil() -> ModuleType:
    """The ``psutil`` module, or the command that installs it."""
    try:
        import psutil
    except ImportError:
        raise InvalidInput(
            f"sampling a job's CPU and memory needs psutil, which is not installed: {_INSTALL}"
        ) from None
    return psutil


def import_pynvml() -> ModuleType:
    """The ``pynvml`` module (from ``nvidia-ml-py``), or the command that installs it."""
    try:
        import pynvml
    except ImportError:
        raise InvalidInput(
            f"reading GPUs needs nvidia-ml-py (pynvml), which is not installed: {_INSTALL}"
        ) from None
    return pynvml


@dataclass(frozen=True)
class GpuReading:
    """One device at one moment.

    Attributes:
        util_percent: how busy its compute was (0-100).
        memory_bytes: device memory in use.
    """

    util_percent: float
    memory_bytes: int


class GpuReader(Protocol):
    """Reads the GPUs a job was given (device indices as in ``CUDA_VISIBLE_DEVICES``)."""

    def read(self, devices: list[int]) -> list[GpuReading]:
        """One reading per device of ``devices``, in their order."""
        ...


class NvmlReader:
    """Reads GPUs through NVML (``nvidia-ml-py``); initialised on first read.

    Device indices are NVML's, which are in PCI bus order; the worker sets
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA numbers them the same way.
    """

    def __init__(self) -> None:
        self._nvml: ModuleType | None = None

    def _init(self) -> ModuleType:
        if self._nvml is None:
            nvml = import_pynvml()
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                raise BackendUnavailable(
                    f"NVML did not start ({exc}); is the NVIDIA driver installed? On a machine "
                    "without GPUs, run the worker without a GPU reader"
                ) from None
            self._nvml = nvml
        return self._nvml

    def read(self, devices: list[int]) -> list[GpuReading]:
        nvml = self._init()
        readings = []
        for index in devices:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            readings.append(GpuReading(float(rates.gpu), int(memory.used)))
        return readings

    def devices(self) -> list[tuple[str, int]]:
        """Every device as ``(NVML name, memory in bytes)``, by index."""
        nvml = self._init()
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):  # older bindings return bytes
                name = name.decode()
            found.append((str(name), int(nvml.nvmlDeviceGetMemoryInfo(handle).total)))
        return found

    def close(self) -> None:
        """Shut NVML down (it starts again on the next read)."""
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None


class RecordedGpuReader:
    """Replays GPU readings recorded in a JSON-lines file: a fake of the hardware.

    Each line is ``{"device": 0, "util": 37.0, "memory": 21474836480}``. Every
    :meth:`read` takes the next reading of each device asked for, in the order the
    file lists that device's lines, starting over after the last one.

    Args:
        path: the file.

    Raises:
        NotFound: no such file.
        InvalidInput: a line that is not such an object (the message gives its number).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._readings: dict[int, list[GpuReading]] = {}
        self._next: dict[int, int] = {}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            raise NotFound(f"no recorded GPU readings file {str(self.path)!r}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            device, reading = _recorded(line, f"{self.path}:{number}")
            self._readings.setdefault(device, []).append(reading)

    @property
    def devices(self) -> list[int]:
        """The devices the file has readings of."""
        return sorted(self._readings)

    def readings(self, device: int) -> list[GpuReading]:
        """The recorded readings of ``device``, in replay order."""
        return list(self._readings.get(device, []))

    def read(self, devices: list[int]) -> list[GpuReading]:
        out = []
        for device in devices:
            recorded = self._readings.get(device)
            if not recorded:
                raise NotFound(
                    f"{self.path} has no readings of GPU device {device}; it has devices "
                    f"{self.devices}"
                )
            at = self._next.get(device, 0)
            out.append(recorded[at % len(recorded)])
            self._next[device] = at + 1
        return out


def _recorded(line: str, where: str) -> tuple[int, GpuReading]:
    expected = 'expected {"device": 0, "util": 37.0, "memory": 21474836480}'
    try:
        doc = json.loads(line)
    except json.JSONDecodeError:
        raise InvalidInput(f"{where}: not JSON; {expected}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{where}: {expected}, got {line.strip()!r}")
    device, util, memory = doc.get("device"), doc.get("util"), doc.get("memory")
    if (
        isinstance(device, bool)
        or not isinstance(device, int)
        or device < 0
        or isinstance(util, bool)
        or not isinstance(util, int | float)
        or not 0 <= util <= 100
        or isinstance(memory, bool)
        or not isinstance(memory, int)
        or memory < 0
    ):
        raise InvalidInput(
            f"{where}: {expected} (device >= 0, util 0-100, memory bytes), got {line.strip()!r}"
        )
    return device, GpuReading(float(util), memory)


@dataclass(frozen=True)
class ProcessReading:
    """A process tree at one moment: CPU percent summed (100 = one CPU) and RSS bytes."""

    cpu_percent: float
    rss_bytes: int


class ProcessSampler:
    """Samples a process and all its descendants with psutil.

    CPU percent is measured between two samples, so the first :meth:`sample` of a
    process (made when the sampler is created) primes it and counts 0.

    Args:
        pids: the root processes (an attempt's process).
    """

    def __init__(self, pids: list[int]) -> None:
        self._psutil = import_psutil()
        self.pids = list(pids)
        self._known: dict[int, Any] = {}
        self.sample()

    def _tree(self) -> list[Any]:
        psutil = self._psutil
        found = []
        for pid in self.pids:
            try:
                root = self._known.get(pid) or psutil.Process(pid)
                found.append(root)
                found.extend(root.children(recursive=True))
            except psutil.Error:  # it ended between two samples
                continue
        return found

    def sample(self) -> ProcessReading:
        """The tree's CPU percent since the last sample and its RSS now."""
        psutil = self._psutil
        cpu = 0.0
        rss = 0
        alive: dict[int, Any] = {}
        for process in self._tree():
            # Keep one Process object per pid: cpu_percent measures since its own last call.
            known = self._known.get(process.pid, process)
            try:
                with known.oneshot():
                    cpu += known.cpu_percent(interval=None)
                    rss += known.memory_info().rss
            except psutil.Error:
                continue
            alive[known.pid] = known
        self._known = alive
        return ProcessReading(cpu, rss)


class UsageMeter:
    """One attempt's samples, folded into the usage keys (see the module docstring).

    Args:
        gpus: how many GPUs the attempt holds (for ``gpu_seconds``).
    """

    def __init__(self, gpus: int = 0) -> None:
        self.gpus = gpus
        self.samples = 0
        self._cpu_sum = 0.0
        self._cpu_peak = 0.0
        self._rss_peak = 0
        self._gpu_readings = 0
        self._util_sum = 0.0
        self._util_peak = 0.0
        self._memory_sum = 0.0
        self._memory_peak = 0

    def add(self, process: ProcessReading | None, gpus: list[GpuReading] | None = None) -> None:
        """Count one sample of the process tree (if read) and of the GPUs (if read)."""
        if process is None and not gpus:
            return
        self.samples += 1
        if process is not None:
            self._cpu_sum += process.cpu_percent
            self._cpu_peak = max(self._cpu_peak, process.cpu_percent)
            self._rss_peak = max(self._rss_peak, process.rss_bytes)
        for reading in gpus or ():
            self._gpu_readings += 1
            self._util_sum += reading.util_percent
            self._util_peak = max(self._util_peak, reading.util_percent)
            self._memory_sum += reading.memory_bytes
            self._memory_peak = max(self._memory_peak, reading.memory_bytes)

    def usage(self, seconds: float) -> dict[str, Any]:
        """The attempt's usage after ``seconds`` of wall time."""
        out: dict[str, Any] = {
            "samples": self.samples,
            "seconds": seconds,
            "gpu_seconds": self.gpus * seconds,
            "cpu_percent_mean": self._cpu_sum / self.samples if self.samples else 0.0,
            "cpu_percent_peak": self._cpu_peak,
            "rss_peak": self._rss_peak,
        }
        if self._gpu_readings:
            out.update(
                gpu_util_mean=self._util_sum / self._gpu_readings,
                gpu_util_peak=self._util_peak,
                gpu_memory_mean=self._memory_sum / self._gpu_readings,
                gpu_memory_peak=self._memory_peak,
                gpu_readings=self._gpu_readings,
            )
        return out


def merge_usage(before: Mapping[str, Any], attempt: Mapping[str, Any]) -> dict[str, Any]:
    """A job's usage over its attempts: sums of counts and seconds, weighted means, peaks.

    Args:
        before: the job's usage so far (``{}`` for its first attempt).
        attempt: one attempt's (:meth:`UsageMeter.usage`).
    """
    if not before:
        return dict(attempt)
    out = dict(before)
    for key in ("samples", "seconds", "gpu_seconds", "gpu_readings"):
        if key in before or key in attempt:
            out[key] = _num(before.get(key)) + _num(attempt.get(key))
    for key in ("cpu_percent_peak", "rss_peak", "gpu_util_peak", "gpu_memory_peak"):
        values = [v for v in (before.get(key), attempt.get(key)) if v is not None]
        if values:
            out[key] = max(values)
    for key, weight in (
        ("cpu_percent_mean", "samples"),
        ("gpu_util_mean", "gpu_readings"),
        ("gpu_memory_mean", "gpu_readings"),
    ):
        pairs = [
            (_num(doc.get(key)), _num(doc.get(weight)))
            for doc in (before, attempt)
            if doc.get(key) is not None
        ]
        total = sum(w for _, w in pairs)
        if pairs:
            out[key] = sum(v * w for v, w in pairs) / total if total else pairs[-1][0]
    for key in ("samples", "gpu_readings"):
        if key in out:
            out[key] = int(out[key])
    return out


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
