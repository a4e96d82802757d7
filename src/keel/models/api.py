"""``log_model`` and ``load_model``: model packages stored with runs.

Logging writes the package to a temporary folder and stores it with the
active run under ``name``. Loading resolves the URI (a registered version
loads the files the registry pinned), reads the package's ``keel-model.json``
from the artifact store, checks that the stored files are exactly the ones it
lists with the digests it records, and then either reuses the copy cached
under ``<home>/cache/models/<manifest digest>`` after re-hashing every file,
or downloads the files (the store re-hashes each one as it streams it). Only
then does the flavor deserialize anything, and only what the loader trusts:
the package states what it needs, the flavor's built-in list and the caller's
``trust=`` (with the ``trusted_types`` setting) decide (see
:mod:`keel.models.trust`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from keel.artifacts import hash_bytes, hash_file
from keel.config import get_settings
from keel.errors import Conflict, IntegrityError, InvalidInput, NotFound, PermissionDenied
from keel.models import example as examples
from keel.models.flavors import Flavor, detect_flavor, get_flavor
from keel.models.flavors.mlflow import MLMODEL, mlflow_manifest
from keel.models.package import (
    MANIFEST_NAME,
    Package,
    build_manifest,
    detect_requirements,
    file_table,
    merge_requirements,
    parse_manifest,
    requirement_mismatches,
    verify_folder,
    write_manifest,
)
from keel.models.runtimes import (
    COMPILED,
    NATIVE_REQUESTED,
    RuntimeChoice,
    check_runtime,
    choose_runtime,
)
from keel.models.signature import Signature, enforce, infer_schema
from keel.models.trust import loader_trust
from keel.models.warning import warn
from keel.tracking.client import TrackingClient
from keel.tracking.entities import ArtifactEntry
from keel.tracking.fluent import active_run
from keel.tracking.remote import tracking_for
from keel.uris import MODELS, RUNS, parse_run_uri, scheme_of

__all__ = ["LoadedModel", "ModelInfo", "load_model", "log_model"]

_ALWAYS_REQUIRED = ("numpy", "pandas")


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`log_model` stored.

    Attributes:
        uri: ``runs:/<run_id>/<artifact_path>``, for :func:`load_model`.
        run_id: the run the package belongs to.
        artifact_path: the package's folder among the run's artifacts.
        flavor: ``sklearn``, ``xgboost``, ``lightgbm``, ``onnx`` or ``python``.
        signature: the recorded signature, if any.
        manifest_digest: BLAKE3 of the package's ``keel-model.json`` bytes (also
            its key in the artifact store). That file lists every other file's
            digest, so this one digest pins the whole package.
    """

    uri: str
    run_id: str
    artifact_path: str
    flavor: str
    signature: Signature | None
    manifest_digest: str


def log_model(
    model: Any,
    name: str = "model",
    input_example: Any = None,
    signature: Signature | Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    *,
    allow_pickle: bool = False,
    flavor: str | None = None,
    reference_data: Any = None,
) -> ModelInfo:
    """Store ``model`` as a package with the active run.

    Args:
        model: a scikit-learn estimator, an XGBoost or LightGBM model, an ONNX
            model (proto, bytes or ``.onnx`` path), or any object with ``predict``.
        name: the package's folder among the run's artifacts; must be unused.
        input_example: a few rows the model accepts; the first 10 are stored, and
            unless ``signature`` is given the signature is inferred from them
            (outputs by running the model on them).
        signature: a :class:`Signature` or its ``to_dict()``; checked against
            ``input_example`` when both are given.
        requirements: extra ``name==version`` (or other PEP 508) strings recorded
            as given; one naming a detected distribution replaces its detected pin.
        allow_pickle: let the python flavor pickle an object that has no
            ``keel_save``/``keel_load``; loading it will need ``allow_pickle=True`` too.
        flavor: force a flavor instead of detecting it from the model's type.
        reference_data: the training (or validation) features. Their profile and
            the profile of the model's predictions on them are stored in the
            package (``reference-profile.json``) as the drift reference that
            monitoring compares this model's traffic with. An inferred signature also
            lets the columns where they hold missing values take them (``allow_missing``);
            a model that handles missing values itself (scikit-learn's ``allow_nan`` tag,
            XGBoost, LightGBM) takes them in every column.

    Raises:
        InvalidInput: no active run, a model no flavor stores, a bad argument.
        Conflict: the run already has artifacts under ``name``.
    """
    run = active_run()
    if run is None:
        raise InvalidInput("log_model needs an active run; call it inside `with keel.start_run():`")
    artifact_path = _check_artifact_path(name)
    chosen = detect_flavor(model, flavor)
    if not isinstance(allow_pickle, bool):
        raise InvalidInput(f"allow_pickle must be True or False, got {allow_pickle!r}")
    given_signature = None if signature is None else Signature.from_dict(signature)
    example_doc = None if input_example is None else examples.encode_example(input_example)

    client = tracking_for()
    if _package_entries(client.list_artifacts(run.id, artifact_path), artifact_path):
        raise Conflict(
            f"run {run.id} already has artifacts under {artifact_path!r}; "
            "log the model under another name="
        )
    with tempfile.TemporaryDirectory(prefix="keel-model-") as tmp:
        folder = Path(tmp)
        config = chosen.save(model, folder, allow_pickle=allow_pickle)
        resolved = _resolve_signature(chosen, model, config, input_example, given_signature)
        if resolved is not None and given_signature is None and chosen.takes_missing(model):
            resolved = resolved.allowing_missing()
        if reference_data is not None:  # the drift reference travels with the package
            from keel.models.reference import input_columns, write_package_reference

            runnable = chosen.runnable(model, config)
            inputs = None if resolved is None else resolved.inputs

            def predict(frame: Any) -> Any:
                if inputs is not None:  # missing values: the training data decides, below
                    given = frame.to_numpy() if inputs.is_tensor else frame
                    frame = enforce(inputs, given, check_missing=False)
                return chosen.predict(runnable, frame, config)

            reference = write_package_reference(
                folder, reference_data, predict, inputs=input_columns(resolved)
            )
            if resolved is not None and given_signature is None:
                resolved = resolved.with_missing_from(reference)
        detected = detect_requirements((*chosen.requirements(config), *_ALWAYS_REQUIRED))
        doc = build_manifest(
            flavor=chosen.name,
            flavor_config=config,
            signature=None if resolved is None else resolved.to_dict(),
            input_example=example_doc,
            files=file_table(folder),
            requirements=merge_requirements(detected, requirements),
        )
        from keel.models.reference import TASK_KEY, describe_task

        task = describe_task(chosen, model, config)  # monitoring scores labels by it
        if task is not None:
            doc[TASK_KEY] = task
        digest = write_manifest(folder, doc)
        client.log_artifacts(run.id, folder, artifact_path=artifact_path)
    return ModelInfo(
        uri=f"runs:/{run.id}/{artifact_path}",
        run_id=run.id,
        artifact_path=artifact_path,
        flavor=chosen.name,
        signature=resolved,
        manifest_digest=digest,
    )


def _check_artifact_path(name: Any) -> str:
    if not isinstance(name, str) or not name.strip("/ "):
        raise InvalidInput(f"name must be a non-empty relative path like 'model', got {name!r}")
    path = PurePosixPath(name.strip("/"))
    if any(part in ("..", ".") for part in path.parts) or "\\" in name:
        raise InvalidInput(f"name must be a relative path without '.' or '..', got {name!r}")
    return path.as_posix()


def _resolve_signature(
    flavor: Flavor,
    model: Any,
    config: dict[str, Any],
    input_example: Any,
    given: Signature | None,
) -> Signature | None:
    if input_example is None:
        if given is not None:
            return given
        declared = flavor.default_signature(model)
        return None if declared is None else Signature.from_dict(declared)
    inputs = given.inputs if given is not None else infer_schema(input_example)
    # The example must satisfy the signature it came with, and is what the model will see.
    try:
        shaped = enforce(inputs, examples.head(input_example))
    except InvalidInput as exc:
        raise InvalidInput(f"input_example does not match the signature: {exc}") from None
    if given is not None:
        return given
    try:
        output = flavor.predict(flavor.runnable(model, config), shaped, config)
    except Exception as exc:
        raise InvalidInput(
            f"the model failed on input_example ({type(exc).__name__}: {exc}); pass an "
            "example it accepts, or signature= without an example"
        ) from exc
    try:
        outputs = infer_schema(output)
    except InvalidInput:
        outputs = None  # an output no schema describes still leaves a useful input schema
    return Signature(inputs, outputs)


# -- loading ------------------------------------------------------------------------


class LoadedModel:
    """A verified, loaded model package.

    Attributes:
        flavor: the package's flavor name.
        metadata: the package's ``keel-model.json`` as a dict.
        signature: the recorded signature, or ``None``.
        path: the local folder holding the verified package.
        uri: the URI it was loaded from; for a compiled form, the version and the
            runtime (``models:/cancer/3 (onnx)``).
        runtime: ``"native"`` (the package as logged), ``"onnx"`` or ``"treelite"``
            (a compiled form that passed parity; see :mod:`keel.models.runtimes`).
        runtime_reason: why that runtime, in one short line.
    """

    def __init__(
        self,
        native: Any,
        flavor: Flavor,
        metadata: dict[str, Any],
        path: Path,
        uri: str,
        *,
        runtime: str = "native",
        runtime_reason: str = NATIVE_REQUESTED,
    ) -> None:
        self._native = native
        self._flavor = flavor
        self._config = dict(metadata.get("flavor_config") or {})
        self.metadata = metadata
        self.path = path
        self.uri = uri
        self.runtime = runtime
        self.runtime_reason = runtime_reason
        sig = metadata.get("signature")
        self.signature = None if sig is None else Signature.from_dict(sig)
        self._matrix: bool | None = None  # decided on the first predict

    def _as_matrix(self) -> bool:
        """Whether to hand the native model one 2-D array instead of a DataFrame.

        Only for all-numeric columnar signatures, flavors that accept arrays,
        and after the stored input example predicts the same both ways: a
        pipeline that selects columns by name needs its DataFrame.
        """
        if self._matrix is None:
            self._matrix = False
            signature = self.signature
            if (
                signature is not None
                and signature.inputs.is_numeric
                and self._flavor.takes_matrix(self._native, self._config)
            ):
                self._matrix = _same_on_example(self, signature)
        return self._matrix

    @property
    def flavor(self) -> str:
        return self._flavor.name

    @property
    def native(self) -> Any:
        """The model object the flavor loaded (an estimator, a Booster, an ONNX session)."""
        return self._native

    @property
    def input_example(self) -> Any:
        """The stored input example (its first rows), rebuilt, or ``None``."""
        return examples.decode_example(self.metadata.get("input_example"))

    def check_input(self, data: Any) -> Any:
        """``data`` checked against the signature, in the form :meth:`predict` hands the model.

        That is a DataFrame with the signature's columns, or one 2-D array when
        the signature is all-numeric and the flavor takes arrays. Passing the
        result to :meth:`predict` checks it again at almost no cost.

        Raises:
            InvalidInput: missing columns, or a type that does not widen safely.
        """
        if self.signature is None:
            return data
        return enforce(self.signature.inputs, data, as_matrix=self._as_matrix())

    def predict(self, data: Any) -> Any:
        """Predict on ``data`` after checking it against the signature.

        Accepts a DataFrame, a dict of columns, a list of records or a 2-D
        array (mapped to the signature's columns by position) for columnar
        signatures; an array or a dict of arrays for tensor signatures.

        Raises:
            InvalidInput: missing columns, or a type that does not widen safely.
        """
        if self.signature is not None:  # not via check_input: warnings point at the caller
            data = enforce(self.signature.inputs, data, as_matrix=self._as_matrix())
        return self._flavor.predict(self._native, data, self._config)

    def predict_proba(self, data: Any) -> Any:
        """Class probabilities (one column per class, in :attr:`classes_` order).

        Raises:
            InvalidInput: the model gives no probabilities (a regressor, or a
                classifier without ``predict_proba``), or ``data`` breaks the signature.
        """
        if self.signature is not None:
            data = enforce(self.signature.inputs, data, as_matrix=self._as_matrix())
        proba = self._flavor.predict_proba(self._native, data, self._config)
        if proba is None:
            raise InvalidInput(
                f"the {self.flavor} model at {self.uri} gives no class probabilities"
            )
        return proba

    @property
    def classes_(self) -> Any:
        """The classifier's labels in probability-column order, or ``None``."""
        return self._flavor.classes(self._native, self._config)

    def unwrap(self) -> Any:
        """The native model: the estimator, booster, ``InferenceSession`` or Python object."""
        return self._native

    def __repr__(self) -> str:
        return f"<LoadedModel {self.uri} flavor={self.flavor} runtime={self.runtime}>"


def _same_on_example(model: LoadedModel, signature: Signature) -> bool:
    example = model.input_example
    if example is None:
        return False
    flavor, native, config = model._flavor, model._native, model._config
    try:
        frame = enforce(signature.inputs, example)
        matrix = enforce(signature.inputs, example, as_matrix=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = np.asarray(flavor.predict(native, frame, config))
            got = np.asarray(flavor.predict(native, matrix, config))
    except Exception:  # the array path does not work for this model: keep DataFrames
        return False
    if expected.shape != got.shape or expected.dtype != got.dtype:
        return False
    return bool(np.array_equal(expected, got, equal_nan=expected.dtype.kind in "fc"))


def load_model(
    uri: str | os.PathLike[str],
    *,
    allow_pickle: bool = False,
    trust: Sequence[str] | None = None,
    dst: str | os.PathLike[str] | None = None,
    runtime: str = "native",
) -> LoadedModel:
    """Load a model package after verifying every file against its recorded digest.

    Args:
        uri: ``runs:/<run_id>/<path>``, ``models:/<name>@<alias>``,
            ``models:/<name>/<version>`` or ``models:/<name>/latest`` (resolved by
            the registry, loading the files it pinned at registration), or a local
            package folder (checked for consistency with its own ``keel-model.json``).
        allow_pickle: load a python-flavor package stored as a pickle. Unpickling
            runs code, so only set it for packages whose author you trust.
        trust: dotted names of types and functions (``['mymodule.my_function']``)
            this load trusts beyond the built-in list, on top of the
            ``trusted_types`` setting. A package only states what it needs
            (``flavor_config.trusted_types``); each name it needs that nothing
            trusts is refused before anything is imported. Only name what you
            know: a trusted name may be imported and called when the model loads.
        dst: download the package into this (new or empty) folder instead of
            the cache under ``<home>/cache/models``.
        runtime: for a ``models:/`` URI, ``"native"`` loads the version's package as
            logged; ``"onnx"`` or ``"treelite"`` its newest compiled form of that
            target that passed parity (``keel models compile``); ``"auto"`` onnx,
            else treelite, else native. Other URIs load as logged under
            ``"native"`` and ``"auto"``. The model's :attr:`~LoadedModel.runtime`
            and :attr:`~LoadedModel.runtime_reason` say what was chosen and why.

    Raises:
        InvalidInput: a malformed URI, an unknown ``runtime``, or a compiled runtime
            asked for a URI that is not a registered version.
        NotFound: no run, or no package at that path; or no compilation to the
            ``runtime`` asked for passed parity (the message names the command).
        PermissionDenied: a pickled package without ``allow_pickle=True``, or a
            package that needs a type or function nothing trusts (the message
            names them and the ``trust=``, ``--trust`` or setting that trusts them).
        IntegrityError: a file that differs from its recorded digest, a file the
            package does not list, or one missing; the message names the file,
            and nothing was deserialized.
    """
    text = os.fspath(uri) if isinstance(uri, str | os.PathLike) else None
    if text is None:
        raise InvalidInput(f"expected a model URI string, got {type(uri).__name__}")
    trusted = loader_trust(trust)
    runtime = check_runtime(runtime)
    scheme = scheme_of(text)
    choice = RuntimeChoice("native", NATIVE_REQUESTED)
    if scheme != MODELS and runtime in COMPILED:
        raise InvalidInput(
            f"runtime={runtime!r} loads the compiled form of a registered version "
            f"(models:/<name>/<version>), got {text!r}; register the model, then run "
            f"`keel models compile NAME VERSION --to {runtime}`"
        )
    if scheme != MODELS and runtime == "auto":
        choice = RuntimeChoice("native", "not a registered version: loaded as logged")
    if scheme == MODELS:
        from keel.client import Client

        # A registered version pins its files; load those, not whatever the run holds now.
        client = Client()
        resolved = client.resolve_model(text)
        where, pinned = f"{text} ({resolved.runs_uri})", resolved.manifest_digest
        if runtime != "native" and resolved.name is not None and resolved.version is not None:
            choice = choose_runtime(client.registry, resolved.name, resolved.version, runtime)
        if choice.package_digest is not None:  # the compiled form lives in the same store
            text = f"models:/{resolved.name}/{resolved.version} ({choice.runtime})"
            where, pinned = text, choice.package_digest
        package, flavor = _fetch_package(
            where,
            resolved.run_id,
            resolved.artifact_path,
            pinned,
            allow_pickle,
            trusted,
            dst,
        )
        if choice.package_digest is not None and flavor.name != choice.runtime:
            raise IntegrityError(
                f"{where}: the compiled package is of flavor {flavor.name!r}, not "
                f"{choice.runtime!r} as its compilation recorded; nothing was loaded. "
                "Compile the version again"
            )
    elif scheme == RUNS:
        run = parse_run_uri(text, path=True)
        path = _check_artifact_path(run.path)
        package, flavor = _fetch_package(text, run.run_id, path, None, allow_pickle, trusted, dst)
    elif "://" not in text and ":/" not in text and Path(text).is_dir():
        package, flavor = _open_local_package(Path(text), allow_pickle, trusted)
    else:
        raise InvalidInput(
            "expected a model URI like runs:/<run_id>/<path>, models:/<name>@<alias> or "
            f"a local package folder, got {text!r}"
        )
    problems = requirement_mismatches(package.metadata)
    if problems:
        warn(
            f"{text} was saved with {', '.join(problems)}; it may load or predict "
            "differently here. Install the recorded versions to reproduce it exactly",
            stacklevel=3,
        )
    with _naming(text):
        native = flavor.load(package, allow_pickle=allow_pickle, trust=trusted)
    return LoadedModel(
        native,
        flavor,
        package.metadata,
        package.folder,
        text,
        runtime=choice.runtime,
        runtime_reason=choice.reason,
    )


@contextlib.contextmanager
def _naming(where: str) -> Iterator[None]:
    """Prefix a refusal with the model it concerns: one server may load several."""
    try:
        yield
    except PermissionDenied as exc:
        raise PermissionDenied(f"{where}: {exc}") from None


def _package_entries(entries: list[ArtifactEntry], path: str) -> dict[str, tuple[str, int]]:
    """``{path inside the package: (digest, size)}`` for the entries strictly under ``path``."""
    prefix = path + "/"
    return {e.path[len(prefix) :]: (e.digest, e.size) for e in entries if e.path.startswith(prefix)}


def _flavor_of(metadata: dict[str, Any], where: str) -> Flavor:
    try:
        return get_flavor(metadata.get("flavor"))  # type: ignore[arg-type]
    except InvalidInput:
        raise InvalidInput(
            f"{where} has flavor {metadata.get('flavor')!r}, which this Keel cannot load; "
            "upgrade Keel"
        ) from None


def _open_local_package(
    folder: Path, allow_pickle: bool, trust: frozenset[str]
) -> tuple[Package, Flavor]:
    where = str(folder)
    try:
        raw = (folder / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        if not (folder / MLMODEL).is_file():
            raise NotFound(f"{where} is not a model package: it has no {MANIFEST_NAME}") from None
        # a folder the mlflow client wrote: its own files are all there is to check
        files = {
            p.relative_to(folder).as_posix(): (hash_file(p), p.stat().st_size)
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        raw = mlflow_manifest((folder / MLMODEL).read_bytes(), files, where)
    metadata = parse_manifest(raw, where)
    flavor = _flavor_of(metadata, where)
    with _naming(where):
        flavor.check_load(metadata, allow_pickle=allow_pickle, trust=trust)
    verify_folder(folder, metadata, where)
    return Package(folder, metadata), flavor


def _fetch_package(
    uri: str,
    run_id: str,
    path: str,
    pinned: str | None,
    allow_pickle: bool,
    trust: frozenset[str],
    dst: str | os.PathLike[str] | None,
) -> tuple[Package, Flavor]:
    """Verify and fetch the package at ``path`` in a run, or the files a folder manifest pinned."""
    client = tracking_for()
    if pinned is None:
        listing = _package_entries(client.list_artifacts(run_id, path), path)
    else:
        listing = {e.path: (e.digest, e.size) for e in client.artifacts.read_manifest(pinned)}
    entries = {rel: digest for rel, (digest, _) in listing.items()}
    digest = entries.pop(MANIFEST_NAME, None)
    if digest is not None:
        raw = client.artifacts.get_bytes(digest)
    elif MLMODEL in entries:
        # MLflow's format, stored as its client wrote it: the manifest is made from the
        # pinned files, so each is still checked against its digest on the way in.
        raw = mlflow_manifest(client.artifacts.get_bytes(entries[MLMODEL]), listing, uri)
        digest = hash_bytes(raw)
    else:
        raise NotFound(
            f"no model package at {uri}: run {run_id} has no {path}/{MANIFEST_NAME}; "
            f"log one with keel.log_model(model, name={path!r})"
        )
    metadata = parse_manifest(raw, uri)
    flavor = _flavor_of(metadata, uri)
    with _naming(uri):
        flavor.check_load(metadata, allow_pickle=allow_pickle, trust=trust)
    _check_listing(metadata, entries, uri)

    if dst is not None:
        target = Path(dst)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise InvalidInput(f"dst must be a new or empty folder, got {target}")
        _download(client, entries, raw, target, uri)
        return Package(target, metadata), flavor

    cache = get_settings().home / "cache" / "models"
    final = cache / digest
    if final.is_dir():
        try:
            _verify_cached(final, digest, metadata, uri)
            return Package(final, metadata), flavor
        except IntegrityError as exc:
            warn(f"the cached copy of {uri} failed verification ({exc}); downloading it again", 4)
            shutil.rmtree(final, ignore_errors=True)
    staging = cache / f".{digest}.{uuid.uuid4().hex[:8]}.part"
    try:
        _download(client, entries, raw, staging, uri)
        try:
            os.replace(staging, final)
        except OSError:  # another process cached it first; theirs is checked like ours
            _verify_cached(final, digest, metadata, uri)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Package(final, metadata), flavor


def _check_listing(metadata: dict[str, Any], entries: dict[str, str], uri: str) -> None:
    """The stored files must be exactly the ones keel-model.json pins, with its digests.

    With this, downloading proves every byte: the store re-hashes each object as
    it streams it and fails on a mismatch, so a fresh download needs no second pass.
    """
    files = metadata["files"]
    unlisted = sorted(set(entries) - set(files))
    if unlisted:
        raise IntegrityError(
            f"{uri}: the stored package holds file(s) {', '.join(map(repr, unlisted))} that "
            f"{MANIFEST_NAME} does not list; the package was modified after it was logged. "
            "Re-log the model"
        )
    for rel in sorted(files):
        digest = entries.get(rel)
        if digest is None:
            raise IntegrityError(
                f"{uri}: model file {rel!r} listed in {MANIFEST_NAME} is not among the stored "
                "files; re-log the model"
            )
        if digest != files[rel]["digest"]:
            raise IntegrityError(
                f"{uri}: model file {rel!r} was replaced after the model was logged: it is "
                f"stored with digest {digest}, {MANIFEST_NAME} recorded {files[rel]['digest']}; "
                "nothing was loaded. Re-log the model from a trusted copy"
            )


def _download(
    client: TrackingClient,
    entries: dict[str, str],
    manifest: bytes,
    target: Path,
    uri: str,
) -> None:
    # Not client.download_artifacts: a corrupt object must be reported by its file name.
    target.mkdir(parents=True, exist_ok=True)

    def fetch(item: tuple[str, str]) -> None:
        rel, digest = item
        try:
            client.artifacts.get_file(digest, target / rel)
        except IntegrityError as exc:
            raise IntegrityError(
                f"{uri}: model file {rel!r} is corrupt in the artifact store; nothing was "
                f"loaded. {exc}"
            ) from exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fetch, sorted(entries.items())))
    (target / MANIFEST_NAME).write_bytes(manifest)


def _verify_cached(folder: Path, digest: str, metadata: dict[str, Any], uri: str) -> None:
    manifest = folder / MANIFEST_NAME
    with contextlib.suppress(FileNotFoundError):
        if hash_file(manifest) == digest:
            verify_folder(folder, metadata, uri)
            return
    raise IntegrityError(f"{uri}: the cached {MANIFEST_NAME} does not match the run's")
