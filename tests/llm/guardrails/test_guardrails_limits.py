"""Limit scanners: token counts, banned terms as whole words, and rules of your own."""

from __future__ import annotations

import pytest

from keel.errors import InvalidInput
from keel.llm.gateway.tokens import estimate_text
from keel.llm.guardrails import BannedTerms, RegexRules, ScanContext, TokenLimit

LONG = "The quick brown fox jumps over the lazy dog. " * 20


def test_token_limit_trips_over_the_limit_counting_as_the_gateway_estimates():
    tokens = estimate_text(LONG)
    over = TokenLimit(max_tokens=tokens - 1).scan(LONG, ScanContext())
    at = TokenLimit(max_tokens=tokens).scan(LONG, ScanContext())

    assert over.tripped and over.blocks and over.score == 1.0
    assert over.reason == f"{tokens} tokens (estimated), over the limit of {tokens - 1}"
    assert not at.tripped and at.score == 0.0
    assert at.reason == f"{tokens} tokens (estimated), within the limit of {tokens}"


@pytest.mark.parametrize("bad", [0, -5, "100", 2.5, True])
def test_token_limit_needs_a_positive_whole_number(bad):
    with pytest.raises(InvalidInput, match=r"max_tokens must be a whole number >= 1, got"):
        TokenLimit(max_tokens=bad)


def test_token_limit_cannot_redact():
    with pytest.raises(InvalidInput, match=r"'token_limit' cannot redact .* use action block"):
        TokenLimit(max_tokens=10, action="redact")


def test_banned_terms_match_whole_words_ignoring_case():
    scanner = BannedTerms(terms=["ass", "Project Falcon"])

    text = "Ask about PROJECT   falcon, you ASS."
    hit = scanner.scan(text, ScanContext())
    miss = scanner.scan("The class passed its assessment; projects falcons.", ScanContext())

    assert hit.tripped and hit.blocks
    assert [text[f.start : f.end] for f in hit.findings] == ["PROJECT   falcon", "ASS"]
    assert {f.kind for f in hit.findings} == {"banned_term"}
    assert hit.reason == "2 banned term matches"
    assert not miss.tripped and miss.reason == "no banned term matched"


def test_banned_terms_redact_with_one_placeholder_per_term():
    scanner = BannedTerms(terms=["falcon", "osprey"], action="redact")

    verdict = scanner.scan("Falcon, osprey and FALCON.", ScanContext())

    assert verdict.redacted == "<BANNED_TERM_1>, <BANNED_TERM_2> and <BANNED_TERM_1>."


def test_the_longest_banned_term_wins_where_two_start():
    scanner = BannedTerms(terms=["credit card", "credit card number"], action="redact")

    verdict = scanner.scan("Send the credit card number.", ScanContext())

    assert verdict.redacted == "Send the <BANNED_TERM_1>."
    assert len(verdict.findings) == 1


@pytest.mark.parametrize("bad", [[], "falcon", ["ok", ""], ["ok", 3]])
def test_banned_terms_need_a_list_of_texts(bad):
    with pytest.raises(InvalidInput, match=r"terms must be a non-empty list of non-empty texts"):
        BannedTerms(terms=bad)


def test_regex_rules_are_named_and_matched():
    scanner = RegexRules(patterns={"order_id": r"\bORD-\d{6}\b", "ticket": r"#T\d+"})

    verdict = scanner.scan("See ORD-123456 and ORD-654321 (#T42).", ScanContext())

    assert verdict.tripped and verdict.blocks
    assert verdict.reason == "matched rule 'order_id' (2), rule 'ticket' (1)"
    assert [f.kind for f in verdict.findings] == ["order_id", "order_id", "ticket"]


def test_regex_rules_redact_with_the_rule_name_as_placeholder():
    scanner = RegexRules(patterns=[r"ORD-\d{6}"], action="redact")

    verdict = scanner.scan("ORD-123456, ORD-999999, ORD-123456", ScanContext())

    assert verdict.redacted == "<RULE_1_1>, <RULE_1_2>, <RULE_1_1>"


def test_regex_rules_ignore_case_when_asked():
    strict = RegexRules(patterns="internal only")
    loose = RegexRules(patterns="internal only", ignore_case=True)

    assert not strict.scan("INTERNAL ONLY", ScanContext()).tripped
    assert loose.scan("INTERNAL ONLY", ScanContext()).tripped


def test_a_bad_pattern_is_refused_when_the_scanner_is_made():
    with pytest.raises(InvalidInput, match=r"rule 'rule_2' is not a valid regular expression"):
        RegexRules(patterns=[r"ok", r"(unclosed"])


def test_a_pattern_that_matches_the_empty_text_is_refused():
    with pytest.raises(InvalidInput, match=r"rule 'rule_1' matches the empty text"):
        RegexRules(patterns=[r"\d*"])


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ([], r"patterns must be a pattern, a non-empty list"),
        ({"Bad Name": "x"}, r"rule name 'Bad Name' must be lower case letters"),
        ({"ok": ""}, r"rule 'ok' needs a pattern"),
        ([3], r"rule 'rule_1' needs a pattern \(a non-empty text\), got 3"),
    ],
)
def test_regex_rules_are_checked(patterns, message):
    with pytest.raises(InvalidInput, match=message):
        RegexRules(patterns=patterns)
