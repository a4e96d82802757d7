"""``keel models export --edge``: a folder that predicts with onnxruntime and numpy alone.

The exported ``predict.py`` runs in a fresh virtualenv holding only onnxruntime and
numpy (made once per session with the machine's package index), and must give the
classes the real server gives for the same rows, with probabilities within 1e-5 of
the native model's.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import keel
from _support.edge import json_records, register_cancer, register_kind, register_sized, sized_frame
from _support.serving import Server
from keel.errors import IntegrityError, InvalidInput, NotFound
from keel.models.edge import EDGE_FORMAT, EdgeBundle, export_edge
from keel.models.edge.web import FETCH_COMMAND, find_web_runtime

pytest.importorskip("skl2onnx", reason="compiling to ONNX needs pip install 'keel[compile]'")
pytest.importorskip("skops", reason="scikit-learn packages need skops")

#: Rows compared with the server.
ROWS = 100


@pytest.fixture(scope="session")
def edge_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh virtualenv with onnxruntime and numpy, and nothing of Keel's."""
    folder = tmp_path_factory.mktemp("edge-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    python = folder / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "onnxruntime", "numpy"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if installed.returncode != 0:
        pytest.fail(f"pip could not install onnxruntime and numpy: {installed.stderr[-2000:]}")
    return python


@pytest.fixture
def web_runtime() -> Any:
    """onnxruntime-web as Keel ships it; skips, naming the command, where it is not fetched."""
    try:
        return find_web_runtime()
    except NotFound:
        pytest.skip(f"onnxruntime-web is not fetched ({FETCH_COMMAND})")


def _run_predict(python: Path, folder: Path, records: Any, *args: str) -> Any:
    """``python predict.py input.json`` from another folder; its JSON answer."""
    given = folder.parent / f"{folder.name}-input.json"
    given.write_text(json.dumps(records))
    done = subprocess.run(
        [str(python), str(folder / "predict.py"), str(given), *args],
        capture_output=True,
        text=True,
        cwd=folder.parent,
        timeout=120,
        # nothing of this interpreter's: no PYTHONPATH, no KEEL_* settings
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KEEL_"))},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _server_predictions(server_url: str, records: list[dict[str, Any]]) -> list[Any]:
    import httpx

    answer = httpx.post(
        f"{server_url}/invocations", json={"dataframe_records": records}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


# -- predict.py against the server -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hist_gradient_boosting", "column_transformer"])
def test_predict_py_in_a_fresh_virtualenv_matches_the_server(
    kind, sqlite_env, breast_cancer, edge_python, tmp_path
):
    x, y = breast_cancer
    name, rows = register_kind(kind, x, y)
    sample = rows.sample(ROWS, random_state=7)
    records = json_records(sample)

    bundle = export_edge(f"{name}@champion", tmp_path / "edge", web=False)
    assert bundle.feed == ("matrix" if kind == "hist_gradient_boosting" else "columns")
    # Nothing of Keel, pandas or scikit-learn is there to lean on.
    lacks = subprocess.run(
        [str(edge_python), "-c", "import importlib.util as u; "
         "print([m for m in ('keel', 'pandas', 'sklearn') if u.find_spec(m)])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert lacks.stdout.strip() == "[]"
    answer = _run_predict(edge_python, bundle.path, records)

    from keel.serving.server import app_for_target

    app = app_for_target(f"models:/{name}@champion", runtime="native", log_predictions=False)
    with Server(app) as server:
        assert answer["predictions"] == _server_predictions(server.url, records)
    native = keel.load_model(f"models:/{name}@champion")
    assert answer["classes"] == np.asarray(native.classes_).tolist()
    expected = native.predict_proba(sample)
    assert np.max(np.abs(np.asarray(answer["probabilities"]) - expected)) <= 1e-5


@pytest.mark.slow
def test_predict_py_imports_and_answers_the_stored_example(sqlite_env, breast_cancer, tmp_path):
    x, y = breast_cancer
    register_cancer(x, y)
    bundle = export_edge("models:/cancer@champion", tmp_path / "edge", web=False)
    sys.modules.pop("predict", None)
    sys.path.insert(0, str(bundle.path))
    try:
        import predict  # the exported file, as a user's program imports it
    finally:
        sys.path.remove(str(bundle.path))
        sys.modules.pop("predict", None)
    native = keel.load_model("models:/cancer/1")
    example = json_records(x.head(5))
    assert predict.predict(example) == native.predict(x.head(5)).tolist()
    proba = np.asarray(predict.predict_proba(example))
    assert np.max(np.abs(proba - native.predict_proba(x.head(5)))) <= 1e-5
    # Lists of values in the signature's column order work too.
    assert predict.predict([list(example[0].values())]) == predict.predict(example[:1])
    printed = subprocess.run(
        [sys.executable, str(bundle.path / "predict.py"), "--example"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(printed.stdout)["predictions"] == predict.predict(example)


def test_predict_py_refuses_a_tampered_model(sqlite_env, breast_cancer, tmp_path):
    x, y = breast_cancer
    register_cancer(x, y)
    bundle = export_edge("cancer@champion", tmp_path / "edge", web=False)
    model = bundle.path / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0x01
    model.write_bytes(bytes(data))

    predict_py = [sys.executable, str(bundle.path / "predict.py")]
    for refused in (
        subprocess.run(predict_py, input=json.dumps(json_records(x.head(1))),
                       capture_output=True, text=True),
        subprocess.run([*predict_py, "--verify"], capture_output=True, text=True),
    ):  # fmt: skip
        assert refused.returncode == 1
        assert refused.stdout == ""
        assert refused.stderr.count("\n") == 1
        assert refused.stderr.startswith(
            "error: model.onnx was changed after it was exported: its SHA-256 is "
        )
        assert "nothing was loaded" in refused.stderr


def test_predict_py_names_the_column_a_record_lacks(sqlite_env, breast_cancer, tmp_path):
    x, y = breast_cancer
    register_sized(x, y)
    bundle = export_edge("sized@champion", tmp_path / "edge", web=False)
    record = json_records(sized_frame(x).head(1))[0]
    del record["size"]
    done = subprocess.run(
        [sys.executable, str(bundle.path / "predict.py")],
        input=json.dumps([record]), capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == "error: record 0 lacks column 'size'; add it\n"
    wrong = {**json_records(sized_frame(x).head(1))[0], "size": 3}
    done = subprocess.run(
        [sys.executable, str(bundle.path / "predict.py")],
        input=json.dumps([wrong]), capture_output=True, text=True,
    )  # fmt: skip
    assert done.stderr == "error: column 'size' takes strings, got 3\n"


# -- what the folder holds -----------------------------------------------------------------


def test_manifest_lists_every_file_with_its_sha256_and_the_source(
    sqlite_env, breast_cancer, web_runtime, tmp_path
):
    x, y = breast_cancer
    register_cancer(x, y)
    bundle = export_edge("cancer@champion", tmp_path / "edge")
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    on_disk = sorted(
        p.relative_to(bundle.path).as_posix() for p in bundle.path.rglob("*") if p.is_file()
    )
    assert sorted([*manifest["files"], "manifest.json"]) == on_disk == list(bundle.files)
    for rel, entry in manifest["files"].items():
        data = (bundle.path / rel).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert manifest["format"] == EDGE_FORMAT
    assert manifest["model"] == {"name": "cancer", "version": 1, "uri": "models:/cancer/1"}
    assert manifest["keel_version"] == keel.__version__
    assert manifest["created_at"].endswith("Z") or "+00:00" in manifest["created_at"]
    manifest_bytes = (bundle.path / "manifest.json").read_bytes()
    assert bundle.manifest_sha256 == hashlib.sha256(manifest_bytes).hexdigest()

    signature = json.loads((bundle.path / "signature.json").read_text())
    assert [c["name"] for c in signature["inputs"]] == list(x.columns)
    assert {c["type"] for c in signature["inputs"]} == {"float32"}
    assert signature["classes"] == [0, 1]
    assert signature["model"]["sha256"] == manifest["files"]["model.onnx"]["sha256"]
    # web/ stands on its own: the page's model is the same file
    assert (bundle.path / "web" / "model.onnx").read_bytes() == (
        bundle.path / "model.onnx"
    ).read_bytes()
    assert bundle.onnxruntime_web == web_runtime.version
    assert bundle.web_runtime_bytes == web_runtime.size_bytes
    assert bundle.model_bytes == (bundle.path / "model.onnx").stat().st_size
    assert bundle.total_bytes == sum((bundle.path / f).stat().st_size for f in bundle.files)
    assert bundle.predict_ms_p50 is not None and bundle.predict_ms_p50 > 0


def test_export_compiles_a_version_that_has_no_passed_compilation(
    sqlite_env, breast_cancer, tmp_path
):
    x, y = breast_cancer
    register_cancer(x, y)
    registry = keel.Client().registry
    assert registry.compiled("cancer", 1, "onnx") is None
    bundle = export_edge("cancer/1", tmp_path / "edge", web=False)
    assert bundle.compiled is True
    assert registry.compiled("cancer", 1, "onnx") is not None
    again = export_edge("cancer/1", tmp_path / "again", web=False)
    assert again.compiled is False  # the passed compilation is reused
    assert len(registry.list_compilations("cancer", 1)) == 1


def test_export_without_compiling_refuses_naming_the_command(
    sqlite_env, breast_cancer, tmp_path, run_keel
):
    x, y = breast_cancer
    register_cancer(x, y)
    with pytest.raises(NotFound, match=r"run `keel models compile cancer 1 --to onnx` first"):
        export_edge("cancer@champion", tmp_path / "edge", compile_if_needed=False)
    assert not (tmp_path / "edge").exists()

    done = run_keel(
        "models", "export", "cancer@champion", "--edge", str(tmp_path / "edge"), "--no-compile",
        settings=sqlite_env,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "has no ONNX compilation that passed parity" in done.stderr
    assert not (tmp_path / "edge").exists()


def test_export_refuses_a_folder_that_is_not_empty(sqlite_env, breast_cancer, tmp_path, run_keel):
    x, y = breast_cancer
    register_cancer(x, y)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    done = run_keel(
        "models", "export", "cancer@champion", "--edge", str(taken), settings=sqlite_env
    )
    assert done.returncode == 1
    assert done.stderr.strip().endswith("is not empty; export into a new or empty folder")
    assert done.stderr.count("\n") == 1
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]
    with pytest.raises(InvalidInput, match=r"is a file; export into a new or empty folder"):
        export_edge("cancer@champion", taken / "notes.txt")


@pytest.mark.slow
def test_export_into_an_empty_folder_prints_sizes_and_latency(
    sqlite_env, breast_cancer, tmp_path, run_keel
):
    x, y = breast_cancer
    register_cancer(x, y)
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_keel(
        "models", "export", "cancer", "1", "--edge", str(empty), "--no-web", "--json",
        settings=sqlite_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    bundle = json.loads(done.stdout)
    assert bundle["compiled"] is True
    assert bundle["onnxruntime_web"] is None and bundle["web_runtime_bytes"] == 0
    assert sorted(p.name for p in empty.iterdir()) == [
        "manifest.json",
        "model.onnx",
        "predict.py",
        "signature.json",
    ]
    assert bundle["predict_ms_p50"] > 0
    assert set(bundle) == set(EdgeBundle.__dataclass_fields__)


def test_export_without_the_web_runtime_writes_the_rest_and_names_the_fetch_command(
    sqlite_env, breast_cancer, tmp_path
):
    x, y = breast_cancer
    register_cancer(x, y)
    with pytest.raises(NotFound, match=r"without the browser bundle: .*fetch_onnxruntime_web\.py"):
        export_edge("cancer@champion", tmp_path / "edge", web_runtime=tmp_path / "nothing")
    assert sorted(p.name for p in (tmp_path / "edge").iterdir()) == [
        "manifest.json",
        "model.onnx",
        "predict.py",
        "signature.json",
    ]


def test_a_changed_web_runtime_file_is_refused(web_runtime, tmp_path):
    import shutil

    runtime = web_runtime
    copy = tmp_path / "runtime"
    copy.mkdir()
    for path in runtime.files:
        shutil.copyfile(path, copy / path.name)
    shutil.copyfile(runtime.files[0].parent / "onnxruntime-web.json", copy / "onnxruntime-web.json")
    assert find_web_runtime(copy).size_bytes == runtime.size_bytes
    with (copy / "ort.wasm.min.js").open("a") as handle:
        handle.write("\n// changed")
    with pytest.raises(
        IntegrityError, match=r"ort\.wasm\.min\.js hashes to .* not the .* recorded"
    ):
        find_web_runtime(copy)


@pytest.mark.slow
def test_export_of_a_version_that_cannot_compile_says_why_and_writes_nothing(
    sqlite_env, breast_cancer, tmp_path, run_keel
):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = breast_cancer
    model = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=500))
    model.fit(x, y)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=x.head(5))
    keel.register_model(info.uri, "logged")
    done = run_keel("models", "export", "logged/1", "--edge", str(tmp_path / "edge"),
                    settings=sqlite_env)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "FunctionTransformer" in done.stderr
    assert not (tmp_path / "edge").exists()
    assert not list(tmp_path.glob(".edge.*"))


def test_a_regressor_exports_its_values(sqlite_env, diabetes, tmp_path):
    from sklearn.ensemble import HistGradientBoostingRegressor

    x, y = diabetes
    model = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(x, y)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=x.head(5))
    keel.register_model(info.uri, "progression")
    bundle = export_edge("progression/1", tmp_path / "edge", web=False)
    signature = json.loads((bundle.path / "signature.json").read_text())
    assert signature["task"] == "regression" and signature["classes"] is None
    records = json_records(x.head(50))
    done = subprocess.run(
        [sys.executable, str(bundle.path / "predict.py")],
        input=json.dumps(records), capture_output=True, text=True, check=True,
    )  # fmt: skip
    answer = json.loads(done.stdout)
    assert set(answer) == {"predictions"}
    expected = keel.load_model("models:/progression/1").predict(x.head(50))
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-5)


def test_export_reaches_the_registry_on_every_store(any_env, breast_cancer, tmp_path):
    x, y = breast_cancer
    register_cancer(x, y)
    bundle = export_edge("cancer@champion", tmp_path / "edge", web=False)
    assert bundle.compiled is True
    assert keel.Client().registry.compiled("cancer", 1, "onnx") is not None
    done = subprocess.run(
        [sys.executable, str(bundle.path / "predict.py"), "--example"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    native = keel.load_model("models:/cancer/1")
    assert json.loads(done.stdout)["predictions"] == native.predict(x.head(5)).tolist()


def test_the_edge_package_exports_exactly_its_public_names():
    import keel.models.edge as edge

    assert sorted(edge.__all__) == ["EDGE_FORMAT", "EdgeBundle", "export_edge"]
