"""A model's columns as logs and profiles name them, and the reference profile in its package.

Prediction logs and reference profiles name a model's inputs ``input.<column>``
and its outputs ``output.prediction`` (one value per row), ``output.0`` …
(several), or ``output.<name>`` (a DataFrame's columns, a dict's keys).
:func:`log_columns` is that rule, in one place: the server logs by it and the
reference profile is built by it, so live traffic and its reference always
line up column for column.

``keel.log_model(model, ..., reference_data=train_df)`` profiles the data and
the model's predictions on it (:func:`reference_profile`) and stores
``reference-profile.json`` inside the package, so a registered version carries
its drift reference, pinned by digest (see :mod:`keel.monitoring.reference`).
A reference covers the signature's inputs only: a target or id column in the
training data is not something live traffic carries, and profiling it would
report it missing from every window. A version registered without one takes
the profile its run's training dataset already has (:func:`training_reference`).

What a model *is* is a fact of the model, recorded when it is logged
(:func:`describe_task`, ``"task"`` in ``keel-model.json``): a classifier and
its classes, or a regressor. Monitoring scores labels by it
(:func:`recorded_task`) and never infers it from the label values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keel.data.profiling import Profile, open_source, profile
from keel.errors import InvalidInput
from keel.predictions.schema import INPUT_PREFIX, OUTPUT_PREFIX

__all__ = [
    "INPUT_PREFIX",
    "ORIGIN_KEY",
    "OUTPUT_PREFIX",
    "REFERENCE_FILE",
    "TASK_KEY",
    "describe_task",
    "input_columns",
    "log_columns",
    "pinned_metadata",
    "recorded_task",
    "reference_profile",
    "registration_reference",
    "training_reference",
    "write_package_reference",
]

REFERENCE_FILE = "reference-profile.json"
#: In a stored reference profile: the ``datasets:/`` URI it was taken from, when it was.
ORIGIN_KEY = "origin"
#: The key of ``keel-model.json`` that records the model's task (see :func:`describe_task`).
TASK_KEY = "task"
_PREDICT_ROWS = 100_000


def log_columns(prefix: str, value: Any, n: int, name: str | None = None) -> dict[str, Any]:
    """A request's inputs (``prefix="input"``) or a model's outputs (``"output"``) as columns.

    A DataFrame gives a column per column and a dict a column per key; a 2-D
    array a column per position (``output.0`` …); a 1-D array is
    ``output.prediction`` (``input.value``); arrays of more dimensions (and a
    dict's 2-D values) become one column holding a flat list per row. Values
    that are not one per row are left out.
    """
    if hasattr(value, "columns"):  # a DataFrame
        return {f"{prefix}.{c}": value[c].to_numpy() for c in value.columns}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(log_columns(prefix, item, n, str(key)))
        return out
    array = np.asarray(value)
    if array.ndim == 0 or array.shape[0] != n:
        return {}
    single = f"{prefix}.{name or ('prediction' if prefix == 'output' else 'value')}"
    if array.ndim == 1:
        return {single: array}
    if array.ndim == 2 and name is None:
        return {f"{prefix}.{j}": array[:, j] for j in range(array.shape[1])}
    return {single: array.reshape(n, -1)}


def reference_profile(
    data: Any,
    *,
    predict: Callable[[Any], Any] | None = None,
    categorical: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
) -> Profile:
    """Profile ``data`` as a model's inputs and, given ``predict``, its outputs on it.

    Args:
        data: the training or validation features (DataFrame, Arrow table, Parquet/CSV
            path), or a :class:`Profile` (names without ``input.``/``output.`` are inputs).
        predict: called with DataFrame chunks of ``data``; returns the model's output.
        categorical: numeric input columns to treat as categories.
        inputs: the model's input columns (its signature's). Only these are profiled as
            inputs; other columns of ``data`` (a target, an id) are left out.

    Raises:
        InvalidInput: ``data`` lacks one of ``inputs``, or the model cannot predict on it.
    """
    import pyarrow as pa

    if isinstance(data, Profile):
        named = any(n.startswith((INPUT_PREFIX, OUTPUT_PREFIX)) for n in data.columns)
        result = data if named else data.rename(lambda c: INPUT_PREFIX + c)
        if inputs is None:
            return result
        wanted = [INPUT_PREFIX + c for c in inputs]
        _require_inputs([c for c in wanted if c not in result.columns], "the profile")
        predicted = [n for n in result.columns if n.startswith(OUTPUT_PREFIX)]
        return _narrowed(result, [*wanted, *predicted])
    source = open_source(data)
    if inputs is not None:
        _require_inputs([c for c in inputs if c not in source.columns], "the reference data")
    features = profile(
        source, columns=None if inputs is None else list(inputs), categorical=categorical
    ).rename(lambda c: INPUT_PREFIX + c)
    if predict is None:
        return features
    collected: dict[str, list[np.ndarray]] = {}
    for batch in source.batches(_PREDICT_ROWS):
        # The model sees its inputs only: a target column is no business of its predict.
        frame = (batch if inputs is None else batch.select(list(inputs))).to_pandas()
        try:
            output = predict(frame)
        except Exception as exc:
            raise InvalidInput(
                f"the model failed to predict on the reference data ({type(exc).__name__}: "
                f"{exc}); pass data it accepts, or skip the outputs (predict=False)"
            ) from exc
        for column, values in log_columns("output", output, batch.num_rows).items():
            if np.asarray(values).ndim == 1:  # list columns: no drift test reads them
                collected.setdefault(column, []).append(np.asarray(values))
    if not collected:
        return features
    outputs = profile(pa.table({k: _concat(v) for k, v in collected.items()}))
    return Profile(
        features.rows,
        {**features.columns, **outputs.columns},
        {**features.skipped, **outputs.skipped},
    )


def _require_inputs(missing: list[str], where: str) -> None:
    if missing:
        raise InvalidInput(
            f"{where} lacks the model's input column(s) {', '.join(map(repr, missing))}; a "
            "reference describes what the model takes, so pass data with every column of its "
            "signature"
        )


def _concat(parts: list[np.ndarray]) -> Any:
    import pyarrow as pa

    array = np.concatenate(parts)
    if array.dtype.kind == "O":
        return pa.array(array.tolist())
    return pa.array(array)


def write_package_reference(
    folder: Path,
    data: Any,
    predict: Callable[[Any], Any] | None,
    inputs: Sequence[str] | None = None,
) -> Profile:
    """Profile ``data`` (and the model's predictions on it) into a model package folder.

    ``inputs``: the signature's input columns; other columns of ``data`` are left out.
    """
    result = reference_profile(data, predict=predict, inputs=inputs)
    text = json.dumps(result.to_dict(), sort_keys=True, allow_nan=False)
    (folder / REFERENCE_FILE).write_text(text + "\n", encoding="utf-8")
    return result


def input_columns(signature: Any) -> list[str] | None:
    """The input column names of a signature (or its dict); ``None`` for tensors or none."""
    if signature is None:
        return None
    from keel.models.signature import Signature

    try:
        inputs = Signature.from_dict(signature).inputs
    except InvalidInput:
        return None
    return None if inputs.is_tensor else list(inputs.names)


# -- the model's task ------------------------------------------------------------------------


def describe_task(flavor: Any, model: Any, config: dict[str, Any]) -> dict[str, Any] | None:
    """What ``model`` is, from the model object itself, for ``keel-model.json``.

    ``{"type": "classification", "classes": [...]}`` for a model with class labels
    (the flavor's ``classes``: scikit-learn's ``classes_``, LightGBM's recorded
    classes); ``{"type": "regression"}`` for a scikit-learn-API regressor (XGBoost
    and LightGBM included); ``None`` when the model does not say (a booster, an ONNX
    graph, a custom object without ``classes_``).
    """
    try:
        classes = flavor.classes(model, config)
    except Exception:  # a model that cannot answer does not say
        classes = None
    if classes is not None:
        return {"type": "classification", "classes": _jsonable(classes)}
    kind = _estimator_kind(model)
    if kind == "classification":
        return {"type": "classification", "classes": None}
    if kind == "regression":
        return {"type": "regression"}
    return None


def _jsonable(classes: Any) -> list[Any]:
    values = np.asarray(classes).tolist()
    return [v if isinstance(v, bool | int | float | str) else str(v) for v in values]


def _estimator_kind(model: Any) -> str | None:
    if not callable(getattr(model, "fit", None)) or not hasattr(model, "get_params"):
        return None  # not a scikit-learn-API estimator: its kind is not declared
    import warnings

    try:
        from sklearn.base import is_classifier, is_regressor
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if is_classifier(model):
                return "classification"
            if is_regressor(model):
                return "regression"
        except Exception:  # an estimator whose tags cannot be read says nothing
            return None
    return None


def recorded_task(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The task a package records (``keel-model.json`` as a dict), or ``None``.

    Packages logged before the task was recorded still say it where their
    flavor settings do (a LightGBM classifier's classes) or where the signature's
    output is text or booleans (a regressor cannot output them). Nothing is read
    from labels or traffic.
    """
    task = metadata.get(TASK_KEY)
    if isinstance(task, dict) and task.get("type") in ("classification", "regression"):
        return task
    config = metadata.get("flavor_config") or {}
    if isinstance(config.get("classes"), list):
        return {"type": "classification", "classes": config["classes"]}
    outputs = ((metadata.get("signature") or {}).get("outputs") or {}) or {}
    specs = outputs.get("columns") or outputs.get("tensors") or []
    kinds = {spec.get("type") or spec.get("dtype") for spec in specs if isinstance(spec, dict)}
    if len(specs) == 1 and kinds and kinds <= {"string", "str", "bool"}:
        return {"type": "classification", "classes": None}
    return None


# -- a registered version's package and its training data -------------------------------------


def pinned_metadata(artifacts: Any, manifest_digest: str | None) -> dict[str, Any] | None:
    """The ``keel-model.json`` of the package a version pinned (its folder manifest), or ``None``."""
    from keel.models.package import MANIFEST_NAME

    if not manifest_digest:
        return None
    for entry in artifacts.read_manifest(manifest_digest):
        if entry.path == MANIFEST_NAME:
            doc = artifacts.get_json(entry.digest)
            return doc if isinstance(doc, dict) else None
    return None


def training_reference(
    store: Any, artifacts: Any, run_id: str, inputs: Sequence[str]
) -> tuple[Profile, str] | None:
    """The reference a run's training data gives, and that data's ``datasets:/`` URI.

    The candidates are the table versions upstream of the run in the lineage
    graph (what the run read or logged, and what the pipeline steps before it
    read) whose stored profile has every one of ``inputs``. The nearest wins,
    then the one with the most rows (training data outnumbers validation data).
    Its stored profile is reused (nothing is read again) and narrowed to the
    inputs, so the reference carries no target column.

    Returns:
        ``None`` when the run has no such dataset.
    """
    from keel.data import catalog
    from keel.pipelines.lineage import upstream

    wanted = list(inputs)
    if not wanted:
        return None
    graph = upstream(f"runs:/{run_id}", store=store)
    found: list[tuple[int, int, str, Profile]] = []
    for node in graph.nodes.values():
        if node.kind != "dataset":
            continue
        version = catalog.get_version(store, node.uri)
        if version.kind != "table" or not version.profile_digest:
            continue
        try:
            stored = Profile.from_dict(artifacts.get_json(version.profile_digest))
        except InvalidInput:  # a profile this Keel cannot read is no candidate
            continue
        if all(c in stored.columns or c in stored.skipped for c in wanted):
            found.append((node.depth, -stored.rows, version.uri, stored))
    if not found:
        return None
    _, _, uri, stored = min(found, key=lambda f: f[:3])
    return _narrowed(stored, wanted).rename(lambda c: INPUT_PREFIX + c), uri


def _narrowed(profile: Profile, names: Sequence[str]) -> Profile:
    """``profile`` of ``names`` only, with its notes on those it skipped (a type no test
    reads); other columns are not the model's business."""
    kept = profile.select([n for n in names if n in profile.columns])
    return Profile(kept.rows, kept.columns, {k: v for k, v in kept.skipped.items() if k in names})


def registration_reference(
    store: Any, artifacts: Any, run_id: str, manifest_digest: str
) -> tuple[str, int, str] | None:
    """A reference for a version about to be registered from the package ``manifest_digest``.

    ``None`` when the package carries its own (``reference-profile.json``), has no
    columnar signature to say what its inputs are, or its run has no training data
    with a stored profile (:func:`training_reference`). Otherwise the profile is
    stored (with :data:`ORIGIN_KEY` naming the dataset version) and this returns
    its digest, its rows and the dataset's URI.
    """
    entries = artifacts.read_manifest(manifest_digest)
    if any(e.path == REFERENCE_FILE for e in entries):
        return None
    metadata = pinned_metadata(artifacts, manifest_digest)
    inputs = input_columns((metadata or {}).get("signature"))
    if not inputs:
        return None
    found = training_reference(store, artifacts, run_id, inputs)
    if found is None:
        return None
    reference, uri = found
    blob = artifacts.put_json({**reference.to_dict(), ORIGIN_KEY: uri})
    return blob.digest, reference.rows, uri
