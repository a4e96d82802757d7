"""The permission matrix: every mutating action of ``keel server`` x every role x scopes.

Each case is one real HTTP call to a running ``keel server`` with the token of a
user holding exactly one grant: a role (viewer, editor, approver, admin) held
everywhere, on model ``fraud``, on alias ``fraud@staging`` or on experiment
``exp-a``. The expected answer is worked out here, from the roles table of the
README, independently of the server's code: 2xx when the grant covers every
permission the action needs, else 403 with ``{"error": ...}`` naming the first
missing permission.

Matrix size: 73 actions (every mutating route, and the POSTs that only read) x
4 roles x 4 grant scopes = 1,168 HTTP cases
(``test_every_mutating_route_is_in_the_matrix`` fails when the server gains a
mutating route that the table lacks), plus a sample checked through the CLI.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.control_plane import ControlPlane, start_control_plane

ROLES = ("viewer", "editor", "approver", "admin")
#: the README's roles table, written out again so the test does not trust the server's copy
ROLE_PERMISSIONS = {
    "viewer": {"read"},
    "editor": {"read", "write"},
    "approver": {"read", "approve"},
    "admin": {"read", "write", "approve", "admin"},
}
#: (scope label, grant's scope kind, grant's scope name)
SCOPES = (
    ("all", "", ""),
    ("model", "model", "fraud"),
    ("alias", "alias", "fraud@staging"),
    ("experiment", "experiment", "exp-a"),
)
ANYWHERE = "anywhere"  # a permission held on any scope at all


def covers(scope_kind: str, scope_name: str, kind: str | None, name: str | None) -> bool:
    """Whether a grant on ``scope_kind``/``scope_name`` reaches the resource ``kind``/``name``."""
    if scope_kind == "":
        return True
    if kind == ANYWHERE:
        return True
    if kind is None or name is None:
        return False
    if scope_kind == kind:
        return scope_name == name
    return scope_kind == "model" and kind == "alias" and name.split("@")[0] == scope_name


@dataclass
class Action:
    """One mutating call: how to make it, and what it needs (in the order the server checks)."""

    name: str
    method: str
    route: str  # the OpenAPI path, to check the table covers every route
    call: Callable[[World, httpx.Client, str], httpx.Response]
    needs: list[tuple[str, str | None, str | None]]
    prepare: Callable[[World, str], Any] | None = None


@dataclass
class World:
    """The running server, its admin client and the state every case starts from."""

    server: ControlPlane
    admin: httpx.Client
    local: Any  # a keel.Client on the server's own store, acting as the operator
    experiment_id: int
    run_id: str
    tokens: dict[str, str] = field(default_factory=dict)
    made: dict[str, Any] = field(default_factory=dict)


def _blob(world: World, http: httpx.Client, case: str) -> httpx.Response:
    import blake3

    data = f"blob for {case}".encode()
    digest = blake3.blake3(data).hexdigest()
    return http.put(f"/blobs/objects/{digest[:2]}/{digest[2:]}", content=data)


def _prepare_token(world: World, case: str) -> None:
    answer = world.admin.post("/tokens", json={"user": "target"})
    world.made[case] = answer.json()["id"]


def _prepare_grant(world: World, case: str) -> None:
    body = {"user": "target", "role": "viewer", "scope_kind": "experiment", "scope_name": case}
    assert world.admin.post("/roles", json=body).status_code == 200


def _prepare_alias(world: World, case: str) -> None:
    answer = world.admin.put("/models/fraud/aliases/staging", json={"version": 1})
    assert answer.status_code == 200, answer.text


def _prepare_policy(world: World, case: str) -> None:
    answer = world.admin.put(f"/alias-policies/p-{case}", json={"approvals": 1})
    assert answer.status_code == 200, answer.text


def _prepare_run(world: World, case: str) -> None:
    world.made[case] = world.local.create_run(world.experiment_id).id


def _prepare_ended_run(world: World, case: str) -> None:
    _prepare_run(world, case)
    world.local.set_terminated(world.made[case])


def _prepare_tag(world: World, case: str) -> None:
    world.local.set_tag(world.run_id, f"t-{case}", "x")


def _prepare_object(world: World, case: str) -> None:
    import blake3

    data = f"artifact of {case}".encode()
    digest = blake3.blake3(data).hexdigest()
    answer = world.admin.put(f"/blobs/objects/{digest[:2]}/{digest[2:]}", content=data)
    assert answer.status_code == 201, answer.text
    world.made[case] = {"path": f"files/{case}.txt", "digest": digest, "size": len(data)}


def _points(world: World, case: str) -> dict[str, Any]:
    return {"keys": ["loss"], "values": [0.5], "steps": [0], "timestamps": [1]}


def _prepare_dataset_object(world: World, case: str) -> None:
    import blake3

    data = f"manifest of {case}".encode()
    digest = blake3.blake3(data).hexdigest()
    answer = world.admin.put(f"/blobs/objects/{digest[:2]}/{digest[2:]}", content=data)
    assert answer.status_code == 201, answer.text
    world.made[case] = digest


def _dataset_body(world: World, case: str) -> dict[str, Any]:
    digest = world.made[case]
    return {"name": f"d-{case}", "digest": digest, "kind": "folder", "files": 1, "nbytes": 1}


def _prepare_dataset(world: World, case: str) -> None:
    _prepare_dataset_object(world, case)
    answer = world.admin.post("/datasets/versions", json=_dataset_body(world, case))
    assert answer.status_code == 200, answer.text


def _policy_doc(name: str) -> dict[str, Any]:
    """A policy document; the server stores what the client checked and resolves no names."""
    return {
        "name": name,
        "model": "fraud",
        "deployment": "x",
        "retrain": {"pipeline": "keel.demo.pipeline:screening"},
    }


def _prepare_automation_policy(world: World, case: str) -> None:
    name = f"pol-{case}"
    answer = world.admin.put(f"/automation/policies/{name}", json={"policy": _policy_doc(name)})
    assert answer.status_code == 200, answer.text


def _transition_body(world: World, case: str) -> dict[str, Any]:
    current = world.admin.get(f"/automation/policies/pol-{case}/state").json()
    change = {"state": current["state"], "kind": "resumed", "reason": f"matrix case {case}"}
    return {"current": current, "change": change}


EXP_A = ("experiment", "exp-a")

ACTIONS = [
    Action(
        "create user", "POST", "/api/v1/users",
        lambda w, h, c: h.post("/users", json={"name": f"u-{c}"}),
        [("admin", None, None)],
    ),
    Action(
        "create token", "POST", "/api/v1/tokens",
        lambda w, h, c: h.post("/tokens", json={"user": "target"}),
        [("admin", None, None)],
    ),
    Action(
        "revoke token", "DELETE", "/api/v1/tokens/{token_id}",
        lambda w, h, c: h.delete(f"/tokens/{w.made[c]}"),
        [("admin", None, None)],
        _prepare_token,
    ),
    Action(
        "grant role", "POST", "/api/v1/roles",
        lambda w, h, c: h.post("/roles", json={"user": "target", "role": "editor"}),
        [("admin", None, None)],
    ),
    Action(
        "revoke role", "POST", "/api/v1/roles/revoke",
        lambda w, h, c: h.post(
            "/roles/revoke",
            json={"user": "target", "role": "viewer", "scope_kind": "experiment", "scope_name": c},
        ),
        [("admin", None, None)],
        _prepare_grant,
    ),
    Action(
        "upload blob", "PUT", "/api/v1/blobs/{key}", _blob, [("write", ANYWHERE, None)]
    ),
    Action(
        "create model", "POST", "/api/v1/models",
        lambda w, h, c: h.post("/models", json={"name": f"m-{c}"}),
        [("write", "model", "fresh")],  # a new name: no scoped grant names it
    ),
    Action(
        "register version", "POST", "/api/v1/models/{name}/versions",
        lambda w, h, c: h.post("/models/fraud/versions", json={"source": f"runs:/{w.run_id}/model"}),
        [("write", "model", "fraud"), ("read", "experiment", "exp-a")],
    ),
    Action(
        "describe version", "PATCH", "/api/v1/models/{name}/versions/{version}",
        lambda w, h, c: h.patch("/models/fraud/versions/1", json={"description": c}),
        [("write", "model", "fraud")],
    ),
    Action(
        "tag version", "POST", "/api/v1/models/{name}/versions/{version}/tags",
        lambda w, h, c: h.post("/models/fraud/versions/1/tags", json={"key": "k", "value": c}),
        [("write", "model", "fraud")],
    ),
    Action(
        "move alias staging", "PUT", "/api/v1/models/{name}/aliases/{alias}",
        lambda w, h, c: h.put("/models/fraud/aliases/staging", json={"version": 1}),
        [("write", "alias", "fraud@staging")],
    ),
    Action(
        "move alias canary", "PUT", "/api/v1/models/{name}/aliases/{alias}",
        lambda w, h, c: h.put("/models/fraud/aliases/canary", json={"version": 1}),
        [("write", "alias", "fraud@canary")],
    ),
    Action(
        "delete alias", "DELETE", "/api/v1/models/{name}/aliases/{alias}",
        lambda w, h, c: h.delete("/models/fraud/aliases/staging"),
        [("write", "alias", "fraud@staging")],
        _prepare_alias,
    ),
    Action(
        "approve version", "POST", "/api/v1/models/{name}/versions/{version}/approvals",
        lambda w, h, c: h.post("/models/fraud/versions/1/approvals", json={"alias": "production"}),
        # the protected alias's policy asks for role 'approver' on top of the permission
        [("approve", "model", "fraud"), ("role:approver", "model", "fraud")],
    ),
    Action(
        "create experiment", "POST", "/api/v1/experiments",
        lambda w, h, c: h.post("/experiments", json={"name": f"e-{c}"}),
        [("write", "experiment", "fresh")],
    ),
    Action(
        "get or create experiment", "PUT", "/api/v1/experiments",
        lambda w, h, c: h.put("/experiments", json={"name": "exp-a"}),
        [("write", *EXP_A)],
    ),
    Action(
        "start run", "POST", "/api/v1/runs",
        lambda w, h, c: h.post("/runs", json={"experiment_id": w.experiment_id}),
        [("write", *EXP_A)],
    ),
    Action(
        "search runs (a read)", "POST", "/api/v1/runs/search",
        lambda w, h, c: h.post("/runs/search", json={}),
        [("read", *EXP_A)],
    ),
    Action(
        "end run", "POST", "/api/v1/runs/{run_id}/end",
        lambda w, h, c: h.post(f"/runs/{w.made[c]}/end", json={}),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
        _prepare_run,
    ),
    Action(
        "reopen run", "POST", "/api/v1/runs/{run_id}/reopen",
        lambda w, h, c: h.post(f"/runs/{w.made[c]}/reopen"),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
        _prepare_ended_run,
    ),
    Action(
        "record seeds", "POST", "/api/v1/runs/{run_id}/seeds",
        lambda w, h, c: h.post(f"/runs/{w.run_id}/seeds", json={"seeds": {"numpy": 1}}),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
    ),
    Action(
        "log params", "POST", "/api/v1/runs/{run_id}/params",
        lambda w, h, c: h.post(f"/runs/{w.run_id}/params", json={"params": {f"p-{c}": "1"}}),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
    ),
    Action(
        "set tags", "POST", "/api/v1/runs/{run_id}/tags",
        lambda w, h, c: h.post(f"/runs/{w.run_id}/tags", json={"tags": {"k": c}}),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
    ),
    Action(
        "delete tag", "DELETE", "/api/v1/runs/{run_id}/tags",
        lambda w, h, c: h.delete(f"/runs/{w.run_id}/tags", params={"key": f"t-{c}"}),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
        _prepare_tag,
    ),
    Action(
        "log batch", "POST", "/api/v1/runs/{run_id}/batch",
        lambda w, h, c: h.post(f"/runs/{w.run_id}/batch", json={"metrics": _points(w, c)}),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
    ),
    Action(
        "write metric rows", "POST", "/api/v1/metrics",
        lambda w, h, c: h.post("/metrics", json={**_points(w, c), "run_ids": [w.run_id]}),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
    ),
    Action(
        "record artifacts", "POST", "/api/v1/runs/{run_id}/artifacts",
        lambda w, h, c: h.post(f"/runs/{w.run_id}/artifacts", json={"entries": [w.made[c]]}),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
        _prepare_object,
    ),
    Action(
        "protect alias", "PUT", "/api/v1/alias-policies/{alias}",
        lambda w, h, c: h.put(f"/alias-policies/n-{c}", json={"approvals": 1}),
        [("admin", None, None)],
    ),
    Action(
        "unprotect alias", "DELETE", "/api/v1/alias-policies/{alias}",
        lambda w, h, c: h.delete(f"/alias-policies/p-{c}"),
        [("admin", None, None)],
        _prepare_policy,
    ),
    Action(
        "create deployment", "POST", "/api/v1/deployments",
        lambda w, h, c: h.post("/deployments", json={"name": f"d-{c}", "spec": {"routes": [{"model": "fraud", "ref": "1"}]}}),
        [("write", ANYWHERE, None), ("write", "model", "fraud")],
    ),
    Action(
        "change deployment spec", "PUT", "/api/v1/deployments/{name}/spec",
        lambda w, h, c: h.put(f"/deployments/s-{c}/spec", json={"spec": {"routes": [{"model": "fraud", "ref": "1"}], "batching": {"max_size": 8}}}),
        [("write", ANYWHERE, None), ("write", "model", "fraud")],
        lambda w, c: w.admin.post("/deployments", json={"name": f"s-{c}", "spec": {"routes": [{"model": "fraud", "ref": "1"}]}}),
    ),
    Action(
        "roll back deployment", "POST", "/api/v1/deployments/{name}/rollback",
        lambda w, h, c: h.post(f"/deployments/r-{c}/rollback", json={}),
        [("write", ANYWHERE, None), ("write", "model", "fraud")],
        lambda w, c: (
            w.admin.post("/deployments", json={"name": f"r-{c}", "spec": {"routes": [{"model": "fraud", "ref": "1"}]}}),
            w.admin.put(f"/deployments/r-{c}/spec", json={"spec": {"routes": [{"model": "fraud", "ref": "1"}], "batching": {"max_size": 8}}}),
        ),
    ),
    Action(
        "configure monitor", "PUT", "/api/v1/deployments/{name}/monitor-settings",
        lambda w, h, c: h.put(f"/deployments/m-{c}/monitor-settings", json={"drift_share": 0.4}),
        [("write", None, None)],
        lambda w, c: w.admin.post("/deployments", json={"name": f"m-{c}", "spec": {"routes": [{"model": "fraud", "ref": "1"}]}}),
    ),
    Action(
        "register dataset version", "POST", "/api/v1/datasets/versions",
        lambda w, h, c: h.post("/datasets/versions", json=_dataset_body(w, c)),
        [("write", None, None)],  # datasets have no scope kind: a global write
        _prepare_dataset_object,
    ),
    Action(
        "record dataset input", "POST", "/api/v1/runs/{run_id}/dataset-inputs",
        lambda w, h, c: h.post(
            f"/runs/{w.run_id}/dataset-inputs", json={"ref": f"d-{c}", "context": "load"}
        ),
        [("write", None, None)],
        _prepare_dataset,
    ),
    Action(
        "find missing objects (a read)", "POST", "/api/v1/datasets/objects/missing",
        lambda w, h, c: h.post("/datasets/objects/missing", json={"digests": ["ab" * 32]}),
        [("read", ANYWHERE, None)],
    ),
    Action(
        "apply automation policy", "PUT", "/api/v1/automation/policies/{name}",
        lambda w, h, c: h.put(f"/automation/policies/ap-{c}", json={"policy": _policy_doc(f"ap-{c}")}),
        [("admin", None, None)],
    ),
    Action(
        "enable automation policy", "POST", "/api/v1/automation/policies/{name}/enable",
        lambda w, h, c: h.post(f"/automation/policies/pol-{c}/enable"),
        [("admin", None, None)],
        _prepare_automation_policy,
    ),
    Action(
        "disable automation policy", "POST", "/api/v1/automation/policies/{name}/disable",
        lambda w, h, c: h.post(f"/automation/policies/pol-{c}/disable"),
        [("admin", None, None)],
        _prepare_automation_policy,
    ),
    Action(
        "automation transition", "POST", "/api/v1/automation/policies/{name}/transitions",
        lambda w, h, c: h.post(f"/automation/policies/pol-{c}/transitions", json=_transition_body(w, c)),
        [("write", "model", "fraud")],
        _prepare_automation_policy,
    ),
    Action(
        "automation detail", "POST", "/api/v1/automation/policies/{name}/detail",
        lambda w, h, c: h.post(f"/automation/policies/pol-{c}/detail", json={"epoch": w.admin.get(f"/automation/policies/pol-{c}/state").json()["epoch"], "detail": {"k": 1}}),
        [("write", "model", "fraud")],
        _prepare_automation_policy,
    ),
    Action(
        "automation note", "POST", "/api/v1/automation/policies/{name}/events",
        lambda w, h, c: h.post(f"/automation/policies/pol-{c}/events", json={"kind": "resumed", "reason": "matrix"}),
        [("write", "model", "fraud")],
        _prepare_automation_policy,
    ),
    Action(
        "take automation lease", "PUT", "/api/v1/automation/policies/{name}/lease",
        lambda w, h, c: h.put(f"/automation/policies/pol-{c}/lease", json={"owner": c, "seconds": 30}),
        [("write", "model", "fraud")],
        _prepare_automation_policy,
    ),
    Action(
        "release automation lease", "DELETE", "/api/v1/automation/policies/{name}/lease",
        lambda w, h, c: h.delete(f"/automation/policies/pol-{c}/lease", params={"owner": c}),
        [("write", "model", "fraud")],
        _prepare_automation_policy,
    ),
]  # fmt: skip


# -- pipelines: a pipeline run is a run in exp-a, its steps runs under it ------------------


def _prepare_pipeline_run(world: World, case: str) -> None:
    from keel.pipelines.part import PipelineRecords

    _prepare_run(world, case)
    PipelineRecords(world.local.tracking).insert_pipeline_run(
        run_id=world.made[case], pipeline="p", target="flow.py:p", code_digest="a" * 64,
        code_snapshot=None, params={}, executor="local", seed=None, use_cache=True,
        reproduces=None, edges=[],
    )  # fmt: skip


def _prepare_step_run(world: World, case: str) -> None:
    from keel.pipelines.part import PipelineRecords

    _prepare_pipeline_run(world, case)
    world.made[case] = PipelineRecords(world.local.tracking).create_step_run(
        experiment_id=world.experiment_id, pipeline_run_id=world.made[case], node="n",
        step="flow.n", code_digest="b" * 64, cache_key=None, inputs={}, cached=False,
    )  # fmt: skip


def _pipeline_body(world: World, case: str) -> dict[str, Any]:
    return {
        "run_id": world.made[case], "pipeline": "p", "target": "flow.py:p",
        "code_digest": "a" * 64, "params": {}, "executor": "local", "use_cache": True,
    }  # fmt: skip


ACTIONS += [
    Action(
        "record pipeline run", "POST", "/api/v1/pipeline-runs",
        lambda w, h, c: h.post("/pipeline-runs", json=_pipeline_body(w, c)),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
        _prepare_run,
    ),
    Action(
        "record pipeline outputs", "PUT", "/api/v1/pipeline-runs/{run_id}/outputs",
        lambda w, h, c: h.put(f"/pipeline-runs/{w.made[c]}/outputs", json={"outputs": {"n": 1}}),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
        _prepare_pipeline_run,
    ),
    Action(
        "start step run", "POST", "/api/v1/pipeline-runs/{run_id}/steps",
        lambda w, h, c: h.post(
            f"/pipeline-runs/{w.made[c]}/steps",
            json={"node": "n", "step": "flow.n", "code_digest": "b" * 64, "cached": False},
        ),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
        _prepare_pipeline_run,
    ),
    Action(
        "finish step run", "POST", "/api/v1/step-runs/{run_id}/finish",
        lambda w, h, c: h.post(f"/step-runs/{w.made[c]}/finish", json={"step": "flow.n", "attempts": 1}),
        [("write", ANYWHERE, None), ("write", *EXP_A)],
        _prepare_step_run,
    ),
]  # fmt: skip


# keel import mlflow through the server records what it mapped: global write
ACTIONS += [
    Action(
        "record imported objects", "POST", "/api/v1/imports",
        lambda w, h, c: h.post("/imports", json={
            "source": f"sqlite:///{c}.db",
            "records": [{"kind": "run", "source_id": c, "target": c}],
        }),
        [("write", None, None)],
    ),
]  # fmt: skip


# monitoring: running a deployment's monitor writes for the models it serves; references
def _profile() -> dict[str, Any]:
    """A reference profile as a client builds it (from three rows of one column)."""
    from keel.monitoring import profile

    return profile({"x": [1.0, 2.0, 3.0]}).to_dict()


ACTIONS += [
    Action(
        "run monitor", "POST", "/api/v1/deployments/{name}/monitor-runs",
        lambda w, h, c: h.post(f"/deployments/mr-{c}/monitor-runs", json={"window": "1h", "end": 0}),
        [("write", ANYWHERE, None), ("write", "model", "fraud")],
        lambda w, c: w.admin.post("/deployments", json={"name": f"mr-{c}", "spec": {"routes": [{"model": "fraud", "ref": "1"}]}}),
    ),
    Action(
        "set reference", "POST", "/api/v1/models/{name}/versions/{version}/reference",
        lambda w, h, c: h.post("/models/fraud/versions/1/reference", json={"profile": _profile()}),
        [("write", "model", "fraud")],
    ),
    Action(
        "ensure reference", "POST", "/api/v1/models/{name}/versions/{version}/reference/ensure",
        lambda w, h, c: h.post("/models/fraud/versions/1/reference/ensure"),
        [("write", "model", "fraud")],
    ),
]  # fmt: skip


# checks: the report is uploaded first (a blob), then the check of version 1 names it
def _prepare_check_report(world: World, case: str) -> None:
    import json

    import blake3

    report = {"model": "fraud", "version": 1, "passed": True, "against": None, "case": case}
    data = json.dumps(report).encode()
    digest = blake3.blake3(data).hexdigest()
    answer = world.admin.put(f"/blobs/objects/{digest[:2]}/{digest[2:]}", content=data)
    assert answer.status_code == 201, answer.text
    world.made[case] = {"passed": True, "data_digest": "0" * 64, "report_digest": digest}


ACTIONS += [
    Action(
        "record check", "POST", "/api/v1/models/{name}/versions/{version}/checks",
        lambda w, h, c: h.post("/models/fraud/versions/1/checks", json=w.made[c]),
        [("write", "model", "fraud")],
        _prepare_check_report,
    ),
]  # fmt: skip


# compilations: a refused compilation's parity report is uploaded first, then named
def _prepare_compilation_report(world: World, case: str) -> None:
    import json

    import blake3

    report = {"model": "fraud", "version": 1, "target": "onnx", "passed": False, "case": case}
    data = json.dumps(report).encode()
    digest = blake3.blake3(data).hexdigest()
    answer = world.admin.put(f"/blobs/objects/{digest[:2]}/{digest[2:]}", content=data)
    assert answer.status_code == 201, answer.text
    world.made[case] = {"target": "onnx", "passed": False, "report_digest": digest}


ACTIONS += [
    Action(
        "record compilation", "POST", "/api/v1/models/{name}/versions/{version}/compilations",
        lambda w, h, c: h.post("/models/fraud/versions/1/compilations", json=w.made[c]),
        [("write", "model", "fraud")],
        _prepare_compilation_report,
    ),
]  # fmt: skip


#: a prompt: its permissions are a model's, on the prompt's name (no grant scope names it)
_PROMPT = {"template": "Answer {{ question }}", "model": "gpt-4o-mini"}


def _prepare_prompt(world: World, case: str) -> None:
    answer = world.admin.post("/prompts/support/versions", json=_PROMPT)  # v1, once
    assert answer.status_code == 201, answer.text


def _prepare_prompt_alias(world: World, case: str) -> None:
    _prepare_prompt(world, case)
    answer = world.admin.put("/prompts/support/aliases/staging", json={"version": 1})
    assert answer.status_code == 200, answer.text


ACTIONS += [
    Action(
        "register prompt version", "POST", "/api/v1/prompts/{name}/versions",
        lambda w, h, c: h.post("/prompts/support/versions", json=_PROMPT),
        [("write", "model", "support")],
    ),
    Action(
        "move prompt alias", "PUT", "/api/v1/prompts/{name}/aliases/{alias}",
        lambda w, h, c: h.put("/prompts/support/aliases/staging", json={"version": 1}),
        [("write", "alias", "support@staging")],
        _prepare_prompt,
    ),
    Action(
        "delete prompt alias", "DELETE", "/api/v1/prompts/{name}/aliases/{alias}",
        lambda w, h, c: h.delete("/prompts/support/aliases/staging"),
        [("write", "alias", "support@staging")],
        _prepare_prompt_alias,
    ),
    Action(
        "approve prompt version", "POST", "/api/v1/prompts/{name}/versions/{version}/approvals",
        lambda w, h, c: h.post("/prompts/support/versions/1/approvals", json={"alias": "production"}),
        [("approve", "model", "support"), ("role:approver", "model", "support")],
        _prepare_prompt,
    ),
]  # fmt: skip


#: a RAG index: its permissions are a model's, on the index's name, like a prompt's
def _prepare_index(world: World, case: str) -> None:
    if "index-document" not in world.made:  # built once, by the operator, on the server's stores
        from keel.data.snapshot import add
        from keel.llm.rag.build import build_index

        folder = Path(world.local.transport.settings.home).parent / "rag-docs"
        folder.mkdir(exist_ok=True)
        (folder / "audit.md").write_text("Every alias move is written to the audit chain.\n")
        source = add(folder, "rag-docs", settings=world.local.transport.settings)
        built = build_index(
            world.local, "kb", source=source.uri, chunker="tokens:50", embedder="hash-384"
        )
        world.made["index-document"] = built.version.digest


def _prepare_index_alias(world: World, case: str) -> None:
    _prepare_index(world, case)
    answer = world.admin.put("/rag/kb/aliases/staging", json={"version": 1})
    assert answer.status_code == 200, answer.text


ACTIONS += [
    Action(
        "register index version", "POST", "/api/v1/rag/{name}/versions",
        lambda w, h, c: h.post("/rag/kb/versions", json={"digest": w.made["index-document"]}),
        [("write", "model", "kb")],
        _prepare_index,
    ),
    Action(
        "move index alias", "PUT", "/api/v1/rag/{name}/aliases/{alias}",
        lambda w, h, c: h.put("/rag/kb/aliases/staging", json={"version": 1}),
        [("write", "alias", "kb@staging")],
        _prepare_index,
    ),
    Action(
        "delete index alias", "DELETE", "/api/v1/rag/{name}/aliases/{alias}",
        lambda w, h, c: h.delete("/rag/kb/aliases/staging"),
        [("write", "alias", "kb@staging")],
        _prepare_index_alias,
    ),
    Action(
        "approve index version", "POST", "/api/v1/rag/{name}/versions/{version}/approvals",
        lambda w, h, c: h.post("/rag/kb/versions/1/approvals", json={"alias": "production"}),
        [("approve", "model", "kb"), ("role:approver", "model", "kb")],
        _prepare_index,
    ),
]  # fmt: skip


# the LLM gateway's price table and budget spend: global permissions (no grant scope names them)
def _delta(case: str) -> dict[str, Any]:
    return {"budget": "matrix", "subject": case, "period_start": 0, "tokens": 1, "usd": 0.5}


def _prepare_spend(world: World, case: str) -> None:
    answer = world.admin.post("/llm/spend/increments", json={"deltas": [_delta(case)]})
    assert answer.status_code == 200, answer.text


def _budget_alert(world: World, http: httpx.Client, case: str) -> httpx.Response:
    body = {
        "budget": "matrix",
        "subject": case,
        "period_start": 0,
        "source": "gateway",
        "value": 0.9,
        "threshold": 0.8,
        "message": f"matrix case {case}",
    }
    answer = http.post("/llm/spend/alerts", json=body)
    if answer.status_code == 200:  # allowed: the alert fired, once
        assert answer.json()["subject"] == case, answer.text
    return answer


ACTIONS += [
    Action(
        "add llm price", "POST", "/api/v1/llm/prices",
        lambda w, h, c: h.post(
            "/llm/prices", json={"model": f"m-{c}", "input_per_million": 1, "output_per_million": 2}
        ),
        [("admin", None, None)],
    ),
    Action(
        "add budget spend", "POST", "/api/v1/llm/spend/increments",
        lambda w, h, c: h.post("/llm/spend/increments", json={"deltas": [_delta(c)]}),
        [("write", None, None)],
    ),
    Action(
        "fire budget alert", "POST", "/api/v1/llm/spend/alerts", _budget_alert,
        [("write", None, None)],
        _prepare_spend,
    ),
]  # fmt: skip


# feature definitions have no scope kind (like datasets): applying and recording a
# materialization are global writes; an online read (a POST) needs read anywhere
def _feature_specs() -> list[dict[str, Any]]:
    from keel.features.definitions import Entity, FeatureView, Field, FileSource

    driver = Entity("driver", join_keys=["driver_id"])
    view = FeatureView(
        "matrix_stats", entities=[driver], source=FileSource("stats"),
        timestamp_field="ts", features=[Field("rate")],
    )  # fmt: skip
    return [driver.spec(), view.spec(["driver_id"])]


def _prepare_feature_view(world: World, case: str) -> None:
    answer = world.admin.post("/features/definitions", json={"specs": _feature_specs()})
    assert answer.status_code == 200, answer.text


def _watermark(case: str) -> dict[str, Any]:
    return {"view": "matrix_stats", "store": f"sqlite:///{case}.db", "view_version": 1,
            "last_event_ms": 1, "last_created_ms": None, "rows": 1}  # fmt: skip


ACTIONS += [
    Action(
        "apply feature definitions", "POST", "/api/v1/features/definitions",
        lambda w, h, c: h.post("/features/definitions", json={"specs": _feature_specs(), "source_file": f"{c}.py"}),
        [("write", None, None)],
    ),
    Action(
        "record feature watermark", "POST", "/api/v1/features/watermarks",
        lambda w, h, c: h.post("/features/watermarks", json=_watermark(c)),
        [("write", None, None)],
    ),
    Action(
        "record feature inputs", "POST", "/api/v1/runs/{run_id}/feature-inputs",
        lambda w, h, c: h.post(f"/runs/{w.run_id}/feature-inputs", json={"views": [{"kind": "feature_view", "name": "matrix_stats", "version": 1}]}),
        [("write", None, None)],
        _prepare_feature_view,
    ),
    Action(
        "read online features (a read)", "POST", "/api/v1/features/online",
        lambda w, h, c: h.post("/features/online", json={"entity_rows": [{"driver_id": 1}], "features": ["matrix_stats:rate"]}),
        [("read", ANYWHERE, None)],
        _prepare_feature_view,
    ),
]  # fmt: skip


# jobs, queues and job prices have no scope kind: submitting and cancelling one's own job
# are global writes, cancelling another's job, applying a queue and pricing are admin's
def _prepare_job_queue(world: World, case: str) -> None:
    world.local.jobs.apply_queue({"name": "matrix", "quotas": {"cpus": 1_000_000}})


def _prepare_job(world: World, case: str) -> None:
    _prepare_job_queue(world, case)
    world.made[case] = world.local.jobs.submit(["true"], queue="matrix").id  # the operator's


ACTIONS += [
    Action(
        "submit job", "POST", "/api/v1/jobs",
        lambda w, h, c: h.post("/jobs", json={"target": ["true"], "queue": "matrix", "name": c}),
        [("write", None, None)],
        _prepare_job_queue,
    ),
    Action(
        "cancel another's job", "POST", "/api/v1/jobs/{job_id}/cancel",
        lambda w, h, c: h.post(f"/jobs/{w.made[c]}/cancel", json={"reason": c}),
        [("write", None, None), ("admin", None, None)],
        _prepare_job,
    ),
    Action(
        "apply job queue", "PUT", "/api/v1/jobs/queues/{name}",
        lambda w, h, c: h.put(f"/jobs/queues/q-{c}", json={"queue": {"name": f"q-{c}", "quotas": {"cpus": 1}}}),
        [("admin", None, None)],
    ),
    Action(
        "add job price", "POST", "/api/v1/jobs/prices",
        lambda w, h, c: h.post("/jobs/prices", json={"resource": f"gpu:{c}", "per_hour": 1.5}),
        [("admin", None, None)],
    ),
]  # fmt: skip


def _user(role: str, scope: str) -> str:
    return f"{role}-{scope}"


def missing(role: str, scope_kind: str, scope_name: str, action: Action) -> str | None:
    """The first permission ``action`` needs that the grant lacks; None when it is allowed."""
    for permission, kind, name in action.needs:
        # "role:approver": an alias policy's rule, which names a role rather than a permission
        held = {f"role:{role}"} | ROLE_PERMISSIONS[role]
        if permission not in held or not covers(scope_kind, scope_name, kind, name):
            return permission
    return None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A server with model ``fraud`` (version 1, registered from a run in ``exp-a``) and 16 users."""
    import keel
    from keel.config import load_settings

    home = tmp_path_factory.mktemp("matrix") / ".keel"
    with start_control_plane(home) as server:
        # the fixture's starting state is written as the operator would, on the server's store
        local = keel.Client(
            load_settings(
                home=home,
                store_url=server.store_url,
                artifacts_url=server.artifacts_url,
                user="operator",
            )
        )
        experiment = local.create_experiment("exp-a")
        run = local.create_run(experiment)
        folder = home.parent / "pkg"
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"weights")
        local.log_artifacts(run.id, folder, artifact_path="model")
        with server.http() as admin:
            assert admin.post("/models", json={"name": "fraud"}).status_code == 201
            registered = admin.post(
                "/models/fraud/versions", json={"source": f"runs:/{run.id}/model"}
            )
            assert registered.status_code == 201, registered.text
            assert admin.post("/users", json={"name": "target"}).status_code == 201
            assert admin.put("/alias-policies/production", json={"approvals": 1}).status_code == 200
            world = World(server, admin, local, experiment, run.id)
            for role, (scope, kind, name) in itertools.product(ROLES, SCOPES):
                user = _user(role, scope)
                assert admin.post("/users", json={"name": user}).status_code == 201
                body = {"user": user, "role": role, "scope_kind": kind, "scope_name": name}
                assert admin.post("/roles", json=body).status_code == 200
                world.tokens[user] = admin.post("/tokens", json={"user": user}).json()["token"]
            yield world


CASES = [
    pytest.param(
        action,
        role,
        scope,
        id=f"{action.name}-{role}-{scope[0]}",
    )
    for action, role, scope in itertools.product(ACTIONS, ROLES, SCOPES)
]


@pytest.mark.parametrize(("action", "role", "scope"), CASES)
def test_permission_matrix(world: World, action: Action, role: str, scope: tuple[str, str, str]):
    label, kind, name = scope
    user = _user(role, label)
    case = f"{role}-{label}-{action.name.replace(' ', '-')}"
    if action.prepare is not None:
        action.prepare(world, case)
    with world.server.http(world.tokens[user]) as http:
        answer = action.call(world, http, case)
    lacking = missing(role, kind, name, action)
    if lacking is None:
        assert 200 <= answer.status_code < 300, (user, action.name, answer.text)
        return
    assert answer.status_code == 403, (user, action.name, answer.text)
    body = answer.json()
    assert list(body) == ["error"]
    if lacking.startswith("role:"):
        assert f"needs role '{lacking[5:]}'" in body["error"], body
    else:
        assert f"lacks permission '{lacking}'" in body["error"], body
    assert f"user {user!r}" in body["error"]


def test_every_mutating_route_is_in_the_matrix(world: World):
    document = world.admin.get("/openapi.json").json()
    routes = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"post", "put", "patch", "delete"}
    }
    assert routes == {(a.method, a.route) for a in ACTIONS}


def test_the_matrix_size_is_what_the_docstring_says():
    assert (len(ACTIONS), len(ROLES), len(SCOPES), len(CASES)) == (73, 4, 4, 1168)


# -- a sample through the CLI ------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "args", "lacking"),
    [
        ("viewer-all", ("users", "create", "cli-v"), "admin"),
        ("editor-all", ("tokens", "create", "--user", "target"), "admin"),
        ("admin-model", ("roles", "grant", "target", "editor", "--model", "fraud"), "admin"),
        ("admin-all", ("roles", "grant", "target", "editor", "--model", "cli"), None),
        ("admin-all", ("users", "create", "cli-a"), None),
        ("approver-all", ("roles", "list"), None),
    ],
)
def test_a_sample_of_the_matrix_through_the_cli(
    world: World, run_keel, tmp_path: Path, user: str, args: tuple[str, ...], lacking: str | None
):
    env = {"KEEL_TOKEN": world.tokens[user], "KEEL_HOME": str(world.server.home)}
    result = run_keel("--server", world.server.url, *args, env=env)
    if lacking is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1
    assert f"lacks permission '{lacking}'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3
