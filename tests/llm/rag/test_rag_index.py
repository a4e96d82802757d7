"""RAG indexes end to end on the embedded stores: build from a dataset version, query, rebuild,
aliases with approvals, rag:/ URIs, traces, the S3 artifact store, and bad input."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow.dataset as pads
import pytest

import keel
import keel.llm.rag as rag
from keel.errors import ApprovalRequired, Conflict, InvalidInput, NotFound, PermissionDenied
from keel.governance import audit
from keel.llm.rag.backends import get_backend
from keel.llm.rag.index import table_location

#: Small documents on distinct topics; each question below has one right source.
DOCS = {
    "ops/rollback.md": (
        "Rolling back a deployment\n"
        "Run keel deploy rollback NAME to restore the previous revision of a deployment.\n"
        "The routes and weights of that revision come back at once.\n"
    ),
    "ops/drift.md": (
        "Drift detection\n"
        "The monitor compares live feature distributions with the reference profile.\n"
        "Numeric features use the Kolmogorov-Smirnov test; categories use chi-squared.\n"
    ),
    "security/tokens.txt": (
        "API tokens\n"
        "Create a token with keel tokens create; it expires after ninety days.\n"
        "An expired token is refused with 401 until a new one is made.\n"
    ),
    "security/audit.rst": (
        "Audit log\n"
        "Every change is appended to a hash chain; each entry holds the digest of the last.\n"
        "keel audit verify recomputes the chain and reports the first tampered entry.\n"
    ),
    "llm/gateway.html": (
        "<html><body><h1>Gateway caching</h1>"
        "<p>The LLM gateway answers identical requests from its response cache.</p>"
        "<p>Budgets cap the monthly spend of each team.</p></body></html>"
    ),
    "pipelines/steps.md": (
        "Pipeline steps\n"
        "A step is skipped when its cache key matches an earlier run of the same code and inputs.\n"
    ),
    "data/storage.md": (
        "Artifact storage\n"
        "Artifacts live in a content-addressed store on a local folder or an S3 bucket.\n"
    ),
    "images/logo.png": "\x89PNG\r\n\x1a\n\x00\x00binary",
}
QUESTIONS = {
    "How do I undo a bad release and get the earlier version back?": "ops/rollback.md",
    "When does an API key stop working?": "security/tokens.txt",
    "Which statistical test finds a shift in a numeric feature?": "ops/drift.md",
    "How can I tell whether someone tampered with the change history?": "security/audit.rst",
}
CHUNKER = "lines:1"


def write_docs(folder: Path, docs: dict[str, str]) -> Path:
    """``folder`` holding exactly ``docs`` (relative path -> text)."""
    shutil.rmtree(folder, ignore_errors=True)
    for rel, text in docs.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("latin-1") if rel.endswith(".png") else text.encode())
    return folder


def add_docs(tmp_path: Path, docs: dict[str, str] = DOCS) -> str:
    """A dataset version of ``docs`` as ``keel data add`` makes it; its URI."""
    return keel.data.add(write_docs(tmp_path / "docs", docs), "docs").uri


def lines_of(docs: dict[str, str]) -> int:
    """The chunks ``lines:1`` makes of the text files (the HTML page is one line of text each
    for its heading and paragraphs)."""
    count = 0
    for rel, text in docs.items():
        if rel.endswith((".md", ".txt", ".rst")):
            count += sum(1 for line in text.splitlines() if line.strip())
        elif rel.endswith(".html"):
            count += text.count("<h1>") + text.count("<p>")
    return count


def test_build_then_query_finds_the_right_source(sqlite_env, tmp_path):
    source = add_docs(tmp_path)
    built = rag.build("kb", source=source, chunker=CHUNKER, embedder="local-minilm")
    assert built.version.uri == "rag:/kb/1"
    assert (built.documents, built.skipped) == (7, 1)  # the PNG is skipped and counted
    assert built.chunks == lines_of(DOCS) == built.embedded
    assert (built.reused, built.hit_rate) == (0, 0.0)
    assert built.version.source == "datasets:/docs@1"
    assert built.version.document["embedder"] == {"name": "local-minilm", "dimension": 384}
    index = rag.load("rag:/kb/1")
    for question, path in QUESTIONS.items():
        hits = index.query(question, k=3)
        assert hits[0].path == path, (question, [(h.path, h.score) for h in hits])
        assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    [top] = index.query("Where do artifacts live?", k=1)
    assert (top.path, top.position) == ("data/storage.md", 1)
    assert top.text == (
        "Artifacts live in a content-addressed store on a local folder or an S3 bucket."
    )
    # the queryable table was written at build time under the artifact root, by key
    location, _ = table_location(keel.Client().transport, get_backend("lance"), built.key)
    assert location == str(Path(sqlite_env.artifacts_url) / "rag" / f"{built.key}.lance")
    assert Path(location).is_dir()


def test_a_rebuild_embeds_only_the_chunks_that_changed(sqlite_env, tmp_path):
    first = rag.build("kb", source=add_docs(tmp_path), chunker=CHUNKER, embedder="local-minilm")
    changed = dict(DOCS)
    changed["ops/rollback.md"] = changed["ops/rollback.md"].replace(
        "come back at once", "come back within a second"
    )  # one line changed
    changed["security/tokens.txt"] += "Revoke a token with keel tokens revoke.\n"  # one line more
    changed["ops/new.md"] = "Canary rollouts\nA canary takes a share of traffic first.\n"  # two
    del changed["pipelines/steps.md"]  # two lines gone: nothing to embed for them
    second = rag.build(
        "kb", source=add_docs(tmp_path, changed), chunker=CHUNKER, embedder="local-minilm"
    )
    assert second.version.version == 2 and second.version.source == "datasets:/docs@2"
    assert second.key != first.key
    assert second.chunks == lines_of(changed)
    assert second.embedded == 4
    assert second.reused == second.chunks - 4
    assert second.hit_rate == pytest.approx(second.reused / second.chunks)
    [hit] = rag.load("rag:/kb/2").query("How do I revoke an API token?", k=1)
    assert hit.path == "security/tokens.txt"
    # the first version is immutable: it still answers from its own chunks
    line = "The routes and weights of that revision come back {}."
    [old] = rag.load("rag:/kb/1").query(line.format("at once"), k=1)
    [new] = rag.load("rag:/kb/2").query(line.format("at once"), k=1)
    assert (old.text, new.text) == (line.format("at once"), line.format("within a second"))


def test_the_same_inputs_give_the_same_version(sqlite_env, tmp_path):
    source = add_docs(tmp_path)
    first = rag.build("kb", source=source, chunker=CHUNKER, embedder="local-minilm")
    again = rag.build("kb", source="docs@1", chunker="lines:1,overlap:0", embedder="local-minilm")
    assert again.version.version == first.version.version == 1
    assert (again.key, again.version.digest) == (first.key, first.version.digest)
    assert (again.embedded, again.hit_rate) == (0, 1.0)
    assert [v.version for v in rag.versions("kb")] == [1]
    # another chunker is another address, and every chunk text it shares is reused
    other = rag.build("kb", source=source, chunker="lines:2", embedder="local-minilm")
    assert other.version.version == 2 and other.key != first.key
    # two-line chunks are new texts; the last line of a three-line document is a chunk the
    # first version has already (four files and the HTML page)
    assert (other.chunks, other.embedded, other.reused) == (12, 7, 5)
    assert keel.Client().rag.find_key("kb", first.key).version == 1


def test_aliases_move_by_compare_and_set_and_rag_uris_resolve(sqlite_env, tmp_path):
    source = add_docs(tmp_path)
    rag.build("kb", source=source, chunker=CHUNKER, embedder="local-minilm")
    rag.build("kb", source=source, chunker="lines:3", embedder="local-minilm")
    rag.set_alias("kb", "production", 1, expected=None, comment="launch")
    with pytest.raises(Conflict, match="is at version 1, not unset"):
        rag.set_alias("kb", "production", 2, expected=None)
    rag.set_alias("kb", "production", 2, expected=1)
    assert rag.get_alias("kb", "production") == 2
    assert [(h.from_version, h.to_version, h.comment) for h in rag.alias_history("kb")] == [
        (None, 1, "launch"),
        (1, 2, None),
    ]
    for uri in ("rag:/kb@production", "kb@production", "rag:/kb/2"):
        index = rag.load(uri)
        assert (index.name, index.version.version) == ("kb", 2)
        assert index.document["chunker"]["size"] == 3
    assert [(i.name, i.aliases) for i in rag.list()] == [("kb", {"production": 2})]
    assert rag.get("kb", 2).aliases == ["production"]
    with pytest.raises(NotFound, match="has no alias 'staging'"):
        rag.load("rag:/kb@staging")
    with pytest.raises(NotFound, match=r"no RAG index named 'kbb'.*kb"):
        rag.load("rag:/kbb@production")
    with pytest.raises(NotFound, match=r"'kb' has no version 9 \(its latest is 2\)"):
        rag.load("rag:/kb/9")
    with pytest.raises(InvalidInput, match=r"expected a RAG index URI such as rag:/kb@production"):
        rag.load("models:/kb@production")


def test_a_protected_alias_needs_an_approval_before_the_index_moves(sqlite_env, tmp_path):
    bob = keel.Client(replace(sqlite_env, user="bob"))
    alice = keel.Client(replace(sqlite_env, user="alice"))
    version = bob.rag.build(
        "kb", source=add_docs(tmp_path), chunker=CHUNKER, embedder="local-minilm"
    ).version.version
    governor = keel.Client()  # locally anyone may govern until an admin exists
    governor.grant_role("alice", "approver")
    governor.set_alias_policy("production", approvals=1, role="approver")
    with pytest.raises(ApprovalRequired, match=r"needs 1 approval\(s\) from role 'approver'"):
        bob.rag.set_alias("kb", "production", version)
    with pytest.raises(PermissionDenied, match=r"four-eyes|needs role 'approver'"):
        bob.rag.approve("kb", version, "production")
    alice.rag.approve("kb", version, "production", comment="checked the recall")
    bob.rag.set_alias("kb", "production", version)
    assert bob.rag.load("rag:/kb@production").version.version == version
    [approval] = bob.rag.list_approvals("kb", version)
    assert (approval.approver, approval.alias) == ("alice", "production")
    entries = audit.list_entries(keel.Client().store, newest_first=False)
    created = [e for e in entries if e.action == "rag_index_version.create"]
    assert [(e.actor, e.object_id) for e in created] == [("bob", f"kb/{version}")]
    moved = [e for e in entries if e.object_type == "alias"]
    assert moved and moved[-1].actor == "bob"


def test_queries_are_traced_with_their_latency(sqlite_env, tmp_path):
    rag.build("kb", source=add_docs(tmp_path), chunker=CHUNKER, embedder="local-minilm")
    rag.set_alias("kb", "production", 1)
    index = rag.load("rag:/kb@production")
    index.query("How do I roll back?", k=2)
    index.query("When do tokens expire?", k=2)
    assert rag.flush_traces() >= 2
    folder = Path(sqlite_env.artifacts_url) / "traces" / "deployment=rag-kb"
    rows = pads.dataset(folder, format="parquet", partitioning="hive").to_table().to_pylist()
    assert len(rows) == 2
    for row in rows:
        assert (row["model"], row["version"], row["route"]) == ("kb", 1, "@production")
        assert (row["endpoint"], row["provider"], row["upstream_model"]) == (
            "retrieval",
            "lance",
            "local-minilm",
        )
        assert row["status"] == 200 and row["latency_ms"] > 0


def test_an_index_on_s3_is_shared_and_each_client_queries_its_own_copy(
    tmp_path, s3_bucket, s3_server
):
    import boto3

    keel.init(home=tmp_path / ".keel", artifacts_url=f"{s3_bucket}/keel", s3_endpoint_url=s3_server)
    built = rag.build("kb", source=add_docs(tmp_path), chunker=CHUNKER, embedder="local-minilm")
    location, options = table_location(keel.Client().transport, get_backend("lance"), built.key)
    assert location == f"{s3_bucket}/keel/rag/{built.key}.lance"
    assert options is not None and options["allow_http"] == "true"
    bucket = s3_bucket.removeprefix("s3://")
    listed = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").list_objects_v2(
        Bucket=bucket, Prefix=f"keel/rag/{built.key}.lance/"
    )
    assert any(o["Key"].endswith(".manifest") for o in listed["Contents"])
    rag.set_alias("kb", "production", 1)
    index = rag.load("rag:/kb@production")
    for question, path in QUESTIONS.items():
        assert index.query(question, k=1)[0].path == path
    # the builder kept the table it published as its own copy
    assert (tmp_path / ".keel" / "cache" / "rag" / f"{built.key}.lance").is_dir()
    again = rag.build("kb", source="docs@1", chunker=CHUNKER, embedder="local-minilm")
    assert (again.version.version, again.embedded) == (1, 0)

    # another client of the same store: its first load downloads the table, once
    other = tmp_path / "other" / ".keel"
    copy = other / "cache" / "rag" / f"{built.key}.lance"
    keel.init(
        home=other,
        store_url=f"sqlite:///{tmp_path / '.keel' / 'keel.db'}",
        artifacts_url=f"{s3_bucket}/keel",
        s3_endpoint_url=s3_server,
    )
    assert not copy.exists()
    remote = rag.load("rag:/kb@production")
    for question, path in QUESTIONS.items():
        assert remote.query(question, k=1)[0].path == path
    assert copy.is_dir() and not list(copy.parent.glob(".*.part"))


def test_a_rebuild_of_a_large_index_embeds_only_the_changed_chunks(sqlite_env, tmp_path):
    """12,000 chunks: past the exact-search limit, so the table gets its ANN index."""
    docs = {
        f"kb/doc{d:03}.md": "".join(
            f"doc {d} fact {i} about topic{d * 40 + i}\n" for i in range(40)
        )
        for d in range(300)
    }
    first = rag.build("big", source=add_docs(tmp_path, docs), chunker=CHUNKER, embedder="hash-384")
    assert (first.chunks, first.embedded, first.reused) == (12_000, 12_000, 0)
    for d in range(10):  # ten documents change one line each
        docs[f"kb/doc{d:03}.md"] = docs[f"kb/doc{d:03}.md"].replace(
            f"fact 0 about topic{d * 40}", f"fact 0 revised about topic{d * 40}"
        )
    second = rag.build("big", source=add_docs(tmp_path, docs), chunker=CHUNKER, embedder="hash-384")
    assert (second.chunks, second.embedded, second.reused) == (12_000, 10, 11_990)
    assert second.hit_rate == pytest.approx(11_990 / 12_000)
    [hit] = rag.load("rag:/big/2").query("doc 7 fact 0 revised about topic280", k=1)
    assert (hit.path, hit.position) == ("kb/doc007.md", 0)


# -- bad input ------------------------------------------------------------------------------


def test_a_source_without_text_is_refused(sqlite_env, tmp_path):
    binary = keel.data.add(write_docs(tmp_path / "bin", {"logo.png": "\x89PNG\x00"}), "bin")
    with pytest.raises(
        InvalidInput, match=r"datasets:/bin@1 holds no text files to index \(1 file\(s\) skipped"
    ):
        rag.build("kb", source=binary.uri, chunker=CHUNKER, embedder="local-minilm")
    blank = keel.data.add(write_docs(tmp_path / "blank", {"a.md": " \n\n", "b.txt": ""}), "blank")
    with pytest.raises(
        InvalidInput, match=r"the 2 text document\(s\) of datasets:/blank@1 hold no"
    ):
        rag.build("kb", source=blank.uri, chunker=CHUNKER, embedder="local-minilm")
    bad_lines = keel.data.add(write_docs(tmp_path / "j", {"faq.jsonl": '{"q": 1}\n'}), "j")
    with pytest.raises(InvalidInput, match=r"line 1 of faq.jsonl is not a JSON object"):
        rag.build("kb", source=bad_lines.uri, chunker=CHUNKER, embedder="local-minilm")
    with pytest.raises(NotFound, match="docs"):
        rag.build("kb", source="datasets:/docs@4", chunker=CHUNKER, embedder="local-minilm")
    with pytest.raises(NotFound, match="no RAG index named 'kb'"):
        rag.versions("kb")  # nothing was registered by the refused builds


def test_bad_build_and_query_arguments_are_refused(sqlite_env, tmp_path):
    source = add_docs(tmp_path)
    with pytest.raises(InvalidInput, match=r"unknown embedder 'ada-2'; expected one of hash-384"):
        rag.build("kb", source=source, chunker=CHUNKER, embedder="ada-2")
    with pytest.raises(InvalidInput, match=r"the overlap \(50\) must be smaller than the size"):
        rag.build("kb", source=source, chunker="tokens:50,overlap:50", embedder="hash-384")
    with pytest.raises(InvalidInput, match=r"unknown index backend 'faiss'; expected one of"):
        rag.build("kb", source=source, chunker=CHUNKER, embedder="hash-384", backend="faiss")
    with pytest.raises(InvalidInput, match="index name must be 1-"):
        rag.build("k/b", source=source, chunker=CHUNKER, embedder="hash-384")
    rag.build("kb", source=source, chunker=CHUNKER, embedder="hash-384")
    index = rag.load("rag:/kb/1")
    for k in (0, 100_000, -1, True, 2.5):
        with pytest.raises(InvalidInput, match=r"k must be a whole number from 1 to 1000"):
            index.query("rollback", k=k)
    with pytest.raises(InvalidInput, match="a query needs a non-empty question text"):
        index.query("   ")
    assert len(index.query("rollback", k=1000)) == lines_of(DOCS)  # fewer rows than k: all


def test_an_index_name_is_not_also_a_prompt(sqlite_env, tmp_path):
    keel.prompts.register("support", template="Hi {{ name }}", model="gpt-4o-mini")
    with pytest.raises(Conflict, match="'support' is a registered prompt, not a RAG index"):
        rag.build("support", source=add_docs(tmp_path), chunker=CHUNKER, embedder="hash-384")
    with pytest.raises(NotFound, match=r"no RAG index named 'support': 'support' is a prompt"):
        rag.load("rag:/support@production")
