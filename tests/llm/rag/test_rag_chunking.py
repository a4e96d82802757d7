"""Chunker specs, embedders by name, which source files are read, and the index document check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keel.errors import InvalidInput
from keel.llm.rag.chunking import parse_chunker
from keel.llm.rag.documents import DOCUMENT_FORMAT, check_document, extract_text, index_key
from keel.llm.rag.embedders import get_embedder


def test_token_chunks_overlap_and_keep_the_documents_own_text():
    chunker = parse_chunker(" tokens:4 , overlap:1 ")
    assert chunker.spec == "tokens:4,overlap:1"
    assert chunker.config() == {"kind": "tokens", "size": 4, "overlap": 1, "algorithm": 1}
    # "don't" is three tokens (don ' t); chunks are cut from the text, spacing and all
    assert chunker.split("don't  stop. Go on\nnow please") == [
        "don't  stop",
        "stop. Go on",
        "on\nnow please",
    ]
    assert chunker.split("   \n ") == []


def test_char_and_line_chunks_cover_the_text_to_its_end():
    assert parse_chunker("chars:10,overlap:3").split("abcdefghijklmnopqrstuvwxyz") == [
        "abcdefghij",
        "hijklmnopq",
        "opqrstuvwx",
        "vwxyz",
    ]
    assert parse_chunker("chars:10").split("abcdefghij") == ["abcdefghij"]
    assert parse_chunker("lines:2").split("a\nb\n\nc\n") == ["a\nb", "c"]
    assert parse_chunker("lines:2,overlap:1").split("a\nb\nc") == ["a\nb", "b\nc"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sentences:3", r"unknown chunker kind 'sentences' in 'sentences:3'; expected one of "),
        ("tokens", r"chunker 'tokens' needs a size: tokens:N"),
        ("tokens:0", r"the size of chunker 'tokens:0' must be a whole number from 1 to 100,000"),
        ("chars:-5", r"must be a whole number from 1 to 100,000; got '-5'"),
        ("tokens:400,overlap:400", r"the overlap \(400\) must be smaller than the size \(400\)"),
        ("tokens:400,stride:50", r"unknown chunker option 'stride:50'.*only option is overlap:N"),
        ("", r"expected a chunker spec such as tokens:400,overlap:50"),
    ],
)
def test_bad_chunker_specs_say_what_a_good_one_looks_like(spec, message):
    with pytest.raises(InvalidInput, match=message):
        parse_chunker(spec)


def test_embedders_are_found_by_name_and_give_unit_rows():
    hashing = get_embedder("hash-384")
    vectors = hashing.embed(["roll back the deployment", "Roll back the DEPLOYMENT!", ""])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0)
    assert np.array_equal(vectors[0], vectors[1])  # the same words, whatever the case
    assert not vectors[2].any()  # no words, no direction
    assert get_embedder("local-minilm").embed([]).shape == (0, 384)
    with pytest.raises(InvalidInput, match=r"unknown embedder 'ada-2'; expected one of hash-384, "):
        get_embedder("ada-2")


def test_which_files_are_read_and_how():
    assert extract_text("notes/a.md", b"# Title\nbody") == [("notes/a.md", "# Title\nbody")]
    assert extract_text("a.TXT", "caf\u00e9".encode("utf-8-sig")) == [("a.TXT", "caf\u00e9")]
    page = (
        b"<html><head><title>x</title><style>p {color: red}</style></head><body>"
        b"<h1>Tokens</h1><p>Expire after <b>90</b> days.</p><script>alert(1)</script></body></html>"
    )
    assert extract_text("t.html", page) == [("t.html", "Tokens\nExpire after 90 days.")]
    lines = b'{"text": "first"}\n\n{"text": "second", "id": 7}\n'
    assert extract_text("faq.jsonl", lines) == [("faq.jsonl#1", "first"), ("faq.jsonl#3", "second")]
    # skipped: other types, binary bytes, text that is not UTF-8, no suffix
    assert extract_text("model.bin", b"text") is None
    assert extract_text("a.txt", b"abc\x00def") is None
    assert extract_text("a.md", b"\xff\xfe\xfa") is None
    assert extract_text("v1.0/README", b"text") is None
    with pytest.raises(InvalidInput, match=r"line 2 of faq.jsonl is not a JSON object with a text"):
        extract_text("faq.jsonl", b'{"text": "ok"}\n{"body": "no"}\n')


def _document() -> dict:
    chunker = parse_chunker("tokens:10").config()
    source = {"dataset": "docs", "version": 1, "digest": "a" * 64}
    return {
        "format": DOCUMENT_FORMAT,
        "key": index_key(source["digest"], chunker, "hash-384"),
        "source": source,
        "chunker": chunker,
        "embedder": {"name": "hash-384", "dimension": 384},
        "chunks": {"digest": "b" * 64, "rows": 3},
        "vectors": {"digest": "c" * 64, "rows": 3},
        "documents": 1,
        "skipped": 0,
    }


def test_a_document_must_carry_the_key_its_fields_make():
    document = _document()
    assert check_document(document) is document
    edited = json.loads(json.dumps(document))
    edited["embedder"]["name"] = "local-minilm"  # a relabelled document
    with pytest.raises(InvalidInput, match=r"says its key is '[0-9a-f]{64}', but its source"):
        check_document(edited)
    with pytest.raises(InvalidInput, match=r"not a keel-rag-index/1 document: format 'other'"):
        check_document({**document, "format": "other"})
    with pytest.raises(InvalidInput, match=r"chunks must name a blob digest and a positive row"):
        check_document({**document, "chunks": {"digest": "b" * 64, "rows": 0}})


def test_the_short_api_is_exactly_what_is_public():
    import keel
    import keel.llm.rag as rag

    assert keel.rag is rag
    assert sorted(rag.__all__) == [
        "BuildResult",
        "Chunker",
        "Embedder",
        "Hit",
        "IndexVersion",
        "RagIndex",
        "RagIndexes",
        "RegisteredIndex",
        "alias_history",
        "approve",
        "build",
        "flush_traces",
        "get",
        "get_alias",
        "get_embedder",
        "list",
        "load",
        "parse_chunker",
        "query",
        "set_alias",
        "versions",
    ]
    for name in rag.__all__:
        assert getattr(rag, name) is not None
    assert callable(rag.build) and rag.build.__module__ == "keel.llm.rag"  # not the submodule
