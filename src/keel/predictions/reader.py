"""Reading the logs back: windows of rows, record batches, counts, labels, deployments.

A :class:`PredictionReader` holds one root. Reads list only the hour folders
that overlap the window asked for, and filter rows inside them by ``time``
(Parquet statistics skip whole row groups). Files with different columns are
unified (:mod:`keel.predictions.arrow`): a column missing from a file reads
as null.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from keel.artifacts.backends import Backend, LocalBackend
from keel.errors import InvalidInput, StorageError
from keel.predictions.arrow import castable, conform, unify_schemas
from keel.predictions.feedback import read_labels
from keel.predictions.layout import (
    HOUR_FOLDER,
    HOUR_MS,
    check_deployment,
    describe,
    fault,
    hour_start_ms,
    list_folder,
    open_root,
    parquet_files,
    parquet_tree,
    partition,
    reaching,
    to_ms,
)
from keel.predictions.schema import (
    PREDICTION_COLUMNS,
    PREDICTIONS,
    TRACE_COLUMNS,
    TRACES,
    UTC_MS,
    check_dataset,
)

__all__ = ["PredictionReader", "read_predictions"]


class _Scan(NamedTuple):
    files: list[str]
    schema: pa.Schema
    columns: list[str] | None
    filter: ds.Expression | None
    by_file: bool  # some file has a column Arrow cannot cast to the unified type while scanning


class PredictionReader:
    """The logs under one root.

    Args:
        root: the artifact root the loggers wrote to (``Settings.artifacts_url``): a folder,
            ``s3://bucket/prefix``, or an artifact backend.
        s3_endpoint_url: S3-compatible endpoint (MinIO, a loopback server), if not AWS.
    """

    def __init__(self, root: str | Backend, *, s3_endpoint_url: str | None = None) -> None:
        self.root = root
        self.s3_endpoint_url = s3_endpoint_url

    @functools.cached_property
    def backend(self) -> Backend:
        """The artifact backend the logs are read through."""
        return open_root(self.root, self.s3_endpoint_url)

    @functools.cached_property
    def _arrow_fs(self) -> Any:
        return self.backend.arrow_filesystem()

    # -- predictions and errors -----------------------------------------------------------

    def read(
        self,
        deployment: str,
        *,
        start: Any = None,
        end: Any = None,
        columns: Sequence[str] | None = None,
        dataset: str = PREDICTIONS,
    ) -> pa.Table:
        """The rows of ``deployment`` with ``start <= time < end``, oldest first.

        Args:
            deployment: deployment name.
            start: inclusive lower bound: datetime (naive = UTC), epoch ms or ISO-8601 text.
            end: exclusive upper bound, the same kinds.
            columns: the columns to return (default all).
            dataset: ``predictions``, or ``errors`` for the requests a model version failed.

        Raises:
            InvalidInput: a malformed bound or deployment name, or an unknown column.
            StorageError: a file in the window is unreadable, or the bucket is missing.
            BackendUnavailable: the store cannot be reached.
        """
        scan = self._scan(deployment, start, end, columns, dataset)
        schema = _projected(scan)
        batches = list(self._batches(scan, 1 << 20))
        table = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
        if "time" in table.column_names and table.num_rows:
            table = table.take(pc.sort_indices(table, sort_keys=[("time", "ascending")]))
        return table

    def batches(
        self,
        deployment: str,
        *,
        start: Any = None,
        end: Any = None,
        columns: Sequence[str] | None = None,
        batch_rows: int = 65_536,
        dataset: str = PREDICTIONS,
    ) -> Iterator[pa.RecordBatch]:
        """Like :meth:`read`, as record batches of at most ``batch_rows`` rows.

        Batches come file by file (hour by hour, then in the order the files were written),
        not sorted by time; memory stays at about one batch. Arguments are checked and the
        window's files listed when this is called, not at the first batch.
        """
        if (
            isinstance(batch_rows, bool)
            or not isinstance(batch_rows, numbers.Integral)
            or batch_rows < 1
        ):
            raise InvalidInput(f"batch_rows must be a whole number >= 1, got {batch_rows!r}")
        scan = self._scan(deployment, start, end, columns, dataset)
        return (b for b in self._batches(scan, int(batch_rows)) if b.num_rows)

    def count(self, deployment: str, *, dataset: str = PREDICTIONS) -> int:
        """Rows stored for ``deployment``, from Parquet footers only."""
        check_deployment(deployment)
        files = parquet_tree(self.backend, partition(dataset, deployment))
        return sum(int(m.num_rows) for m in self._footers(files))

    def deployments(self, *, dataset: str = PREDICTIONS) -> list[str]:
        """The deployments with a folder of logs under the root (one listing, no file read)."""
        return sorted(
            name.removeprefix("deployment=")
            for name, is_dir in list_folder(self.backend, dataset)
            if is_dir and name.startswith("deployment=")
        )

    def feedback(self, deployment: str) -> pa.Table:
        """Every label stored for ``deployment`` (:data:`FEEDBACK_SCHEMA`), oldest first."""
        return read_labels(self.backend, deployment)

    # -- machinery ----------------------------------------------------------------------------

    def _footer(self, key: str) -> pq.FileMetaData:
        with reaching(self.backend, key):
            try:
                return pq.read_metadata(key, filesystem=self._arrow_fs)
            except pa.ArrowInvalid as exc:
                raise StorageError(
                    f"{describe(self.backend, key)} is not a readable Parquet file ({exc}); the "
                    "logger never leaves partial files, so something else wrote it: move it out "
                    "of the dataset and read again"
                ) from None

    def _footers(self, keys: Sequence[str]) -> list[pq.FileMetaData]:
        # Remote footers are one round trip each: fetch them side by side.
        if isinstance(self.backend, LocalBackend) or len(keys) < 2:
            return [self._footer(k) for k in keys]
        with ThreadPoolExecutor(max_workers=min(16, len(keys))) as pool:
            return list(pool.map(self._footer, keys))

    def _scan(
        self,
        deployment: str,
        start: Any,
        end: Any,
        columns: Sequence[str] | None,
        dataset: str,
    ) -> _Scan:
        check_deployment(deployment)
        check_dataset(dataset)
        start_ms, end_ms = to_ms(start, "start"), to_ms(end, "end")
        if start_ms is not None and end_ms is not None and end_ms < start_ms:
            raise InvalidInput(f"end ({end!r}) is before start ({start!r})")
        base = partition(dataset, deployment)
        files: list[str] = []
        # Partition pruning: only the hour folders overlapping [start, end) are listed.
        for name, is_dir in sorted(list_folder(self.backend, base)):
            match = HOUR_FOLDER.match(name)
            if not is_dir or not match:
                continue
            hour_start = hour_start_ms(match.group(1))
            if start_ms is not None and hour_start + HOUR_MS <= start_ms:
                continue
            if end_ms is not None and hour_start >= end_ms:
                continue
            files.extend(parquet_files(self.backend, f"{base}/{name}"))
        by_file = False
        if files:
            schemas = [m.schema.to_arrow_schema() for m in self._footers(files)]
            schema = unify_schemas(schemas)
            by_file = any(
                not castable(f.type, schema.field(f.name).type)
                for s in schemas
                for f in s
                if f.type != schema.field(f.name).type
            )
        else:
            schema = pa.schema(list(PREDICTION_COLUMNS.items()))
        if files and dataset == TRACES:  # columns newer than a trace file read as nulls in it
            for name, kind in TRACE_COLUMNS.items():
                if name not in schema.names:
                    schema = schema.append(pa.field(name, kind))
        selected: list[str] | None = None
        if columns is not None:
            selected = list(columns)
            unknown = [c for c in selected if c not in schema.names]
            if unknown and files:
                raise InvalidInput(
                    f"no column {', '.join(map(repr, unknown))} in the prediction logs of "
                    f"{deployment!r}; columns: {', '.join(schema.names)}"
                )
        expr: ds.Expression | None = None
        if start_ms is not None:
            expr = ds.field("time") >= pa.scalar(start_ms, UTC_MS)
        if end_ms is not None:
            upper = ds.field("time") < pa.scalar(end_ms, UTC_MS)
            expr = upper if expr is None else expr & upper
        return _Scan(files, schema, selected, expr, by_file)

    def _batches(self, scan: _Scan, batch_rows: int) -> Iterator[pa.RecordBatch]:
        if not scan.files:
            return
        if not scan.by_file:
            dataset = ds.dataset(
                scan.files, schema=scan.schema, format="parquet", filesystem=self._arrow_fs
            )
            try:
                yield from dataset.to_batches(
                    columns=scan.columns, filter=scan.filter, batch_size=batch_rows
                )
            except Exception as exc:
                what = describe(self.backend, scan.files[0].split("/", 1)[0] + "/")
                raise fault(exc, what) from exc
            return
        for key in scan.files:  # slower: convert each file to the unified schema here
            with reaching(self.backend, key):
                table = pq.read_table(key, filesystem=self._arrow_fs)
            table = conform(table, scan.schema)
            if scan.filter is not None:
                table = table.filter(scan.filter)
            if scan.columns is not None:
                table = table.select(scan.columns)
            yield from table.to_batches(max_chunksize=batch_rows)


def _projected(scan: _Scan) -> pa.Schema:
    """The schema of what the scan returns: the chosen columns (null-typed if never logged)."""
    if scan.columns is None:
        return scan.schema
    names = scan.schema.names
    return pa.schema(
        [scan.schema.field(c) if c in names else pa.field(c, pa.null()) for c in scan.columns]
    )


def read_predictions(
    root_url: str | Backend,
    deployment: str,
    *,
    start: Any = None,
    end: Any = None,
    columns: Sequence[str] | None = None,
    s3_endpoint_url: str | None = None,
    dataset: str = PREDICTIONS,
) -> pa.Table:
    """``PredictionReader(root_url, s3_endpoint_url=...).read(deployment, ...)`` in one call.

    See :meth:`PredictionReader.read` for the arguments and what it raises.
    """
    reader = PredictionReader(root_url, s3_endpoint_url=s3_endpoint_url)
    return reader.read(deployment, start=start, end=end, columns=columns, dataset=dataset)
