"""``export_edge``: a registered version's compiled ONNX form as a folder that runs anywhere.

The folder holds what a device or a browser needs and nothing of Keel::

    model.onnx       the compiled form that passed parity (keel models compile)
    signature.json   inputs (names, types, order, how they feed the graph), outputs,
                     classes, the model's SHA-256 and the registered input example
    predict.py       needs only onnxruntime and numpy: a CLI and predict(records)
    manifest.json    SHA-256 and size of every other file, the model's name and
                     version, the Keel version and the time of the export
    web/             index.html and keel-edge.js running the model with onnxruntime-web
                     from files in the same folder (model.onnx and signature.json too,
                     so web/ can be hosted on its own)

The folder is written beside ``dest`` under a temporary name and renamed into place
once complete, so a failed export leaves nothing half-written. Before that, the
exported ``predict.py`` must answer exactly as Keel's own onnx runtime does on the
version's input example.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import IntegrityError, InvalidInput, NotFound, StorageError
from keel.models.edge.web import find_web_runtime, sha256_file

if TYPE_CHECKING:
    from keel.models.api import LoadedModel

__all__ = ["EDGE_FORMAT", "EdgeBundle", "export_edge"]

#: ``format`` of the exported ``signature.json`` and ``manifest.json``.
EDGE_FORMAT = "keel.edge/v1"
_TEMPLATES = Path(__file__).parent / "templates"
_MODEL = "model.onnx"
_FEEDS = ("matrix", "columns")
#: One-row calls of ``predict.py`` timed at export (after a few warm-up calls).
LATENCY_CALLS = 200
#: How far the exported predict.py's probabilities may stray from Keel's: the same
#: graph on the same onnxruntime gives the same floats; this only absorbs JSON's rounding.
_SAME = 1e-6


@dataclass(frozen=True)
class EdgeBundle:
    """What :func:`export_edge` wrote.

    Attributes:
        path: the folder.
        name: the registered model.
        version: the version exported.
        feed: ``"matrix"`` (one float32 tensor) or ``"columns"`` (one input per column).
        compiled: whether the export compiled the version first.
        files: every file written, relative to ``path``, sorted.
        model_bytes: size of ``model.onnx``.
        web_runtime_bytes: size of the onnxruntime-web files in ``web/`` (0 without it).
        total_bytes: size of everything in the folder.
        onnxruntime_web: the onnxruntime-web release in ``web/``, or ``None`` without it.
        predict_ms_p50: median one-row latency of ``predict.py`` (onnxruntime in this
            Python), in milliseconds; ``None`` when the version has no input example.
        manifest_sha256: SHA-256 of ``manifest.json``, to pin the whole folder.
    """

    path: Path
    name: str
    version: int
    feed: str
    compiled: bool
    files: tuple[str, ...]
    model_bytes: int
    web_runtime_bytes: int
    total_bytes: int
    onnxruntime_web: str | None
    predict_ms_p50: float | None
    manifest_sha256: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``path`` as a string)."""
        doc = asdict(self)
        doc["path"] = str(self.path)
        doc["files"] = list(self.files)
        return doc


def export_edge(
    uri: str,
    dest: str | os.PathLike[str],
    *,
    compile_if_needed: bool = True,
    web: bool = True,
    web_runtime: str | os.PathLike[str] | None = None,
) -> EdgeBundle:
    """Write a registered version's compiled ONNX form into ``dest`` for devices and browsers.

    Args:
        uri: the version: ``models:/name@alias``, ``models:/name/3``, ``name@alias`` or
            ``name/3``.
        dest: a new or empty folder.
        compile_if_needed: compile the version to ONNX first when no compilation of it
            passed parity (``keel models compile``); otherwise refuse, naming the command.
        web: also write the browser bundle (``web/``).
        web_runtime: the folder holding onnxruntime-web's files (default: the copy
            installed with Keel, see :mod:`keel.models.edge.web`).

    Raises:
        InvalidInput: ``dest`` is a file or a non-empty folder; the version cannot be
            compiled (the message says why); its compiled form is not a compiled ONNX
            package.
        NotFound: no such version; no passed compilation and ``compile_if_needed`` is
            false; or, with ``web``, Keel lacks onnxruntime-web's files: then everything
            else is written and the message says so and how to fetch them.
        IntegrityError: the exported ``predict.py`` disagrees with Keel's onnx runtime on
            the input example (nothing is written).
    """
    from keel.client import Client
    from keel.models.api import load_model

    target = _check_dest(dest)
    client = Client()
    mv = client.find_model_version(uri)
    compiled = False
    if client.registry.compiled(mv.name, mv.version, "onnx") is None:
        if not compile_if_needed:
            raise NotFound(
                f"{mv.name} version {mv.version} has no ONNX compilation that passed parity; "
                f"run `keel models compile {mv.name} {mv.version} --to onnx` first, or export "
                "without --no-compile"
            )
        from keel.models.compile import compile_version

        compile_version(mv.name, mv.version, to="onnx", client=client)
        compiled = True
    model = load_model(f"models:/{mv.name}/{mv.version}", runtime="onnx")
    config = dict(model.metadata.get("flavor_config") or {})
    if model.runtime != "onnx" or config.get("feed") not in _FEEDS:
        raise InvalidInput(
            f"{model.uri} is not a compiled ONNX package (flavor {model.flavor!r}, feed "
            f"{config.get('feed')!r}); compile it again with "
            f"`keel models compile {mv.name} {mv.version} --to onnx`"
        )
    runtime_error: NotFound | None = None
    runtime = None
    if web:
        try:
            runtime = find_web_runtime(None if web_runtime is None else Path(web_runtime))
        except NotFound as exc:
            runtime_error = exc

    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        staging.mkdir(parents=True)
        signature = _write_folder(staging, model, config, mv.name, mv.version, runtime)
        manifest_sha256 = _write_manifest(staging, mv.name, mv.version, runtime)
        _check_predict_py(_import_predict(staging), model, signature)
        _move(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    latency = _latency(_import_predict(target), signature["example"])
    files = tuple(
        sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    )
    bundle = EdgeBundle(
        path=target,
        name=mv.name,
        version=mv.version,
        feed=str(config["feed"]),
        compiled=compiled,
        files=files,
        model_bytes=(target / _MODEL).stat().st_size,
        web_runtime_bytes=0 if runtime is None else runtime.size_bytes,
        total_bytes=sum((target / f).stat().st_size for f in files),
        onnxruntime_web=None if runtime is None else runtime.version,
        predict_ms_p50=latency,
        manifest_sha256=manifest_sha256,
    )
    if runtime_error is not None:
        raise NotFound(
            f"wrote {mv.name} version {mv.version} to {target} without the browser bundle: "
            f"{runtime_error}"
        )
    return bundle


def _check_dest(dest: str | os.PathLike[str]) -> Path:
    target = Path(dest).expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        what = "a file" if not target.is_dir() else "not empty"
        raise InvalidInput(f"{target} is {what}; export into a new or empty folder")
    return target


def _move(staging: Path, target: Path) -> None:
    try:
        # rename(2) replaces an empty folder: the export appears whole or not at all
        os.replace(staging, target)
    except OSError as exc:
        raise StorageError(f"cannot move the export into {target}: {exc}") from exc


def _write_folder(
    folder: Path,
    model: LoadedModel,
    config: dict[str, Any],
    name: str,
    version: int,
    runtime: Any,
) -> dict[str, Any]:
    """model.onnx, signature.json, predict.py and (with a runtime) web/; the signature doc."""
    source = model.path / str(config.get("file", _MODEL))
    shutil.copyfile(source, folder / _MODEL)
    signature = _signature(model, config, name, version, sha256_file(folder / _MODEL))
    text = json.dumps(signature, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    (folder / "signature.json").write_text(text, encoding="utf-8")
    shutil.copyfile(_TEMPLATES / "predict.py.txt", folder / "predict.py")
    if runtime is not None:
        web = folder / "web"
        web.mkdir()
        for template in ("index.html", "keel-edge.js"):
            shutil.copyfile(_TEMPLATES / template, web / template)
        for path in (folder / _MODEL, folder / "signature.json", *runtime.files):
            shutil.copyfile(path, web / path.name)
    return signature


def _signature(
    model: LoadedModel, config: dict[str, Any], name: str, version: int, sha256: str
) -> dict[str, Any]:
    feed = config["feed"]
    columns = [str(c) for c in config.get("columns") or []]
    if not columns:
        raise InvalidInput(
            f"{model.uri}: the compiled package names no input columns; compile it again"
        )
    types = config.get("column_types") or {}
    renamed = config.get("input_names") or {}
    inputs = [
        {
            "name": column,
            "type": "float32" if feed == "matrix" else str(types.get(column, "float32")),
            "input": str(renamed.get(column, column)),
        }
        for column in columns
    ]
    classes = config.get("classes")
    return {
        "format": EDGE_FORMAT,
        "model": {
            "name": name,
            "version": version,
            "file": _MODEL,
            "sha256": sha256,
            "flavor": (config.get("source") or {}).get("flavor"),
        },
        "task": config.get("task"),
        "feed": feed,
        **({"input_name": config["input_name"]} if feed == "matrix" else {}),
        "inputs": inputs,
        "outputs": {"label": config["label_output"], "proba": config.get("proba_output")},
        "classes": None if classes is None else list(classes),
        "signature": model.metadata.get("signature"),
        "example": _example_records(model.metadata.get("input_example"), columns),
    }


def _example_records(doc: dict[str, Any] | None, columns: list[str]) -> list[Any] | None:
    """The registered input example as JSON records (lists for an array example)."""
    if not doc:
        return None
    if doc.get("type") == "dataframe":
        return [
            {c: v for c, v in zip(doc["columns"], row, strict=True) if c in columns}
            for row in doc["data"]
        ]
    if doc.get("type") == "ndarray":
        return list(doc["data"])
    return None


def _write_manifest(folder: Path, name: str, version: int, runtime: Any) -> str:
    from keel import __version__

    files = {
        path.relative_to(folder).as_posix(): {
            "sha256": sha256_file(path),
            "size": path.stat().st_size,
        }
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    doc = {
        "format": EDGE_FORMAT,
        "model": {"name": name, "version": version, "uri": f"models:/{name}/{version}"},
        "keel_version": __version__,
        "onnxruntime_web": None if runtime is None else runtime.version,
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "files": files,
    }
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")
    (folder / "manifest.json").write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _import_predict(folder: Path) -> Any:
    """The folder's ``predict.py`` as a fresh module (not registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(
        f"keel_edge_predict_{uuid.uuid4().hex}", folder / "predict.py"
    )
    if spec is None or spec.loader is None:  # pragma: no cover - a file path always has a spec
        raise StorageError(f"cannot import {folder / 'predict.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_predict_py(predict: Any, model: LoadedModel, signature: dict[str, Any]) -> None:
    """The exported predict.py must answer as Keel's onnx runtime does on the example."""
    example = model.input_example
    records = signature["example"]
    if example is None or not records:
        return
    answer = predict.run(records)
    expected = np.asarray(model.predict(example)).reshape(len(records), -1)[:, 0].tolist()
    problem = None
    if answer["predictions"] != expected:
        problem = f"labels {answer['predictions']} where Keel predicts {expected}"
    elif "probabilities" in answer:
        proba = np.asarray(model.predict_proba(example), dtype=float)
        gap = float(np.max(np.abs(np.asarray(answer["probabilities"]) - proba)))
        if gap > _SAME:
            problem = f"probabilities {gap:.2g} away from Keel's"
    if problem is not None:
        raise IntegrityError(
            f"the exported predict.py answers differently from Keel's onnx runtime on the "
            f"input example of {model.uri} ({problem}); nothing was written. Report this "
            "with the model's flavor and keel-model.json"
        )


def _latency(predict: Any, records: list[Any] | None) -> float | None:
    """Median milliseconds of a one-row ``predict`` call, after warm-up calls."""
    if not records:
        return None
    return _one_row_ms(predict.predict, records[0], LATENCY_CALLS)


def _one_row_ms(call: Callable[[list[Any]], Any], record: Any, calls: int) -> float:
    """Median milliseconds of ``call([record])`` over ``calls`` calls, after 10 warm-up calls."""
    batch = [record]
    for _ in range(10):
        call(batch)
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        call(batch)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000.0
