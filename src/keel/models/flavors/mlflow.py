"""MLflow's own model format, stored as MLflow wrote it and loaded only when trusted.

A model that the mlflow client logged to ``keel server`` (or that ``keel import
mlflow`` brought over) is a folder with an ``MLmodel`` file and the model file
of MLflow's scikit-learn flavor. Keel keeps those bytes as they are: a
registered version pins them like any package. It has no ``keel-model.json``;
:func:`mlflow_manifest` makes the equivalent from the stored files (and the
signature from ``MLmodel``'s), so digests are verified and the package cached
exactly as a Keel package is.

How the model file loads depends on how MLflow wrote it:

- ``skops`` (MLflow 3's default): as Keel's own scikit-learn packages load,
  building only the types the loader trusts (see :mod:`keel.models.trust`).
- ``pickle`` / ``cloudpickle``: unpickling can run whatever the file names, so
  it is refused unless the load says so explicitly
  (``keel.load_model(uri, allow_pickle=True)``, ``keel serve --allow-pickle``).
  Even then the unpickler resolves only names the loader trusts: the
  scikit-learn flavor's built-in list, the few functions numpy and Cython
  pickles rebuild arrays and extension types with, and the names the loading
  side adds (``trust=``, ``--trust``, ``trusted_types``). A pickle naming anything
  else (``os.system``, a user's module) is refused with the names.
  ``keel models convert`` turns such a version into Keel's safe format once.

Only MLflow's scikit-learn flavor is loaded; other flavors are refused with
what to do instead.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from keel.errors import IntegrityError, InvalidInput, PermissionDenied
from keel.models.flavors.base import Flavor
from keel.models.flavors.sklearn import builtin_trusted, load_skops
from keel.models.package import FORMAT, Package
from keel.models.signature import Signature
from keel.models.trust import untrusted

__all__ = ["MLMODEL", "MlflowFlavor", "mlflow_manifest", "pickle_globals"]

#: The file that makes a folder an MLflow model.
MLMODEL = "MLmodel"
_NUMPY_CORE = ("numpy._core", "numpy.core")  # numpy 2 moved numpy.core; old pickles name both
#: What numpy pickles rebuild arrays and scalars with; they only build data.
_PLUMBING = frozenset(
    {
        *(f"{core}.multiarray._reconstruct" for core in _NUMPY_CORE),
        *(f"{core}.multiarray.scalar" for core in _NUMPY_CORE),
        *(f"{core}.numeric._frombuffer" for core in _NUMPY_CORE),
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__randomstate_ctor",
        "copyreg._reconstructor",
        "builtins.object",
        "builtins.set",
        "builtins.frozenset",
        "builtins.slice",
        "builtins.complex",
        "collections.OrderedDict",
    }
)
_CYTHON_UNPICKLE = "__pyx_unpickle_"


def _trusted(name: str, trust: frozenset[str]) -> bool:
    if name in trust or name in _PLUMBING or builtin_trusted(name):
        return True
    # Cython rebuilds an extension type with a module-level __pyx_unpickle_<Class>: as
    # safe as the class itself, which the built-in list decides.
    module, _, function = name.rpartition(".")
    if function.startswith(_CYTHON_UNPICKLE):
        return builtin_trusted(f"{module}.{function[len(_CYTHON_UNPICKLE) :]}")
    return False


def pickle_globals(data: bytes) -> set[str]:
    """The dotted names a pickle imports, read from its opcodes without running it.

    ``GLOBAL`` carries its name; ``STACK_GLOBAL`` takes the two strings pushed
    before it, which may come from the memo. The result names what a load would
    import; the unpickler that loads checks each name again as it resolves it.

    Raises:
        IntegrityError: the bytes are not a pickle.
    """
    names: set[str] = set()
    memo: dict[int, Any] = {}
    recent: list[Any] = []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                names.add(f"{module}.{attr}")
                recent.append(None)
            elif name == "STACK_GLOBAL":
                if len(recent) >= 2 and all(isinstance(v, str) for v in recent[-2:]):
                    names.add(f"{recent[-2]}.{recent[-1]}")
                else:  # built in a way this scan cannot follow: let the unpickler decide
                    names.add("<a name computed at load time>")
                recent.append(None)
            elif name in ("MEMOIZE",):
                memo[len(memo)] = recent[-1] if recent else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(str(arg))] = recent[-1] if recent else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(int(str(arg))))
            elif "UNICODE" in name or name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                recent.append(arg)
            else:
                recent.append(None)
            del recent[:-2]
    except Exception as exc:  # pickletools raises ValueError and others on garbage
        raise IntegrityError(f"not a readable pickle ({exc})") from None
    return names


class _TrustedUnpickler(pickle.Unpickler):
    """Resolves only trusted names; anything else stops the load before it is imported."""

    def __init__(self, data: bytes, trust: frozenset[str]) -> None:
        super().__init__(io.BytesIO(data))
        self._trust = trust

    def find_class(self, module: str, name: str) -> Any:
        dotted = f"{module}.{name}"
        if not _trusted(dotted, self._trust):
            raise untrusted("the pickle", [dotted])
        return super().find_class(module, name)


def read_mlmodel(raw: bytes, where: str) -> dict[str, Any]:
    """The parsed ``MLmodel`` file (YAML, read safely: no tags, no objects)."""
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise IntegrityError(f"{where}: {MLMODEL} is not valid YAML ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        raise IntegrityError(f"{where}: {MLMODEL} has no 'flavors' table; not an MLflow model")
    return doc


def mlflow_manifest(mlmodel: bytes, files: Mapping[str, tuple[str, int]], where: str) -> bytes:
    """A ``keel-model.json`` for an MLflow model folder, made from its stored files.

    Args:
        mlmodel: the bytes of its ``MLmodel`` file.
        files: ``{path: (digest, size)}`` of every file in the folder.
        where: the model's URI, for messages.
    """
    doc = read_mlmodel(mlmodel, where)
    config: dict[str, Any] = {
        "mlflow_flavors": sorted(str(f) for f in doc["flavors"]),
        "mlflow_version": str(doc.get("mlflow_version") or ""),
    }
    sklearn = doc["flavors"].get("sklearn")
    if isinstance(sklearn, dict):
        config["file"] = str(sklearn.get("pickled_model") or "model.pkl")
        config["serialization_format"] = str(sklearn.get("serialization_format") or "")
        config["sklearn_version"] = str(sklearn.get("sklearn_version") or "")
    example = doc.get("saved_input_example_info")
    if isinstance(example, dict) and example.get("artifact_path") in files:
        config["input_example"] = str(example["artifact_path"])
    manifest = {
        "format": FORMAT,
        "flavor": MlflowFlavor.name,
        "flavor_config": config,
        "files": {p: {"digest": d, "size": s} for p, (d, s) in sorted(files.items())},
        "signature": _signature(doc.get("signature")),
    }
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


#: MLflow's column types, in Keel's column vocabulary.
_COLUMN_TYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "string",
    "datetime": "datetime",
}


def _signature(doc: Any) -> dict[str, Any] | None:
    """Keel's signature for MLflow's (columns only), or ``None`` where it has no equivalent."""
    if not isinstance(doc, dict):
        return None

    def columns(text: Any, default_name: str | None) -> list[dict[str, Any]] | None:
        try:
            specs = json.loads(text) if isinstance(text, str) else None
        except json.JSONDecodeError:
            return None
        if not isinstance(specs, list) or not specs:
            return None
        out = []
        for spec in specs:
            kind = _COLUMN_TYPES.get(str(spec.get("type"))) if isinstance(spec, dict) else None
            name = spec.get("name") if isinstance(spec, dict) else None
            if kind is None or not (name or (default_name and len(specs) == 1)):
                return None  # tensors, objects, arrays, unnamed columns: no equivalent
            out.append({"name": name or default_name, "type": kind})
        return out

    inputs = columns(doc.get("inputs"), None)
    if inputs is None:
        return None
    outputs = columns(doc.get("outputs"), "prediction")
    signature = {
        "inputs": {"columns": inputs},
        "outputs": None if outputs is None else {"columns": outputs},
    }
    try:
        return Signature.from_dict(signature).to_dict()
    except InvalidInput:
        return None


class MlflowFlavor(Flavor):
    """MLflow's scikit-learn models as MLflow stored them (``MLmodel`` + a pickle).

    Keel never writes this format; it loads it for models that came from MLflow.
    """

    name = "mlflow"
    extra = "sklearn"
    libraries = ("scikit-learn",)
    accepts = "nothing: models in MLflow's format are loaded, never saved, by Keel"
    saves = False

    def matches(self, model: Any) -> bool:
        return False

    def save(self, model: Any, folder: Path, *, allow_pickle: bool) -> dict[str, Any]:
        raise InvalidInput("Keel does not write MLflow's model format; use keel.log_model")

    def check_load(
        self, metadata: dict[str, Any], *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> None:
        config = metadata.get("flavor_config") or {}
        if "file" not in config:
            raise InvalidInput(
                f"this model is in MLflow's format with flavors "
                f"{', '.join(config.get('mlflow_flavors') or []) or '(none)'}; Keel loads MLflow's "
                "scikit-learn flavor only. Load it with mlflow, or re-log it with keel.log_model"
            )
        if config.get("serialization_format") == "skops":
            return  # the types the file needs are checked against the loader's trust in load()
        if not allow_pickle:
            raise PermissionDenied(
                f"this model is in MLflow's format: its model is a pickle ({config['file']}), "
                "and unpickling runs code the file chooses. If you trust whoever logged it, "
                "load it with keel.load_model(uri, allow_pickle=True) or serve it with "
                "`keel serve TARGET --allow-pickle`; better, convert it once to Keel's safe "
                "format: `keel models convert NAME/VERSION`"
            )

    def load(
        self, package: Package, *, allow_pickle: bool, trust: frozenset[str] = frozenset()
    ) -> Any:
        self.check_load(package.metadata, allow_pickle=allow_pickle, trust=trust)
        path = package.file(package.config["file"])
        if package.config.get("serialization_format") == "skops":
            return load_skops(path, trust)
        data = path.read_bytes()
        refused = sorted(n for n in pickle_globals(data) if not _trusted(n, trust))
        if refused:
            raise untrusted(path.name, refused)
        try:
            return _TrustedUnpickler(data, trust).load()
        except PermissionDenied:
            raise
        except Exception as exc:  # a pickle from another library version, or damaged
            raise IntegrityError(
                f"{path.name} did not unpickle here ({type(exc).__name__}: {exc}); it was "
                f"saved with scikit-learn {package.config.get('sklearn_version') or '?'}"
            ) from None

    def takes_matrix(self, native: Any, config: dict[str, Any]) -> bool:
        return not hasattr(native, "feature_names_in_")
