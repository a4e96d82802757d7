"""The loader decides what a model package may import or call; the package only states it.

The crafted package here is what an attacker with write access to the store
(or a shared model) can make: a ``model.skops`` whose reduce node calls
``os.system``, listed as a "trusted type" in its own ``keel-model.json``, with
every digest fixed up, so that only the loader's own trust stands in the way.
"""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import keel
from _support.cli import keel_command, keel_environ
from _support.network import free_port
from keel.artifacts import hash_file
from keel.errors import InvalidInput, PermissionDenied
from keel.models import KeelWarning, load_model, log_model


def _evil_schema(command: str) -> dict:
    """A skops node that calls ``os.system(command)`` when it is constructed."""
    return {
        "__class__": "system",
        "__module__": "os",
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [
                {
                    "__class__": "str",
                    "__module__": "builtins",
                    "__loader__": "JsonNode",
                    "content": json.dumps(command),
                    "is_json": True,
                }
            ],
        },
    }


def _rewrite_package(folder: Path, skops_bytes: bytes | None = None, **config) -> None:
    """Replace model.skops and/or flavor_config keys, and fix every digest to match."""
    if skops_bytes is not None:
        (folder / "model.skops").write_bytes(skops_bytes)
    doc = json.loads((folder / "keel-model.json").read_text())
    doc["flavor_config"].update(config)
    for rel in doc["files"]:
        path = folder / rel
        doc["files"][rel] = {"digest": hash_file(path), "size": path.stat().st_size}
    (folder / "keel-model.json").write_text(json.dumps(doc))


def _with_node(skops_file: bytes, node: dict) -> bytes:
    """The skops archive ``skops_file`` with its root object replaced by ``node``."""
    with zipfile.ZipFile(io.BytesIO(skops_file)) as src:
        schema = json.loads(src.read("schema.json"))
        others = {n: src.read(n) for n in src.namelist() if n != "schema.json"}
    for key in ("__class__", "__module__", "__loader__", "content", "__id__"):
        schema.pop(key, None)
    schema.update(node)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        dst.writestr("schema.json", json.dumps(schema))
        for name, data in others.items():
            dst.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def evil(tmp_path: Path, diabetes):
    """A function: register version 1 of ``name`` as a package whose load runs ``touch marker``."""
    from sklearn.linear_model import Ridge

    def make(name: str, marker: Path) -> str:
        X, y = diabetes
        with keel.start_run():
            info = log_model(Ridge().fit(X, y), input_example=X.head(3))
        folder = tmp_path / f"{name}-package"
        keel.Client().download_artifacts(info.run_id, "model", folder)
        crafted = _with_node(
            (folder / "model.skops").read_bytes(),
            _evil_schema(f"touch {shlex.quote(str(marker))}"),
        )
        _rewrite_package(folder, crafted, trusted_types=["os.system"])
        keel.Client().log_artifacts(info.run_id, folder, "model")
        assert keel.register_model(info.uri, name) == 1
        return f"models:/{name}/1"

    return make


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    return lines[0]


# -- the crafted os.system package --------------------------------------------------


def test_crafted_package_naming_os_system_as_trusted_is_refused_and_never_runs(
    keel_env, evil, tmp_path: Path
):
    marker = tmp_path / "pwned"
    uri = evil("evil", marker)

    with pytest.raises(
        PermissionDenied,
        match=r"models:/evil/1 .*model\.skops needs os\.system, which this loader does not "
        r"trust.*trust=\['os\.system'\].*--trust os\.system.*KEEL_TRUSTED_TYPES=os\.system",
    ):
        load_model(uri)
    assert not marker.exists()
    # Nothing was fetched either: the package's own statement was refused first.
    assert not (keel_env.home / "cache" / "models").exists()


def test_what_a_package_lists_as_trusted_does_not_count_a_loaders_trust_does(
    sqlite_env, evil, tmp_path: Path
):
    """The same package runs its command once the loading side trusts os.system: the
    crafted file is real, and only the loader's word decides."""
    marker = tmp_path / "ran"
    uri = evil("evil", marker)
    load_model(uri, trust=["os.system"])
    assert marker.exists()


@pytest.mark.slow
def test_keel_serve_refuses_a_deployment_whose_model_needs_untrusted_types(
    sqlite_env, evil, tmp_path: Path
):
    from keel.serving.deployments import Deployments, build_spec

    marker = tmp_path / "pwned"
    evil("evil", marker)
    Deployments().create("evil-api", build_spec("evil/1"))
    proc = subprocess.Popen(
        keel_command("serve", "evil-api", "--port", str(free_port())),
        env=keel_environ(sqlite_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 90
    while proc.poll() is None and not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    _, stderr = proc.communicate(timeout=30)
    assert not marker.exists()
    assert proc.returncode == 1, stderr
    line = _one_error_line(stderr)
    assert "os.system" in line and "--trust os.system" in line


@pytest.mark.slow
def test_keel_predict_refuses_the_crafted_package_and_writes_nothing(
    sqlite_env, evil, tmp_path: Path, diabetes, run_keel
):
    marker = tmp_path / "pwned"
    uri = evil("evil", marker)
    source = tmp_path / "input.csv"
    diabetes[0].head(5).to_csv(source, index=False)
    output = tmp_path / "scored.csv"
    done = run_keel(
        "predict", uri, str(source), "--output", str(output), "--no-progress", settings=sqlite_env
    )
    assert not marker.exists()
    assert done.returncode == 1, done.stderr
    line = _one_error_line(done.stderr)
    assert "os.system" in line and "KEEL_TRUSTED_TYPES=os.system" in line
    assert not output.exists()


# -- a FunctionTransformer holding a shell function -----------------------------------


def _log_shell_model() -> str:
    from sklearn.preprocessing import FunctionTransformer

    with keel.start_run():
        info = log_model(FunctionTransformer(func=subprocess.getoutput))
    assert keel.register_model(info.uri, "shell") == 1
    return "models:/shell/1"


@pytest.fixture
def shell_model(sqlite_env) -> str:
    """Version 1 of 'shell': a FunctionTransformer whose func is subprocess.getoutput."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeelWarning)  # pinned by its own test
        return _log_shell_model()


def test_saving_a_function_beyond_the_built_in_list_warns_naming_it(sqlite_env):
    with pytest.warns(
        KeelWarning,
        match=r"holds subprocess\.getoutput, which Keel does not trust by default.*"
        r"trust=\['subprocess\.getoutput'\]",
    ):
        _log_shell_model()


def test_a_function_beyond_the_built_in_list_loads_only_with_trust(shell_model):
    with pytest.raises(
        PermissionDenied,
        match=r"needs subprocess\.getoutput, which this loader does not trust.*"
        r"trust=\['subprocess\.getoutput'\]",
    ):
        load_model(shell_model)
    loaded = load_model(shell_model, trust=["subprocess.getoutput"])
    assert loaded.unwrap().func is subprocess.getoutput


def test_trusted_types_from_the_environment_let_the_function_load(
    shell_model, sqlite_env, monkeypatch: pytest.MonkeyPatch
):
    with pytest.raises(PermissionDenied, match=r"KEEL_TRUSTED_TYPES=subprocess\.getoutput"):
        load_model(shell_model)
    monkeypatch.setenv("KEEL_TRUSTED_TYPES", "mymodule.other, subprocess.getoutput")
    keel.init(home=sqlite_env.home)
    assert load_model(shell_model).unwrap().func is subprocess.getoutput


def test_trusted_types_in_config_toml_let_the_function_load(shell_model, sqlite_env):
    with pytest.raises(PermissionDenied, match=r"trusted_types in \.keel/config\.toml"):
        load_model(shell_model)
    (sqlite_env.home / "config.toml").write_text('trusted_types = ["subprocess.getoutput"]\n')
    keel.init(home=sqlite_env.home)
    assert load_model(shell_model).unwrap().func is subprocess.getoutput


def test_trust_must_be_a_list_of_dotted_names(shell_model):
    with pytest.raises(InvalidInput, match=r"single string 'subprocess.getoutput'.*wrap it"):
        load_model(shell_model, trust="subprocess.getoutput")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"dotted path .* got 'os system'"):
        load_model(shell_model, trust=["os system"])


@pytest.mark.slow
def test_keel_serve_loads_the_function_only_with_trust(shell_model, sqlite_env, run_keel):
    # A server that did not refuse would run until the timeout fails the test.
    refused = run_keel("serve", "models:/shell/1", "--port", str(free_port()), settings=sqlite_env)
    assert refused.returncode == 1, refused.stderr
    assert "--trust subprocess.getoutput" in _one_error_line(refused.stderr)

    port = free_port()
    trusting = ["--trust", "subprocess.getoutput"]
    proc = subprocess.Popen(
        keel_command("serve", "models:/shell/1", "--port", str(port), "--no-log", *trusting),
        env=keel_environ(sqlite_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _ready(proc, f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


# -- every normal model still loads with no flags ---------------------------------------


def test_common_scikit_learn_models_need_nothing_beyond_the_built_in_list(sqlite_env, iris):
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.feature_selection import SelectKBest
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = iris
    frame = X.assign(kind=np.where(y > 0, "a", "b"))
    models = [
        RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y),
        HistGradientBoostingClassifier(max_iter=3).fit(X, y),
        KNeighborsClassifier().fit(X, y),
        make_pipeline(SelectKBest(k=2), StandardScaler(), KNeighborsClassifier()).fit(X, y),
        make_pipeline(
            make_column_transformer((OneHotEncoder(), ["kind"]), remainder="passthrough"),
            RandomForestClassifier(n_estimators=2, random_state=0),
        ).fit(frame, y),
    ]
    for model in models:
        data = frame if "kind" in getattr(model, "feature_names_in_", ()) else X
        with keel.start_run():
            info = log_model(model, input_example=data.head(3))
        loaded = load_model(info.uri)
        np.testing.assert_array_equal(loaded.predict(data), model.predict(data))


def test_built_in_list_holds_library_classes_not_functions_or_file_openers():
    from keel.models.flavors.sklearn import builtin_trusted

    assert builtin_trusted("sklearn.tree._tree.Tree")
    assert builtin_trusted("sklearn.neighbors._kd_tree.KDTree")
    assert builtin_trusted("numpy.float64") and builtin_trusted("numpy.dtype")
    assert builtin_trusted("scipy.sparse._csr.csr_matrix")
    assert builtin_trusted("sklearn.feature_selection._univariate_selection.f_classif")
    for name in (
        "os.system",
        "subprocess.getoutput",
        "builtins.eval",
        "numpy.load",  # a function: with allow_pickle it unpickles
        "numpy.memmap",  # a class, but it opens (and creates) the file it is given
        "numpy.lib._datasource.DataSource",  # deletes a folder it names when collected
        "sklearn.datasets._svmlight_format_io.dump_svmlight_file",
        "sklearn.utils._testing.TempMemmap",
        "sklearn.utils.__check_build",
    ):
        assert not builtin_trusted(name), name


# -- the python flavor ----------------------------------------------------------------


MODULE = """
import json
from pathlib import Path

{side_effect}

class Threshold:
    def __init__(self, cut):
        self.cut = cut

    def predict(self, data):
        return (data["x"] > self.cut).to_numpy()

    def keel_save(self, path):
        (Path(path) / "params.json").write_text(json.dumps({{"cut": self.cut}}))
{keel_load}
"""

KEEL_LOAD = """
    @classmethod
    def keel_load(cls, path):
        return cls(**json.loads((Path(path) / "params.json").read_text()))
"""


@pytest.fixture
def code_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def _module(folder: Path, name: str, *, side_effect: str = "", keel_load: bool = True) -> str:
    source = MODULE.format(side_effect=side_effect, keel_load=KEEL_LOAD if keel_load else "")
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def _logged_threshold(module_name: str, tmp_path: Path) -> Path:
    """Log a Threshold from ``module_name``, forget the module, and return the package folder."""
    import importlib

    module = importlib.import_module(module_name)
    with keel.start_run():
        info = log_model(module.Threshold(0.5))
    sys.modules.pop(module_name)
    package = tmp_path / f"package-{module_name}"
    keel.Client().download_artifacts(info.run_id, "model", package)
    return package


def test_python_flavor_imports_no_module_whose_source_does_not_define_keel_load(
    sqlite_env, code_dir: Path, tmp_path: Path
):
    name = f"keel_trust_real_{tmp_path.name.replace('-', '_')}"
    package = _logged_threshold(_module(code_dir, name), tmp_path)
    marker = tmp_path / "imported"
    other = _module(
        code_dir,
        f"{name}_other",
        side_effect=f"Path({str(marker)!r}).touch()",
        keel_load=False,
    )
    _rewrite_package(package, module=other)

    with pytest.raises(
        PermissionDenied,
        match=rf"does not itself define Threshold with keel_load.*--trust {other}\.Threshold",
    ):
        load_model(str(package))
    assert not marker.exists() and other not in sys.modules


def test_python_flavor_class_whose_source_defines_keel_load_loads_without_flags(
    sqlite_env, code_dir: Path, tmp_path: Path
):
    name = f"keel_trust_fresh_{tmp_path.name.replace('-', '_')}"
    package = _logged_threshold(_module(code_dir, name), tmp_path)
    assert name not in sys.modules  # as in a fresh process
    loaded = load_model(str(package))
    assert loaded.predict(pd.DataFrame({"x": [0.0, 1.0]})).tolist() == [False, True]
    sys.modules.pop(name, None)


# -- helpers -----------------------------------------------------------------------------


def _ready(proc: subprocess.Popen[str], url: str) -> bool:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else "server exited")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False
