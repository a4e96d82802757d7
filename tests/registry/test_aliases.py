"""Aliases: set, read, history and delete; compare-and-set moves; moves in a caller's transaction."""

from __future__ import annotations

import pytest

import keel
from keel.errors import Conflict, InvalidInput, NotFound
from keel.governance import audit


def test_alias_set_get_history_and_delete(any_env, model_run):
    for n in range(3):
        keel.register_model(model_run(f"w{n}"), "churn")
    client = keel.Client()
    client.set_alias("churn", "champion", 1)
    client.set_alias("churn", "champion", 3, comment="better AUC")
    assert client.get_model_version_by_alias("churn", "champion").version == 3
    assert client.get_model_version("churn", 3).aliases == ["champion"]
    client.delete_alias("churn", "champion")
    with pytest.raises(NotFound, match="has no alias 'champion'"):
        client.get_model_version_by_alias("churn", "champion")
    history = [
        (h.from_version, h.to_version, h.comment) for h in client.alias_history("churn", "champion")
    ]
    assert history == [(None, 1, None), (1, 3, "better AUC"), (3, None, None)]
    with pytest.raises(InvalidInput, match="alias must start with a letter"):
        client.set_alias("churn", "latest", 1)
    with pytest.raises(NotFound, match="has no version 9"):
        client.set_alias("churn", "champion", 9)


def test_alias_move_is_compare_and_set(any_env, model_run):
    for n in range(3):
        keel.register_model(model_run(f"w{n}"), "cas")
    client = keel.Client()
    client.set_alias("cas", "champion", 1)
    client.set_alias("cas", "champion", 2, expected=1)
    with pytest.raises(Conflict, match="is at version 2, not version 1"):
        client.set_alias("cas", "champion", 3, expected=1)
    with pytest.raises(Conflict, match="is at version 2, not unset"):
        client.set_alias("cas", "champion", 3, expected=None)
    assert client.get_alias("cas", "champion") == 2
    assert len(client.alias_history("cas")) == 2  # the refused moves left no trace


def test_an_alias_move_commits_or_rolls_back_with_the_callers_transaction(keel_env, model_run):
    for n in range(2):
        keel.register_model(model_run(f"w{n}"), "joined")
    client = keel.Client()
    client.set_alias("joined", "champion", 1)
    client.set_alias("joined", "staging", 2)
    entries = len(audit.list_entries(client.store))

    failed = pytest.raises(RuntimeError, match="the caller's next write failed")
    with failed, client.store.write() as conn:
        change = client.set_alias("joined", "champion", 2, comment="promote", conn=conn)
        assert (change.from_version, change.to_version) == (1, 2)
        client.delete_alias("joined", "staging", conn=conn)
        raise RuntimeError("the caller's next write failed")
    # Neither the moves nor their history nor their audit entries outlived the rollback.
    assert client.get_registered_model("joined").aliases == {"champion": 1, "staging": 2}
    assert [(h.alias, h.to_version) for h in client.alias_history("joined")] == [
        ("champion", 1),
        ("staging", 2),
    ]
    assert len(audit.list_entries(client.store)) == entries

    with client.store.write() as conn:
        client.set_alias("joined", "champion", 2, comment="promote", conn=conn)
        client.delete_alias("joined", "staging", conn=conn)
    assert client.get_registered_model("joined").aliases == {"champion": 2}
    moved = audit.list_entries(client.store, newest_first=False)[entries:]
    assert [(e.action, e.object_id) for e in moved] == [
        ("alias.set", "joined@champion"),
        ("alias.delete", "joined@staging"),
    ]
    assert audit.verify(client.store).ok


MOVE = """
import sys, time
from pathlib import Path
import keel
from keel.errors import Conflict
keel.init(home=sys.argv[1], store_url=sys.argv[2])
client = keel.Client()
seen = client.get_alias("race", "champion")
print("ready", flush=True)
go = Path(sys.argv[4])
while not go.exists():
    time.sleep(0.005)
try:
    client.set_alias("race", "champion", int(sys.argv[3]), expected=seen)
    print("won", flush=True)
except Conflict as exc:
    print("conflict", flush=True)
"""


@pytest.mark.slow
def test_two_processes_moving_one_alias_one_wins_one_conflicts(
    keel_env, tmp_path, model_run, run_together
):
    for i in range(3):
        keel.register_model(model_run(f"weights-{i}"), "race")
    keel.Client().set_alias("race", "champion", 1)
    outputs = run_together(MOVE, keel_env, ["2", "3"], tmp_path / "go")
    assert sorted(outputs) == ["conflict", "won"]
    winner = 2 if outputs[0] == "won" else 3
    assert keel.Client().get_alias("race", "champion") == winner
    moves = keel.Client().alias_history("race", "champion")
    assert [(m.from_version, m.to_version) for m in moves] == [(None, 1), (1, winner)]
