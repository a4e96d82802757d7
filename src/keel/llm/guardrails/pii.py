"""The PII scanner: personal data and secrets found by shape, confirmed by checksum where one exists.

What counts (each a finding ``kind``, and the stem of its placeholder, ``<EMAIL_1>``):

============  ==============================================================  ==========
kind          rule                                                            confidence
============  ==============================================================  ==========
email         ``local@domain.tld`` (a TLD of 2+ letters)                      0.9
phone         ``+`` and a country code (8-15 digits in all); a North American 0.7
              ``(415) 555-0100`` / ``415-555-0100``; a national number with a
              trunk 0 and separators (``020 7946 0958``, 10-12 digits)
card          13-19 digits (single spaces or hyphens allowed between them)    1.0
              with a card issuer's prefix (Visa, Mastercard, Amex, Discover,
              JCB, Diners, UnionPay, Maestro) and a valid Luhn check digit
iban          a country's IBAN length and a valid ISO 7064 mod-97 checksum    1.0
us_ssn        ``AAA-GG-SSSS`` (hyphens or spaces); never area 000, 666 or     0.9
              900-999, group 00 or serial 0000
uk_nino       two letters, six digits, A-D (HMRC's letter rules and its       0.9
              excluded prefixes BG, GB, KN, NK, NT, TN, ZZ)
es_dni        a Spanish DNI (8 digits) or NIE (X/Y/Z + 7 digits) with its     1.0
              mod-23 check letter
ipv4          four octets 0-255 without leading zeros                         0.8
ipv6          what :mod:`ipaddress` parses, with 4+ hex digits (not ``::1``)  0.8
api_key       known prefixes: OpenAI/Anthropic ``sk-``, Stripe ``sk_live_``,  0.95
              GitHub ``ghp_``/``github_pat_``, AWS ``AKIA``/``ASIA``, Slack
              ``xox?-``, Google ``AIza``, GitLab ``glpat-``, Hugging Face
              ``hf_``, JSON web tokens and PEM private key blocks
secret        a token of 20+ characters of ``[A-Za-z0-9+/_=-]`` with upper,   0.7
              lower case and digits, near-random entropy (at least 0.8 of
              ``log2(min(length, 62))`` bits per character) and lower-case
              runs of 3 letters or fewer on average (1.7 in random base-62;
              words make them longer, so ``getUserAccountId42`` is no secret).
              It finds about 95 % of random 20-character tokens, 99 % of
              40-character ones
============  ==============================================================  ==========

What does not count, on purpose: bare digit runs as phones or SSNs (order
numbers, amounts and timestamps are digit runs too); a card number whose Luhn
digit is wrong or whose prefix belongs to no issuer; an IBAN with a wrong
checksum or length; an SSN in a range the SSA never issues; dates (``2024-01-15``,
``15/01/2024``, ``01.02.2024``) and clock times; a dotted quad right after
"version", "release", "build" or "v" (``version 1.2.3.4``, ``v1.2.3.4``);
hexadecimal strings (commit hashes, digests, UUIDs are identifiers far more
often than secrets); values in the scanner's ``allow`` list.

The score is the highest confidence among the findings (0 with none), so a
checksum-verified finding scores 1.0; the scanner trips when the score reaches
its ``threshold`` (0.5 by default, so every kind trips it), and only findings
at or over the threshold are reported and redacted.

Speed: every kind's pattern is one alternative of a single compiled regular
expression (per choice of ``kinds``, compiled once), so a text is scanned in
one pass; checksums and parsers run only on the candidates it yields. Kinds
that need a digit (or an ``@``, or a ``:``) are left out of the pass over a
text without one, which makes plain prose cheap. A
candidate that fails its check is offered to the kinds after it at the same
place (a Luhn-invalid digit run may still be a phone number).

Redaction replaces each finding with its placeholder from the request's
:class:`~keel.llm.guardrails.base.Redactor`, keyed by a normalized value (the
digits of a card, the lower-cased email), so one value keeps one placeholder
in the prompt and in the answer however it is spaced or cased.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import ClassVar

from keel.errors import InvalidInput
from keel.llm.guardrails.base import Finding, ScanContext, Scanner, Verdict

__all__ = ["KIND_GROUPS", "PII_KINDS", "PiiScanner", "resolve_kinds"]

# -- the patterns, in priority order (the first alternative matching at a place wins) --------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_PATTERNS: dict[str, str] = {
    "api_key": (
        r"(?<![\w-])(?:"
        r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"
        r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
        r"|gh[pousr]_[A-Za-z0-9]{36,}"
        r"|github_pat_[A-Za-z0-9_]{40,}"
        r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
        r"|xox[abposr]-[A-Za-z0-9-]{10,}"
        r"|AIza[0-9A-Za-z_-]{35}"
        r"|glpat-[A-Za-z0-9_-]{20,}"
        r"|hf_[A-Za-z0-9]{30,}"
        r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
        r")(?![\w-])"
        r"|-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]{0,8000}?-----END (?:[A-Z]+ )*PRIVATE KEY-----"
    ),
    "email": (
        r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
    ),
    "iban": r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])",
    "card": r"(?<![\w.-])\d(?:[ -]?\d){12,22}(?![\w-])",
    "us_ssn": r"(?<![\w.-])(?:\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4})(?![\w-])",
    "uk_nino": (
        r"(?<![A-Za-z0-9])[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
        r"(?![A-Za-z0-9])"
    ),
    "es_dni": r"(?<![A-Za-z0-9])(?:\d{8}|[XYZ]\d{7})-?[A-Z](?![A-Za-z0-9])",
    "phone": (
        r"(?<![\w+.-])(?:"
        r"\+[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){2,6}"
        r"|(?:1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4}"
        r"|0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}"
        r")(?![\w-]|\.\d)"
    ),
    "ipv4": rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\w|\.\d)",
    "ipv6": (
        r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
        r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])"
    ),
    "secret": r"(?<![\w+/=-])[A-Za-z0-9+/_=-]{20,}(?![\w+/=-])",
}

#: Every kind the scanner knows, in the priority order of its patterns.
PII_KINDS: tuple[str, ...] = tuple(_PATTERNS)
#: Names that stand for several kinds in ``kinds=[...]``.
KIND_GROUPS: dict[str, tuple[str, ...]] = {
    "national_id": ("us_ssn", "uk_nino", "es_dni"),
    "ip": ("ipv4", "ipv6"),
}

_CONFIDENCE = {
    "api_key": 0.95,
    "email": 0.9,
    "iban": 1.0,
    "card": 1.0,
    "us_ssn": 0.9,
    "uk_nino": 0.9,
    "es_dni": 1.0,
    "phone": 0.7,
    "ipv4": 0.8,
    "ipv6": 0.8,
    "secret": 0.7,
}
#: Kinds whose every finding passed a checksum.
_VERIFIED = frozenset({"card", "iban", "es_dni"})

# -- checks on candidates: each returns (end, normalized value) or None -----------------------

_Check = Callable[[str, int, int], "tuple[int, str] | None"]

_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        total += _DOUBLED[d] if i % 2 else d
    return total % 10 == 0


def _card_issuer(digits: str) -> bool:
    """Whether the number starts with a prefix some card network issues, at a length it uses."""
    n = len(digits)
    p2, p4 = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if 300 <= int(digits[:3]) <= 305 or p2 in (36, 38, 39):  # Diners Club
        return 14 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if digits[0] == "6" or p2 == 50 or 56 <= p2 <= 59:  # Discover, UnionPay, Maestro
        return 12 <= n <= 19
    return False


_DIGITS = re.compile(r"\d+")


def _check_card(text: str, start: int, end: int) -> tuple[int, str] | None:
    if text[start] not in "23456":  # no card network issues numbers starting otherwise
        return None
    # The pattern is greedy across separators, so "4111 1111 1111 1111 2024" reaches the year:
    # try the longest run of whole groups that is a card.
    digits = ""
    ends: list[tuple[str, int]] = []
    for group in _DIGITS.finditer(text, start, end):
        digits += group.group()
        if len(digits) > 19:
            break
        if len(digits) >= 13:
            ends.append((digits, group.end()))
    for number, number_end in reversed(ends):
        if _card_issuer(number) and _luhn(number):
            return number_end, number
    return None


#: IBAN lengths by country (the SWIFT IBAN registry).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def _check_iban(text: str, start: int, end: int) -> tuple[int, str] | None:
    length = _IBAN_LENGTHS.get(text[start : start + 2])
    if length is None:
        return None
    # Take the country's number of characters: the pattern may run on into a next word.
    chars: list[str] = []
    position = start
    while position < end and len(chars) < length:
        if text[position] != " ":
            chars.append(text[position])
        position += 1
    if len(chars) < length or (position < len(text) and text[position].isalnum()):
        return None
    iban = "".join(chars)
    moved = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    if int(number) % 97 != 1:
        return None
    return position, iban


def _check_ssn(text: str, start: int, end: int) -> tuple[int, str] | None:
    digits = text[start:end].replace("-", "").replace(" ", "")
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return end, digits


_NINO_EXCLUDED = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def _check_nino(text: str, start: int, end: int) -> tuple[int, str] | None:
    value = text[start:end].replace(" ", "")
    if value[:2] in _NINO_EXCLUDED:
        return None
    return end, value


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _check_dni(text: str, start: int, end: int) -> tuple[int, str] | None:
    value = text[start:end].replace("-", "")
    head = value[:-1]
    if head[0] in "XYZ":  # an NIE's letter stands for a leading 0, 1 or 2
        head = str("XYZ".index(head[0])) + head[1:]
    number = int(head)
    if _DNI_LETTERS[number % 23] != value[-1]:
        return None
    return end, value


_NOT_DIGIT = re.compile(r"\D")


def _check_phone(text: str, start: int, end: int) -> tuple[int, str] | None:
    value = text[start:end]
    digits = _NOT_DIGIT.sub("", value)
    if value[0] == "+":
        ok = 8 <= len(digits) <= 15
        digits = "+" + digits
    elif value[0] == "0":
        ok = 10 <= len(digits) <= 12
    else:
        ok = len(digits) in (10, 11)
    return (end, digits) if ok else None


_VERSIONISH = re.compile(r"(?:\b(?:version|release|build|firmware|ver|v)\.?)\s*[:=]?\s*$", re.I)


def _check_ipv4(text: str, start: int, end: int) -> tuple[int, str] | None:
    if _VERSIONISH.search(text, max(0, start - 16), start):
        return None
    return end, text[start:end]


def _check_ipv6(text: str, start: int, end: int) -> tuple[int, str] | None:
    value = text[start:end]
    # "::1" and "a::b" parse, but name no one: ask for four hex digits at least
    if sum(ch != ":" for ch in value) < 4:
        return None
    try:
        address = ipaddress.IPv6Address(value)
    except ValueError:
        return None
    return end, address.compressed


def _check_api_key(text: str, start: int, end: int) -> tuple[int, str] | None:
    value = text[start:end]
    # "sk-" also starts hyphenated words ("sk-learn-compatible-estimators-...")
    if value.startswith("sk-") and not (
        any(ch.isdigit() for ch in value) and any(ch.isalpha() for ch in value[3:])
    ):
        return None
    return end, value


_LOWER_RUN = re.compile(r"[a-z]+")


def _check_secret(text: str, start: int, end: int) -> tuple[int, str] | None:
    value = text[start:end]
    core = "".join(ch for ch in value.rstrip("=") if ch.isalnum())
    n = len(core)
    if n < 20 or core.isdigit() or core.isalpha() or core.islower() or core.isupper():
        return None
    if not any(ch.isdigit() for ch in core):
        return None
    # Words show as long lower-case runs ("getUserAccount..." has "ccount"); in a random
    # base-62 string they average 1.7 characters.
    runs = [len(run) for run in _LOWER_RUN.findall(core)]
    if sum(runs) / len(runs) > 3:
        return None
    entropy = -sum(c / n * math.log2(c / n) for c in Counter(core).values())
    # a random base-62 string of n characters reaches about log2(min(n, 62)) bits per character
    if entropy < 0.8 * math.log2(min(n, 62)):
        return None
    return end, value


def _check_email(text: str, start: int, end: int) -> tuple[int, str] | None:
    return end, text[start:end].lower()


_CHECKS: dict[str, _Check] = {
    "api_key": _check_api_key,
    "email": _check_email,
    "iban": _check_iban,
    "card": _check_card,
    "us_ssn": _check_ssn,
    "uk_nino": _check_nino,
    "es_dni": _check_dni,
    "phone": _check_phone,
    "ipv4": _check_ipv4,
    "ipv6": _check_ipv6,
    "secret": _check_secret,
}


@lru_cache(maxsize=256)
def _compiled(kinds: tuple[str, ...]) -> tuple[re.Pattern[str], dict[str, re.Pattern[str]]]:
    """The one-pass pattern of ``kinds`` (named alternatives) and each kind's own pattern."""
    # Every kind starts where no word character precedes it; saying so once, in front, lets a
    # position inside a word fail at one test instead of one per kind.
    alternatives = "|".join(f"(?P<{kind}>{_PATTERNS[kind]})" for kind in kinds)
    combined = re.compile(rf"(?<!\w)(?:{alternatives})")
    alone = {kind: re.compile(_PATTERNS[kind]) for kind in kinds}
    return combined, alone


#: Kinds that cannot occur in a text without a digit, an "@" or a ":" (tested before the scan).
_NEEDS_DIGIT = frozenset({"iban", "card", "us_ssn", "uk_nino", "es_dni", "phone", "ipv4", "secret"})
_DIGIT = re.compile(r"\d")


def _possible(text: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """``kinds`` less those that ``text`` cannot hold: cheap substring tests before the scan."""
    drop: set[str] = set()
    if _DIGIT.search(text) is None:
        drop |= _NEEDS_DIGIT
    if "@" not in text:
        drop.add("email")
    if ":" not in text:
        drop.add("ipv6")
    return tuple(kind for kind in kinds if kind not in drop) if drop else kinds


def resolve_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    """The kinds ``kinds`` names (groups expanded), in priority order; all of them for None.

    Raises:
        InvalidInput: an unknown kind (the message lists the valid ones), or an empty list.
    """
    if kinds is None:
        return PII_KINDS
    if isinstance(kinds, str) or not isinstance(kinds, Sequence):
        raise InvalidInput(f"guardrail 'pii': kinds must be a list of kinds, got {kinds!r}")
    chosen: set[str] = set()
    for kind in kinds:
        if kind in KIND_GROUPS:
            chosen.update(KIND_GROUPS[kind])
        elif kind in _PATTERNS:
            chosen.add(kind)
        else:
            valid = ", ".join([*PII_KINDS, *KIND_GROUPS])
            raise InvalidInput(f"guardrail 'pii': unknown kind {kind!r}; valid kinds: {valid}")
    if not chosen:
        raise InvalidInput("guardrail 'pii': kinds is empty; name at least one kind, or omit it")
    return tuple(kind for kind in PII_KINDS if kind in chosen)


def _find(text: str, kinds: tuple[str, ...]) -> list[tuple[str, int, int, str]]:
    """Every (kind, start, end, normalized value) in ``text``, left to right, not overlapping."""
    kinds = _possible(text, kinds)
    if not kinds:
        return []
    combined, alone = _compiled(kinds)
    found: list[tuple[str, int, int, str]] = []
    position = 0
    search = combined.search
    while True:
        match = search(text, position)
        if match is None:
            return found
        kind = match.lastgroup
        assert kind is not None
        start = match.start()
        checked = _CHECKS[kind](text, start, match.end())
        if checked is None:
            # offer the place to the kinds after this one (a bad card may be a good phone)
            for other in kinds[kinds.index(kind) + 1 :]:
                again = alone[other].match(text, start)
                if again is not None and (checked := _CHECKS[other](text, start, again.end())):
                    kind = other
                    break
        if checked is None:
            position = start + 1
            continue
        end, value = checked
        found.append((kind, start, end, value))
        position = end


class PiiScanner(Scanner):
    """Personal data and secrets: found, scored, and masked with the request's placeholders.

    Args:
        action: ``redact`` (the default), ``block`` or ``flag``.
        threshold: the confidence at which a finding counts (see the module's table).
        kinds: the kinds to look for (names of :data:`PII_KINDS` or :data:`KIND_GROUPS`);
            all of them when omitted.
        allow: values never reported (your own support address, a documentation IP), compared
            as written, ignoring case.
    """

    name: ClassVar[str] = "pii"
    default_action: ClassVar[str] = "redact"

    def __init__(
        self,
        *,
        action: str | None = None,
        threshold: float = 0.5,
        kinds: Sequence[str] | None = None,
        allow: Sequence[str] = (),
    ) -> None:
        super().__init__(action=action, threshold=threshold)
        self.kinds = resolve_kinds(kinds)
        if isinstance(allow, str) or not all(isinstance(value, str) for value in allow):
            raise InvalidInput(f"guardrail 'pii': allow must be a list of texts, got {allow!r}")
        self.allow = tuple(allow)
        self._allowed = frozenset(value.strip().lower() for value in allow)

    def scan(self, text: str, context: ScanContext, *, stage: str = "input") -> Verdict:
        """Find the PII in ``text``; with ``action="redact"``, mask it (see the module's rules)."""
        hits = [
            hit
            for hit in _find(text, self.kinds)
            if not self._allowed or text[hit[1] : hit[2]].strip().lower() not in self._allowed
        ]
        score = max((_CONFIDENCE[hit[0]] for hit in hits), default=0.0)
        counted = [hit for hit in hits if _CONFIDENCE[hit[0]] >= self.threshold]
        tripped = bool(counted)
        redacted: str | None = None
        findings: list[Finding] = []
        if tripped and self.action == "redact":
            pieces: list[str] = []
            last = 0
            for kind, start, end, value in counted:
                placeholder = context.redactor.placeholder(kind, value)
                pieces += [text[last:start], placeholder]
                findings.append(Finding(kind, start, end, placeholder))
                last = end
            pieces.append(text[last:])
            redacted = "".join(pieces)
        else:
            findings = [Finding(kind, start, end) for kind, start, end, _ in counted]
        return Verdict(
            scanner=self.name,
            stage=stage,
            tripped=tripped,
            score=score,
            reason=_reason(hits, counted, self.threshold),
            action=self.action,
            findings=tuple(findings),
            redacted=redacted,
        )


def _reason(
    hits: list[tuple[str, int, int, str]],
    counted: list[tuple[str, int, int, str]],
    threshold: float,
) -> str:
    if not hits:
        return "no PII found"
    if not counted:
        below = Counter(hit[0] for hit in hits)
        listed = ", ".join(f"{kind} ({n})" for kind, n in sorted(below.items()))
        return f"only PII-like text under the threshold {threshold:g}: {listed}"
    counts = Counter(hit[0] for hit in counted)
    listed = ", ".join(
        f"{kind} ({n}, checksum-verified)" if kind in _VERIFIED else f"{kind} ({n})"
        for kind, n in sorted(counts.items())
    )
    return f"PII found: {listed}"
