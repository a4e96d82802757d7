"""Model checks and model cards on every mode, ``keel server`` included.

``keel models check`` stores its report as an artifact (through the blob routes
on a server) and records the check through the registry part; ``build_card``
reads it back the same way. On the server mode nothing here opens the
metadata store: the client talks HTTP with a token.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import keel
from _support.control_plane import ControlPlane
from _support.models import CancerVersions, register_cancer_versions
from keel.artifacts import hash_bytes
from keel.config import Settings, load_settings
from keel.errors import InvalidInput, NotFound, PermissionDenied
from keel.governance import audit
from keel.registry.card import build_card, render_markdown
from keel.registry.remote import RemoteRegistry
from keel.store import get_store

pytest.importorskip("skops", reason="model packages for scikit-learn need skops")

#: Runs a test on ``any_env``'s server mode only (permissions and blob uploads are the server's).
server_only = pytest.mark.parametrize("any_env", ["server"], indirect=True)


@pytest.fixture
def cancer(any_env: Settings, tmp_path: Path) -> CancerVersions:
    return register_cancer_versions(any_env, tmp_path)


def _check(run_keel, cancer: CancerVersions, version: str, *extra: str):
    return run_keel(
        "models", "check", "cancer", version,
        "--data", str(cancer.holdout), "--target", "y", "--rules", str(cancer.rules),
        "--against", "champion", "--json", *extra,
        settings=cancer.settings,
    )  # fmt: skip


def test_models_check_records_its_verdict_and_the_card_shows_it(
    any_env: Settings, cancer: CancerVersions, run_keel
) -> None:
    client = keel.Client()
    assert isinstance(client.registry, RemoteRegistry) == bool(any_env.server_url)
    assert client.registry.list_checks("cancer", 2) == []

    passed = _check(run_keel, cancer, "2")
    assert passed.returncode == 0, passed.stderr
    assert json.loads(passed.stdout)["passed"] is True
    # version 1 (the champion itself, a prior-only dummy) fails the accuracy floor: exit 1
    failed = _check(run_keel, cancer, "1")
    assert failed.returncode == 1, failed.stderr

    [check] = client.registry.list_checks("cancer", 2)
    assert (check.version, check.against_version, check.passed) == (2, 1, True)
    assert check.created_by == client.user  # the token's user on a server, not the OS user
    report = client.artifacts.get_json(check.report_digest)
    assert report["model"] == "cancer" and report["n_rows"] == 171
    assert [c.passed for c in client.registry.list_checks("cancer", 1)] == [False]

    card = build_card(client, "cancer", 2)
    assert card["check"]["passed"] is True and card["check"]["n_rows"] == 171
    assert card["check"]["against"] == {"ref": "champion", "version": 1}
    assert card["check"]["checked_by"] == client.user
    assert card["run"]["run_id"] == cancer.run_id
    assert card["run"]["params"] == {"C": "1.0", "model": "logreg"}
    assert card["package"]["flavor"] == "sklearn"
    assert card["environment"]["python_version"]
    assert card["alias_history"] == []  # version 2 never held an alias
    text = render_markdown(card)
    assert "**PASSED** on 171 rows against champion (version 1)" in text
    assert "| roc_auc |" in text
    assert "**FAILED**" in render_markdown(build_card(client, "cancer", 1))


def test_the_card_command_reads_the_recorded_check_through_the_same_client(
    any_env: Settings, cancer: CancerVersions, run_keel
) -> None:
    assert _check(run_keel, cancer, "2").returncode == 0
    shown = run_keel("models", "card", "cancer", "2", "--json", settings=cancer.settings)
    assert shown.returncode == 0, shown.stderr
    card = json.loads(shown.stdout)
    assert card == json.loads(json.dumps(build_card(keel.Client(), "cancer", 2)))


def test_a_check_naming_a_report_the_store_does_not_hold_is_refused(
    any_env: Settings, cancer: CancerVersions
) -> None:
    """The registry refuses it in every mode: on a server, the server's artifact store decides."""
    registry = keel.Client().registry
    absent = hash_bytes(b'{"never": "uploaded"}')
    with pytest.raises(NotFound, match=rf"does not hold report {absent}.*store the report first"):
        registry.record_check(
            "cancer", 2, against_version=None, passed=True, data_digest="0" * 64,
            report_digest=absent,
        )  # fmt: skip
    # a stored object that reports another version (or verdict) is not this check's report
    other = registry.artifacts.put_json({"model": "cancer", "version": 1, "passed": True})
    with pytest.raises(InvalidInput, match=r"version 1 .*not of the check recorded for 'cancer'"):
        registry.record_check(
            "cancer", 2, against_version=None, passed=True, data_digest="0" * 64,
            report_digest=other.digest,
        )  # fmt: skip
    with pytest.raises(InvalidInput, match="data_digest"):
        registry.record_check(
            "cancer", 2, against_version=None, passed=True, data_digest="not-a-digest",
            report_digest=other.digest,
        )  # fmt: skip
    assert registry.list_checks("cancer", 2) == []


@server_only
def test_a_viewer_reads_checks_but_cannot_record_one(
    any_env: Settings, cancer: CancerVersions, control_plane: ControlPlane, tmp_path: Path
) -> None:
    from keel.checks import Rules, check_model_version

    holdout = cancer.holdout
    rules = Rules.from_dict({"metrics": {"accuracy": {"min": 0.9}}})
    assert check_model_version("cancer", 2, holdout, "y", rules).passed

    token = control_plane.make_user("checks-viewer", "viewer")
    viewer = keel.Client(
        load_settings(home=tmp_path / "viewer", server_url=any_env.server_url, token=token)
    )
    [check] = viewer.registry.list_checks("cancer", 2)
    assert check.passed and check.against_version is None
    with pytest.raises(PermissionDenied, match="lacks permission 'write'"):
        viewer.registry.record_check(
            "cancer", 2, against_version=None, passed=True, data_digest=check.data_digest,
            report_digest=check.report_digest,
        )  # fmt: skip
    assert len(viewer.registry.list_checks("cancer", 2)) == 1

    # the server's audit trail holds the one check, by the token's user, intact
    server_store = get_store(
        load_settings(home=tmp_path / "srv", store_url=control_plane.store_url)
    )
    entries = audit.list_entries(server_store, object_id="cancer/2")
    checks = [e for e in entries if e.action == "model_version.check"]
    assert [(e.actor, e.after["passed"], e.after["report_digest"]) for e in checks] == [
        (keel.Client().user, True, check.report_digest)
    ]
    assert audit.verify(server_store).ok
