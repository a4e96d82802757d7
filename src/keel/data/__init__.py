"""Dataset versions: snapshots of files and folders, tables, status, diff, checkout, push, pull.

::

    v = keel.data.add("data/raw")                 # a folder → datasets:/raw@1
    keel.data.status("data/raw")                  # what changed since (near-instant)
    keel.data.checkout("raw@1", "restore/raw")    # exactly those bytes again
    keel.data.push(["raw@1"], remote="s3://bucket/keel-data")

    with keel.start_run():
        keel.log_dataset(df, name="churn")        # Parquet + schema + profile, a run input
        train = keel.load_dataset("datasets:/churn@3")

Names are loaded on first use, so ``import keel.data`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.lazy import lazy_exports

__all__ = [
    "DatasetVersion",
    "Diff",
    "StatusReport",
    "TransferReport",
    "add",
    "checkout",
    "diff",
    "get",
    "get_profile",
    "list_datasets",
    "list_versions",
    "load_dataset",
    "log_dataset",
    "pull",
    "push",
    "run_inputs",
    "status",
]

_EXPORTS = {
    "DatasetVersion": "keel.data.catalog",
    "Diff": "keel.data.manifest",
    "StatusReport": "keel.data.snapshot",
    "TransferReport": "keel.data.transfer",
    "add": "keel.data.snapshot",
    "checkout": "keel.data.restore",
    "diff": "keel.data.snapshot",
    "load_dataset": "keel.data.tables",
    "log_dataset": "keel.data.tables",
    "pull": "keel.data.transfer",
    "push": "keel.data.transfer",
    "status": "keel.data.snapshot",
}

if TYPE_CHECKING:
    from keel.config import Settings
    from keel.data.catalog import DatasetVersion
    from keel.data.manifest import Diff
    from keel.data.restore import checkout
    from keel.data.snapshot import StatusReport, add, diff, status
    from keel.data.tables import load_dataset, log_dataset
    from keel.data.transfer import TransferReport, pull, push


def get(ref: str, *, settings: Settings | None = None) -> DatasetVersion:
    """The version ``ref`` names: ``"churn@3"``, ``"churn"`` (the latest) or a digest."""
    from keel.data.snapshot import DataContext

    return DataContext(settings).catalog.get_version(ref)


def get_profile(ref: str, *, settings: Settings | None = None) -> dict[str, Any] | None:
    """The stored profile of version ``ref`` as JSON (per-column statistics), or ``None``.

    Only table versions have a profile; a folder or file version gives ``None``.

    Raises:
        NotFound: no version matches ``ref``.
    """
    from keel.data.snapshot import DataContext

    return DataContext(settings).catalog.get_profile(ref)


def list_versions(name: str, *, settings: Settings | None = None) -> list[DatasetVersion]:
    """Every version of dataset ``name``, oldest first."""
    from keel.data.snapshot import DataContext

    return DataContext(settings).catalog.list_versions(name)


def list_datasets(*, settings: Settings | None = None) -> list[DatasetVersion]:
    """The latest version of every dataset, by name."""
    from keel.data.snapshot import DataContext

    return DataContext(settings).catalog.list_datasets()


def run_inputs(run_id: str, *, settings: Settings | None = None) -> list[DatasetVersion]:
    """The dataset versions run ``run_id`` read or logged, by name and version."""
    from keel.data.snapshot import DataContext

    return DataContext(settings).catalog.run_inputs(run_id)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
