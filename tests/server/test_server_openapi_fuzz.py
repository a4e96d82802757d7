"""Schemathesis against a real ``keel server``'s own OpenAPI document: no 5xx, 4xx as JSON errors.

Every operation the document lists gets generated requests in schemathesis's
coverage and fuzzing phases (positive and negative), sent with the admin's
token so they get past authentication and reach the routes' own checks.
Whatever comes, the server must answer below 500, and every 4xx (but HEAD's,
which has no body) must be JSON of exactly ``{"error": "<message>"}``. Bounded: 25 examples per operation,
derandomized, one server for the module.
"""

from __future__ import annotations

import json

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from _support.control_plane import start_control_plane  # noqa: E402


@pytest.fixture(scope="module")
def control_plane_server(tmp_path_factory):
    with start_control_plane(tmp_path_factory.mktemp("fuzzed")) as server:
        yield server


@pytest.fixture
def api_schema(request, control_plane_server):
    if not hasattr(request.node, "_nodeid"):
        # schemathesis 4.32's from_fixture reads ``item._nodeid``, which newer pytest lacks
        request.node._nodeid = request.node.nodeid
    schema = schemathesis.openapi.from_url(f"{control_plane_server.url}/api/v1/openapi.json")
    schema.config.headers = {"authorization": f"Bearer {control_plane_server.admin_token}"}
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")

#: A URL longer than this may pass the 64 KiB of request head uvicorn's parser accepts.
_PARSER_HEAD_LIMIT = 60_000


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_get_no_5xx_and_every_4xx_is_a_json_error(case, control_plane_server):
    token = control_plane_server.admin_token
    response = case.call(timeout=30, headers={"authorization": f"Bearer {token}"})
    where = (
        f"{case.operation.label} answered {response.status_code} to\n"
        f"{case.as_curl_command()}\nbody: {response.text[:300]}"
    )
    assert response.status_code < 500, where
    if len(response.request.url) > _PARSER_HEAD_LIMIT:
        # uvicorn's HTTP parser refuses a request head this long with its own plain-text 400
        # before any of Keel's code runs; what matters is that the refusal is a 4xx and the
        # server goes on serving
        assert response.status_code == 400, where
        assert httpx.get(f"{control_plane_server.url}/health", timeout=10).status_code == 200
        return
    if 400 <= response.status_code < 500 and case.method.upper() != "HEAD":  # HEAD has no body
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/json"), where
        try:
            body = json.loads(response.content)
        except ValueError:
            pytest.fail(f"the 4xx body is not JSON: {where}")
        assert isinstance(body, dict) and list(body) == ["error"], where
        assert isinstance(body["error"], str) and body["error"], where
