"""``keel models compile``: a registered version's compiled form, checked and recorded.

:func:`compile_version` loads the version's pinned package, converts the model
(:mod:`~keel.models.compile.onnx`, :mod:`~keel.models.compile.treelite`),
writes the compiled form as an ordinary Keel package (the same signature and
input example, flavor ``onnx`` or ``treelite``), loads that back the way
serving does, and measures parity on the version's own rows
(:mod:`~keel.models.compile.parity`). The package and the parity report go to
the client's artifact store first (the blob routes, through ``keel server``),
then the registry records the compilation, which also links the package to the
version in the lineage graph and audits it.

Every outcome that says something about the model is recorded: a compiled form
that passed, one that failed parity (stored, so it can be inspected, but never
chosen by ``--runtime auto``), and a conversion the converter refused (no
package; the report says why). Only the first returns; the others raise
:class:`~keel.errors.InvalidInput` with the reason.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from keel.errors import InvalidInput, PermissionDenied
from keel.models.compile.conversion import (
    Converted,
    ModelFacts,
    Refused,
    check_target_libraries,
    model_classes,
)
from keel.models.compile.parity import THRESHOLD, TOLERANCE, measure, ms_per_row, parity_rows

if TYPE_CHECKING:
    from collections.abc import Sequence

    from keel.client import Client
    from keel.models.api import LoadedModel
    from keel.registry.entities import ModelCompilation, ModelVersion

__all__ = ["CompileResult", "compile_on_register", "compile_version"]

#: LightGBM and XGBoost objectives whose predictions are values, not class scores.
_REGRESSION_OBJECTIVES = (
    "regression",
    "reg:",
    "huber",
    "fair",
    "poisson",
    "quantile",
    "mape",
    "gamma",
    "tweedie",
    "count:",
    "survival:",
)


@dataclass(frozen=True)
class CompileResult:
    """A compilation that passed parity.

    Attributes:
        compilation: the registry's record of it.
        report: the parity report (also in the artifact store, ``report_digest``).
        package_digest: the compiled package's folder manifest in the artifact store.
    """

    compilation: ModelCompilation
    report: dict[str, Any]
    package_digest: str | None

    @property
    def passed(self) -> bool:
        return self.compilation.passed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.compilation), "report": self.report}


def compile_version(
    name: str,
    version: int,
    *,
    to: str = "onnx",
    data: Any = None,
    trust: Sequence[str] | None = None,
    client: Client | None = None,
) -> CompileResult:
    """Compile ``models:/name/version`` to ``to`` and record it if its parity holds.

    Args:
        name: the registered model.
        version: the version number.
        to: ``"onnx"`` (skl2onnx, onnxmltools; run by onnxruntime) or ``"treelite"``
            (tree ensembles; run by treelite's GTIL).
        data: rows to check parity on besides the input example: a DataFrame, a CSV or
            Parquet path, or a ``datasets:/`` URI. Default: the dataset the version's
            reference profile came from, else its run's training table.
        trust: names the loader trusts beyond its built-in list, for a model that needs
            them (a custom transformer).
        client: the client to work through (default ``keel.Client()``).

    Returns:
        The recorded compilation, its parity report and the compiled package's digest.

    Raises:
        InvalidInput: an unknown target or a missing converter library (nothing is
            recorded); unusable ``data`` or no rows at all (nothing is recorded); a model
            or step the converter refuses (recorded as failed, without a package); or
            parity that fails (recorded as failed, with the package and the figures).
        PermissionDenied: the model needs a type nothing trusts (see ``trust``).
        NotFound: no such version.
    """
    from keel.client import Client
    from keel.models.api import load_model
    from keel.registry.compilations import check_target

    target = check_target(to)
    check_target_libraries(target)
    client = client or Client()
    mv = client.registry.get_model_version(name, version)
    if not mv.manifest_digest:
        raise InvalidInput(
            f"{mv.uri} pins no package manifest; register the model again to compile it"
        )
    with tempfile.TemporaryDirectory(prefix="keel-compile-") as tmp:
        source = Path(tmp) / "native"
        client.artifacts.get_dir(mv.manifest_digest, source)
        try:
            native = load_model(str(source), trust=trust)
        except PermissionDenied as exc:  # name the version, not the temporary folder
            raise PermissionDenied(
                f"{mv.uri}: {str(exc).removeprefix(f'{source}: ')} To compile it: "
                f"keel models compile {mv.name} {mv.version} --trust NAME"
            ) from None
        if native.signature is None:
            _refused(client, mv, target, _no_signature(mv), [])
        rows = parity_rows(client, mv, native.signature, native.input_example, data)
        try:
            facts = _facts(native, rows.data)
            converted = _convert(target, facts)
        except Refused as exc:
            _refused(client, mv, target, exc.reason, rows.sources)
        folder = Path(tmp) / "compiled"
        _write_package(folder, converted, facts, native.metadata, mv)
        compiled = load_model(str(folder))
        figures = measure(native, compiled, rows.data, facts.task)
        first = rows.data[:1] if isinstance(rows.data, np.ndarray) else rows.data.iloc[:1]
        report = _report(mv, target, figures)
        report.update(
            data=rows.sources,
            excluded_rows=rows.excluded,
            task=facts.task,
            native_flavor=facts.flavor,
            converter=converted.converter,
            size_bytes=converted.size_bytes,
            native_ms_per_row=ms_per_row(native, first),
            compiled_ms_per_row=ms_per_row(compiled, first),
        )
        package, _ = client.artifacts.put_dir(folder)
    report = _jsonable(report)
    compilation = _record(client, mv, target, report, package.digest)
    if not compilation.passed:
        raise InvalidInput(
            f"{mv.uri} compiled to {target}, but {report['reason']}; recorded as a failed "
            "compilation, so the version keeps serving natively"
        )
    return CompileResult(compilation, report, package.digest)


def compile_on_register(client: Client, version: ModelVersion) -> None:
    """Compile a just-registered version when the ``compile_on_register`` setting asks.

    A version that already has a compilation to the target (the same package registered
    again answers the version that holds it) is left alone. A failure only warns: the
    version is registered, and serves natively.
    """
    target = client.transport.settings.compile_on_register
    if not target:
        return
    from keel.models.warning import warn

    done = client.registry.list_compilations(version.name, version.version)
    if any(c.target == target for c in done):
        return
    try:
        compile_version(version.name, version.version, to=target, client=client)
    except Exception as exc:  # registration stands whatever the compiler does
        warn(
            f"{version.uri} is registered, but compiling it to {target} on registration "
            f"failed: {exc}",
            stacklevel=4,
        )


# -- the steps -------------------------------------------------------------------------------


def _facts(native: LoadedModel, rows: Any) -> ModelFacts:
    """What the converters need to know of the loaded version."""
    from keel.models.reference import recorded_task

    assert native.signature is not None
    classes = model_classes(native.classes_)
    task = (recorded_task(native.metadata) or {}).get("type")
    if classes is not None:
        task = "classification"
    elif task is None:
        task = _booster_task(native.native)
    if task not in ("classification", "regression"):
        raise Refused(
            "the model does not say whether it is a classifier or a regressor (no classes, "
            "no recorded task); log it with the scikit-learn API to compile it"
        )
    sample = rows[:1] if isinstance(rows, np.ndarray) else rows.iloc[:1]
    dtype = np.asarray(native.predict(sample)).dtype
    if dtype.kind in "SU" and classes is not None:  # one row's label may be the shortest
        dtype = np.result_type(dtype, np.asarray(classes).dtype)
    return ModelFacts(
        native=native.native,
        flavor=native.flavor,
        signature=native.signature,
        task=task,
        classes=classes,
        prediction_dtype=dtype.str,
    )


def _booster_task(model: Any) -> str | None:
    """A bare XGBoost or LightGBM booster's task, from its objective."""
    objective = None
    if type(model).__module__.startswith("lightgbm"):
        objective = str(model.dump_model(num_iteration=0).get("objective", ""))
    elif type(model).__module__.startswith("xgboost"):
        config = json.loads(model.save_config())
        objective = str(config["learner"]["objective"]["name"])
    if not objective:
        return None
    return "regression" if objective.startswith(_REGRESSION_OBJECTIVES) else "classification"


def _convert(target: str, facts: ModelFacts) -> Converted:
    if target == "onnx":
        from keel.models.compile.onnx import to_onnx

        return to_onnx(facts)
    from keel.models.compile.treelite import to_treelite

    return to_treelite(facts)


def _no_signature(mv: ModelVersion) -> str:
    return (
        f"{mv.uri} records no signature, so nothing says what its compiled form takes; "
        "log the model with an input_example (or signature=) and register it again"
    )


def _write_package(
    folder: Path,
    converted: Converted,
    facts: ModelFacts,
    metadata: dict[str, Any],
    mv: ModelVersion,
) -> None:
    """An ordinary Keel package: the compiled files and the version's signature and example."""
    from keel.models.package import build_manifest, detect_requirements, file_table, write_manifest
    from keel.models.reference import TASK_KEY

    folder.mkdir()
    for file_name, data in converted.files.items():
        (folder / file_name).write_bytes(data)
    config = {
        **converted.config,
        "classes": facts.classes,
        "task": facts.task,
        "prediction_dtype": facts.prediction_dtype,
        "source": {"model": mv.name, "version": mv.version, "flavor": facts.flavor},
    }
    doc = build_manifest(
        flavor=converted.flavor,
        flavor_config=config,
        signature=metadata.get("signature"),
        input_example=metadata.get("input_example"),
        files=file_table(folder),
        requirements=detect_requirements((*converted.requirements, "numpy")),
    )
    if metadata.get(TASK_KEY) is not None:  # monitoring scores labels by it
        doc[TASK_KEY] = metadata[TASK_KEY]
    write_manifest(folder, doc)


def _report(mv: ModelVersion, target: str, figures: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": mv.name,
        "version": mv.version,
        "target": target,
        **figures,
        "tolerance": TOLERANCE,
        "threshold": THRESHOLD,
    }


def _refused(
    client: Client, mv: ModelVersion, target: str, reason: str, sources: list[str]
) -> NoReturn:
    """Record a conversion that could not be made, then raise with its reason."""
    report = _report(
        mv,
        target,
        {
            "rows": 0,
            "class_agreement": None,
            "max_abs_diff": None,
            "within_tolerance": None,
            "passed": False,
            "reason": reason,
        },
    )
    report.update(
        data=sources,
        converter=None,
        size_bytes=None,
        native_ms_per_row=None,
        compiled_ms_per_row=None,
    )
    _record(client, mv, target, _jsonable(report), None)
    raise InvalidInput(f"{mv.uri} cannot be compiled to {target}: {reason}")


def _record(
    client: Client,
    mv: ModelVersion,
    target: str,
    report: dict[str, Any],
    package_digest: str | None,
) -> ModelCompilation:
    # the report is an artifact: stored first (through the blob routes on a server), so
    # the compilation's row only ever names bytes that are there
    blob = client.artifacts.put_json(report)
    return client.registry.record_compilation(
        mv.name,
        mv.version,
        target=target,
        passed=bool(report["passed"]),
        package_digest=package_digest,
        report_digest=blob.digest,
    )


def _jsonable(report: dict[str, Any]) -> dict[str, Any]:
    """The report with every figure a finite JSON number (or ``None``)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not np.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {k: clean(v) for k, v in report.items()}
