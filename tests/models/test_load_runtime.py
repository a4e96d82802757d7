"""``load_model(..., runtime=)``: a registered version loads natively or in the compiled form
whose compilation passed parity, says which and why, and refuses what it cannot honour."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import keel
from _support.serving import Registered, registered
from keel.errors import IntegrityError, InvalidInput, NotFound
from keel.models import load_model

__all__ = ["registered"]


def _compile(name: str, version: int, to: str) -> None:
    pytest.importorskip("skl2onnx" if to == "onnx" else "treelite")
    from keel.models.compile import compile_version

    compile_version(name, version, to=to)


def _record(
    client: keel.Client,
    version: int,
    *,
    passed: bool,
    package: str | None = None,
    reason: str | None = None,
    target: str = "onnx",
) -> None:
    """Record a compilation of cancer/<version> with a report saying the same."""
    report = {
        "model": "cancer",
        "version": version,
        "target": target,
        "passed": passed,
        "reason": reason,
        "max_abs_diff": 0.25 if not passed else 2e-7,
    }
    digest = client.artifacts.put_json(report).digest
    client.registry.record_compilation(
        "cancer", version, target=target, passed=passed, package_digest=package,
        report_digest=digest,
    )  # fmt: skip


def test_native_is_the_default_and_says_so(registered: Registered) -> None:
    model = load_model("models:/cancer@champion")
    assert model.runtime == "native"
    assert model.runtime_reason == "native runtime requested"
    assert model.uri == "models:/cancer@champion"


def test_an_unknown_runtime_is_refused_with_the_choices(registered: Registered) -> None:
    with pytest.raises(
        InvalidInput, match=r"runtime must be one of native, auto, onnx, treelite, got 'gpu'"
    ):
        load_model("models:/cancer/1", runtime="gpu")


def test_a_compiled_runtime_needs_a_registered_version(registered: Registered) -> None:
    source = keel.Client().get_model_version("cancer", 1).source
    with pytest.raises(InvalidInput, match=r"runtime='onnx' loads the compiled form of a regis"):
        load_model(source, runtime="onnx")
    loaded = load_model(source, runtime="auto")  # auto: loaded as logged, and it says so
    assert loaded.runtime == "native"
    assert loaded.runtime_reason == "not a registered version: loaded as logged"


def test_an_uncompiled_version_names_the_command_that_compiles_it(
    registered: Registered,
) -> None:
    with pytest.raises(NotFound, match=r"`keel models compile cancer 1 --to onnx`"):
        load_model("models:/cancer@champion", runtime="onnx")
    with pytest.raises(NotFound, match=r"no treelite compilation that passed parity"):
        load_model("models:/cancer/1", runtime="treelite")
    auto = load_model("models:/cancer/1", runtime="auto")
    assert (auto.runtime, auto.runtime_reason) == (
        "native",
        "not compiled (keel models compile cancer 1)",
    )


def test_auto_loads_native_when_the_compilations_failed_and_says_why(
    registered: Registered,
) -> None:
    client = keel.Client()
    _record(client, 1, passed=False, reason="a CustomScaler step has no converter")
    auto = load_model("models:/cancer/1", runtime="auto")
    assert (auto.runtime, auto.runtime_reason) == (
        "native",
        "onnx compilation of v1 was refused: a CustomScaler step has no converter",
    )
    # a compiled package that missed parity is stored, and named by the newest row
    package = client.get_model_version("cancer", 1).manifest_digest
    reason = "parity failed: classes agree on 97.1% of 569 rows (need 99.9%)"
    _record(client, 1, passed=False, package=package, reason=reason)
    auto = load_model("models:/cancer/1", runtime="auto")
    assert auto.runtime == "native"
    assert auto.runtime_reason == (
        "onnx compilation of v1 failed parity: classes agree on 97.1% of 569 rows (need 99.9%)"
    )
    np.testing.assert_array_equal(
        auto.predict(registered.features), registered.models[1].predict(registered.features)
    )
    with pytest.raises(NotFound, match=r"no onnx compilation that passed parity \(onnx compi"):
        load_model("models:/cancer/1", runtime="onnx")


def test_a_compiled_package_of_another_flavor_is_refused_before_it_loads(
    registered: Registered,
) -> None:
    client = keel.Client()
    # a passed row naming a package that is not ONNX at all: the version's own sklearn one
    sklearn_package = client.get_model_version("cancer", 1).manifest_digest
    _record(client, 1, passed=True, package=sklearn_package)
    with pytest.raises(IntegrityError, match=r"of flavor 'sklearn', not 'onnx' as its compil"):
        load_model("models:/cancer/1", runtime="onnx")


def test_auto_skips_a_compiled_form_whose_library_is_not_installed(
    registered: Registered, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = keel.Client()
    _record(client, 1, passed=True, package=client.get_model_version("cancer", 1).manifest_digest)
    real = importlib.util.find_spec

    def without_onnxruntime(name: str, package: str | None = None):  # type: ignore[no-untyped-def]
        return None if name == "onnxruntime" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_onnxruntime)
    auto = load_model("models:/cancer/1", runtime="auto")
    assert auto.runtime == "native"
    assert auto.runtime_reason == (
        "onnx compilation of v1 passed parity but onnxruntime is not installed "
        "(pip install 'keel[compile]')"
    )


@pytest.mark.slow
def test_the_onnx_runtime_answers_like_native_within_tolerance(registered: Registered) -> None:
    _compile("cancer", 2, "onnx")
    native = registered.models[2]
    rows = registered.features
    for runtime in ("onnx", "auto"):
        compiled = load_model("models:/cancer/2", runtime=runtime)
        assert compiled.runtime == "onnx" and compiled.flavor == "onnx"
        assert compiled.uri == "models:/cancer/2 (onnx)"
        assert compiled.runtime_reason.startswith("compiled onnx passed parity (max |Δp| ")
        np.testing.assert_array_equal(compiled.predict(rows), native.predict(rows))
        np.testing.assert_allclose(
            compiled.predict_proba(rows), native.predict_proba(rows), rtol=0, atol=1e-5
        )
        np.testing.assert_array_equal(compiled.classes_, native.classes_)
    # the version without a compilation is not affected by its sibling's
    assert load_model("models:/cancer/1", runtime="auto").runtime == "native"


@pytest.mark.slow
def test_auto_prefers_onnx_to_treelite_and_treelite_to_native(registered: Registered) -> None:
    _compile("cancer", 1, "treelite")
    auto = load_model("models:/cancer/1", runtime="auto")
    assert (auto.runtime, auto.flavor, auto.uri) == (
        "treelite",
        "treelite",
        "models:/cancer/1 (treelite)",
    )
    rows = registered.features
    np.testing.assert_array_equal(auto.predict(rows), registered.models[1].predict(rows))
    _compile("cancer", 1, "onnx")
    assert load_model("models:/cancer/1", runtime="auto").runtime == "onnx"
    assert load_model("models:/cancer/1", runtime="treelite").runtime == "treelite"
    assert load_model("models:/cancer/1").runtime == "native"


@pytest.mark.slow
def test_keel_predict_with_the_onnx_runtime_matches_native(
    registered: Registered, run_keel, tmp_path: Path
) -> None:
    _compile("cancer", 2, "onnx")
    source = tmp_path / "rows.parquet"
    registered.features.assign(id=range(len(registered.features))).to_parquet(source)
    outputs = {}
    for runtime in ("native", "onnx", "auto"):
        out = tmp_path / f"{runtime}.parquet"
        done = run_keel(
            "predict", "models:/cancer/2", str(source), "-o", str(out), "--keep", "id",
            "--runtime", runtime, "--no-progress", settings=registered.settings,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        expected = "native" if runtime == "native" else "onnx"
        assert f"rows/s, {expected} runtime)" in done.stdout
        outputs[runtime] = pd.read_parquet(out)
    pd.testing.assert_frame_equal(outputs["onnx"], outputs["native"])
    pd.testing.assert_frame_equal(outputs["auto"], outputs["native"])
    expected = registered.models[2].predict(registered.features)
    np.testing.assert_array_equal(outputs["onnx"]["prediction"].to_numpy(), expected)


def test_keel_predict_refuses_a_compiled_runtime_the_version_lacks(
    registered: Registered, run_keel, tmp_path: Path
) -> None:
    source = tmp_path / "rows.parquet"
    registered.features.head(5).to_parquet(source)
    done = run_keel(
        "predict", "models:/cancer/1", str(source), "-o", str(tmp_path / "out.parquet"),
        "--runtime", "onnx", settings=registered.settings,
    )  # fmt: skip
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "keel models compile cancer 1 --to onnx" in lines[0], done.stderr
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.slow
def test_the_runtime_choice_reads_the_registry_of_every_mode(any_env, breast_cancer) -> None:
    pytest.importorskip("skops")
    from sklearn.ensemble import RandomForestClassifier

    x, y = breast_cancer
    model = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, y)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=x.head(5), reference_data=x)
    keel.register_model(info.uri, "forest")
    assert load_model("models:/forest/1", runtime="auto").runtime == "native"
    _compile("forest", 1, "onnx")
    compiled = load_model("models:/forest/1", runtime="auto")
    assert (compiled.runtime, compiled.uri) == ("onnx", "models:/forest/1 (onnx)")
    np.testing.assert_array_equal(compiled.predict(x), model.predict(x))
    np.testing.assert_allclose(compiled.predict_proba(x), model.predict_proba(x), atol=1e-5)
