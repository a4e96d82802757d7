"""Index freshness: a source changed by a few files, the index_stale alert, and the refresh path.

``kb@production`` indexes four one-chunk documents (``hash-384`` embedder, real
LanceDB tables in the artifact store). A new source version changes one, adds one
and removes one (and adds an image the index does not read). Freshness counts
exactly those; the monitor raises ``index_stale`` once, a rebuild re-embeds only
the two new chunks, and the alias move clears the alert. The automation path
(an ``index:`` policy run by the controller, and :func:`refresh_index`) moves the
alias only when the retrieval gates pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import keel
from keel.automation import Controller, PolicyStore, history, load_policy
from keel.automation.indexes import rebuild_index, refresh_index
from keel.errors import Conflict, InvalidInput, NotFound
from keel.llm.rag.freshness import index_freshness
from keel.monitoring import list_alerts
from keel.monitoring.indexes import (
    check_index,
    check_indexes,
    get_index_watch,
    list_index_watches,
    unwatch_index,
    watch_index,
)

DOCS = {
    "install.md": "Install the package with pip, then initialise a project folder with init.",
    "tokens.md": "Rotate an API token with the rotate subcommand; expired tokens stop working.",
    "ports.md": "The server listens on port 5000 and the gateway on port 4000: open both.",
    "backup.md": "Back up the metadata database every night and keep seven copies offsite.",
}
#: Version 2 of the source: tokens.md changed, restore.md added, backup.md removed.
CHANGES = {
    "tokens.md": "Rotate an API token with the rotate subcommand; old tokens expire at once.",
    "restore.md": "Restore the metadata database from the newest offsite copy.",
}
QUESTIONS = [
    {"question": "how do I rotate an api token", "sources": ["tokens.md"]},
    {"question": "which port does the gateway listen on", "sources": ["ports.md"]},
    {"question": "install the package with pip", "sources": ["install.md"]},
]
DAY_MS = 86_400_000


def _write(root: Path, docs: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        old.unlink()
    for name, text in docs.items():
        (root / name).write_text(text)


def _change_source(root: Path) -> str:
    """Version 2 of ``docs``: one document changed, one added, one removed, an image added."""
    docs = {k: v for k, v in DOCS.items() if k != "backup.md"} | CHANGES
    _write(root, docs)
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n not text")
    return keel.data.add(root, name="docs").uri


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    """``kb`` version 1 on ``datasets:/docs@1``, ``kb@production`` → 1; the source folder."""
    root = tmp_path / "docs"
    _write(root, DOCS)
    source = keel.data.add(root, name="docs").uri
    client = keel.Client()
    built = client.rag.build("kb", source=source, chunker="tokens:50", embedder="hash-384")
    assert (built.chunks, built.embedded) == (4, 4)
    client.rag.set_alias("kb", "production", built.version.version)
    return root


@pytest.fixture
def questions(tmp_path: Path) -> str:
    path = tmp_path / "kb-questions.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return keel.data.add(path, name="kb-questions").uri


# -- freshness ---------------------------------------------------------------------------------


def test_a_source_changed_by_a_few_files_makes_the_index_stale_with_those_counts(
    sqlite_env, kb: Path
):
    client = keel.Client()
    fresh = index_freshness(client, "kb@production")
    assert (fresh.state, fresh.documents_changed, fresh.behind_seconds) == ("fresh", 0, None)
    assert fresh.summary().startswith(
        "rag:/kb@production is fresh: version 1 indexes datasets:/docs@1, its newest version"
    )

    _change_source(kb)
    stale = index_freshness(client, "kb@production")
    assert stale.state == "stale" and stale.overdue
    assert stale.counts == {"added": 1, "changed": 1, "removed": 1}
    assert (stale.added, stale.changed, stale.removed) == (
        ["restore.md"],
        ["tokens.md"],
        ["backup.md"],
    )
    assert stale.other_files == 1  # logo.png: no index reads it
    assert (stale.source_version, stale.latest_version) == (1, 2)
    assert stale.summary().startswith(
        "rag:/kb@production is stale: version 1 indexes datasets:/docs@1, and the newest "
        "version 2 has 3 document(s) changed (1 added, 1 changed, 1 removed); behind for"
    )
    assert stale.rebuild_command == (
        "keel rag build --source datasets:/docs@2 --chunker 'tokens:50' --embedder hash-384 "
        "--name kb"
    )
    # ages come from the stored times, measured at the check's time
    later = index_freshness(client, "kb@production", now=stale.checked_at + 2 * DAY_MS)
    assert later.age_seconds >= 2 * 86_400
    assert later.behind_seconds is not None and later.behind_seconds >= 2 * 86_400
    # a pinned version reports the same; only an alias can be watched
    assert index_freshness(client, "rag:/kb/1").counts == stale.counts


def test_a_source_version_with_only_unread_files_changed_leaves_the_index_fresh(
    sqlite_env, kb: Path
):
    (kb / "diagram.png").write_bytes(b"\x89PNG not text")
    keel.data.add(kb, name="docs")
    found = index_freshness(keel.Client(), "kb@production")
    assert (found.state, found.latest_version, found.other_files) == ("fresh", 2, 1)
    assert "the same documents as the newest version 2" in found.summary()


# -- the monitor ---------------------------------------------------------------------------------


def test_index_stale_fires_once_and_clears_when_the_rebuilt_version_takes_the_alias(
    keel_env, kb: Path
):
    client = keel.Client()
    watch_index("kb@production")
    assert check_index("kb@production").alerts == []  # fresh: nothing to say

    _change_source(kb)
    [fired] = check_index("kb@production").alerts
    assert (fired.deployment, fired.rule, fired.state, fired.value) == (
        "rag:/kb@production",
        "index_stale",
        "firing",
        3.0,
    )
    assert "3 document(s) changed (1 added, 1 changed, 1 removed)" in fired.message
    assert "rebuild: keel rag build --source datasets:/docs@2" in fired.message
    assert check_index("kb@production").alerts == []  # still stale: the same alert, not a new one

    rebuilt = rebuild_index(client, "kb@production")
    # only the changed and the added document are embedded again
    assert (rebuilt.version.version, rebuilt.chunks, rebuilt.embedded, rebuilt.reused) == (
        2,
        4,
        2,
        2,
    )
    assert rebuilt.hit_rate == 0.5
    assert rebuilt.version.source == "datasets:/docs@2"
    assert (rebuilt.version.chunker, rebuilt.version.embedder) == ("tokens:50", "hash-384")
    assert check_index("kb@production").alerts == []  # built, but the alias still holds 1

    client.rag.set_alias("kb", "production", 2)
    [resolved] = check_index("kb@production").alerts
    assert (resolved.state, resolved.value) == ("resolved", 0.0)
    assert resolved.message.startswith("index_stale resolved: rag:/kb@production is fresh")
    assert [a.state for a in list_alerts("rag:/kb@production")] == ["resolved", "firing"]


def test_an_index_may_lag_its_source_for_its_max_age_before_the_alert_fires(sqlite_env, kb: Path):
    watch_index("kb@production", max_age="1d")
    _change_source(kb)
    now = index_freshness(keel.Client(), "kb@production").checked_at
    early = check_index("kb@production", now=now)
    assert early.freshness is not None and early.freshness.stale and not early.freshness.overdue
    assert early.alerts == []
    assert "(within its max age of 1d)" in early.freshness.summary()
    [fired] = check_index("kb@production", now=now + DAY_MS + 1000).alerts
    assert fired.state == "firing" and fired.threshold == 86_400
    # every watched alias at once, as `keel rag check` does
    [checked] = check_indexes(now=now + DAY_MS + 2000)
    assert checked.index == "rag:/kb@production" and checked.alerts == [] and checked.error is None


def test_watches_are_stored_per_alias_compared_and_set_and_refuse_bad_input(sqlite_env, kb: Path):
    assert not get_index_watch("kb@production").watched
    watch = watch_index("rag:/kb@production", max_age="7d", webhook_url="http://127.0.0.1:9/x")
    assert (watch.index, watch.max_age, watch.revision) == ("rag:/kb@production", 604_800.0, 1)
    assert watch_index("kb@production", fire_after=2).max_age == 604_800.0  # only what is given
    assert [w.index for w in list_index_watches()] == ["rag:/kb@production"]
    with pytest.raises(Conflict, match=r"the watch of rag:/kb@production changed since revision 1"):
        watch_index("kb@production", expected_revision=1, max_age="1d")
    with pytest.raises(InvalidInput, match=r"watch an index alias such as kb@production, not a"):
        watch_index("rag:/kb/1")
    with pytest.raises(NotFound, match=r"'kb' has no alias 'staging'"):
        watch_index("kb@staging")
    with pytest.raises(InvalidInput, match=r"unknown index watch setting\(s\) window"):
        watch_index("kb@production", window="1h")
    with pytest.raises(InvalidInput, match=r"window must be like '1h'"):
        watch_index("kb@production", max_age="a week")
    with pytest.raises(InvalidInput, match=r"window must be like '1h'.*got False"):
        watch_index("kb@production", max_age=False)
    assert watch_index("kb@production", max_age="0s").max_age == 0.0  # zero in any unit: at once
    with pytest.raises(InvalidInput, match=r"fire_after must be a whole number >= 1, got 0"):
        watch_index("kb@production", fire_after=0)
    assert unwatch_index("kb@production").revision == 3
    with pytest.raises(NotFound, match=r"rag:/kb@production is not watched"):
        unwatch_index("kb@production")


# -- the refresh path: rebuild, evaluate, move the alias when the gates pass ---------------------


def test_refresh_moves_the_alias_only_when_the_retrieval_gates_pass(
    sqlite_env, kb: Path, questions: str
):
    client = keel.Client()
    gates = ["recall@1 >= 0.9", "diff.recall@1 >= -0.02"]
    assert refresh_index(
        client, "kb@production", questions=questions, gates=gates, k=1
    ).outcome == ("fresh")
    # the new source lost ports.md: the rebuild cannot answer the port question
    _write(kb, {k: v for k, v in DOCS.items() if k != "ports.md"})
    keel.data.add(kb, name="docs")
    failed = refresh_index(client, "kb@production", questions=questions, gates=gates, k=1)
    assert failed.outcome == "gate_failed" and not failed.moved
    assert failed.build is not None and failed.build.version.version == 2
    assert failed.evaluation is not None and failed.evaluation.metrics["recall@1"] == pytest.approx(
        2 / 3
    )
    assert "diff.recall@1 -0.3333 < -0.02" in failed.reason
    assert client.rag.get_alias("kb", "production") == 1

    _change_source(kb)  # ports.md is back; tokens.md changed, restore.md added
    done = refresh_index(client, "kb@production", questions=questions, gates=gates, k=1)
    assert (done.outcome, done.build.version.version if done.build else None) == ("promoted", 3)
    assert client.rag.get_alias("kb", "production") == 3
    assert index_freshness(client, "kb@production").state == "fresh"
    with pytest.raises(InvalidInput, match=r"needs at least one gate"):
        refresh_index(client, "kb@production", questions=questions, gates=[])
    with pytest.raises(InvalidInput, match=r"this eval measures no 'recall@1'; its metrics are"):
        refresh_index(client, "kb@production", questions=questions, gates=gates, k=10)


def _policy(questions: str, **extra: object) -> dict[str, object]:
    return {
        "name": "kb-fresh",
        "index": "kb",
        "triggers": [{"index_stale": {}}],
        "cooldown": "1s",
        "gates": {
            "retrieval": {
                "questions": "datasets:/kb-questions@latest",
                "k": 1,
                "gates": ["recall@1 >= 0.9", "diff.recall@1 >= -0.02"],
            }
        },
        **extra,
    }


def test_an_index_policy_rebuilds_evaluates_and_moves_the_alias_on_index_stale(
    keel_env, kb: Path, questions: str
):
    client = keel.Client()
    PolicyStore().apply(_policy(questions))
    clock = [index_freshness(client, "kb@production").checked_at + 1000]
    controller = Controller(clock=lambda: clock[0])
    [idle] = controller.tick()
    assert (idle.after, idle.events) == ("idle", [])  # fresh: no trigger

    _change_source(kb)
    clock[0] += 1000
    [cycle] = controller.tick()
    kinds = [e.kind for e in cycle.events]
    assert kinds == ["triggered", "retrain_started", "retrain_finished", "gate_passed", "promoted"]
    triggered, _, finished, passed, promoted = cycle.events
    assert triggered.details["trigger"] == "index_stale:rag:/kb@production:datasets:/docs@2"
    assert triggered.details["questions"] == questions  # pinned when the cycle started
    assert finished.reason == (
        "rebuilt kb/2 on datasets:/docs@2: 4 chunks, 2 embedded, 2 reused (cache hit rate 50%)"
    )
    assert passed.details["metrics"]["retrieval"]["metrics"]["recall@1"] == 1.0
    assert (promoted.reason, promoted.version) == ("production 1 → 2", 2)
    assert client.rag.get_alias("kb", "production") == 2
    assert [h.to_version for h in client.rag.alias_history("kb", "production")] == [1, 2]

    clock[0] += 2000  # past the cooldown: the next check finds the alias fresh
    [after] = controller.tick()
    assert after.events == [] and after.after == "idle"
    assert [a.state for a in list_alerts()] == ["resolved", "firing"]


def test_an_index_policy_whose_gates_fail_leaves_the_alias_and_tries_a_source_version_once(
    sqlite_env, kb: Path, questions: str
):
    client = keel.Client()
    PolicyStore().apply(_policy(questions))
    clock = [index_freshness(client, "kb@production").checked_at + 1000]
    controller = Controller(clock=lambda: clock[0])
    _write(kb, {k: v for k, v in DOCS.items() if k != "ports.md"})
    keel.data.add(kb, name="docs")
    [cycle] = controller.tick()
    assert [e.kind for e in cycle.events][-1] == "gate_failed"
    assert "diff.recall@1 -0.3333 < -0.02" in cycle.events[-1].reason
    assert cycle.failed and client.rag.get_alias("kb", "production") == 1
    clock[0] += 5000  # the alert still fires, but this source version was tried
    [again] = controller.tick()
    assert again.events == []
    assert [e.kind for e in history("kb-fresh")].count("triggered") == 1


def test_a_protected_index_alias_waits_for_an_approval_then_moves(
    sqlite_env, kb: Path, questions: str, as_user
):
    client = keel.Client()
    client.set_alias_policy("production", approvals=1, role="approver")
    client.grant_role("alice", "approver")
    alice = as_user("alice")
    PolicyStore().apply(_policy(questions, approval={"mode": "required"}))
    _change_source(kb)
    [asked] = Controller().tick()
    assert [e.kind for e in asked.events][-2:] == ["gate_passed", "approval_requested"]
    assert asked.after == "awaiting_approval"
    assert "keel rag approve kb 2 --for production" in asked.events[-1].reason
    assert client.rag.get_alias("kb", "production") == 1
    [waiting] = Controller().tick()
    assert waiting.events == [] and waiting.after == "awaiting_approval"

    alice.rag.approve("kb", 2, "production", comment="the recall held")
    [done] = Controller().tick()
    [promoted] = done.events
    assert (promoted.kind, promoted.version, done.after) == ("promoted", 2, "idle")
    assert client.rag.get_alias("kb", "production") == 2


def test_index_policies_are_checked_when_parsed_and_applied(sqlite_env, kb: Path, questions: str):
    policy = load_policy(_policy(questions))
    assert (policy.kind, policy.alias, policy.uri(3)) == ("index", "production", "rag:/kb/3")
    assert "deployment" not in policy.to_dict() and "rollout" not in policy.to_dict()
    assert load_policy(policy.to_dict()) == policy
    with pytest.raises(InvalidInput, match=r"unknown field\(s\) deployment; expected name, index"):
        load_policy({**_policy(questions), "deployment": "kb-api"})
    with pytest.raises(InvalidInput, match=r"\(drift triggers are for model policies\)"):
        load_policy({**_policy(questions), "triggers": [{"drift": {"window": "1h"}}]})
    with pytest.raises(InvalidInput, match=r"\(index_stale triggers are for index policies\)"):
        load_policy(
            {
                "name": "m",
                "model": "m",
                "deployment": "d",
                "retrain": {"pipeline": "a:b"},
                "triggers": [{"index_stale": {}}],
            }
        )
    bad_k = _policy(questions)
    bad_k["gates"] = {"retrieval": {"questions": questions, "gates": ["recall@1 >= 1"], "k": 0}}
    with pytest.raises(InvalidInput, match=r"policy.gates.retrieval.k: k must be a whole number"):
        load_policy(bad_k)
    mismatch = _policy(questions)
    mismatch["gates"] = {"retrieval": {"questions": questions, "gates": ["recall@5 >= 1"]}}
    with pytest.raises(
        InvalidInput, match=r"retrieval.gates\[0\]: gate 'recall@5 >= 1': this eval measures no"
    ):
        load_policy(mismatch)  # k is 10 by default
    no_gate = _policy(questions)
    no_gate["gates"] = {"retrieval": {"questions": questions, "gates": []}}
    with pytest.raises(InvalidInput, match=r"gates.retrieval.gates: expected a non-empty list"):
        load_policy(no_gate)
    with pytest.raises(NotFound, match=r"policy.alias: index 'kb' has no alias 'staging'"):
        PolicyStore().apply(_policy(questions, alias="staging"))
    with pytest.raises(NotFound, match=r"policy.index: no RAG index 'kd'"):
        PolicyStore().apply({**_policy(questions), "index": "kd"})
    applied, revision = PolicyStore().apply(_policy(questions))
    assert applied.is_index and revision == 1
    [row] = PolicyStore().list()
    assert (row["kind"], row["model"], row["deployment"]) == ("index", "kb", "")


@pytest.mark.slow  # seven keel processes
def test_keel_rag_watch_status_and_check_report_and_alert(sqlite_env, kb: Path, run_keel):
    watched = run_keel("rag", "watch", "kb@production", "--max-age", "0", settings=sqlite_env)
    assert watched.returncode == 0, watched.stderr
    assert "rag:/kb@production (revision 1)" in watched.stdout
    _change_source(kb)

    status = run_keel("rag", "status", "kb@production", settings=sqlite_env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("stale  rag:/kb@production is stale: version 1 indexes")
    assert "changed  tokens.md" in status.stdout
    doc = json.loads(
        run_keel("rag", "status", "kb@production", "--json", settings=sqlite_env).stdout
    )
    assert (doc["state"], doc["counts"], doc["watch"]["revision"]) == (
        "stale",
        {"added": 1, "changed": 1, "removed": 1},
        1,
    )

    checked = run_keel("rag", "check", "--json", settings=sqlite_env)
    assert checked.returncode == 0, checked.stderr
    [check] = json.loads(checked.stdout)
    assert [(a["rule"], a["state"]) for a in check["alerts"]] == [("index_stale", "firing")]
    alerts = run_keel("monitor", "alerts", "rag:/kb@production", "--json", settings=sqlite_env)
    assert [a["state"] for a in json.loads(alerts.stdout)] == ["firing"]

    version = run_keel("rag", "watch", "rag:/kb/1", settings=sqlite_env)
    assert version.returncode == 1
    assert version.stderr.startswith("error: watch an index alias such as kb@production, not a")


def test_an_approval_that_comes_after_the_alias_moved_by_hand_never_moves_it_back(
    sqlite_env, kb: Path, questions: str, as_user
):
    client = keel.Client()
    client.set_alias_policy("production", approvals=1, role="approver")
    client.grant_role("alice", "approver")
    alice = as_user("alice")
    PolicyStore().apply(_policy(questions, approval={"mode": "required"}))
    _change_source(kb)
    [asked] = Controller().tick()
    assert asked.after == "awaiting_approval"
    # meanwhile someone builds another version by hand and moves production to it
    other = client.rag.build(
        "kb", source="datasets:/docs@2", chunker="tokens:30", embedder="hash-384"
    )
    assert other.version.version == 3
    alice.rag.approve("kb", 3, "production")
    client.rag.set_alias("kb", "production", 3)
    alice.rag.approve("kb", 2, "production")
    [done] = Controller().tick()
    [ended] = done.events
    assert (ended.kind, ended.version, done.after) == ("rolled_back", 2, "idle")
    assert ended.reason == (
        "production moved from 1 to 3 outside automation while kb/2 was gated; the cycle "
        "ends without moving it"
    )
    assert client.rag.get_alias("kb", "production") == 3
