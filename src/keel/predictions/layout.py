"""Where the logs live: the root, its Hive-style folders, hour labels and file names.

Every dataset is laid out the same way under the artifact root::

    <dataset>/deployment=<name>/hour=<YYYY-MM-DDTHH>/part-<unix ms>-<pid>-<tag>.parquet

where ``<dataset>`` is ``predictions``, ``errors`` or ``feedback``, the hour is
each row's ``time`` in UTC, and ``<tag>`` is eight hex digits (random, or
derived from the content when a write must be repeatable). The root is an
artifact backend (:mod:`keel.artifacts.backends`): a local folder or an fsspec
URL such as ``s3://bucket/prefix``; this module only names things in it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import numbers
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from keel.artifacts.backends import Backend, backend_for_url
from keel.errors import InvalidInput, KeelError, from_os_error
from keel.validation import check_name

__all__ = [
    "HOUR_FOLDER",
    "HOUR_MS",
    "check_deployment",
    "describe",
    "fault",
    "file_key",
    "hour_label",
    "hour_start_ms",
    "list_folder",
    "now_ms",
    "open_root",
    "parquet_files",
    "parquet_tree",
    "part_name",
    "partition",
    "reaching",
    "root_key",
    "tag8",
    "to_ms",
]

HOUR_MS = 3_600_000
#: The name of an hour partition folder; group 1 is its label.
HOUR_FOLDER = re.compile(r"^hour=(\d{4}-\d{2}-\d{2}T\d{2})$")


def now_ms() -> int:
    """The time now in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def tag8() -> str:
    """Eight random hex digits: what keeps two writers' file names apart."""
    return uuid.uuid4().hex[:8]


def check_deployment(name: object) -> str:
    """``name`` if it can name a deployment's partition folder, else InvalidInput."""
    return check_name(name, "deployment name")


def hour_label(hour: int) -> str:
    """The folder label of ``hour`` (hours since the epoch): ``YYYY-MM-DDTHH`` in UTC."""
    return dt.datetime.fromtimestamp(hour * 3600, dt.UTC).strftime("%Y-%m-%dT%H")


def hour_start_ms(label: str) -> int:
    """The first millisecond of the hour an ``hour=`` folder label names."""
    start = dt.datetime.strptime(label, "%Y-%m-%dT%H").replace(tzinfo=dt.UTC)
    return int(start.timestamp()) * 1000


def partition(dataset: str, deployment: str) -> str:
    """The folder of one deployment's files in ``dataset``."""
    return f"{dataset}/deployment={deployment}"


def part_name(stamp_ms: int | str, pid: int | str, tag: str) -> str:
    """A data file's name: when and by which process it was written, and a tag."""
    return f"part-{stamp_ms}-{pid}-{tag}.parquet"


def file_key(dataset: str, deployment: str, hour: int, name: str) -> str:
    """The key of a data file named ``name`` in ``hour`` (hours since the epoch)."""
    return f"{partition(dataset, deployment)}/hour={hour_label(hour)}/{name}"


def to_ms(value: Any, name: str) -> int | None:
    """Epoch milliseconds from ``None``, epoch ms, a datetime (naive = UTC) or ISO-8601 text."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a datetime, epoch milliseconds or ISO-8601 text")
    if isinstance(value, numbers.Real):
        return int(value) if isinstance(value, numbers.Integral) else int(float(value))
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[ms]").astype(np.int64))
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"{name} {value!r} is not ISO-8601; use e.g. '2026-11-23T14:00:00Z'"
            ) from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    raise InvalidInput(
        f"{name} must be a datetime, epoch milliseconds or ISO-8601 text, got {type(value).__name__}"
    )


# -- the root -------------------------------------------------------------------------------


def open_root(root: str | Backend, s3_endpoint_url: str | None = None) -> Backend:
    """The artifact backend of ``root``: a backend as given, or the one its URL names.

    Raises:
        InvalidInput: ``root`` is neither a backend nor a non-empty URL.
    """
    if isinstance(root, str):
        if not root.strip():
            raise InvalidInput(f"root_url must be a folder or s3://bucket/prefix, got {root!r}")
        return backend_for_url(root, s3_endpoint_url)
    if isinstance(root, Backend):
        return root
    raise InvalidInput(
        f"root_url must be a folder, s3://bucket/prefix or an artifact backend, got {root!r}"
    )


def root_key(backend: Backend) -> str:
    """A short name for the root, the same in every process (it names spill folders)."""
    return hashlib.sha256(backend.url.rstrip("/").encode()).hexdigest()[:16]


def describe(backend: Backend, key: str = "") -> str:
    """Where ``key`` is, for messages."""
    return f"{backend.url.rstrip('/')}/{key}" if key else backend.url


def fault(exc: BaseException, what: str) -> KeelError:
    """The Keel error for an exception raised while reaching ``what``."""
    # Keel found the files it reads by listing; one gone meanwhile is the store's fault
    return from_os_error(exc, what, named=False)


@contextlib.contextmanager
def reaching(backend: Backend, key: str) -> Iterator[None]:
    """Turn whatever reading ``key`` raises into a Keel error that names it."""
    try:
        yield
    except KeelError:
        raise
    except Exception as exc:
        raise fault(exc, describe(backend, key)) from exc


def list_folder(backend: Backend, folder: str) -> list[tuple[str, bool]]:
    """``(name, is_folder)`` of what is directly in ``folder``; empty if it does not exist."""
    with reaching(backend, folder):
        return backend.list_dir(folder)


def _is_data(name: str, is_dir: bool) -> bool:
    return not is_dir and name.endswith(".parquet") and not name.startswith((".", "_"))


def parquet_files(backend: Backend, folder: str) -> list[str]:
    """Keys of the Parquet files directly in ``folder``."""
    return sorted(
        f"{folder}/{name}"
        for name, is_dir in list_folder(backend, folder)
        if _is_data(name, is_dir)
    )


def parquet_tree(backend: Backend, folder: str) -> list[str]:
    """Keys of the Parquet files anywhere below ``folder``."""
    found: list[str] = []
    for name, is_dir in list_folder(backend, folder):
        if is_dir and not name.startswith((".", "_")):
            found.extend(parquet_tree(backend, f"{folder}/{name}"))
        elif _is_data(name, is_dir):
            found.append(f"{folder}/{name}")
    return sorted(found)
