"""Output scanners: JSON-schema validity of an answer, and its groundedness in the context."""

from __future__ import annotations

import pytest

from keel.errors import InvalidInput
from keel.llm.guardrails import Groundedness, JsonSchemaScanner, ScanContext
from keel.llm.guardrails.output import split_sentences

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["answer"],
}


def _schema_verdict(text: str, schema=SCHEMA):
    return JsonSchemaScanner().scan(text, ScanContext(response_schema=schema), stage="output")


def test_an_answer_that_follows_the_schema_passes():
    verdict = _schema_verdict('{"answer": "Paris", "age": 3, "tags": ["city"]}')

    assert not verdict.tripped and verdict.score == 0.0
    assert verdict.reason == "the answer follows the response schema"


def test_a_violation_names_the_rule_and_the_place_never_the_value():
    verdict = _schema_verdict('{"answer": "Paris", "tags": ["ok", "secret-value-42"], "age": "x"}')

    assert verdict.tripped and verdict.blocks and verdict.score == 1.0
    assert verdict.reason.startswith("the answer does not follow the response schema: at $.")
    assert "secret-value-42" not in verdict.reason


def test_a_nested_violation_is_located_by_its_path():
    verdict = _schema_verdict('{"answer": "Paris", "tags": ["ok", 7]}')

    assert verdict.reason == (
        "the answer does not follow the response schema: at $.tags[1], 'type' is \"string\""
    )


def test_a_missing_required_key_is_a_violation():
    verdict = _schema_verdict('{"age": 3}')

    assert verdict.reason == (
        "the answer does not follow the response schema: at $, 'required' is [\"answer\"]"
    )


def test_an_answer_that_is_not_json_trips_with_the_position():
    verdict = _schema_verdict('Sure! {"answer": "Paris"}')

    assert verdict.tripped
    assert verdict.reason == "the answer is not JSON (line 1, column 1)"


def test_without_a_response_schema_the_check_is_skipped_and_says_so():
    verdict = JsonSchemaScanner().scan("not json at all", ScanContext(), stage="output")

    assert not verdict.tripped
    assert verdict.reason == "skipped: the request has no response schema"


def test_a_response_schema_that_is_no_schema_is_refused():
    with pytest.raises(InvalidInput, match=r"the response schema is not a valid JSON schema"):
        _schema_verdict('{"answer": 1}', schema={"type": "no-such-type"})


@pytest.mark.parametrize("cls", [JsonSchemaScanner, Groundedness])
def test_output_judgements_cannot_redact(cls):
    with pytest.raises(
        InvalidInput, match=rf"'{cls.name}' cannot redact .* use action block or flag"
    ):
        cls(action="redact")


def test_sentences_split_at_ends_and_line_breaks_and_keep_short_fragments_attached():
    text = "Paris is the capital. It has 2 million people!\n- Yes.\nIs it big? Quite big indeed."

    assert split_sentences(text) == [
        "Paris is the capital.",
        "It has 2 million people! - Yes.",
        "Is it big?",
        "Quite big indeed.",
    ]


def test_groundedness_is_skipped_without_context_or_answer():
    scanner = Groundedness()

    no_context = scanner.scan("Paris is the capital of France.", ScanContext(), stage="output")
    no_answer = scanner.scan("  ", ScanContext(context=["Paris."]), stage="output")

    assert not no_context.tripped
    assert no_context.reason == "skipped: the request has no context to compare with"
    assert no_answer.reason == "skipped: the answer is empty"


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", True])
def test_groundedness_min_similarity_is_a_number_in_zero_one(bad):
    with pytest.raises(InvalidInput, match=r"min_similarity must be a number in \[0, 1\]"):
        Groundedness(min_similarity=bad)


PASSAGES = [
    "The Eiffel Tower is 330 metres tall and was completed in 1889 for the World's Fair in Paris.",
    "It was designed by the engineering company of Gustave Eiffel.",
]


def test_an_answer_resting_on_the_context_passes_and_one_about_something_else_trips():
    context = ScanContext(context=PASSAGES)
    scanner = Groundedness()

    grounded = scanner.scan(
        "The Eiffel Tower was finished in 1889. Gustave Eiffel's company designed it.",
        context,
        stage="output",
    )
    ungrounded = scanner.scan(
        "Bananas are rich in potassium. Our refund policy allows returns within 30 days. "
        "The Eiffel Tower was finished in 1889.",
        context,
        stage="output",
    )

    assert not grounded.tripped and grounded.score == 0.0
    assert grounded.reason == (
        "0 of 2 answer sentences unsupported by the context (similarity under 0.45)"
    )
    assert ungrounded.tripped and not ungrounded.blocks
    assert ungrounded.score == pytest.approx(2 / 3)
