"""Checkpoints anchor the audit chain's head outside the database.

Deleting the newest rows and rewinding ``audit_head`` leaves a chain that
holds; only a checkpoint in the artifact store proves it once reached further.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

import keel
from keel.artifacts import get_artifact_store
from keel.config import Settings
from keel.governance import audit
from keel.governance.checkpoints import EVERY, PREFIX, CheckpointLog
from keel.store import Store, get_store

KEY = "a-secret-only-the-operators-hold"


def _grant(n: int, start: int = 0) -> None:
    """``n`` role grants: protected actions, one entry each."""
    client = keel.Client()
    for i in range(start, start + n):
        client.grant_role(f"user{i}", "approver")


def _checkpointed_seqs(settings: Settings) -> list[int]:
    backend = get_artifact_store(settings).backend
    return sorted(int(key.rpartition("/")[2].split("-")[0]) for key in backend.keys(PREFIX))


def _note(store: Store, count: int, per_transaction: int = 1) -> None:
    """Append unprotected entries, ``per_transaction`` to a transaction."""
    for _ in range(0, count, per_transaction):
        with store.write() as conn:
            for _ in range(per_transaction):
                audit.record(conn, actor="t", action="run.status", object_type="run", object_id="r")


def _truncate(store: Store, keep: int) -> None:
    """Delete every entry after ``keep`` and rewind the head to it, as raw SQL would."""
    with store.write() as conn:
        digest = conn.execute(
            text("SELECT digest FROM audit_log WHERE seq = :seq"), {"seq": keep}
        ).scalar_one()
        conn.execute(text("DELETE FROM audit_log WHERE seq > :seq"), {"seq": keep})
        conn.execute(
            text("UPDATE audit_head SET seq = :seq, digest = :digest WHERE id = 1"),
            {"seq": keep, "digest": digest},
        )


@pytest.fixture
def audit_cli(run_keel) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``audit_cli(settings, *args, key=None)``: ``keel --home <home> audit *args``.

    The child opens the settings' store and, given ``key``, holds it as ``KEEL_AUDIT_KEY``.
    """

    def run(
        settings: Settings, *args: str, key: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {"KEEL_STORE_URL": settings.store_url}
        if key is not None:
            env["KEEL_AUDIT_KEY"] = key
        return run_keel("--home", str(settings.home), "audit", *args, env=env)

    return run


def _replace_newest(settings: Settings, **changes: object) -> None:
    """Swap the newest checkpoint for a copy with ``changes``, as someone with store access could."""
    artifacts = get_artifact_store(settings)
    ref = sorted(artifacts.backend.keys(PREFIX))[-1]
    doc = artifacts.get_json(ref.rpartition("-")[2])
    doc.update(changes)
    forged = artifacts.put_json(doc)
    for other in list(artifacts.backend.keys(PREFIX)):  # the newest, and any that outrank it
        if other == ref or int(other.rpartition("/")[2][:20]) > int(doc["seq"]):
            artifacts.backend.delete(other)
    artifacts.backend.put_bytes(f"{PREFIX}/{int(doc['seq']):020d}-{forged.digest}", b"")


# -- truncation ---------------------------------------------------------------------


def test_deleting_the_newest_entries_and_rewinding_the_head_is_reported(keel_env):
    _grant(5)
    store = get_store(keel_env)
    assert audit.verify(store).ok
    _truncate(store, keep=3)

    result = audit.verify(store)

    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.checked == 3
    assert result.checkpoint is not None and result.checkpoint.seq == 5
    assert "entries after seq 3 are missing" in (result.reason or "")


def test_truncation_is_reported_with_checkpoints_in_s3_too(
    tmp_path: Path, artifacts_url: str, s3_endpoint: str | None
):
    settings = keel.init(
        home=tmp_path / ".keel", artifacts_url=artifacts_url, s3_endpoint_url=s3_endpoint
    )
    _grant(3)
    store = get_store(settings)
    assert audit.verify(store).ok
    _truncate(store, keep=1)

    result = audit.verify(store)

    assert not result.ok and result.first_bad_seq == 2
    assert "entries after seq 1 are missing" in (result.reason or "")


def test_cli_verify_exits_1_on_a_truncated_chain(keel_env, audit_cli):
    _grant(5)
    _truncate(get_store(keel_env), keep=2)

    done = audit_cli(keel_env, "verify")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "entries after seq 2 are missing" in done.stderr
    as_json = audit_cli(keel_env, "verify", "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["first_bad_seq"] == 3
    assert report["checkpoint"]["seq"] == 5


def test_an_intact_chain_verifies_against_its_newest_checkpoint(keel_env, audit_cli):
    _grant(3)

    result = audit.verify(get_store(keel_env))

    assert result.ok and result.checked == 3
    assert result.checkpoint is not None and result.checkpoint.seq == 3
    assert result.checkpoint.signature is None
    assert result.anchor.startswith("checkpoint of entry 3 written ")
    done = audit_cli(keel_env, "verify")
    assert done.returncode == 0, done.stderr
    assert "3 entries, chain intact" in done.stdout
    assert "checkpoint of entry 3" in done.stdout


def test_an_edited_row_is_still_reported_first(keel_env):
    _grant(4)
    store = get_store(keel_env)
    with store.write() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"))

    result = audit.verify(store)

    assert not result.ok and result.first_bad_seq == 2
    assert "entry 2 (role.grant on role:user1/approver) was edited" in (result.reason or "")


# -- when checkpoints are written -----------------------------------------------------


def test_a_protected_action_writes_a_checkpoint_once_it_commits(keel_env):
    client = keel.Client()
    client.create_registered_model("m")  # not protected
    assert _checkpointed_seqs(keel_env) == []
    client.set_alias_policy("production")  # protected: seq 2
    client.grant_role("alice", "approver")  # protected: seq 3
    assert _checkpointed_seqs(keel_env) == [2, 3]
    checkpoints = CheckpointLog.for_store(get_store(keel_env))
    assert checkpoints is not None
    newest = checkpoints.newest()
    entry = audit.list_entries(get_store(keel_env), limit=1)[0]
    assert [(c.seq, c.digest) for c in newest] == [(3, entry.digest)]


def test_every_hundredth_entry_writes_a_checkpoint(keel_env):
    store = get_store(keel_env)
    _note(store, EVERY - 1)
    assert _checkpointed_seqs(keel_env) == []
    _note(store, 1)
    assert _checkpointed_seqs(keel_env) == [EVERY]
    # A transaction that crosses the mark checkpoints its newest entry, not the hundredth.
    _note(store, EVERY - 2)
    _note(store, 4, per_transaction=4)  # entries 199..202
    assert _checkpointed_seqs(keel_env) == [EVERY, 2 * EVERY + 2]
    assert audit.verify(store).ok


def test_a_rolled_back_protected_action_leaves_no_checkpoint(keel_env):
    store = get_store(keel_env)
    _grant(1)
    with pytest.raises(RuntimeError, match="refused"), store.write() as conn:
        audit.record(conn, actor="t", action="alias.set", object_type="alias", object_id="m@a")
        raise RuntimeError("refused")
    _note(store, 1)  # the next transaction on the pooled connection inherits nothing

    assert _checkpointed_seqs(keel_env) == [1]
    result = audit.verify(store)
    assert result.ok and result.checked == 2


def test_a_store_other_than_the_settings_one_gets_no_checkpoint(keel_env, tmp_path: Path):
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    with other.write() as conn:
        audit.record(conn, actor="t", action="role.grant", object_type="role", object_id="x/y")
    other.dispose()

    assert _checkpointed_seqs(keel_env) == []  # not in this chain's artifact store
    assert audit.verify(get_store(keel_env)).ok


def test_concurrent_protected_writers_leave_a_chain_that_verifies(keel_env):
    client = keel.Client()
    client.create_registered_model("m")
    errors: list[BaseException] = []

    def grant(worker: int) -> None:
        try:
            _grant(10, start=worker * 100)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=grant, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert _checkpointed_seqs(keel_env) == list(range(2, 32))
    result = audit.verify(get_store(keel_env))
    assert result.ok and result.checked == 31


# -- signatures ---------------------------------------------------------------------


@pytest.fixture
def keyed_env(tmp_path: Path, store_url: str) -> Settings:
    return keel.init(home=tmp_path / ".keel", store_url=store_url, audit_key=KEY)


def test_with_a_key_checkpoints_are_signed_and_verify(keyed_env):
    _grant(2)

    result = audit.verify(get_store(keyed_env))

    assert result.ok
    assert result.checkpoint is not None and result.checkpoint.signed_by(KEY)
    assert "signature verified" in result.anchor


@pytest.mark.parametrize(
    "changes",
    [{"digest": "f" * 64}, {"seq": 2}],
    ids=["edited-digest", "edited-seq"],
)
def test_with_a_key_a_tampered_checkpoint_is_reported(keyed_env, changes, audit_cli):
    _grant(4)
    store = get_store(keyed_env)
    if "seq" in changes:
        # The forger truncates to entry 2 and makes the checkpoint agree with that.
        _truncate(store, keep=2)
        changes = {**changes, "digest": audit.list_entries(store, limit=1)[0].digest}
    _replace_newest(keyed_env, **changes)

    result = audit.verify(store)

    assert not result.ok
    assert "does not verify under the configured audit key" in (result.reason or "")
    done = audit_cli(keyed_env, "verify", key=KEY)
    assert done.returncode == 1
    assert "does not verify under the configured audit key" in done.stderr


def test_without_the_key_an_edited_checkpoint_digest_is_still_a_mismatch(keel_env):
    _grant(4)
    _replace_newest(keel_env, digest="f" * 64)

    result = audit.verify(get_store(keel_env))

    assert not result.ok and result.first_bad_seq == 4
    assert "entry 4 does not match the checkpoint of entry 4" in (result.reason or "")


def test_with_a_key_an_unsigned_checkpoint_is_reported_until_one_is_signed(
    tmp_path: Path, store_url: str, audit_cli
):
    unkeyed = keel.init(home=tmp_path / ".keel", store_url=store_url)
    _grant(2)
    keyed = keel.init(home=tmp_path / ".keel", store_url=store_url, audit_key=KEY)
    store = get_store(keyed)

    result = audit.verify(store)
    assert not result.ok
    assert "checkpoint of entry 2" in (result.reason or "")
    assert "is not signed, but an audit key is set" in (result.reason or "")

    done = audit_cli(unkeyed, "checkpoint", "--json", key=KEY)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["signed"] is True
    assert audit.verify(store).ok


def test_checkpoint_command_refuses_a_broken_chain(keel_env, audit_cli):
    _grant(3)
    _truncate(get_store(keel_env), keep=1)

    done = audit_cli(keel_env, "checkpoint")

    assert done.returncode == 1
    assert "does not verify, so it gets no checkpoint: entries after seq 1" in done.stderr
    assert _checkpointed_seqs(keel_env) == [1, 2, 3]


def test_a_checkpoint_whose_object_was_deleted_is_reported(keel_env):
    _grant(2)
    artifacts = get_artifact_store(keel_env)
    newest = sorted(artifacts.backend.keys(PREFIX))[-1]
    artifacts.backend.delete(artifacts.key(newest.rpartition("-")[2]))

    result = audit.verify(get_store(keel_env))

    assert not result.ok and result.first_bad_seq is None
    assert "cannot be read" in (result.reason or "")
