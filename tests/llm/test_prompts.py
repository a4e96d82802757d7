"""The prompt registry: versions, rendering, aliases and approvals, on every store and a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import keel
from keel.errors import (
    ApprovalRequired,
    Conflict,
    IntegrityError,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from keel.store import HEAD_REVISION, Store, normalize_url
from keel.store.migrate import upgrade


def test_versions_are_numbered_by_the_store_and_keep_their_content(any_env, support):
    first = keel.prompts.register("support", **support, description="first cut")
    changed = {**support, "parameters": {"temperature": 0.7, "max_tokens": 300}}
    second = keel.prompts.register("support", **changed)
    assert (first.name, first.version, second.version) == ("support", 1, 2)
    # the same document as the latest version is that version, not a third
    again = keel.prompts.register("support", **changed)
    assert (again.version, again.digest) == (2, second.digest)
    assert first.digest != second.digest
    # version 1 still holds what it was registered with
    loaded = keel.prompts.load("prompts:/support/1")
    assert loaded.parameters == {"temperature": 0.2, "max_tokens": 300}
    assert (loaded.template, loaded.description) == (support["template"], "first cut")
    assert [v.version for v in keel.prompts.versions("support")] == [1, 2]
    [listed] = keel.prompts.list()
    assert (listed.name, listed.latest_version) == ("support", 2)
    with pytest.raises(Conflict, match="another description"):
        keel.prompts.register("support", **changed, description="something else")


def test_load_by_version_and_alias_and_render_a_chat_request(any_env, support):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    keel.prompts.register("support", **support)
    keel.prompts.register("support", **support, tools=tools, response_schema=schema)
    keel.prompts.set_alias("support", "production", 2)
    prompt = keel.prompts.load("prompts:/support@production")
    assert (prompt.name, prompt.version, prompt.variables) == (
        "support",
        2,
        ["product", "question"],
    )
    assert prompt.aliases == ["production"]
    rendered = prompt.render(product="Keel", question="How do I roll back {{ x }}?")
    assert rendered.messages == [
        {"role": "system", "content": "You answer questions about Keel. Be brief."},
        # a value is inserted as text: its braces are not expanded again
        {"role": "user", "content": "How do I roll back {{ x }}?"},
    ]
    body = rendered.request()
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("gpt-4o-mini", 0.2, 300)
    assert body["tools"] == tools
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert rendered.prompt == "prompts:/support/2"
    text_prompt = keel.prompts.register("summary", template="Summarize:\n{{ doc }}", model="m")
    assert text_prompt.render(doc="a b c").request()["prompt"] == "Summarize:\na b c"


def test_render_names_a_missing_or_an_extra_variable(any_env, support):
    prompt = keel.prompts.register("support", **support)
    with pytest.raises(InvalidInput, match=r"needs variable\(s\) 'question'"):
        prompt.render(product="Keel")
    with pytest.raises(InvalidInput, match=r"has no variable\(s\) 'user'.*'product', 'question'"):
        prompt.render(product="Keel", question="q", user="ann")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"template": "Hello {{ user name }}"}, r"'\{\{' outside a placeholder"),
        ({"template": "Hello {{ name }"}, r"'\{\{' outside a placeholder"),
        ({"template": [{"role": "robot", "content": "x"}]}, "role must be one of"),
        ({"template": [{"role": "user"}]}, "exactly 'role' and 'content'"),
        ({"template": ""}, "must not be empty"),
        ({"model": ""}, "model must be a model name"),
        ({"parameters": {"messages": []}}, "set by the prompt itself"),
        ({"parameters": {"temperature": float("nan")}}, "parameters must be JSON"),
    ],
)
def test_a_bad_prompt_is_refused_saying_what_is_wrong(any_env, support, change, message):
    with pytest.raises(InvalidInput, match=message):
        keel.prompts.register("support", **{**support, **change})
    with pytest.raises(NotFound):  # nothing was registered
        keel.prompts.load("prompts:/support/1")


def test_alias_moves_are_compare_and_set_with_history(any_env, support):
    keel.prompts.register("support", **support)
    keel.prompts.register("support", template="v2 {{ q }}", model="gpt-4o-mini")
    keel.prompts.set_alias("support", "production", 1, expected=None, comment="launch")
    with pytest.raises(Conflict, match="is at version 1, not unset"):
        keel.prompts.set_alias("support", "production", 2, expected=None)
    keel.prompts.set_alias("support", "production", 2, expected=1)
    assert keel.prompts.get_alias("support", "production") == 2
    history = keel.prompts.alias_history("support", "production")
    assert [(h.from_version, h.to_version, h.comment) for h in history] == [
        (None, 1, "launch"),
        (1, 2, None),
    ]
    with pytest.raises(NotFound, match="no alias 'staging'"):
        keel.prompts.load("prompts:/support@staging")


def test_a_protected_alias_needs_an_approval_before_the_prompt_moves(any_env, support, as_user):
    bob = as_user("bob")  # registers
    alice = as_user("alice")  # approves
    version = bob.prompts.register("support", **support).version
    governor = keel.Client()  # locally anyone may govern until an admin exists
    governor.grant_role("alice", "approver")
    governor.set_alias_policy("production", approvals=1, role="approver")
    with pytest.raises(ApprovalRequired, match="keel prompts approve support 1 --for production"):
        bob.prompts.set_alias("support", "production", version)
    with pytest.raises(
        PermissionDenied, match=r"four-eyes|needs role 'approver'|lacks permission 'approve'"
    ):
        bob.prompts.approve("support", version, "production")
    alice.prompts.approve("support", version, "production", comment="read it")
    bob.prompts.set_alias("support", "production", version)
    assert bob.prompts.get_by_alias("support", "production").version == version
    [approval] = bob.prompts.list_approvals("support", version)
    assert (approval.approver, approval.alias) == ("alice", "production")


def test_diff_shows_template_and_parameter_changes(any_env, support):
    keel.prompts.register("support", **support)
    template = [dict(m) for m in support["template"]]
    template[0]["content"] = "You answer questions about {{ product }}. Cite sources."
    keel.prompts.register(
        "support", template=template, model="gpt-4o", parameters={"temperature": 0.2}
    )
    keel.prompts.set_alias("support", "production", 1)
    diff = keel.prompts.diff("support", "@production", 2)
    assert "--- prompts:/support/1 (template)" in diff
    assert "+++ prompts:/support/2 (template)" in diff
    assert "-You answer questions about {{ product }}. Be brief.\n" in diff
    assert "+You answer questions about {{ product }}. Cite sources.\n" in diff
    assert '-  "model": "gpt-4o-mini",' in diff and '+  "model": "gpt-4o",' in diff
    assert '-    "max_tokens": 300,' in diff
    assert keel.prompts.diff("support", 1, 1) == ""


def test_prompts_and_models_do_not_mix(any_env, support, model_run):
    client = keel.Client()
    client.create_model_version("fraud", model_run())
    keel.prompts.register("support", **support)
    with pytest.raises(Conflict, match="'fraud' is a registered model, not a prompt"):
        keel.prompts.register("fraud", **support)
    with pytest.raises(Conflict, match="'support' is a prompt"):
        client.create_model_version("support", model_run())
    with pytest.raises(Conflict, match="'support' is a prompt"):
        client.create_registered_model("support")
    assert [m.name for m in client.list_registered_models()] == ["fraud"]
    assert [p.name for p in keel.prompts.list()] == ["support"]
    with pytest.raises(NotFound, match="no prompt named 'fraud'"):
        keel.prompts.load("prompts:/fraud/1")
    with pytest.raises(NotFound, match="no registered model named 'support'"):
        client.resolve_model("models:/support/1")
    with pytest.raises(NotFound):
        client.get_model_version("support", 1)
    with pytest.raises(InvalidInput, match="expected a prompt URI"):
        keel.prompts.load("models:/fraud/1")


@pytest.mark.parametrize("any_env", ["server"], indirect=True)
def test_a_viewer_cannot_register_through_the_server(any_env, request, support):
    from dataclasses import replace

    token = request.getfixturevalue("control_plane").make_user("vera", "viewer")
    viewer = keel.Client(replace(any_env, token=token))
    with pytest.raises(PermissionDenied, match=r"lacks permission 'write'.*support"):
        viewer.prompts.register("support", **support)
    keel.prompts.register("support", **support)  # the admin may
    with pytest.raises(PermissionDenied, match="lacks permission 'write'"):
        viewer.prompts.set_alias("support", "production", 1)
    assert viewer.prompts.load("prompts:/support/1").version == 1  # and reading is allowed
    assert keel.prompts.get_alias("support", "production") is None


def test_a_damaged_prompt_document_is_refused_on_read(sqlite_env, support):
    version = keel.prompts.register("support", **support)
    objects = Path(sqlite_env.artifacts_url) / "objects"
    stored = objects / version.digest[:2] / version.digest[2:]
    stored.write_bytes(stored.read_bytes().replace(b"Be brief", b"Be rude!"))
    with pytest.raises(IntegrityError, match="corrupt"):
        keel.prompts.load("prompts:/support/1")


# -- the migration ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database_at_0010(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A database migrated to revision 0010, holding one registered model."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        drop = None
    else:
        base = request.getfixturevalue("postgres_url")
        name = f"{base.rsplit('/', 1)[1]}_p0010"
        admin = create_engine(normalize_url(base), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = str(admin.url.set(database=name).render_as_string(False))
        drop = (admin, name)
    engine = create_engine(normalize_url(url))
    with engine.connect() as conn:
        upgrade(conn, "0010")
        conn.execute(
            text(
                "INSERT INTO registered_models (name, last_version, created_at, created_by) "
                "VALUES ('old-model', 0, 1, 'ann')"
            )
        )
        conn.commit()
    engine.dispose()
    yield url
    if drop is not None:
        from keel.store import reset_stores

        reset_stores()
        admin, name = drop
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_the_migration_makes_existing_rows_models(database_at_0010: str, tmp_path: Path, support):
    store = Store(database_at_0010)
    with store.read() as conn:  # opening it migrates, once
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        kinds = conn.execute(text("SELECT name, kind FROM registered_models")).all()
    assert store.migrated
    assert (revision, kinds) == (HEAD_REVISION, [("old-model", "model")])
    store.dispose()
    keel.init(home=tmp_path / ".keel", store_url=database_at_0010)
    assert [m.name for m in keel.Client().list_registered_models()] == ["old-model"]
    keel.prompts.register("support", **support)
    assert [p.name for p in keel.prompts.list()] == ["support"]
