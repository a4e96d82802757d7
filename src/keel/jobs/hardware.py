"""What this machine has to run jobs on: a declared inventory, or CPUs, memory and NVML's GPUs.

:func:`discover_inventory` gives a local worker its pool's inventory:

1. a declared file (``--inventory FILE``, YAML or JSON) wins, in the form
   :meth:`~keel.jobs.resources.Inventory.from_dict` reads::

       cpus: 32
       memory: 256Gi
       gpus: {a100: 4, l4: 2}
       gpu_memory: {a100: 80Gi, l4: 24Gi}

2. otherwise the CPUs this process may run on, the machine's memory, and the
   GPUs NVML reports, typed by their name (``NVIDIA A100-SXM4-80GB`` → ``a100``)
   with their memory; a machine without NVML (no driver, or ``nvidia-ml-py``
   not installed) has no GPUs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from keel.errors import InvalidInput
from keel.jobs.resources import Inventory, gpu_type_name

__all__ = ["discover_inventory", "load_inventory", "nvml_gpus"]

log = logging.getLogger(__name__)


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """An inventory from a YAML or JSON file.

    Raises:
        InvalidInput: no such file, not YAML, or not an inventory (the message says which key).
    """
    import yaml

    file = Path(path)
    try:
        doc = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise InvalidInput(
            f"no inventory file {str(file)!r}; give a YAML or JSON file with cpus, memory, gpus"
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{file}: not YAML or JSON: {exc}") from None
    return Inventory.from_dict(doc if doc is not None else {}, where=str(file))


def nvml_gpus() -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """GPUs NVML reports: device indices by type, and memory per device by type.

    Empty when NVML cannot be used here (no ``nvidia-ml-py``, no driver, no device).
    Devices of one type with different memory (an 80 GB and a 40 GB A100) are
    recorded with the smaller size, so a job never counts on more than each has.
    """
    try:
        import pynvml
    except ImportError:
        log.info("keel: nvidia-ml-py is not installed; this worker offers no GPUs")
        return {}, {}
    from keel.jobs.sampling import NvmlReader

    reader = NvmlReader()
    try:
        devices = reader.devices()
    except Exception as exc:  # no driver or no device: a machine without GPUs
        log.info("keel: NVML is not available (%s); this worker offers no GPUs", exc)
        return {}, {}
    finally:
        try:
            reader.close()
        except pynvml.NVMLError:
            pass
    gpus: dict[str, list[int]] = {}
    memory: dict[str, int] = {}
    for index, (name, total) in enumerate(devices):
        kind = gpu_type_name(name)
        gpus.setdefault(kind, []).append(index)
        memory[kind] = min(memory.get(kind, total), total)
    return {k: tuple(v) for k, v in gpus.items()}, memory


def _cpus() -> float:
    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return float(os.cpu_count() or 1)


def discover_inventory(inventory_file: str | os.PathLike[str] | None = None) -> Inventory:
    """This worker's inventory: ``inventory_file`` when given, else what the machine has.

    Args:
        inventory_file: a declared inventory (YAML or JSON); it wins over discovery.

    Raises:
        InvalidInput: a bad inventory file, or psutil missing for discovery.
    """
    if inventory_file is not None:
        return load_inventory(inventory_file)
    from keel.jobs.sampling import import_psutil

    memory = int(import_psutil().virtual_memory().total)
    gpus, gpu_memory = nvml_gpus()
    return Inventory(cpus=_cpus(), memory=memory, gpus=gpus, gpu_memory=gpu_memory)
