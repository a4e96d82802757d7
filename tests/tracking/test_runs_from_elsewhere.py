"""Runs that happened elsewhere (an import) keep their own start time and user, on every mode."""

from __future__ import annotations

import uuid

import pytest

import keel
from keel.errors import InvalidInput

STARTED = 1_600_000_000_000  # 2020-09-13, ms since the epoch


def test_a_run_from_elsewhere_keeps_its_start_time_and_user(any_env):
    client = keel.Client().tracking
    experiment_id = client.create_experiment("imported")
    info = client.create_run(experiment_id, "old", capture=False, start_time=STARTED, user="alice")
    assert (info.start_time, info.user, info.status) == (STARTED, "alice", "RUNNING")
    stored = client.get_run(info.id).info
    assert (stored.start_time, stored.user) == (STARTED, "alice")
    mine = client.create_run(experiment_id, "new", capture=False)
    assert mine.user == client.user and mine.start_time > STARTED


def test_a_run_from_elsewhere_with_a_bad_user_or_time_is_refused(any_env):
    client = keel.Client().tracking
    experiment_id = client.create_experiment("imported")
    with pytest.raises(InvalidInput, match="run user must be a non-empty string, got ' '"):
        client.create_run(experiment_id, capture=False, user=" ")
    with pytest.raises(InvalidInput, match="step must be an integer"):
        client.create_run(experiment_id, capture=False, start_time=1.5)  # type: ignore[arg-type]
    assert client.search_runs([experiment_id]).runs == []


def test_only_an_admin_records_a_run_in_another_users_name_through_the_server(control_plane):
    editor = f"editor-{uuid.uuid4().hex[:8]}"
    token = control_plane.make_user(editor, "editor")
    with control_plane.http(token) as http:
        made = http.post("/experiments", json={"name": f"exp-{uuid.uuid4().hex[:8]}"})
        assert made.status_code in (200, 201), made.text
        experiment_id = made.json()
        refused = http.post("/runs", json={"experiment_id": experiment_id, "user": "alice"})
        assert refused.status_code == 403, refused.text
        assert f"user '{editor}' lacks permission 'admin'" in refused.json()["error"]
        own = http.post(
            "/runs", json={"experiment_id": experiment_id, "user": editor, "start_time": STARTED}
        )
        assert own.status_code in (200, 201), own.text
        assert (own.json()["user"], own.json()["start_time"]) == (editor, STARTED)
    with control_plane.http() as http:
        as_admin = http.post("/runs", json={"experiment_id": experiment_id, "user": "alice"})
        assert as_admin.status_code in (200, 201), as_admin.text
        assert as_admin.json()["user"] == "alice"
