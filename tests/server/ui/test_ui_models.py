"""The registry's pages against a real ``keel server``: models, versions, approvals, compare.

The seed registers two versions of ``credit`` from two runs (each a small scikit-learn
model logged with ``keel.log_model``, its accuracy measured on held-out rows) and
protects ``champion``: one approval from role ``approver``. Version 1 is champion,
approved by ``alice``; version 2 waits for its approval.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import keel
from _support.browser import log_in, open_page, screenshot
from _support.control_plane import ControlPlane, start_control_plane
from keel.config import load_settings, reset_settings
from keel.tracking.entities import Metric
from keel.transport.http import HttpTransport

MODEL = "credit"
OTHER = "secret"
#: The columns each version trains on: version 2 adds one, so their signatures differ.
COLUMNS = {
    1: ["mean radius", "mean texture", "mean smoothness"],
    2: ["mean radius", "mean texture", "mean smoothness", "mean area"],
}
DEPTH = {1: 1, 2: 3}


@dataclass
class Registry:
    """The server, the two versions' runs, and what each run logged."""

    server: ControlPlane
    run_ids: dict[int, str]  # by version
    metrics: dict[int, dict[str, float]]
    params: dict[int, dict[str, str]]


def _package(home: Path, version: int) -> tuple[Path, dict[str, float]]:
    """A scikit-learn package logged by ``keel.log_model``, and its measured accuracy."""
    pytest.importorskip("skops", reason="scikit-learn packages need skops")
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeClassifier

    data = load_breast_cancer(as_frame=True)
    x = data.data[COLUMNS[version]]
    x_train, x_test, y_train, y_test = train_test_split(x, data.target, random_state=0)
    model = DecisionTreeClassifier(max_depth=DEPTH[version], random_state=0).fit(x_train, y_train)
    metrics = {
        "accuracy": float(model.score(x_test, y_test)),
        "train_accuracy": float(model.score(x_train, y_train)),
    }
    keel.init(home=home / "packaging")
    try:
        with keel.start_run() as run:
            keel.log_model(model, "model", input_example=x_train.head(3))
        folder = home / f"package-{version}"
        keel.Client().download_artifacts(run.id, "model", folder)
    finally:
        reset_settings()
    return folder, metrics


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    home = tmp_path_factory.mktemp("ui-models")
    packages = {v: _package(home, v) for v in (1, 2)}
    with start_control_plane(home / "server") as server:
        settings = load_settings(
            home=home / "client", server_url=server.url, token=server.admin_token
        )
        client = keel.Client(transport=HttpTransport(settings))
        experiment_id = client.create_experiment("credit-training")
        run_ids, params = {}, {}
        for version, (folder, metrics) in packages.items():
            run = client.create_run(experiment_id, f"depth-{DEPTH[version]}", capture=False)
            params[version] = {
                "max_depth": str(DEPTH[version]),
                "columns": str(len(COLUMNS[version])),
            }
            if version == 1:
                params[version]["criterion"] = "gini"  # a param only version 1's run has
            points = [Metric(key, value, 0, 0) for key, value in metrics.items()]
            client.log_batch(run.id, points, params=params[version])
            client.log_artifacts(run.id, folder, artifact_path="model")
            client.set_terminated(run.id)
            description = (
                f"Depth-{DEPTH[version]} tree.\n\n## Intended use\nRanking biopsies for review."
                "\n\n## Limitations\nNot for diagnosis."
            )
            registered = client.create_model_version(
                MODEL, f"runs:/{run.id}/model", description=description, tags={"team": "risk"}
            )
            assert registered.version == version
            run_ids[version] = run.id
        client.create_model_version(OTHER, f"runs:/{run_ids[1]}/model")
        client.registry.set_alias_policy("champion", approvals=1, role="approver")
        alice_token = server.make_user("alice", "approver")
        alice_settings = load_settings(
            home=home / "alice", server_url=server.url, token=alice_token
        )
        alice = keel.Client(transport=HttpTransport(alice_settings))
        alice.registry.approve(MODEL, 1, "champion", "looked at the holdout")
        client.registry.set_alias(MODEL, "champion", 1, comment="first champion")
        client.registry.set_alias(MODEL, "challenger", 2)
        yield Registry(server, run_ids, {v: p[1] for v, p in packages.items()}, params)


@contextmanager
def _session(registry: Registry, token: str) -> Iterator[httpx.Client]:
    """Plain HTTP with the session cookie the login page sets."""
    with httpx.Client(base_url=registry.server.url, timeout=60.0) as http:
        answer = http.post("/login", data={"token": token, "next": "/models"})
        assert answer.status_code == 303, answer.text
        yield http


def _text(html: str) -> str:
    return html.replace("&#39;", "'").replace("&#34;", '"').replace("&amp;", "&")


def _version_path(version: int) -> str:
    return f"/models/{MODEL}/versions/{version}"


# -- the browser: approve, then move the protected alias -----------------------------------------


@pytest.mark.slow
def test_an_approver_approves_and_an_editor_moves_the_protected_alias(
    browser: Any, registry: Registry
) -> None:
    server = registry.server
    url = server.url
    with open_page(browser, url) as page:
        log_in(page, url, server.make_user("ann", "approver"))
        page.goto(f"{url}/models")
        page.click(f"#models a:text-is('{MODEL}')")
        page.click("#versions tr[data-version='2'] a >> nth=0")
        row = page.locator("#gates tr[data-alias='champion']")
        assert row.locator(".holds").inner_text() == "version 1"
        assert row.locator(".count").inner_text().startswith("0 of 1")
        row.locator("input[name=comment]").fill("checked the holdout accuracy")
        row.locator("button:text('Approve for champion')").click()
        page.wait_for_selector("#notice")
        assert "approved this version for champion" in page.locator("#notice").inner_text()
        row = page.locator("#gates tr[data-alias='champion']")
        assert row.locator(".count").inner_text().startswith("1 of 1")
        assert "ann: checked the holdout accuracy" in row.inner_text()
        # an approver may not move aliases (no write): the page offers no move to ann
        assert row.locator("form.move").count() == 0
        assert row.locator("form.approve").count() == 0 and "approved by you" in row.inner_text()
        assert "can move it" in row.inner_text()
        screenshot(page, "model-version")

    with server.http() as api:
        assert api.get(f"/models/{MODEL}/aliases/champion").json()["version"] == 1
        approvals = api.get(f"/models/{MODEL}/approvals", params={"version": 2}).json()
        assert [(a["approver"], a["alias"]) for a in approvals] == [("ann", "champion")]

    with open_page(browser, url) as page:
        log_in(page, url, server.make_user("ed", "editor"))
        page.goto(f"{url}{_version_path(2)}")
        row = page.locator("#gates tr[data-alias='champion']")
        assert row.locator("form.approve").count() == 0  # an editor may not approve
        row.locator("button:text('Move champion to this version')").click()
        page.wait_for_selector("#notice")
        assert page.locator("#gates tr[data-alias='champion'] .holds").inner_text() == (
            "this version"
        )
        assert "champion" in page.locator("#version-aliases").inner_text()
        screenshot(page, "model-version-moved")

    with server.http() as api:
        assert api.get(f"/models/{MODEL}/aliases/champion").json()["version"] == 2
        history = api.get(f"/models/{MODEL}/alias-history", params={"alias": "champion"}).json()
        last = history[-1]
        assert (last["from_version"], last["to_version"], last["actor"]) == (1, 2, "ed")
    with _session(registry, server.admin_token) as http:
        page = _text(http.get(f"/models/{MODEL}").text)
        # the model page's history shows the move with the approval behind it
        assert "ann (" in page and "checked the holdout accuracy" in page


# -- refusals -------------------------------------------------------------------------------------


def test_a_viewer_gets_no_approve_button_and_every_approve_path_refuses(
    registry: Registry,
) -> None:
    server = registry.server
    token = server.make_user("vic", "viewer")
    with _session(registry, token) as http:
        page = http.get(_version_path(2))
        assert page.status_code == 200
        assert 'id="gates"' in page.text and "champion" in page.text
        assert "Approve for" not in page.text and 'class="approve"' not in page.text
        assert "Move champion" not in page.text
        posted = http.post(
            f"{_version_path(2)}/approve",
            data={"alias": "champion", "comment": "lgtm"},
            headers={"origin": server.url},
            follow_redirects=False,
        )
        assert posted.status_code == 403
        assert "lacks permission 'approve' on model 'credit'" in _text(posted.text)
    with server.http(token) as api:
        answer = api.post(f"/models/{MODEL}/versions/2/approvals", json={"alias": "champion"})
        assert answer.status_code == 403
        assert "lacks permission 'approve'" in answer.json()["error"]
        approvers = [a["approver"] for a in api.get(f"/models/{MODEL}/approvals").json()]
        assert "vic" not in approvers


def test_a_cross_site_approval_is_refused(registry: Registry) -> None:
    server = registry.server
    token = server.make_user("cora", "approver")
    with _session(registry, token) as http:
        # cora may approve (the page offers it), so only the origin check can refuse the posts
        offered = [v for v in (1, 2) if "Approve for champion" in http.get(_version_path(v)).text]
        assert offered
        for headers in ({"origin": "http://evil.example"}, {}):
            answer = http.post(
                f"{_version_path(offered[0])}/approve",
                data={"alias": "champion"},
                headers=headers,
                follow_redirects=False,
            )
            assert answer.status_code == 403
            assert "posted from this server's pages" in _text(answer.text)
    with server.http() as api:
        approvers = [a["approver"] for a in api.get(f"/models/{MODEL}/approvals").json()]
        assert "cora" not in approvers


def test_an_approval_the_registry_refuses_shows_its_message_and_status(
    registry: Registry,
) -> None:
    server = registry.server
    # the admin may approve (permission), but the policy asks for role approver, not admin
    with _session(registry, server.admin_token) as http:
        answer = http.post(
            f"{_version_path(2)}/approve",
            data={"alias": "champion"},
            headers={"origin": server.url},
            follow_redirects=False,
        )
        assert answer.status_code == 403
        text = _text(answer.text)
        assert 'id="action-error"' in text and "needs role 'approver'" in text
        assert 'id="gates"' in text  # the version page itself, with the error above
        # approving an alias no policy protects is a 400 saying how to protect it
        answer = http.post(
            f"{_version_path(2)}/approve",
            data={"alias": "challenger"},
            headers={"origin": server.url},
            follow_redirects=False,
        )
        assert answer.status_code == 400
        assert "is not protected" in _text(answer.text)


def test_a_move_from_a_stale_page_is_a_409_not_an_overwrite(registry: Registry) -> None:
    server = registry.server
    with server.http() as api:
        held = api.get(f"/models/{MODEL}/aliases/challenger").json()["version"]
    stale = 1 if held == 2 else 2  # what another page showed before challenger moved
    with _session(registry, server.admin_token) as http:
        answer = http.post(
            f"/models/{MODEL}/aliases/challenger",
            data={"version": "1", "expected": str(stale)},
            headers={"origin": server.url},
            follow_redirects=False,
        )
        assert answer.status_code == 409
        assert 'id="action-error"' in answer.text
    with server.http() as api:
        assert api.get(f"/models/{MODEL}/aliases/challenger").json()["version"] == held


def test_models_list_shows_only_the_models_a_scoped_reader_may_read(registry: Registry) -> None:
    server = registry.server
    sam = server.make_user("sam")
    with server.http() as api:
        granted = api.post(
            "/roles",
            json={"user": "sam", "role": "viewer", "scope_kind": "model", "scope_name": MODEL},
        )
        assert granted.status_code == 200, granted.text
    with _session(registry, sam) as http:
        page = http.get("/models")
        assert page.status_code == 200
        assert f'data-model="{MODEL}"' in page.text and f'data-model="{OTHER}"' not in page.text
        assert http.get(f"/models/{OTHER}").status_code == 403
        # the model, yes; its source run's experiment, no: the run's numbers are left out
        version = http.get(_version_path(1))
        assert version.status_code == 200
        assert "metrics and params are not shown" in version.text
        assert 'id="metrics"' not in version.text
    with server.http(sam) as api:  # the API lists the same models
        assert [m["name"] for m in api.get("/models").json()] == [MODEL]
    with _session(registry, server.admin_token) as http:
        page = http.get("/models").text
        assert f'data-model="{MODEL}"' in page and f'data-model="{OTHER}"' in page


def test_unknown_model_or_version_is_a_404_page(registry: Registry) -> None:
    with _session(registry, registry.server.admin_token) as http:
        for path in (
            "/models/nope",
            "/models/nope/versions/1",
            f"{_version_path(9)}",
            f"/models/{MODEL}/compare?a=1&b=9",
        ):
            page = http.get(path)
            assert page.status_code == 404, path
            assert 'class="error"' in page.text
        assert "no registered model named 'nope'" in _text(http.get("/models/nope").text)


# -- what the pages show ---------------------------------------------------------------------------


def test_models_list_and_model_page(registry: Registry) -> None:
    with _session(registry, registry.server.admin_token) as http:
        listing = _text(http.get("/models").text)
        assert f'href="/models/{MODEL}/versions/2"' in listing  # the latest version
        assert "challenger → 2" in listing
        page = _text(http.get(f"/models/{MODEL}").text)
        for version, run_id in registry.run_ids.items():
            assert f'<tr data-version="{version}">' in page
            assert f'href="/runs/{run_id}"' in page
        assert 'id="policies"' in page and "<td>champion</td><td>1</td><td>approver</td>" in page
        # the first move of champion, with alice's approval and its comment
        assert "first champion" in page and "alice (" in page and "looked at the holdout" in page
        assert 'id="compare-form"' in page and 'name="a"' in page and 'name="b"' in page


def test_version_page_shows_run_signature_card_and_tags(registry: Registry) -> None:
    with _session(registry, registry.server.admin_token) as http:
        page = _text(http.get(_version_path(2)).text)
    assert f'href="/runs/{registry.run_ids[2]}"' in page
    accuracy = registry.metrics[2]["accuracy"]
    assert f"<tr><th>accuracy</th><td>{accuracy:.6g}</td></tr>" in page
    assert "<tr><th>max_depth</th><td>3</td></tr>" in page
    assert "<tr><th>team</th><td>risk</td></tr>" in page
    inputs = page[page.index('id="signature-inputs"') : page.index('id="signature-outputs"')]
    assert all(f"<th>{column}</th>" in inputs for column in COLUMNS[2])
    assert "Ranking biopsies for review." in page and "Not for diagnosis." in page
    assert "No check recorded" in page


def test_compare_shows_the_metric_differences_of_the_logged_values(registry: Registry) -> None:
    with _session(registry, registry.server.admin_token) as http:
        answer = http.get(f"/models/{MODEL}/compare", params={"a": 1, "b": 2})
    assert answer.status_code == 200
    page = _text(answer.text)
    for key in ("accuracy", "train_accuracy"):
        a, b = registry.metrics[1][key], registry.metrics[2][key]
        row = page[page.index(f'<tr data-metric="{key}">') :].split("</tr>", 1)[0]
        assert f'<td class="a">{a:.6g}</td>' in row and f'<td class="b">{b:.6g}</td>' in row
        assert f"{b - a:+.6g}</td>" in row
    assert registry.metrics[1]["train_accuracy"] != registry.metrics[2]["train_accuracy"]
    params = page[page.index('id="compare-params"') :].split("</table>", 1)[0]
    assert (
        '<tr data-param="max_depth" class="differs"><th>max_depth</th><td>1</td><td>3</td>'
        in params
    )
    assert '<tr data-param="criterion" class="differs">' in params
    inputs = page[page.index('id="compare-inputs"') :].split("</table>", 1)[0]
    assert '<tr data-column="mean area" class="differs">' in inputs
    assert '<tr data-column="mean radius">' in inputs  # the same in both
    assert '<span class="alias">challenger</span>' in page
