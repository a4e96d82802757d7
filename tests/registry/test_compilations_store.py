"""Recorded compilations on every mode: the row names a stored report (and package) that
says the same thing, the newest passed one is what a runtime serves, and each is audited."""

from __future__ import annotations

from pathlib import Path

import pytest

import keel
from keel.config import Settings
from keel.errors import InvalidInput, NotFound


def _version(tmp_path: Path) -> keel.Client:
    model = tmp_path / "pkg"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"weights")
    with keel.start_run():
        keel.log_artifacts(str(model), "model")
        run_id = keel.active_run().id
    client = keel.Client()
    client.create_registered_model("fraud")
    client.create_model_version("fraud", f"runs:/{run_id}/model")
    return client


def _report(client: keel.Client, **overrides: object) -> str:
    report = {"model": "fraud", "version": 1, "target": "onnx", "passed": False}
    report.update(overrides)
    return client.artifacts.put_json(report).digest


def _package(client: keel.Client, tmp_path: Path) -> str:
    folder = tmp_path / "compiled"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"not really onnx")
    return client.artifacts.put_dir(folder)[0].digest


def test_the_newest_passed_compilation_of_a_target_is_the_one_served(
    any_env: Settings, tmp_path: Path
) -> None:
    client = _version(tmp_path)
    registry = client.registry
    assert registry.list_compilations("fraud", 1) == []
    failed = registry.record_compilation(
        "fraud", 1, target="onnx", passed=False, package_digest=None,
        report_digest=_report(client, reason="a custom transformer"),
    )  # fmt: skip
    assert registry.compiled("fraud", 1, "onnx") is None
    package = _package(client, tmp_path)
    passed = registry.record_compilation(
        "fraud", 1, target="onnx", passed=True, package_digest=package,
        report_digest=_report(client, passed=True),
    )  # fmt: skip
    assert registry.list_compilations("fraud", 1) == [failed, passed]
    assert registry.compiled("fraud", 1, "onnx") == passed
    assert registry.compiled("fraud", 1, "treelite") is None
    assert passed.created_by == client.user


def test_a_report_of_another_compilation_is_refused_and_nothing_is_recorded(
    any_env: Settings, tmp_path: Path
) -> None:
    client = _version(tmp_path)
    with pytest.raises(InvalidInput, match=r"passed=True.*not of the compilation recorded"):
        client.registry.record_compilation(
            "fraud", 1, target="onnx", passed=False, package_digest=None,
            report_digest=_report(client, passed=True),
        )  # fmt: skip
    with pytest.raises(InvalidInput, match="must name its compiled package"):
        client.registry.record_compilation(
            "fraud", 1, target="onnx", passed=True, package_digest=None,
            report_digest=_report(client, passed=True),
        )  # fmt: skip
    with pytest.raises(NotFound, match="does not hold the package"):
        client.registry.record_compilation(
            "fraud", 1, target="onnx", passed=True, package_digest="a" * 64,
            report_digest=_report(client, passed=True),
        )  # fmt: skip
    with pytest.raises(InvalidInput, match="target must be one of onnx, treelite, got 'tvm'"):
        client.registry.record_compilation(
            "fraud", 1, target="tvm", passed=False, package_digest=None,
            report_digest=_report(client, target="tvm"),
        )  # fmt: skip
    assert client.registry.list_compilations("fraud", 1) == []


def test_a_compilation_is_audited_and_its_package_is_lineage_of_the_version(
    sqlite_env: Settings, tmp_path: Path
) -> None:
    from keel.governance import audit
    from keel.store import get_store

    client = _version(tmp_path)
    package = _package(client, tmp_path)
    client.registry.record_compilation(
        "fraud", 1, target="onnx", passed=True, package_digest=package,
        report_digest=_report(client, passed=True),
    )  # fmt: skip
    entries = audit.list_entries(get_store(sqlite_env), action="model_version.compile")
    assert [(e.object_id, e.after["package_digest"]) for e in entries] == [("fraud/1", package)]
    graph = client.lineage.downstream("models:/fraud/1")
    assert any(e.dst == f"artifacts:/{package}" and e.relation == "compiled" for e in graph.edges)
