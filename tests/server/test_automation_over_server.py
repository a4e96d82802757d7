"""Automation policies, their state, events and lineage through ``keel server``: who may do what."""

from __future__ import annotations

import uuid

POLICY = {
    "model": "fraud",
    "deployment": "fraud-api",
    "retrain": {"pipeline": "keel.demo.pipeline:screening"},
}


def _policy(admin, name: str) -> None:
    answer = admin.put(f"/automation/policies/{name}", json={"policy": {"name": name, **POLICY}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["revision"] == 1


def test_a_viewer_reads_policies_state_and_events_but_cannot_apply_or_disable(control_plane):
    name = f"p-{uuid.uuid4().hex[:8]}"
    viewer = control_plane.make_user(f"viewer-{name}", "viewer")
    with control_plane.http() as admin:
        _policy(admin, name)
    with control_plane.http(viewer) as http:
        assert name in [p["name"] for p in http.get("/automation/policies").json()]
        assert http.get(f"/automation/policies/{name}/state").json()["state"] == "idle"
        assert http.get("/automation/events", params={"policy": name}).json() == []
        refused = http.put(
            f"/automation/policies/{name}", json={"policy": {"name": name, **POLICY}}
        )
        assert refused.status_code == 403 and "lacks permission 'admin'" in refused.json()["error"]
        refused = http.post(f"/automation/policies/{name}/disable")
        assert refused.status_code == 403 and "lacks permission 'admin'" in refused.json()["error"]
        refused = http.put(f"/automation/policies/{name}/lease", json={"owner": "x", "seconds": 5})
        assert refused.status_code == 403 and "lacks permission 'write'" in refused.json()["error"]


def test_the_controllers_steps_need_write_on_the_policys_model(control_plane):
    name = f"p-{uuid.uuid4().hex[:8]}"
    other = control_plane.make_user(f"other-{name}", "viewer")
    with control_plane.http() as admin:
        _policy(admin, name)
        assert admin.post(
            "/roles",
            json={
                "user": f"other-{name}",
                "role": "editor",
                "scope_kind": "model",
                "scope_name": "churn",
            },
        ).status_code in (200, 201)
        state = admin.get(f"/automation/policies/{name}/state").json()
    change = {"state": "retraining", "kind": "triggered", "reason": "drift", "changes": {}}
    body = {"current": state, "change": change, "effect": "trigger", "trigger_key": "drift:1"}
    with control_plane.http(other) as http:  # an editor of another model
        refused = http.post(f"/automation/policies/{name}/transitions", json=body)
        assert refused.status_code == 403 and "on model 'fraud'" in refused.json()["error"]
    with control_plane.http() as admin:
        moved = admin.post(f"/automation/policies/{name}/transitions", json=body)
        assert moved.status_code == 200 and moved.json()["state"] == "retraining"
        again = admin.post(f"/automation/policies/{name}/transitions", json=body)
        assert again.status_code == 200 and again.json() is None  # the key was claimed once
        stale = dict(body, effect="state")
        moved_twice = admin.post(f"/automation/policies/{name}/transitions", json=stale)
        assert moved_twice.status_code == 409  # the old epoch: a compare-and-set
        events = admin.get("/automation/events", params={"policy": name}).json()
        assert [(e["kind"], e["reason"]) for e in events] == [("triggered", "drift")]
        bad = dict(body, change=dict(change, changes={"lease_owner": "me"}))
        assert admin.post(f"/automation/policies/{name}/transitions", json=bad).status_code == 400


def test_lineage_is_read_by_a_viewer(control_plane):
    viewer = control_plane.make_user(f"viewer-{uuid.uuid4().hex[:8]}", "viewer")
    with control_plane.http(viewer) as http:
        graph = http.get("/lineage/upstream", params={"uri": "code:/abc"}).json()
        assert graph["root"] == "code:/abc" and graph["direction"] == "upstream"
        assert graph["edges"] == []
        assert http.get("/lineage/downstream", params={"uri": ""}).status_code == 400
