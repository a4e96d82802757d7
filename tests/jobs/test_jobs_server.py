"""Jobs through ``keel server``: the same API on every store, identity from the token, roles."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import pytest

import keel
from keel.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from keel.jobs import Inventory, JobStore
from keel.jobs.remote import RemoteJobStore, report, why
from keel.jobs.worker import job_log

QUEUE = {
    "name": "team-a",
    "team": "vision",
    "quotas": {"gpu:a100": 2, "cpus": 16, "memory": "64Gi"},
}
on_server = pytest.mark.parametrize("any_env", ["server"], indirect=True)


def test_the_jobs_api_answers_alike_on_every_store(any_env):
    client = keel.Client()
    jobs = client.jobs
    assert isinstance(jobs, RemoteJobStore) == bool(any_env.server_url)
    queue = jobs.apply_queue(QUEUE)
    assert (queue.name, queue.revision) == ("team-a", 1)
    assert queue.quotas == {"gpu:a100": 2.0, "cpus": 16.0, "memory": 64.0 * 1024**3}
    assert jobs.apply_queue(QUEUE).revision == 1  # the same queue again changes nothing
    assert jobs.apply_queue({**QUEUE, "cohort": "research"}).revision == 2
    with pytest.raises(Conflict, match="queue 'team-a' is at revision 2, not 1"):
        jobs.apply_queue(QUEUE, expected_revision=1)
    assert [q.name for q in jobs.list_queues()] == ["team-a"]
    assert jobs.get_queue("team-a").cohort == "research"
    with pytest.raises(NotFound, match="no job queue 'team-b'; queues: team-a"):
        jobs.get_queue("team-b")

    pipeline = jobs.submit(
        "pipelines.train:train", queue="team-a", params={"lr": 0.01}, gpus=1, priority="high"
    )
    command = jobs.submit(["python", "train.py"], queue="team-a", cpus=2, memory="4Gi")
    assert (pipeline.kind, pipeline.params, pipeline.priority_name) == (
        "pipeline",
        {"lr": 0.01},
        "high",
    )
    assert (command.command, command.request.memory) == (["python", "train.py"], 4 * 1024**3)
    assert jobs.get(command.id) == command
    assert [j.id for j in jobs.list()] == [command.id, pipeline.id]
    assert [j.id for j in jobs.list(states=["queued"], limit=None)] == [command.id, pipeline.id]
    assert jobs.list(queue="team-b") == []
    assert jobs.list(model=("churn", 1)) == []
    [event] = jobs.events(pipeline.id)
    assert (event.to_state, event.actor) == ("queued", pipeline.submitted_by)

    explained = why(client, command.id)
    assert explained.summary == f"job {command.id} is queued in team-a, behind 1 job(s)"
    assert explained.head == pipeline.id

    cancelled = jobs.cancel(pipeline.id, "not needed")
    assert (cancelled.state, cancelled.reason) == ("cancelled", "not needed")
    with pytest.raises(Conflict, match=f"job {pipeline.id} has already cancelled"):
        jobs.cancel(pipeline.id)
    with pytest.raises(NotFound, match="no job 999; list them with `keel jobs list`"):
        jobs.get(999)
    with pytest.raises(InvalidInput, match="this job can never run"):
        jobs.submit(["true"], queue="team-a", gpus=3)
    with pytest.raises(InvalidInput, match="cpus must be 0 or more, got -1"):
        jobs.submit(["true"], queue="team-a", cpus=-1)

    found = report(client, by="team")
    assert [(r.group, r.jobs) for r in found.rows] == [("vision", 2)]
    assert found.total.jobs == 2


@on_server
def test_a_submitted_job_is_the_tokens_users_whatever_the_client_claims(any_env, as_user, run_keel):
    keel.Client().jobs.apply_queue(QUEUE)
    alice = as_user("alice")
    claims = keel.Client(replace(alice.settings, user="mallory"))  # KEEL_USER means nothing here
    job = claims.jobs.submit(["true"], queue="team-a")
    assert job.submitted_by == "alice"
    [event] = keel.Client().jobs.events(job.id)
    assert event.actor == "alice" and "submitted by alice" in event.reason
    through_cli = run_keel(
        "jobs", "submit", "--queue", "team-a", "--json", "--", "true",
        settings=alice.settings, env={"KEEL_USER": "mallory"},
    )  # fmt: skip
    assert through_cli.returncode == 0, through_cli.stderr
    assert json.loads(through_cli.stdout)["submitted_by"] == "alice"
    for args in (("jobs", "schedule", "--once"), ("jobs", "worker", "--max-seconds", "1")):
        refused = run_keel(*args, settings=alice.settings)
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: a ") and "not through a server" in refused.stderr


@on_server
def test_a_viewer_reads_jobs_but_cannot_submit(any_env, request):
    server = request.getfixturevalue("control_plane")
    keel.Client().jobs.apply_queue(QUEUE)
    job = keel.Client().jobs.submit(["true"], queue="team-a")
    viewer_token = server.make_user(f"vera-{uuid.uuid4().hex[:6]}", "viewer")
    with server.http(viewer_token) as http:
        refused = http.post("/jobs", json={"target": ["true"], "queue": "team-a"})
        assert refused.status_code == 403
        assert list(refused.json()) == ["error"]
        assert "lacks permission 'write'" in refused.json()["error"]
        assert [j["id"] for j in http.get("/jobs").json()] == [job.id]
        assert http.get(f"/jobs/{job.id}/why").json()["summary"].startswith(f"job {job.id} is")
        assert http.get("/jobs/report", params={"by": "queue"}).json()["rows"][0]["group"] == (
            "team-a"
        )
        missing = http.get("/jobs/12345")
        assert missing.status_code == 404 and list(missing.json()) == ["error"]
    viewer = keel.Client(replace(any_env, token=viewer_token))
    assert [j.id for j in viewer.jobs.list()] == [job.id]
    with pytest.raises(PermissionDenied, match="lacks permission 'write'"):
        viewer.jobs.submit(["true"], queue="team-a")
    assert keel.Client().jobs.list() == [job]


@on_server
def test_only_an_admin_applies_queues_and_sets_prices(any_env, as_user):
    from keel.jobs.prices import JobPrices

    editor = as_user("eddie")
    with pytest.raises(PermissionDenied, match="user 'eddie' lacks permission 'admin'"):
        editor.jobs.apply_queue(QUEUE)
    with pytest.raises(PermissionDenied, match="user 'eddie' lacks permission 'admin'"):
        JobPrices(editor).set("gpu:a100", 2.5)
    keel.Client().jobs.apply_queue(QUEUE)
    JobPrices(keel.Client()).set("gpu:a100", 2.5, starts_at=0)
    assert [q.name for q in editor.jobs.list_queues()] == ["team-a"]
    assert [(p.resource, p.per_hour) for p in JobPrices(editor).list()] == [("gpu:a100", 2.5)]


@on_server
def test_a_user_cancels_their_own_job_but_another_users_needs_an_admin(any_env, as_user):
    keel.Client().jobs.apply_queue(QUEUE)
    alice, bob = as_user("alice"), as_user("bob")
    job = alice.jobs.submit(["sleep", "60"], queue="team-a")
    with pytest.raises(PermissionDenied, match="user 'bob' lacks permission 'admin'"):
        bob.jobs.cancel(job.id)
    assert alice.jobs.get(job.id).state == "queued"
    assert alice.jobs.cancel(job.id).state == "cancelled"
    other = bob.jobs.submit(["sleep", "60"], queue="team-a")
    assert keel.Client().jobs.cancel(other.id, "an admin's call").reason == "an admin's call"


@on_server
def test_a_workers_own_steps_are_refused_through_a_server(any_env):
    jobs = keel.Client().jobs
    jobs.apply_queue(QUEUE)
    job = jobs.submit(["true"], queue="team-a")
    inventory = Inventory.from_dict({"cpus": 4, "memory": "8Gi"})
    with pytest.raises(InvalidInput, match="run `keel jobs worker` and `keel jobs schedule` where"):
        jobs.heartbeat("box", "local", inventory, "me")
    with pytest.raises(InvalidInput, match="a transition changes a job inside the metadata store"):
        jobs.transition(job)
    with pytest.raises(InvalidInput, match="recording facts changes a job"):
        jobs.record(job, pid=1)
    assert jobs.pools() == []


@on_server
def test_uploaded_logs_and_pools_are_read_through_the_server(any_env, request, tmp_path, run_keel):
    from keel.config import load_settings

    server = request.getfixturevalue("control_plane")
    client = keel.Client()
    client.jobs.apply_queue(QUEUE)
    job = client.jobs.submit(["python", "train.py"], queue="team-a")
    assert job_log(client, job) == ""
    # a worker works on the server's own store, as the operator would run it there
    worker = JobStore(keel.Client(load_settings(home=tmp_path / "w", store_url=server.store_url)))
    blob = client.artifacts.put_bytes(b"loss 0.25\n")
    worker.record(job, logs_digest=blob.digest)
    inventory = Inventory.from_dict({"cpus": 4, "memory": "8Gi", "gpus": {"a100": 2}})
    worker.heartbeat("box-1", "local", inventory, "worker-1")

    assert job_log(client, job.id) == "loss 0.25\n"
    with server.http(server.make_user("vic", "viewer")) as http:
        answer = http.get(f"/jobs/{job.id}/logs")
        assert (answer.status_code, answer.text) == (200, "loss 0.25\n")
    printed = run_keel("jobs", "logs", str(job.id), settings=any_env)
    assert (printed.returncode, printed.stdout) == (0, "loss 0.25\n"), printed.stderr
    [pool] = client.jobs.pools(live_only=True)
    assert (pool.name, pool.inventory.gpus) == ("box-1", {"a100": (0, 1)})
