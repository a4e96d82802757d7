"""The audit chain: every change recorded in its transaction; tampering is found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

import keel
from keel.governance import audit
from keel.store import get_store
from keel.store import schema as s


def _populate(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_text("w")
    with keel.start_run() as run:
        keel.log_artifacts(folder, artifact_path="model")
    client = keel.Client()
    client.create_model_version("audited", f"runs:/{run.id}/model")
    client.set_alias("audited", "champion", 1)
    client.grant_role("someone", "approver")


def test_changes_write_entries_that_verify(keel_env, tmp_path: Path):
    _populate(tmp_path)
    store = get_store(keel_env)
    actions = [e.action for e in audit.list_entries(store, newest_first=False)]
    assert actions == [
        "run.create",
        "run.status",
        "model_version.create",
        "alias.set",
        "role.grant",
    ]
    alias_entry = audit.list_entries(store, object_type="alias")[0]
    assert alias_entry.object_id == "audited@champion"
    assert alias_entry.after == {"version": 1, "comment": None}
    assert alias_entry.actor == keel_env.user
    result = audit.verify(store)
    assert result.ok and result.checked == 5


def test_a_refused_change_leaves_no_entry(keel_env, tmp_path: Path):
    _populate(tmp_path)
    store = get_store(keel_env)
    count = len(audit.list_entries(store))
    with pytest.raises(keel.errors.Conflict):
        keel.Client().set_alias("audited", "champion", 1, expected=None)
    assert len(audit.list_entries(store)) == count


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "reason"),
    [
        ("edit", 3, "entry 3 .* was edited"),
        ("delete", 3, "entry 3 is missing"),
        ("reorder", 2, "entry 2 does not chain to entry 1"),
        ("truncate", 5, "entries were deleted from the end"),
    ],
)
def test_verify_points_at_the_first_tampered_row(keel_env, tmp_path: Path, tamper, bad_seq, reason):
    _populate(tmp_path)
    store = get_store(keel_env)
    log = s.audit_log
    with store.write() as conn:
        if tamper == "edit":
            conn.execute(update(log).where(log.c.seq == 3).values(actor="someone-else"))
        elif tamper == "delete":
            conn.execute(delete(log).where(log.c.seq == 3))
        elif tamper == "reorder":  # swap the contents of entries 2 and 3
            two, three = (
                conn.execute(select(log).where(log.c.seq == n)).one()._asdict() for n in (2, 3)
            )
            for row, seq in ((two, 3), (three, 2)):
                conn.execute(update(log).where(log.c.seq == seq).values({**row, "seq": seq}))
        else:
            conn.execute(delete(log).where(log.c.seq == 5))
    result = audit.verify(store)
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    import re

    assert re.search(reason, result.reason or "")


def test_cli_audit_verify_exits_1_and_names_the_row(keel_env, tmp_path: Path, run_keel):
    _populate(tmp_path)
    env_args = ["--home", str(keel_env.home)]
    env = {"KEEL_STORE_URL": keel_env.store_url}
    ok = run_keel(*env_args, "audit", "verify", "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    with get_store(keel_env).write() as conn:
        conn.execute(
            update(s.audit_log).where(s.audit_log.c.seq == 4).values(after='{"version": 9}')
        )
    bad = run_keel(*env_args, "audit", "verify", env=env)
    assert bad.returncode == 1
    assert "entry 4" in bad.stdout + bad.stderr
    listed = run_keel(
        *env_args, "audit", "list", "--object", "alias:audited@champion", "--json", env=env
    )
    assert [e["action"] for e in json.loads(listed.stdout)] == ["alias.set"]


def test_entries_in_one_transaction_chain_and_keep_their_acting_token(keel_env):
    store = get_store(keel_env)
    with store.write() as conn:
        first = audit.record(
            conn, actor="ana", action="thing.make", object_type="thing", object_id="a"
        )
        with audit.acting_token("tok123"):
            second = audit.record(
                conn,
                actor="ana",
                action="thing.change",
                object_type="thing",
                object_id="b",
                before={"n": 1},
                after={"n": 2},
            )
    assert (second.seq, second.prev_digest) == (first.seq + 1, first.digest)
    stored = audit.list_entries(store, object_type="thing", newest_first=False)
    assert [(e.seq, e.digest, e.token_id, e.before, e.after) for e in stored] == [
        (first.seq, first.digest, None, None, None),
        (second.seq, second.digest, "tok123", {"n": 1}, {"n": 2}),
    ]
    with store.read() as conn:
        head = conn.execute(select(s.audit_head.c.seq, s.audit_head.c.digest)).one()
    assert tuple(head) == (second.seq, second.digest)
    assert audit.verify(store).ok
