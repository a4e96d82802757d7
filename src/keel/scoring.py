"""Batch scoring: run a model over a Parquet or CSV file, chunk by chunk, into a new file.

The input is opened through the shared tabular source
(:mod:`keel.data.profiling.sources`), the same one profiling reads: it finds
the files of a folder, tells the format by suffix and splits Parquet into
parts for Ray. :func:`predict_file` loads the model once and streams the input in chunks of
``chunk_rows`` rows, so memory stays bounded by a chunk whatever the file's
size: Parquet through ``ParquetFile.iter_batches``, CSV through pyarrow's
streaming reader (``pyarrow.csv.open_csv``). Every chunk goes through
:meth:`LoadedModel.predict <keel.models.LoadedModel.predict>`, so the model's
signature is enforced chunk by chunk, and its predictions are appended to the
output with ``ParquetWriter`` or ``CSVWriter`` (the format follows the output's
suffix). Only the columns the model needs and the ``keep_columns`` are read.

The output holds the ``keep_columns`` (an id, say), then ``prediction`` — or
``prediction_0`` … ``prediction_<k-1>`` when the model returns ``k`` values per
row.

``runtime`` is :func:`keel.load_model`'s: by default (``"auto"``) a registered
version that has a compiled form which passed parity (``keel models compile``) is
scored with it, else with its native package; the result says which and why. It is written under a temporary name in the output's folder and renamed
at the end: a failure (a column the signature needs, a value that does not
convert, Ctrl-C) leaves no output file, and an existing one untouched.

``executor="ray"`` splits a Parquet input by row groups (consecutive groups
are gathered until they hold ``chunk_rows`` rows), or by file for a folder of
Parquet files. Each Ray task gets the model URI — a ``models:/name@alias`` is
pinned to the version it points at when the job starts — and the settings
(home, store and artifact URLs), loads the model (once per worker process),
scores its part into a part file, and the driver concatenates the part files
in input order into the output, atomically. Ray starts locally with two
CPUs unless the ``ray_address`` setting (``KEEL_RAY_ADDRESS``) names a
cluster (:mod:`keel.cluster`); on a cluster the metadata
store and the artifact store must be reachable from the nodes (PostgreSQL
and S3, not SQLite and a local folder), the nodes need Keel and the model's
libraries installed, and the input and the output's folder must be on
storage every node shares.

Progress is a callback, ``progress(rows_done, rows_total)``: called once at the
start, after every chunk (or, with Ray, every finished part) and, if the last
call did not already say so, once at the end with ``rows_total == rows_done``.
``rows_total`` is known from the start for Parquet (its metadata counts the
rows) and ``None`` for CSV until the file has been read. ``keel predict`` draws
it as a progress bar.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.cluster import import_ray, join_ray
from keel.data.profiling.sources import FileFormat, Part, Source, file_format, open_source
from keel.errors import InvalidInput, StorageError, SystemFault
from keel.uris import MODELS, scheme_of

if TYPE_CHECKING:
    import pyarrow as pa

    from keel.models.api import LoadedModel

__all__ = ["EXECUTORS", "Progress", "predict_file"]

EXECUTORS = ("local", "ray")
_CSV_BLOCK_BYTES = 8 << 20
_LOCAL_RAY_CPUS = 2

#: ``progress(rows_done, rows_total)``; ``rows_total`` is None while unknown (CSV).
Progress = Callable[[int, int | None], None]


def predict_file(
    model_uri: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    chunk_rows: int = 100_000,
    executor: str = "local",
    columns: Sequence[str] | None = None,
    keep_columns: Sequence[str] | None = None,
    progress: Progress | None = None,
    runtime: str = "auto",
) -> dict[str, Any]:
    """Score every row of a Parquet or CSV file with a model and write the predictions.

    Args:
        model_uri: ``models:/name@alias``, ``models:/name/3``, ``runs:/<run_id>/model``
            or a local package folder, as :func:`keel.load_model` takes.
        input_path: a ``.parquet``/``.pq`` or ``.csv`` file, or a folder of
            ``.parquet`` files (scored in name order; names starting with ``.``
            or ``_`` are skipped).
        output_path: the file to write, ``.parquet``/``.pq`` or ``.csv`` by its
            suffix, in an existing folder. It is replaced only if scoring succeeds.
        chunk_rows: rows handed to the model per ``predict`` call; memory use is
            bounded by a few chunks.
        executor: ``"local"`` (this process) or ``"ray"`` (Parquet only; see the
            module docstring).
        columns: the input columns handed to the model (default: the columns its
            signature names, or every column but ``keep_columns`` if it has none
            or takes a tensor, which then gets them as a 2-D array).
        keep_columns: input columns copied into the output before the
            predictions, e.g. an id.
        progress: called as ``progress(rows_done, rows_total)`` as rows are
            scored, ending with ``rows_done == rows_total`` (see the module
            docstring); ``keel predict`` draws it as a progress bar.
        runtime: what runs a registered version: ``"auto"`` (its compiled form if
            one passed parity, else the native package), ``"native"``, ``"onnx"``
            or ``"treelite"`` (see :func:`keel.load_model`).

    Returns:
        ``{"rows", "chunks", "seconds", "rows_per_s", "output", "runtime",
        "runtime_reason"}``: rows scored, ``predict`` calls made, wall time
        including loading the model, the output's path, and what ran the model and why.

    Raises:
        InvalidInput: a bad argument, an unreadable or unsupported file, a missing
            column (named), a value the signature does not accept, or Ray not
            installed for ``executor="ray"``.
        BackendUnavailable: the Ray cluster cannot be reached.
        StorageError: the output cannot be written.
    """
    start = time.perf_counter()
    chunk_rows = _check_chunk_rows(chunk_rows)
    if executor not in EXECUTORS:
        raise InvalidInput(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if progress is not None and not callable(progress):
        raise InvalidInput(
            "progress must be a callable taking (rows_done, rows_total) or None, "
            f"got {progress!r}; for a progress bar use `keel predict --progress`"
        )
    source = _open_source(Path(input_path))
    output = _check_output(Path(output_path), Path(input_path), source)
    keep = _check_names(keep_columns, "keep_columns", source)
    wanted = None if columns is None else _check_names(columns, "columns", source)
    if executor == "ray" and source.kind != "parquet":
        raise InvalidInput(
            f"executor='ray' splits Parquet inputs by row group; {source.name} is CSV. "
            "Convert it to Parquet, or use executor='local'"
        )
    ray = import_ray() if executor == "ray" else None

    from keel.models import load_model

    uri = _pin(model_uri) if ray is not None else model_uri
    model = load_model(uri, runtime=runtime)
    plan = _plan(model, source, wanted, keep)
    counter = _Counter(progress, source.rows)
    counter.start()
    if ray is None:
        rows, chunks = _run_local(model, source, plan, output, chunk_rows, counter)
    else:
        # the workers run what the driver chose, not a choice of their own
        task = _Task(str(uri), model.runtime)
        rows, chunks = _run_ray(ray, task, source, plan, output, chunk_rows, counter)
    counter.finish()
    seconds = time.perf_counter() - start
    return {
        "rows": rows,
        "chunks": chunks,
        "seconds": seconds,
        "rows_per_s": rows / seconds if seconds > 0 else 0.0,
        "output": str(output),
        "runtime": model.runtime,
        "runtime_reason": model.runtime_reason,
    }


# -- arguments and inputs -----------------------------------------------------------


def _check_chunk_rows(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"chunk_rows must be a positive integer, got {value!r}")
    return value


def _open_source(path: Path) -> Source:
    """The input as the shared tabular source: a Parquet or CSV file, or a folder of Parquet."""
    if not path.exists():
        raise InvalidInput(f"input {path} does not exist")
    return open_source(path)


def _check_output(output: Path, input_path: Path, source: Source) -> Path:
    if file_format(output) is None:
        raise InvalidInput(
            f"output {output} must end in .parquet, .pq or .csv (the format follows the "
            f"suffix), got {output.suffix or 'no suffix'!r}"
        )
    output = output.absolute()
    if not output.parent.is_dir():
        raise InvalidInput(f"output folder {output.parent} does not exist; create it first")
    if output.is_dir():
        raise InvalidInput(f"output {output} is a folder; name a file")
    # Compared resolved: a symlinked folder (or a symlink at the output's name) must not
    # route the output, its temporary file or Ray's part files into the input.
    here = input_path.resolve()
    inputs = {here, *(f.resolve() for f in source.files)}
    landing = output.parent.resolve() / output.name
    if landing in inputs or landing.resolve() in inputs or here in landing.parents:
        raise InvalidInput(
            f"output {output} would overwrite or land inside the input {input_path} "
            f"(it resolves to {landing.resolve()}); write it outside the input's folder"
        )
    return output


def _check_names(names: Sequence[str] | None, what: str, source: Source) -> tuple[str, ...]:
    if names is None:
        return ()
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise InvalidInput(f"{what} must be a list of column names, got {names!r}")
    missing = [n for n in names if n not in set(source.columns)]
    if missing:
        raise InvalidInput(
            f"{what}: input {source.name} has no column(s) {', '.join(map(repr, missing))}; "
            f"it has {source.columns}"
        )
    return tuple(dict.fromkeys(names))


def _pin(model_uri: str | os.PathLike[str]) -> str:
    """A URI that names one fixed package, so every Ray task scores with the same version."""
    text = os.fspath(model_uri)
    if scheme_of(text) == MODELS:
        from keel.registry import resolve_model

        resolved = resolve_model(text)
        if resolved.name is not None and resolved.version is not None:
            return f"models:/{resolved.name}/{resolved.version}"
        return text
    if "://" not in text and ":/" not in text and Path(text).is_dir():
        return str(Path(text).absolute())
    return text


# -- what to read, what to hand the model, what to write ------------------------------


@dataclass(frozen=True)
class _Plan:
    """Which columns feed the model, which pass through, and how CSV columns are typed."""

    features: tuple[str, ...]
    keep: tuple[str, ...]
    tensor: bool
    csv_types: tuple[tuple[str, str], ...]
    outputs: Any  # the signature's output schema as a dict, or None

    @property
    def read(self) -> list[str]:
        return list(dict.fromkeys((*self.features, *self.keep)))


_ARROW_TYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "string",
)


def _plan(
    model: LoadedModel, source: Source, wanted: tuple[str, ...] | None, keep: tuple[str, ...]
) -> _Plan:
    signature = model.signature
    tensor = signature is not None and signature.inputs.is_tensor
    if wanted is not None:
        features = wanted
    elif signature is not None and not tensor:
        # Missing ones are left out here and named by LoadedModel.predict on the first chunk.
        present = set(source.columns)
        features = tuple(c.name for c in signature.inputs.columns if c.name in present)
    else:
        features = tuple(c for c in source.columns if c not in set(keep))
    if not features:
        raise InvalidInput(
            f"no input columns left for the model in {source.name}; "
            f"it has {source.columns} and keep_columns takes {list(keep)}"
        )
    clashes = [k for k in keep if k == "prediction" or re.fullmatch(r"prediction_\d+", k)]
    if clashes:
        raise InvalidInput(
            f"keep_columns {clashes} would clash with the prediction column(s); rename them"
        )
    csv_types: tuple[tuple[str, str], ...] = ()
    if signature is not None and not tensor:
        # Typing the features from the signature keeps a column read as int in the first
        # block from failing on a float further down (and reads exactly what predict wants).
        csv_types = tuple(
            (c.name, c.type)
            for c in signature.inputs.columns
            if c.name in set(features) and c.type in _ARROW_TYPES
        )
    outputs = None if signature is None or signature.outputs is None else signature.outputs
    return _Plan(
        features,
        keep,
        tensor,
        csv_types,
        None if outputs is None else outputs.to_dict(),
    )


def _score(model: Any, table: pa.Table, plan: _Plan) -> pa.Table:
    """One chunk in, its keep columns and predictions out."""
    frame = table.select(list(plan.features)).to_pandas()
    predictions = model.predict(frame.to_numpy() if plan.tensor else frame)
    return _output_table(table, plan.keep, predictions)


def _output_table(table: pa.Table, keep: tuple[str, ...], predictions: Any) -> pa.Table:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    rows = table.num_rows
    if isinstance(predictions, pd.DataFrame):
        values = [predictions.iloc[:, i].to_numpy() for i in range(predictions.shape[1])]
    elif isinstance(predictions, dict):
        raise InvalidInput(
            "batch scoring needs a model whose predict returns one value or one row of values "
            "per input row; this one returned a dict of arrays"
        )
    else:
        array = np.asarray(
            predictions.to_numpy() if isinstance(predictions, pd.Series) else predictions
        )
        if array.ndim == 1:
            values = [array]
        elif array.ndim == 2:
            values = [array[:, i] for i in range(array.shape[1])]
        else:
            raise InvalidInput(
                f"batch scoring needs 1-D or 2-D predictions; the model returned shape {array.shape}"
            )
    lengths = {len(v) for v in values}
    if lengths != {rows}:
        raise InvalidInput(
            f"the model returned {sorted(lengths)} predictions for a chunk of {rows} rows; "
            "batch scoring needs one per row"
        )
    names = ["prediction"] if len(values) == 1 else [f"prediction_{i}" for i in range(len(values))]
    try:
        arrays = [pa.array(np.ascontiguousarray(v)) for v in values]
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InvalidInput(
            f"the model's predictions cannot be stored in a table ({exc}); batch scoring needs "
            "numbers, booleans or strings"
        ) from None
    return pa.Table.from_arrays([*(table.column(k) for k in keep), *arrays], names=[*keep, *names])


def _empty_schema(source: Source, plan: _Plan) -> pa.Schema:
    """The output's schema when the input has no rows: from the signature, when it has outputs."""
    import pyarrow as pa

    fields = [source.schema.field(k) for k in plan.keep]
    outputs = plan.outputs or {}
    specs = outputs.get("tensors") or []
    if len(specs) == 1:
        spec = specs[0]
        arrow = _arrow_type(spec["dtype"])
        width = spec["shape"][1] if len(spec["shape"]) == 2 and spec["shape"][1] > 1 else None
        if width is None:
            fields.append(pa.field("prediction", arrow))
        else:
            fields.extend(pa.field(f"prediction_{i}", arrow) for i in range(width))
    elif outputs.get("columns"):
        cols = outputs["columns"]
        names = ["prediction"] if len(cols) == 1 else [f"prediction_{i}" for i in range(len(cols))]
        fields.extend(pa.field(n, _arrow_type(c["type"])) for n, c in zip(names, cols, strict=True))
    else:
        fields.append(pa.field("prediction", pa.null()))
    return pa.schema(fields)


def _arrow_type(name: str) -> pa.DataType:
    import pyarrow as pa

    if name in ("str", "string"):
        return pa.string()
    if name == "bool":
        return pa.bool_()
    if name == "datetime":
        return pa.timestamp("ns")
    try:
        return pa.from_numpy_dtype(name)
    except (TypeError, pa.ArrowException):
        return pa.null()


# -- reading in chunks ---------------------------------------------------------------


def _rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``rows`` rows (the last may be shorter), slicing without copying."""
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def _parquet_batches(
    files: Sequence[Path],
    columns: list[str],
    chunk_rows: int,
    row_groups: Sequence[int] | None = None,
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target: pa.Schema | None = None
    for file in files:
        try:
            parquet = pq.ParquetFile(file)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput(f"cannot read {file} as Parquet: {exc}") from None
        with contextlib.closing(parquet):
            present = set(parquet.schema_arrow.names)
            missing = [c for c in columns if c not in present]
            if missing:
                raise InvalidInput(
                    f"input file {file.name} is missing column(s) "
                    f"{', '.join(map(repr, missing))} that the model or keep_columns need"
                )
            batches = parquet.iter_batches(
                batch_size=chunk_rows,
                columns=columns,
                row_groups=None if row_groups is None else list(row_groups),
            )
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as exc:
                    raise InvalidInput(f"cannot read {file} as Parquet: {exc}") from None
                if target is None:
                    target = batch.schema
                elif not batch.schema.equals(target):
                    batch = _conform(batch, target, file)
                yield batch


def _conform(batch: pa.RecordBatch, target: pa.Schema, file: Path) -> pa.RecordBatch:
    """A later file's batch in the first file's column order and types (lossless casts only)."""
    import pyarrow as pa

    try:
        return batch.select(target.names).cast(target)
    except (pa.ArrowException, KeyError, ValueError) as exc:
        raise InvalidInput(
            f"input file {file.name} has columns of other types than the folder's first file "
            f"({exc}); give every file the same schema"
        ) from None


def _csv_batches(path: Path, plan: _Plan, header: list[str]) -> Iterator[pa.RecordBatch]:
    """The CSV's batches, its features typed from the signature (not the profiling widening)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = {name: _arrow_type(kind) for name, kind in plan.csv_types}
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(include_columns=plan.read, column_types=types),
        )
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(_csv_error(path, exc, header, plan)) from None
    with contextlib.closing(reader):
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as exc:
                raise InvalidInput(_csv_error(path, exc, header, plan)) from None
            yield batch


def _csv_error(path: Path, exc: Exception, header: list[str], plan: _Plan) -> str:
    """pyarrow numbers CSV columns from 0; say which column it is, by name."""
    text = str(exc).strip()
    found = re.search(r"CSV column #(\d+)", text)
    if found and int(found.group(1)) < len(header):
        name = header[int(found.group(1))]
        kinds = dict(plan.csv_types)
        wanted = f" must be {kinds[name]} (the model's signature)" if name in kinds else ""
        return f"cannot read {path.name}: column {name!r}{wanted}: {text}"
    return f"cannot read {path.name} as CSV: {text}"


# -- writing -------------------------------------------------------------------------


class _Writer:
    """Appends tables to one Parquet or CSV file; the first table fixes the schema."""

    def __init__(self, path: Path, kind: FileFormat) -> None:
        self.path = path
        self.kind = kind
        self._writer: Any = None
        self._schema: pa.Schema | None = None

    def write(self, table: pa.Table) -> None:
        import pyarrow as pa

        if self._schema is None:
            self._open(table.schema)
        elif not table.schema.equals(self._schema):
            try:
                table = table.cast(self._schema)
            except (pa.ArrowException, ValueError) as exc:
                raise InvalidInput(
                    f"a chunk's output has types {table.schema.types} where earlier chunks had "
                    f"{self._schema.types} ({exc}); the model must return one type for every chunk"
                ) from None
        try:
            self._writer.write_table(table)
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc}") from None

    def _open(self, schema: pa.Schema) -> None:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        self._schema = schema
        try:
            if self.kind == "parquet":
                self._writer = pq.ParquetWriter(self.path, schema)
            else:
                self._writer = pacsv.CSVWriter(self.path, schema)
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc}") from None

    def close(self, empty_schema: pa.Schema | None = None) -> None:
        """Finish the file; with no table written, write an empty one with ``empty_schema``."""
        if self._writer is None and empty_schema is not None:
            self._open(empty_schema)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None


@contextlib.contextmanager
def _atomic(output: Path) -> Iterator[Path]:
    """A temporary name beside ``output``, renamed to it only if the block succeeds."""
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {output}: {exc}") from exc


def _write_scored(
    model: Any,
    tables: Iterable[pa.Table],
    plan: _Plan,
    path: Path,
    kind: FileFormat,
    empty_schema: pa.Schema | None,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Score each table and append it to ``path``; returns (rows, chunks)."""
    writer = _Writer(path, kind)
    rows = chunks = 0
    try:
        for table in tables:
            writer.write(_score(model, table, plan))
            rows += table.num_rows
            chunks += 1
            if on_chunk is not None:
                on_chunk(table.num_rows)
        writer.close(empty_schema)
    except BaseException:
        writer.abort()
        raise
    return rows, chunks


# -- executors -----------------------------------------------------------------------


def _run_local(
    model: LoadedModel,
    source: Source,
    plan: _Plan,
    output: Path,
    chunk_rows: int,
    counter: _Counter,
) -> tuple[int, int]:
    batches: Iterable[pa.RecordBatch]
    if source.kind == "parquet":
        batches = _parquet_batches(source.files, plan.read, chunk_rows)
    else:
        batches = _csv_batches(source.files[0], plan, source.columns)
    kind = file_format(output)
    assert kind is not None
    with _atomic(output) as tmp:
        return _write_scored(
            model,
            _rechunk(batches, chunk_rows),
            plan,
            tmp,
            kind,
            _empty_schema(source, plan),
            counter.add,
        )


def _settings_for_workers() -> dict[str, str | None]:
    from keel.config import get_settings

    settings = get_settings()
    return {
        "home": str(settings.home),
        "store_url": settings.store_url,
        "artifacts_url": settings.artifacts_url,
        "s3_endpoint_url": settings.s3_endpoint_url,
    }


_worker_state: dict[str, Any] = {}


@dataclass(frozen=True)
class _Task:
    """What a Ray task scores with: a pinned model URI and the runtime the driver chose."""

    uri: str
    runtime: str


def _worker_model(task: _Task, conf: dict[str, str | None]) -> Any:
    """The model, loaded once per worker process and settings (the URI is pinned)."""
    if _worker_state.get("conf") != conf:
        from keel.tracking.fluent import init

        init(
            conf["home"],
            store_url=conf["store_url"],
            artifacts_url=conf["artifacts_url"],
            s3_endpoint_url=conf["s3_endpoint_url"],
        )
        _worker_state.clear()
        _worker_state.update(conf=conf, models={})
    models: dict[_Task, Any] = _worker_state["models"]
    if task not in models:
        from keel.models import load_model

        models[task] = load_model(task.uri, runtime=task.runtime)
    return models[task]


def _score_part(
    task: _Task,
    conf: dict[str, str | None],
    part: Part,
    plan: _Plan,
    chunk_rows: int,
    out: str,
) -> tuple[int, int]:
    """A Ray task: score one part (consecutive row groups of a file) into the Parquet file ``out``."""
    model = _worker_model(task, conf)
    batches = _parquet_batches([Path(part.file)], plan.read, chunk_rows, part.row_groups)
    return _write_scored(model, _rechunk(batches, chunk_rows), plan, Path(out), "parquet", None)


def _run_ray(
    ray: Any,
    model: _Task,
    source: Source,
    plan: _Plan,
    output: Path,
    chunk_rows: int,
    counter: _Counter,
) -> tuple[int, int]:
    import pyarrow.parquet as pq

    join_ray(num_cpus=_LOCAL_RAY_CPUS)
    parts = source.parts(chunk_rows)
    conf = _settings_for_workers()
    task = ray.remote(num_cpus=1, max_retries=0)(_score_part)
    folder = output.with_name(f".{output.name}.{uuid.uuid4().hex[:12]}.parts")
    folder.mkdir()
    files = [folder / f"part-{i:06d}.parquet" for i in range(len(parts))]
    refs = [
        task.remote(model, conf, part, plan, chunk_rows, str(file))
        for part, file in zip(parts, files, strict=True)
    ]
    chunks = 0
    try:
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                rows, count = _ray_result(ray, ref)
                chunks += count
                counter.add(rows)
        kind = file_format(output)
        assert kind is not None
        rows = 0
        with _atomic(output) as tmp:
            writer = _Writer(tmp, kind)
            try:
                for file in files:
                    if not file.is_file():
                        raise StorageError(
                            f"the part file {file.name} a Ray task wrote is not visible here; "
                            "on a cluster the input and the output's folder must be on "
                            "storage every node shares"
                        )
                    with contextlib.closing(pq.ParquetFile(file)) as part_file:
                        for batch in part_file.iter_batches(batch_size=chunk_rows):
                            writer.write(_table(batch))
                            rows += batch.num_rows
                writer.close(_empty_schema(source, plan))
            except BaseException:
                writer.abort()
                raise
        return rows, chunks
    except BaseException:
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _table(batch: pa.RecordBatch) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_batches([batch])


def _ray_result(ray: Any, ref: Any) -> tuple[int, int]:
    """A task's result; its own exception (an InvalidInput naming a column, say) re-raised."""
    try:
        rows, chunks = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise SystemFault(f"a Ray task failed: {exc}") from None
    except ray.exceptions.RayError as exc:
        raise SystemFault(f"a Ray task failed: {exc}") from None
    return int(rows), int(chunks)


# -- progress --------------------------------------------------------------------------


class _Counter:
    """Feeds ``progress`` the rows scored so far; ``finish`` ends it at the total."""

    def __init__(self, progress: Progress | None, total: int | None) -> None:
        self._progress = progress
        self._total = total
        self._done = 0
        self._last: tuple[int, int | None] | None = None

    def start(self) -> None:
        """Report nothing done yet: a bar shows its total before the first chunk is scored."""
        self._report()

    def _report(self) -> None:
        if self._progress is not None:
            self._last = (self._done, self._total)
            self._progress(self._done, self._total)

    def add(self, rows: int) -> None:
        self._done += rows
        self._report()

    def finish(self) -> None:
        """The count is complete: say so once, unless the last call already did."""
        self._total = self._done
        if self._last != (self._done, self._done):
            self._report()
