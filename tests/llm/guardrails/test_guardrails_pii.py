"""The PII scanner: each kind found and redacted, its near-misses left alone, placeholders stable."""

from __future__ import annotations

import pytest

from keel.errors import InvalidInput
from keel.llm.guardrails import PII_KINDS, PiiScanner, ScanContext, guard, scan

# Key-shaped samples are assembled here, so no scanner of the repository mistakes them for
# real credentials (they are not: none has a valid issuer's check).
OPENAI_KEY = "sk-" + "proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1w"
GITHUB_TOKEN = "ghp" + "_" + "0123456789abcdefghijklmnopqrstuvwxyzAB"
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
SLACK_TOKEN = "xox" + "b-" + "1234567890-0987654321-AbCdEfGhIj"
PEM_KEY = "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x\n-----END RSA PRIVATE KEY-----"
RANDOM_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

FOUND = [
    ("email", "jane.doe+news@mail.example.co.uk"),
    ("phone", "+44 20 7946 0958"),
    ("phone", "(415) 555-0100"),
    ("phone", "415-555-0100"),
    ("phone", "020 7946 0958"),
    ("card", "4111 1111 1111 1111"),
    ("card", "5555-5555-5555-4444"),
    ("card", "378282246310005"),
    ("card", "6011111111111117"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "DE89370400440532013000"),
    ("iban", "FR14 2004 1010 0505 0001 3M02 606"),
    ("us_ssn", "536-22-8014"),
    ("uk_nino", "AB 12 34 56 C"),
    ("uk_nino", "JG103759A"),
    ("es_dni", "12345678Z"),
    ("es_dni", "X1234567L"),
    ("ipv4", "203.0.113.7"),
    ("ipv6", "2001:db8::8a2e:370:7334"),
    ("api_key", OPENAI_KEY),
    ("api_key", GITHUB_TOKEN),
    ("api_key", AWS_KEY_ID),
    ("api_key", SLACK_TOKEN),
    ("api_key", PEM_KEY),
    ("secret", RANDOM_SECRET),
]


@pytest.mark.parametrize(("kind", "value"), FOUND, ids=[f"{k}:{v[:14]}" for k, v in FOUND])
def test_each_kind_is_found_and_redacted_with_its_placeholder(kind, value):
    text = f"Please note {value} for later, thanks."
    verdict = PiiScanner().scan(text, ScanContext())

    assert verdict.tripped and verdict.action == "redact"
    assert [f.kind for f in verdict.findings] == [kind]
    finding = verdict.findings[0]
    assert text[finding.start : finding.end] == value
    assert verdict.redacted == f"Please note <{kind.upper()}_1> for later, thanks."
    assert value not in verdict.reason


NEAR_MISSES = [
    ("a Luhn-invalid 16-digit number", "Card 4111 1111 1111 1112 was declined."),
    ("a Luhn-valid number no card network issues", "Order 1234567812345670 has shipped."),
    ("an IBAN with a wrong checksum", "Pay GB82 WEST 1234 5698 7654 33 today."),
    ("an IBAN one character short", "Pay GB82 WEST 1234 5698 7654 3 today."),
    ("an IBAN of no country", "Code QQ82 WEST 1234 5698 7654 32 here."),
    ("an SSN in area 000", "SSN 000-12-3456 is not issued."),
    ("an SSN in area 666", "SSN 666-12-3456 is not issued."),
    ("an SSN in area 9xx", "SSN 912-34-5678 is not issued."),
    ("an SSN with group 00", "SSN 123-00-4567 is not issued."),
    ("an SSN with serial 0000", "SSN 123-45-0000 is not issued."),
    ("a NINO with an excluded prefix", "NINO GB123456A is not issued."),
    ("a DNI with the wrong letter", "DNI 12345678A is invalid."),
    ("a random order number", "Your order #48213977 ships Monday; ref 20240115-7781."),
    ("a bare nine-digit number", "Tracking 123456789 is on its way."),
    ("ISO, European and dotted dates", "Due 2024-01-15, 15/01/2024 or 01.02.2024."),
    ("clock times", "The call is at 12:30:45 or 09:15."),
    ("amounts", "Revenue was $1,234,567.89 and 3.2% up."),
    ("a version string", "Upgrade to version 1.2.3.4 or v10.0.0.1 (release 2.4.6.8)."),
    ("a five-part dotted number", "Build 1.2.3.4.5 is out."),
    ("an out-of-range dotted quad", "Not an address: 256.1.1.1."),
    ("a commit hash", "Fixed in 3f786850e387550fdab836ed7e6dc881de23001b."),
    ("a UUID", "Request 550e8400-e29b-41d4-a716-446655440000 failed."),
    ("a MAC address and C++ scope", "NIC 00:1A:2B:3C:4D:5E runs std::vector code."),
    ("the IPv6 loopback", "Bind to ::1 locally."),
    ("camel-case identifiers", "Call getUserAccountBalanceForId42 or ThisIsACamelCaseIdentifier2."),
    ("a hyphenated word after sk-", "We use sk-learn-compatible-estimators-everywhere."),
    ("an email without a domain suffix", "Mail root@localhost for help."),
]


@pytest.mark.parametrize(("why", "text"), NEAR_MISSES, ids=[why for why, _ in NEAR_MISSES])
def test_near_misses_are_not_flagged(why, text):
    verdict = PiiScanner().scan(text, ScanContext())

    assert verdict.findings == ()
    assert not verdict.tripped
    assert verdict.score == 0.0
    assert verdict.redacted is None
    assert verdict.reason == "no PII found"


def test_a_digit_run_that_is_no_card_may_still_start_a_phone_number():
    # 15 digits: a card candidate that fails (no issuer starts with 0), then a phone
    verdict = PiiScanner().scan("Lines: 0207 946 0958 4455", ScanContext())

    assert verdict.redacted == "Lines: <PHONE_1> 4455"


def test_a_card_run_into_a_following_number_is_cut_at_the_card():
    text = "Card 4111 1111 1111 1111 2024 expires."
    verdict = PiiScanner().scan(text, ScanContext())

    assert verdict.redacted == "Card <CARD_1> 2024 expires."


def test_the_same_value_keeps_its_placeholder_however_it_is_written():
    text = (
        "Mail alice@example.com, ALICE@Example.COM or bob@example.com; "
        "card 4111 1111 1111 1111 (4111111111111111)."
    )
    verdict = PiiScanner().scan(text, ScanContext())

    assert verdict.redacted == ("Mail <EMAIL_1>, <EMAIL_1> or <EMAIL_2>; card <CARD_1> (<CARD_1>).")


def test_placeholders_hold_from_the_prompt_to_the_answer_within_one_context():
    context = ScanContext()
    asked = guard("I am bob@example.com, not eve@example.com.", ["pii"], context=context)
    answered = guard(
        "Noted, eve@example.com and bob@example.com.", ["pii"], stage="output", context=context
    )
    elsewhere = guard("Noted, eve@example.com.", ["pii"], stage="output", context=ScanContext())

    assert asked.text == "I am <EMAIL_1>, not <EMAIL_2>."
    assert answered.text == "Noted, <EMAIL_2> and <EMAIL_1>."
    assert elsewhere.text == "Noted, <EMAIL_1>."


def test_kinds_chooses_what_is_looked_for_and_groups_expand():
    text = "alice@example.com, 536-22-8014, AB123456C, 203.0.113.7"

    only_email = PiiScanner(kinds=["email"]).scan(text, ScanContext())
    national = PiiScanner(kinds=["national_id"]).scan(text, ScanContext())
    network = PiiScanner(kinds=["ip"], action="flag").scan(text, ScanContext())

    assert only_email.redacted == "<EMAIL_1>, 536-22-8014, AB123456C, 203.0.113.7"
    assert [f.kind for f in national.findings] == ["us_ssn", "uk_nino"]
    assert [f.kind for f in network.findings] == ["ipv4"]


def test_an_unknown_or_empty_kind_list_is_refused_listing_the_valid_kinds():
    with pytest.raises(
        InvalidInput, match=r"unknown kind 'passport'; valid kinds: api_key, email, iban, card, "
    ):
        PiiScanner(kinds=["email", "passport"])
    with pytest.raises(InvalidInput, match=r"kinds is empty"):
        PiiScanner(kinds=[])
    with pytest.raises(InvalidInput, match=r"kinds must be a list of kinds, got 'email'"):
        PiiScanner(kinds="email")


def test_the_score_is_the_highest_confidence_and_one_for_a_checksum():
    context = ScanContext()
    card = PiiScanner().scan("card 4111111111111111 and a@example.com", context)
    email = PiiScanner().scan("mail a@example.com", context)
    phone = PiiScanner().scan("call 415-555-0100", context)
    nothing = PiiScanner().scan("nothing to see", context)

    assert card.score == 1.0
    assert card.reason == "PII found: card (1, checksum-verified), email (1)"
    assert email.score == 0.9
    assert phone.score == 0.7
    assert nothing.score == 0.0 and not nothing.tripped


def test_the_threshold_drops_findings_under_it():
    verdict = PiiScanner(threshold=0.95).scan(
        "call 415-555-0100 or mail a@example.com, card 4111111111111111", ScanContext()
    )
    weak = PiiScanner(threshold=0.95).scan("call 415-555-0100", ScanContext())

    assert verdict.redacted == "call 415-555-0100 or mail a@example.com, card <CARD_1>"
    assert not weak.tripped and weak.score == 0.7
    assert weak.reason == "only PII-like text under the threshold 0.95: phone (1)"


def test_flag_and_block_report_findings_without_masking():
    text = "mail a@example.com"
    flagged = PiiScanner(action="flag").scan(text, ScanContext())
    blocked = PiiScanner(action="block").scan(text, ScanContext())

    assert flagged.tripped and not flagged.blocks and flagged.redacted is None
    assert flagged.findings[0].placeholder is None
    assert blocked.blocks and blocked.redacted is None


def test_allowed_values_are_never_reported():
    scanner = PiiScanner(allow=["support@keel.example"])
    verdict = scanner.scan("Write to Support@keel.example, not a@example.com", ScanContext())

    assert verdict.redacted == "Write to Support@keel.example, not <EMAIL_1>"
    with pytest.raises(InvalidInput, match=r"allow must be a list of texts"):
        PiiScanner(allow="support@keel.example")


def test_a_trace_of_the_verdict_holds_spans_and_placeholders_never_the_values():
    (verdict,) = scan("ssn 536-22-8014, card 4111111111111111", ["pii"])
    recorded = str(verdict.to_dict())

    assert "536-22-8014" not in recorded and "4111111111111111" not in recorded
    assert verdict.to_dict()["findings"] == [
        {"kind": "us_ssn", "start": 4, "end": 15, "placeholder": "<US_SSN_1>"},
        {"kind": "card", "start": 22, "end": 38, "placeholder": "<CARD_1>"},
    ]


def test_every_kind_is_documented_in_the_order_it_wins():
    assert PII_KINDS == (
        "api_key",
        "email",
        "iban",
        "card",
        "us_ssn",
        "uk_nino",
        "es_dni",
        "phone",
        "ipv4",
        "ipv6",
        "secret",
    )
