"""Running guardrails: scan and guard, scanners from specs, the registry, the public names."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import ClassVar

import pytest

import keel.llm.guardrails as guardrails
from keel.errors import InvalidInput
from keel.llm.guardrails import (
    SCANNER_NAMES,
    BannedTerms,
    Guarded,
    PiiScanner,
    RegexRules,
    ScanContext,
    Scanner,
    Verdict,
    guard,
    make_scanner,
    register_scanner,
    scan,
)

TEXT = "Mail alice@example.com about project falcon."
PII = {"scanner": "pii", "action": "redact"}
AT_SIGN = {"scanner": "regex", "patterns": {"at_sign": "@"}, "action": "flag"}
FALCON = {"scanner": "banned_terms", "terms": ["falcon"], "action": "block"}


def test_scan_gives_every_verdict_in_order_each_on_the_original_text():
    verdicts = scan(TEXT, [PII, AT_SIGN, {**FALCON, "action": "flag"}])

    assert [v.scanner for v in verdicts] == ["pii", "regex", "banned_terms"]
    assert all(isinstance(v, Verdict) and v.stage == "input" for v in verdicts)
    assert verdicts[0].redacted == "Mail <EMAIL_1> about project falcon."
    assert verdicts[1].tripped  # the regex read the text before the redaction
    assert all(v.latency_ms > 0 for v in verdicts)


def test_guard_feeds_each_redaction_to_the_next_scanner():
    guarded = guard(TEXT, [PII, AT_SIGN])

    assert guarded.text == "Mail <EMAIL_1> about project falcon."
    assert [v.tripped for v in guarded.verdicts] == [True, False]
    assert not guarded.blocked and guarded.blocked_by is None and guarded.redacted


def test_guard_stops_at_the_first_block_and_names_the_scanner():
    guarded = guard(TEXT, [PII, FALCON, AT_SIGN])

    assert guarded.blocked
    assert guarded.blocked_by is guarded.verdicts[-1]
    assert guarded.blocked_by.scanner == "banned_terms"
    assert [v.scanner for v in guarded.verdicts] == ["pii", "banned_terms"]
    assert guarded.text == "Mail <EMAIL_1> about project falcon."
    assert guarded.to_dict()["blocked_by"] == "banned_terms"
    assert "alice" not in str(guarded.to_dict())


def test_a_flag_changes_nothing_and_is_recorded():
    guarded = guard(TEXT, [{"scanner": "pii", "action": "flag"}, {**FALCON, "action": "flag"}])

    assert guarded.text == TEXT
    assert [(v.tripped, v.action) for v in guarded.verdicts] == [(True, "flag"), (True, "flag")]
    assert not guarded.blocked and not guarded.redacted


def test_a_scanner_that_does_not_trip_does_not_block():
    guarded = guard("Nothing here.", [PII, FALCON])

    assert guarded == Guarded("Nothing here.", guarded.verdicts, None)
    assert [v.tripped for v in guarded.verdicts] == [False, False]


def test_scanners_that_do_not_read_the_stage_are_skipped():
    context = ScanContext(response_schema={"type": "object"})

    asked = scan("[1, 2]", ["json_schema", "pii"], context=context)
    answered = scan("[1, 2]", ["json_schema", "pii"], stage="output", context=context)

    assert [v.scanner for v in asked] == ["pii"]
    assert [v.scanner for v in answered] == ["json_schema", "pii"]
    assert answered[0].tripped and answered[0].stage == "output"


def test_a_bad_stage_or_text_is_refused():
    with pytest.raises(InvalidInput, match=r"stage must be one of input, output, got 'both'"):
        scan(TEXT, ["pii"], stage="both")
    with pytest.raises(InvalidInput, match=r"guardrails scan text, got bytes"):
        guard(b"bytes", ["pii"])  # type: ignore[arg-type]


def test_make_scanner_builds_from_a_name_a_mapping_or_returns_an_instance():
    by_name = make_scanner("pii")
    by_mapping = make_scanner({"scanner": "pii", "action": "flag", "kinds": ["email"]})
    instance = BannedTerms(terms=["x"])

    assert isinstance(by_name, PiiScanner) and by_name.action == "redact"
    assert by_mapping.action == "flag" and by_mapping.kinds == ("email",)
    assert make_scanner(instance) is instance
    assert isinstance(make_scanner({"scanner": "regex", "patterns": "x+"}), RegexRules)


def test_one_spec_alone_is_a_list_of_one():
    assert [v.scanner for v in scan(TEXT, PII)] == ["pii"]
    assert [v.scanner for v in scan(TEXT, "pii")] == ["pii"]


def test_an_unknown_name_is_refused_listing_the_valid_names():
    with pytest.raises(
        InvalidInput,
        match=r"unknown guardrail scanner 'pi'; valid names: pii, token_limit, banned_terms, "
        r"regex, json_schema, groundedness, injection, injection_heuristics, injection_classifier",
    ):
        make_scanner("pi")


def test_an_unknown_option_is_refused_listing_the_valid_options():
    with pytest.raises(
        InvalidInput,
        match=r"guardrail 'pii': unknown option 'kind'; valid options: action, threshold, "
        r"kinds, allow",
    ):
        make_scanner({"scanner": "pii", "kind": ["email"]})
    with pytest.raises(InvalidInput, match=r"unknown options 'max', 'min'; valid options"):
        make_scanner({"scanner": "token_limit", "max_tokens": 5, "max": 1, "min": 0})


def test_a_missing_required_option_is_named():
    with pytest.raises(
        InvalidInput,
        match=r"guardrail 'banned_terms' needs the option 'terms' \(options: terms, action, "
        r"threshold\)",
    ):
        make_scanner("banned_terms")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"name": "pii"},
            r"needs a 'scanner' key naming it \(one of pii, .*\), got keys \['name'\]",
        ),
        ({"scanner": 3}, r"'scanner' must be a scanner's name, got 3"),
        (42, r"a scanner is a Scanner, a name or a mapping with a 'scanner' key, got int"),
        ({"scanner": "pii", "action": "drop"}, r"action must be one of block, redact, flag"),
        ({"scanner": "pii", "threshold": 2}, r"threshold must be a number in \[0, 1\], got 2"),
    ],
)
def test_malformed_specs_are_refused(spec, message):
    with pytest.raises(InvalidInput, match=message):
        make_scanner(spec)


class Shout(Scanner):
    """Trips on a text in capitals (a scanner of the user's own)."""

    name: ClassVar[str] = "shout_for_tests"

    def __init__(self, *, min_letters: int = 3, action: str | None = None) -> None:
        super().__init__(action=action)
        self.min_letters = min_letters

    def scan(self, text: str, context: ScanContext, *, stage: str = "input") -> Verdict:
        letters = [ch for ch in text if ch.isalpha()]
        loud = len(letters) >= self.min_letters and all(ch.isupper() for ch in letters)
        return Verdict(self.name, stage, loud, float(loud), "all capitals", self.action)


def test_a_registered_scanner_is_built_by_its_name_with_its_own_options():
    register_scanner(Shout)

    verdicts = scan("STOP THAT", [{"scanner": "shout_for_tests", "min_letters": 4}, "pii"])

    assert [(v.scanner, v.tripped) for v in verdicts] == [("shout_for_tests", True), ("pii", False)]
    with pytest.raises(InvalidInput, match=r"valid names: pii, .*, shout_for_tests"):
        make_scanner("nope")


def test_a_name_cannot_be_taken_twice():
    class Impostor(Shout):
        name: ClassVar[str] = "pii"

    with pytest.raises(InvalidInput, match=r"scanner name 'pii' is taken by keel\.llm\.guardrails"):
        register_scanner(Impostor)
    with pytest.raises(InvalidInput, match=r"must be a concrete Scanner subclass"):
        register_scanner(dict)  # type: ignore[arg-type]


def test_the_injection_scanners_are_named_and_loaded_only_when_asked_for():
    assert {"injection", "injection_heuristics", "injection_classifier"} <= set(SCANNER_NAMES)
    code = (
        "import sys\n"
        "import keel.llm.guardrails as g\n"
        "g.guard('mail a@example.com', ['pii', {'scanner': 'banned_terms', 'terms': ['x']}])\n"
        "print(sorted(m for m in ('keel.llm.guardrails.injection', 'sentence_transformers',\n"
        "    'torch', 'jsonschema', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(
    importlib.util.find_spec("keel.llm.guardrails.injection") is None,
    reason="keel.llm.guardrails.injection is not in this tree yet",
)
def test_the_injection_names_resolve_to_their_classes():
    for name, cls in [
        ("injection", "InjectionScanner"),
        ("injection_heuristics", "InjectionHeuristics"),
        ("injection_classifier", "InjectionClassifier"),
    ]:
        assert type(make_scanner(name)).__name__ == cls


def test_the_public_names_are_exactly_these_and_each_resolves():
    assert set(guardrails.__all__) == {
        "ACTIONS",
        "DEFAULT_SCANNERS",
        "PII_KINDS",
        "SCANNER_NAMES",
        "STAGES",
        "BannedTerms",
        "Finding",
        "Groundedness",
        "Guarded",
        "InjectionClassifier",
        "InjectionHeuristics",
        "InjectionScanner",
        "JsonSchemaScanner",
        "PiiScanner",
        "Redactor",
        "RegexRules",
        "ScanContext",
        "Scanner",
        "ScannerSpec",
        "TokenLimit",
        "Verdict",
        "guard",
        "make_scanner",
        "make_scanners",
        "register_scanner",
        "scan",
    }
    has_injection = importlib.util.find_spec("keel.llm.guardrails.injection") is not None
    for name in guardrails.__all__:
        if name.startswith("Injection") and not has_injection:
            continue
        assert getattr(guardrails, name) is not None
    assert set(guardrails.__all__) <= set(dir(guardrails))
