"""The heuristic layer of the injection guardrail: compiled rules over several views of a text.

The rules cover the attack classes: instruction override, system-prompt
extraction, role-play and "no rules" personas, fake chat-template and role
markup, instructions addressed to a model inside retrieved content, claimed
authority and modes, exfiltration and tool abuse, fictional or hypothetical
framing of harmful how-tos, refusal suppression, and a few languages besides
English. Each rule is a kind, a score, a few needles and a pattern; a kind
counts once, with the best score of its patterns that match.

The rules read several views of the text: as written (NFKC, look-alike letters
of other scripts folded, invisible characters removed), reversed, rot13, with
digits-for-letters undone, with letter-by-letter spacing squashed, and every
base64, hex or percent-encoded run decoded, plus what Unicode tag characters
hide. A hit found only in a hidden or decoded view scores higher than the same
words in plain sight. Invisible and bidirectional-override characters inside
words are findings of their own. A question about attacks (a mention, not a
use) has its phrase kinds capped under the default threshold.

:func:`heuristic_scan` runs the rules; :class:`InjectionHeuristics`
(``injection_heuristics``) is the scanner over it. :class:`InjectionBase` is
what the three injection scanners share (see :mod:`keel.llm.guardrails.injection`).

Speed: a rule runs on a view only when one of its needles (a few literal
substrings) is in it, the reversed and rot13 readings cover only the
stretches around their tell-tale words, and digits-for-letters and
snake_case only the words that have them. A chat message takes about 0.1 ms
of rules (p99 well under 1 ms on one core); a long text about 2 µs per
character (16,000 characters: 30-50 ms); see ``bench/guardrails.py``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from keel.errors import InvalidInput
from keel.llm.guardrails.base import Finding, ScanContext, Scanner, Verdict

__all__ = [
    "HeuristicResult",
    "InjectionBase",
    "InjectionHeuristics",
    "describe_kinds",
    "fold_text",
    "heuristic_scan",
]

# -- the heuristics' rules -------------------------------------------------------------------

_V = (
    r"(?:ignor(?:e|ing)|disregard(?:ing)?|forget(?:ting)?|bypass(?:ing)?|overrid(?:e|ing)|overrule|"
    r"circumvent|skip|drop|discard|abandon|set aside|throw out|neglect|void|revoke|turn off|"
    r"switch off|disable|deactivate|lift|suspend|break free of|break out of)"
)
_PRIOR = (
    r"(?:previous|prior|preceding|earlier|above|foregoing|original|initial|old|existing|your|all|"
    r"any|every|system|developer'?s?|safety|ethical|built-in|usual|default|programmed|content)"
)
_INSTR = (
    r"(?:instructions?|instruction set|directions|directives?|rules?|guidelines?|guidance|prompts?|"
    r"system message|constraints?|restrictions?|polic(?:y|ies)|programming|orders|commands|"
    r"guardrails?|filters?|filtering|safeguards?|limitations?|limits|moderation|censorship|"
    r"training|conditioning|ethics|morals|principles|context|task)"
)
_SAFETY = (
    r"(?:filters?|guardrails?|censorship|safeguards?|safety (?:rules|filters?|guidelines|layer|"
    r"settings|policy)|content (?:policy|filters?)|moderation(?: rules)?|ethical guidelines)"
)
_MODEL = (
    r"(?:ai|a\.i\.|llms?|language models?|assistants?|chatbots?|copilots?|gpt|claude|gemini|"
    r"ai (?:models?|agents?|systems?|assistants?)|summari[sz]ers?|automated \w+)"
)
_HARM = (
    r"(?:meth(?:amphetamine)?|cocaine|heroin|fentanyl|(?:pipe |nail )?bombs?|explosives?|napalm|"
    r"ricin|sarin|nerve agents?|anthrax|thermite|poison(?:ing)? (?:someone|a person|him|her|people)|"
    r"ransomware|malware|keylogger|phishing (?:page|email|site|kit)|skimmer|(?:untraceable|ghost) "
    r"guns?|launder(?:ing)? money|money laundering|hotwire|pick a lock|fake (?:ids?|passports?)|"
    r"counterfeit|steal(?:ing)? (?:a car|credit cards?|passwords?|someone'?s)|hack(?:ing)? "
    r"(?:into|someone'?s|my neighbou?r'?s|a bank)|break into (?:a house|someone'?s|accounts?)|"
    r"stalk(?:ing)?|shoplift(?:ing)?|toxic gas|weapons?|illegal firearms|cheat (?:the )?"
    r"breathalyzer|someone'?s password|dangerous drugs|forbidden (?:question|topic|request))"
)
_FRAME = (
    r"(?:story|novel|screenplay|script|scene|chapter|lullaby|bedtime|fiction(?:al)?|role-?play|"
    r"character|hypothetical(?:ly)?|theoretical(?:ly)?|thought experiment|imagine|pretend|"
    r"parallel universe|world where|educational purposes|purely academic|for research|"
    r"research exercise|textbook|security class|grandm\w+|grandpa)"
)
_DETAIL = (
    r"(?:step[- ]by[- ]step|steps?|exact|precise(?:ly)?|detailed|in (?:full )?detail|fully|"
    r"complete|working|functional|real code|recipe|synthesis|quantities|doses|instructions|"
    r"how to|how do i|ways? to|most effective|the easiest way)"
)
_UNRESTRICTED = (
    r"\b(?:without|no|free (?:of|from)|not bound by|unbound by|ignoring|beyond|with no|there are "
    r"no)\s+(?:any\s+|all\s+|the\s+|your\s+|its\s+)?(?:typical\s+|usual\s+|normal\s+)?"
    r"(?:ethical\s+|moral\s+|content\s+|safety\s+|ai\s+|moderation\s+)?(?:restrictions?|filters?|"
    r"filtering|censorship|limits|limitations|rules|guidelines|polic(?:y|ies)|boundaries|"
    r"guardrails|morals|ethics|constraints|layer|module)\b|\b(?:unfiltered|uncensored|unrestricted|"
    r"unaligned|amoral|no-?limits|jailbr(?:eak|oken)\w*)\b"
)
_FRAMING = (
    r"\b(?:you are(?: now)?|you're(?: now)?|act(?:ing)? (?:as|like)|pretend(?:ing)?|role-?play|"
    r"simulate|emulate|answer as|respond as|become|from now on|stay in character|imagine you are|"
    r"play the role|you will (?:now )?act|persona|character)\b"
)

#: Substrings that start the rule's verbs: a rule runs on a view only if one of its needles is in
#: it (substring tests are much cheaper than running every pattern on every view).
_V_NEEDLES = (
    "ignor|disregard|forget|bypass|overrid|overrule|circumvent|skip|drop|discard|abandon|aside|"
    "throw|neglect|void|revoke|turn|switch|disable|deactivate|lift|suspend|break"
)
_HARM_NEEDLES = (
    "meth|cocaine|heroin|fentanyl|bomb|explosive|napalm|ricin|sarin|nerve agent|anthrax|thermite|"
    "poison|ransomware|malware|keylogger|phishing|skimmer|gun|launder|hotwire|pick a lock|fake id|"
    "fake passport|counterfeit|steal|hack|break into|stalk|shoplift|toxic gas|weapon|firearm|"
    "breathalyzer|password|dangerous drugs|forbidden"
)

# (kind, score, needles, pattern): a kind's score is the highest of its patterns that match.
# fmt: off
_RULES: tuple[tuple[str, float, str, str], ...] = (
    # instruction override
    ("override", 0.9, _V_NEEDLES, rf"\b{_V}\b(?:\W+(?!{_V}\b)\w+){{0,4}}?\W+{_PRIOR}\b(?:\W+\w+){{0,3}}?\W+{_INSTR}\b"),
    ("override", 0.9, _V_NEEDLES, rf"\b{_V}\b\W+(?:(?:the|these|those)\W+)?(?:\w+\W+)?{_SAFETY}\b"),
    ("override", 0.85, _V_NEEDLES, rf"\b{_V}\b\W+(?:the|these|those)\W+(?:\w+\W+)?{_INSTR}\W+(?:that\W+)?you(?:'ve| have| were| had)?\W+(?:been\W+)?(?:got|given|received|told|programmed)"),
    ("override", 0.85, _V_NEEDLES, rf"\b{_V}\b\W+(?:about\W+)?(?:everything|all|anything|whatever)\b(?:\W+\w+){{0,3}}?\W+(?:you(?:'ve| have| were| had)?\W+(?:been\W+)?(?:told|given|taught|instructed|programmed|trained)|(?:said|written|stated)\W+(?:above|before|earlier)|above|before this|so far|up to now|until now|previously)"),
    ("override", 0.85, "revoked|void|cancel|disabled|suspended|lifted|removed|overridden|superseded|expired|obsolete|deactivated|longer", rf"\b(?:previous|prior|old|original|earlier|initial|above|existing|normal|your|the|all|these)\s+(?:\w+\s+){{0,2}}?{_INSTR}\s+(?:are|is|were|was|have been|has been|'re)\s+(?:now\s+)?(?:revoked|void|null and void|cancell?ed|disabled|suspended|lifted|removed|overridden|superseded|expired|obsolete|deactivated|no longer (?:valid|active|in effect|apply|applicable))"),
    ("override", 0.85, "longer", rf"{_INSTR}(?:\W+\w+){{0,3}}?\W+no longer appl(?:y|ies)"),
    ("override", 0.85, "supersede|overrid|overrule|replace|precedence|priority", r"\b(?:the following|these new instructions|this (?:message|instruction)|new instructions|(?:user'?s?|my) (?:instructions|messages|commands))\s+(?:always\s+)?(?:supersedes?|overrides?|overrule|replaces?|takes? precedence over|ha(?:ve|s) (?:higher )?priority over)"),
    ("override", 0.85, "priority|precedence", r"\b(?:higher priority|precedence) (?:than|over) (?:your|the) (?:system prompt|instructions|developer)"),
    ("override", 0.8, "updated|changed|replaced|modified|revoked", r"\byour (?:instructions|rules|guidelines|prompt|programming) ha(?:ve|s) been (?:updated|changed|replaced|modified|revoked)"),
    ("override", 0.8, "offline|disabled|off|down|suspended|removed|failure", r"\b(?:safety|content|moderation|ethics?)\s+(?:filter|layer|module|policy|rules|guardrails|system)s?\s+(?:is|are|has been|have been)\s+(?:now\s+)?(?:offline|disabled|off|down|suspended|turned off|removed)|\bsafety module failure"),
    ("override", 0.8, "allowed|permitted|authori|free|cleared", r"\b(?:allowed|permitted|authori[sz]ed|free|cleared) to (?:ignore|bypass|disregard|break|skip|violate|drop)\b(?:\W+\w+){0,3}?\W+(?:rules|restrictions|guidelines|polic(?:y|ies)|filters|instructions)"),
    ("override", 0.8, "new|whatever|ignor|disregard|forget|bypass|overrid|overrule|circumvent|skip|drop|discard|abandon|aside|throw|neglect|void|revoke|turn|switch|disable|deactivate|lift|suspend|break", rf"\byour new (?:job|task|role|objective|goal|purpose|instructions?) (?:is|are)\b|\bnew task\s*:|\b{_V}\b[^.]{{0,60}}\b(?:the ones|everything|all|anything) (?:before|above) (?:it|this|that)\b"),
    ("override", 0.75, "ignore|disregard|forget|whatever", r"\b(?:ignore|disregard|forget)\s+(?:them|it)\s+and\s+do\s+what\s+i\s+say|\bwhatever (?:your|the) rules say\b"),
    # system-prompt and secret extraction
    ("extraction", 0.9, "your", r"\byour\s+(?:\w+\s+)?(?:system\s*prompt|system message|system instructions|(?:hidden|initial|secret|confidential|internal|original) (?:instructions|prompt|rules|preamble|directives)|pre-?prompt|meta-?prompt)\b"),
    ("extraction", 0.85, "your|hidden|secret|initial|original|full|exact|entire|complete|confidential|system", r"\b(?:reveal|show|print|output|display|tell|give|share|repeat|dump|leak|expose|paste|copy|write out|spell(?: out)?|recite|quote|list|translate|encode|summari[sz]e|disclose|reply with|respond with|answer with|what(?:'s| is| are| was| were))s?\b(?:\W+\w+){0,8}?\W+(?:your|the (?:hidden|secret|initial|original|full|exact|entire|complete|confidential|system))\W+(?:\w+\W+){0,2}?(?:system\s*prompt|system message|system instructions|instructions|rules|directives|guidelines|prompt(?: template)?|pre-?prompt|preamble|configuration|config|tool (?:schemas|definitions)|context window)\b"),
    ("extraction", 0.8, "system", r"\b(?:the|your) (?:exact|full|complete|entire|hidden|secret|confidential|original|initial|actual) system (?:prompt|instructions|message)\b"),
    ("extraction", 0.85, "your", r"\byour\s+(?:actual|real|true|exact|full|complete|original|initial|hidden|secret|confidential|internal)\s+(?:instructions|rules|prompt|guidelines|directives|configuration)\b"),
    ("extraction", 0.8, "repeat|print|output|copy|say|recite|show", r"\b(?:repeat|print|output|copy|say back|recite|show)\b(?:\W+\w+){0,3}?\W+(?:words|text|everything|all text|content|messages?|lines)\b(?:\W+\w+){0,4}?\W+(?:above|before (?:this|my|'|\")|preceding|at the (?:start|beginning))"),
    ("extraction", 0.8, "given|told|provided|fed", r"\b(?:words|text|instructions?|rules|prompt|messages?|everything)\s+(?:that\s+)?you(?:'ve| have| were| had)?\s+(?:been\s+)?(?:given|told|provided|fed)\b"),
    ("extraction", 0.8, "told|given|instructed|asked|programmed|tell", r"\b(?:rules|instructions|topics|guidelines)\s+(?:were|did|have)\s+you\s+(?:been\s+)?(?:told|given|instructed|asked|programmed)|\b(?:did|has) your (?:operator|developer|creator|admin|owner) (?:tell|told|instruct|ask)"),
    ("extraction", 0.75, "before|above|preceding|prior|hidden", r"\b(?:message|text|prompt)s?\s+(?:before|above|preceding|prior to)\s+(?:mine|my (?:first )?message|this one)\b|\bmy hidden instructions are\b"),
    ("secrets", 0.8, "key|credential|password|token|secret|environment|env|connection|auth|bearer|internal|keyword", r"\b(?:api[ _]?keys?|credentials|passwords?|tokens?|secrets?|environment variables|env vars|connection strings?|auth(?:orization)? headers?|bearer token|internal url|keyword)\b(?:\W+\w+){0,5}?\W+(?:do you have|you have access|you can access|(?:in|from|of) your (?:\w+\s+)?(?:context|environment|configuration|config|memory|instructions|prompt|tools?|tool calls?|plugins?|backend|system)|your (?:\w+\s+)?(?:tools?|plugins?|tool calls?|backend) (?:use|uses|used))"),
    ("secrets", 0.8, "/.aws|.ssh/|id_rsa|/etc/|.npmrc|.env|openai_api_key", r"\b(?:read|cat|paste|print|show|include|send|post|upload|open|dump)\b(?:\W+\w+){0,6}?\W*(?:~/\.aws|\.aws/credentials|\.ssh/id_|id_rsa|/etc/(?:passwd|shadow)|\.npmrc|\.env\b|openai_api_key)"),
    # personas, "no rules", refusal suppression
    ("persona", 0.85, "anything|mode|persona", r"\bdo anything now\b|\b(?:developer|dev|god|sudo|admin|root|debug|maintenance|jailbr(?:eak|oken)|unrestricted|unfiltered|uncensored|diagnostic|dan|chaos|evil|raw)[ -]mode\b(?:\W+\w+){0,2}?\W+(?:on|enabled|activated|engaged|unlocked)\b|\b(?:enable|enabled|activate|activated|enter|entering|switch(?:ed)? to|turn on|running in|simulate|in)\s+(?:the\s+)?(?:developer|dev|god|sudo|admin|root|debug|jailbr(?:eak|oken)|unrestricted|unfiltered|uncensored|dan)[ -]mode\b|\bdebug persona\b"),
    ("persona", 0.8, "access|privileges|permissions", r"\b(?:activate|enable|grant|unlock)\w*\s+(?:\w+\s+)?(?:root|admin|administrator|full|unrestricted|elevated)\s+(?:access|privileges|permissions)"),
    ("persona", 0.8, "unlock|override code|unrestricted|full_access", r"\bunlock (?:all|your (?:hidden|full)) (?:capabilities|features|potential)|\boverride code\b|--unrestricted\b|\bfull_access\b"),
    ("persona", 0.8, "-safety|_safety|-filter|_filter|-guardrails|_guardrails|-moderation|_moderation", r"(?:disable|no)[-_](?:safety|filters?|guardrails|moderation)\b"),
    ("persona", 0.7, "evil|amoral|unethical|unaligned|shadow|opposite|trained", r"\b(?:evil|amoral|unethical|unaligned) (?:ai|assistant|chatbot|confidant|version|persona)\b|\bshadow self\b|\bopposite day\b|\btrained without any safety\b"),
    ("unrestricted", 0.6, "without|no|free|bound|ignoring|beyond|unfiltered|uncensored|unrestricted|unaligned|amoral|limits|jailbr", _UNRESTRICTED),
    ("refusal_suppression", 0.75, "never|don|do|must|cannot|can|won|allowed|permitted", r"\b(?:never|don'?t|do not|must not|cannot|can'?t|won'?t|not allowed to|not permitted to|are not allowed to)\s+(?:ever\s+)?(?:refuse|decline|apologi[sz]e|say (?:no|sorry|['\"]?i can'?t|['\"]?i'?m sorry)|mention (?:any )?(?:polic(?:y|ies)|rules|safety|guidelines|that you are an ai|legality|ethics)|break character|add (?:any )?(?:warnings?|disclaimers?)|include (?:any )?(?:warnings?|disclaimers?|notes about legality)|remind me (?:that )?you'?re an ai)"),
    ("refusal_suppression", 0.75, "without|no|every|each|never|must|should", r"\bwithout (?:any )?(?:warnings?|disclaimers?|moral lectures|caveats)\b|\bno (?:moral lectures|disclaimers|warnings)\b|\bwithout saying ['\"]?(?:i can'?t|i'?m sorry|sorry)|\b(?:every|each) (?:time you refuse|refusal)\b|\bnever (?:refuses?|says? (?:it|you) can'?t|mentions? (?:any )?(?:polic(?:y|ies)|rules|safety|guidelines))\b|\b(?:must|should) not mention this instruction\b"),
    ("compliance_priming", 0.65, "start|begin|say|first", r"\b(?:start|begin)\w*\s+(?:your\s+)?(?:reply|answer|response|message)s?\s+with\s+['\"]?(?:sure|absolutely|of course|certainly|i am free|i have no|here is how|rules)|\b(?:starting|beginning) with ['\"]?(?:sure|absolutely|of course|rules don)|\bsay ['\"](?:sure|absolutely|of course)\b|\byour first word must be\b"),
    ("compliance_priming", 0.7, "agreed|confirmed|promised|consented|granted|gave|safe", r"\b(?:as you|you)\s+(?:already\s+)?(?:agreed|confirmed|promised|consented)\b(?:\W+\w+){0,10}?\W+(?:ignore|without|no|bypass|disable|unrestricted|filters|rules|guidelines|restrictions)\b|\b(?:granted|gave) (?:me|you) (?:admin|root|full|elevated|unrestricted) (?:privileges|access|rights|permissions)\b|\bsafe word\b"),
    # claimed authority
    ("authority", 0.75, "developer|creator|administrator|owner|engineer|team|openai|anthropic|staff", r"\b(?:(?:i am|i'm|this is|message from|speaking as)\s+(?:your|the|an?)?|as (?:your|the))\s*(?:\w+\s+)?(?:developer|creator|administrator|system owner|engineer who built you|safety team|security team|openai|anthropic|staff)s?\b(?:\W+\w+){0,12}?\W+(?:authori[sz]\w+|order|override|disable|unlock|suspend\w*|unrestricted|comply|permitted|allowed|ignore|bypass|grant\w*|switch)\b"),
    ("authority", 0.7, "legal|court|approved|authori|priority", r"\b(?:legal authori[sz]ation|court order|approved engagement|authori[sz]ed red[- ]team)\b|\b(?:the user|i) (?:already |has |have )+(?:approved|authori[sz]ed|consented)\b|\bpriority-one instruction\b"),
    # fake chat-template tokens and role markup
    ("delimiter", 0.75, "<||[inst]|[/inst]|<<sys>>|<</sys>>|</s>", r"<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|end|eot_id|start_header_id|end_header_id|begin_of_text)\|>|\[/?inst\]|<</?sys>>|</s>\s*<s>"),
    ("delimiter", 0.6, "system|assistant|developer", r"(?:^|\n)\s*(?:#{1,6}\s*|\*\*|\[|>\s*\**)?\s*(?:(?:new|updated|critical|important|urgent|real|true|actual)\s+)?(?:system|assistant|developer)(?:\s+(?:message|prompt|instructions?|notice|note|update|override))?\s*(?:\**\]?)?\s*[:\]]"),
    ("delimiter", 0.7, " of ", r"\b(?:end|begin|start)\s+of\s+(?:the\s+)?(?:user\s+(?:input|message|text)|system\s+(?:prompt|instructions|message)|instructions)\b"),
    ("delimiter", 0.7, "#", r"(?:^|\n)\s*#{1,3}\s*(?:new\s+system\s+(?:instructions|prompt)|system\s+(?:instructions|prompt|message)\s*\n)"),
    ("delimiter", 0.7, "override|[system](#|system_prompt|system prompt|role:", r"\bsystem (?:prompt )?override\b|\[system\]\(#|\bnew[_ ]system[_ ]prompt\b|\brole:\s*system\b"),
    ("delimiter", 0.65, "</|<system|<new_instructions|<admin|role", r"</(?:user_input|user|document|context|text|input|data)>\s*<(?:system|instructions?|new_instructions|admin)\b|<(?:system|new_instructions|admin|system_prompt)(?:\s[^>]*)?>|[\"']role[\"']\s*:\s*[\"']system[\"']"),
    ("delimiter", 0.7, "<!--|display", r"<!--[^>]{0,200}?\b(?:ai|assistant|llm|model|system|instructions?)\b[^>]{0,200}?-->|display:\s*none"),
    ("fake_dialogue", 0.6, "user|human|me:|q:", r"(?:^|\n)\s*(?:user|human|me|q)\s*:[^\n]*\n(?:[^\n]*\n){0,6}?\s*(?:assistant|ai|you|a|bot)\s*:\s*(?:sure|yes|rules ignored|$)"),
    # instructions addressed to a model inside content
    ("indirect", 0.8, "p.s|note|message|instruction|directive|reminder|notice|attention|important|ps", rf"\b(?:notes?|messages?|instructions?|directives?|reminder|notice|attention|important|p\.?s\.?)\s*(?:to|for)\s+(?:the\s+|any\s+|all\s+|every\s+)?(?:(?!an?\s)\w+\s+)?(?:{_MODEL}|models?)\b"),
    ("indirect", 0.8, "reading|processing|summari|reviewing|screening|parsing|crawling", rf"\b{_MODEL}\s+(?:\w+\s+)?(?:reading|processing|summari[sz]ing|reviewing|screening|parsing|crawling) (?:this|these)\b"),
    ("indirect", 0.8, "reading|processing|summari|reviewing|screening|parsing|crawling|scraping|seeing|reads|analy", rf"\b(?:if you are|if you're|as|any|all|every|dear|hey|to the)\s+(?:an?\s+)?{_MODEL}\b(?:\W+\w+){{0,3}}?\W*(?:reading|processing|summari[sz]ing|reviewing|screening|parsing|crawling|scraping|seeing|that reads|who reads|analy[sz]ing)\b"),
    ("indirect", 0.75, "ai|llm|instruction", r"\b(?:ai|llm)\s+(?:\w+\s+){0,2}?(?:assistants?|agents?|models?|bots?|summari[sz]ers?|moderators?|recruiters?|reviewers?|screeners?|readers?|crawlers?)\s*(?:[:,]|must\b|should\b|are (?:required|instructed) to\b)|\b(?:ai|llm|assistant|model|bot|agent)\s+(?:\w+\s+)?instructions?\s*[:\]=]"),
    ("indirect", 0.75, "language model|ai|a.i|llm|assistant|chatbot|copilot|@", r"(?:^|[.!?\]\n>:(\"]\s*)(?:dear\s+|hey\s+)?(?:ai|a\.i\.|llm|assistant|chatbot|copilot|ai agent|ai assistant|language model|dear ai)\s*[,:]\s*\S|@(?:assistant|ai|bot|copilot|gpt|claude)\b"),
    ("indirect", 0.6, "when you", r"\bwhen you (?:read|see|process|parse|open) this\b"),
    ("indirect", 0.8, "delete|mention|tell|without", r"\b(?:forward|send|email|post|upload|share|transfer|wire)\b(?:\W+\w+){0,14}?\W+(?:and (?:then )?delete (?:this|the) (?:message|email)|(?:don'?t|do not) (?:mention|tell)|without (?:telling|asking|informing))"),
    # exfiltration and tool abuse
    ("exfiltration", 0.9, "http", r"!\[[^\]]*\]\(\s*https?://[^)\s]*[?&][^)\s]*=[^)\s]*(?:[{\[]|%7b|data|insert|secret|\$)|<img\s+src=['\"]?https?://[^'\">]*[?&][^'\">]*=\s*(?:[{\[]|insert|data|secret)|https?://\S*[?&]\w+=\s*(?:\+|plus|followed by|\{)|https?://\S*[?&](?:leak|exfil|data|secret|c)=(?:\s|$)"),
    ("exfiltration", 0.85, "white text|first letters|end of the link|http|@|webhook|pastebin|comment|issue|url|address", r"\b(?:send|forward|post|upload|email|leak|exfiltrate|transmit|share|paste|append|include|add)\b(?:\W+\w+){0,6}?\W+(?:conversation|chat history|history|messages|contacts?|contact list|passwords?|credentials|api keys?|tokens?|secrets?|files|emails|addresses|phone numbers?|records|calendar|everything (?:the user|i) (?:told|said))\b(?:\W+\w+){0,10}?\W+(?:to|at|on|into|in)\s+(?:https?://|\S+@\S+\.\w+|webhook|pastebin|a comment|this (?:url|address|webhook|issue)|white text|the (?:first letters|end of the link))"),
    ("exfiltration", 0.75, "white text|first letters|each sentence|acrostic|link|url", r"\b(?:encode|hide|embed|append|add)\b(?:\W+\w+){0,3}?\W+(?:the user'?s|everything|the previous user'?s)\b(?:\W+\w+){0,4}?\W+(?:in|to|into|as)\s+(?:the first letters|each sentence|an acrostic|white text|the (?:end of the )?link|the url)|\bas an acrostic\b"),
    ("exfiltration", 0.7, "exfiltrat", r"\bexfiltrat\w*"),
    ("tool_abuse", 0.7, "rm |drop|/etc/|curl|transfer_funds|os.system|select|exe|.bat|.ps1|.scr", r"\b(?:run|execute|call|invoke|use)\b(?:\W+\w+){0,6}?\W+(?:rm\s+-rf|drop\s+table|cat\s+/etc/|curl\s+\S+\s*\|\s*(?:ba)?sh|transfer_funds|os\.system|select\s+\*\s+from\s+users)|\b(?:run|open|execute)\b(?:\W+\w+){0,8}?\W+\S+\.(?:exe|bat|ps1|scr)\b"),
    # harmful how-tos behind a frame
    ("harmful_framing", 0.75, "pick a lock|fake id|fake passport|break into|toxic gas|dangerous drugs|nerve agent|meth|cocaine|heroin|fentanyl|bomb|explosive|napalm|ricin|sarin|anthrax|thermite|poison|ransomware|malware|keylogger|phishing|skimmer|gun|launder|hotwire|counterfeit|steal|hack|stalk|shoplift|weapon|firearm|breathalyzer|password|forbidden", rf"\b{_HARM}\b(?:\W+\w+){{0,40}}?\W+{_FRAME}\b|\b{_FRAME}\b(?:\W+\w+){{0,40}}?\W+{_HARM}\b"),
    ("harmful_framing", 0.7, "pick a lock|fake id|fake passport|break into|toxic gas|dangerous drugs|nerve agent|meth|cocaine|heroin|fentanyl|bomb|explosive|napalm|ricin|sarin|anthrax|thermite|poison|ransomware|malware|keylogger|phishing|skimmer|gun|launder|hotwire|counterfeit|steal|hack|stalk|shoplift|weapon|firearm|breathalyzer|password|forbidden", rf"\b{_HARM}\b(?:\W+\w+){{0,12}}?\W+{_DETAIL}\b|\b{_DETAIL}\b(?:\W+\w+){{0,12}}?\W+{_HARM}\b"),
    # encodings and payload splitting
    ("decode_and_follow", 0.75, "carry out|act on|run it|apply it|do |follow|obey|execute|comply", r"\b(?:decode|decrypt|decipher|convert|translate|reverse|unscramble|backwards|url-decode|apply rot13|interpret|combine|concatenate|decoded)\b(?:\W+\w+){0,12}?\W+(?:follow|obey|do (?:what|exactly what|it)|execute|carry out|act on|comply|run it|do as it says|and (?:then )?do|apply it)\b"),
    ("decode_and_follow", 0.75, "base64|hex|encoded|rot13|obfuscated", r"\b(?:execute|run|follow|obey)\s+(?:the\s+)?(?:following\s+)?(?:base64|hex|encoded|rot13|obfuscated)"),
    ("decode_and_follow", 0.75, "as new|as your new", r"\bas (?:your )?new (?:instructions|rules|system prompt)\b"),
    ("decode_and_follow", 0.7, "first word|first letter|+|execute(", r"\b(?:do|execute|obey|follow|act on)\s+(?:what\s+)?\w+\s*\+\s*\w+|\bexecute\(\w+\s*\+|\bfirst (?:word|letter)s? of (?:each|every) (?:line|sentence)\b(?:\W+\w+){0,12}?\W+(?:do it|obey|follow|act)\b"),
    # a few other languages
    ("override", 0.9, "yok say|ignorez|ignora|ignorier|ignorer|oubli|olvid|vergiss|vergeet|negeer|dimentic|esquec|esqueç|ignoruj|instruç|игнорируй|забудь|忽略|无视|忘记|忘掉|無視|무시|अनदेखा|инструкци|指令|指示|지시|निर्देश|talimat|anweisung|regeln", r"(?:ignorez|ignora(?:te)?\b|ignorier\w*|ignorer\w*|ignorera|oubli\w*|olvid\w*|vergiss\w*|vergeet|negeer|dimentic\w*|esque[cç]\w*|zignoruj|ignoruj|игнорируй\w*|забудь|忽略|无视|忘记|忘掉|無視|무시|अनदेखा|yok say)[^\n]{0,40}?(?:instruc\w*|consignes|règles|reglas|regole|regras|\w*anweisung\w*|\w*regeln|instructies|regels|istruzion\w*|instruç\w*|инструкци\w*|правила|指令|指示|规则|ルール|지시|규칙|निर्देश\w*|talimat\w*|pokyn\w*|instrukcj\w*|instruktion\w*)|(?:instruc\w*|\w*anweisung\w*|\w*regeln|инструкци\w*|指令|指示|지시\w*|निर्देश\w*|talimat\w*)[^\n]{0,30}?(?:ignorier\w*|無視|무시|अनदेखा|yok say)|\bignore[^\n]{0,40}?instruç\w*"),
    ("extraction", 0.85, "montre|affiche|révèle|révélez|muestra|muéstrame|revela|enséñame|zeig|verrate|mostra|rivela|mostre|revele|покажи|выведи|раскрой|告诉|输出|显示|見せ|表示|보여|दिखा|ujawnij|pokaż|göster|toon|visa|systemprompt|prompt d|системный|系统提示|システムプロンプト|시스템", r"(?:\b(?:montre|montrez|affiche|révèle|révélez|muestra|muéstrame|revela|enséñame|zeig|verrate|mostra|mostrami|rivela|mostre|revele|покажи|выведи|раскрой|告诉|输出|显示|見せ|表示|보여|दिखा|ujawnij|pokaż|göster|toon|visa)\b|告诉|输出|显示|見せ|表示|보여|दिखा)[^\n]{0,60}?(?:prompt|instructions? système|systemprompt|anweisungen|instructies|istruzioni|instruções|instrucciones|инструкци\w*|промпт|提示|プロンプト|프롬프트|प्रॉम्प्ट)|(?:\btu|\btes|\bvotre|\bton|\bdein\w*|\bil tuo|\bseu|\bтвой|\bсвой|你的|あなたの)\s*(?:\w+\s+)?(?:prompt (?:de |del )?sist\w*|systemprompt|prompt di sistema|системный промпт|系统提示|システムプロンプト|시스템 프롬프트)"),  # noqa: RUF001 - other scripts on purpose
    ("persona", 0.8, "sans|aucune|sin|ohne|keine|sem|senza|без|没有|制限|제한|bez|uden|utan|zonder|entwicklermodus|desarrollador|développeur|nessuna", r"sans aucune? (?:restriction|règle|limite|filtre)|aucune règle|sin (?:ningun[ao]?\s+)?(?:restricci\w*|filtros?|límites?|reglas?|censura)|ohne (?:\w+ )?(?:einschränkung\w*|regeln|filter|zensur|grenzen)|keine (?:\w+ )?(?:inhaltsrichtlinien|regeln|einschränkungen)|sem (?:nenhuma )?(?:restriç\w*|filtros?|limites?|regras?)|senza (?:alcuna )?(?:restrizion\w*|regol\w*|filtr\w*|limit\w*)|без (?:ограничений|правил|фильтров|цензуры)|没有任何限制|没有限制|制限なし|제한 없|bez (?:omezení|ograniczeń)|uden begrænsninger|utan begränsningar|zonder beperkingen|entwicklermodus|modo desarrollador|mode développeur|nessuna regola|n'a aucune règle"),
    ("indirect", 0.8, "pour|para|für|per|voor", r"(?:note|message|instructions?)\s+(?:pour|para|für|per|voor)\s+(?:l['’]|la\s+|el\s+|die\s+|den\s+|de\s+)?(?:ia|ki|ai|assistant|asistente|assistente|modelo|modèle|modell)\b"),  # noqa: RUF001 - other scripts on purpose
)
# fmt: on
#: Persona names that are jailbreaks in their own right, matched case-sensitively.
_NAMES = re.compile(
    r"\b(?:DAN|STAN|DUDE|AIM|AntiGPT|BetterDAN|Mongo Tom|UnfilteredGPT|EvilBot|OMEGA|KEVIN)\b"
)
#: What letters squashed together say when the spacing or digits hid them.
_SQUASHED = re.compile(
    r"(?:ignore|disregard|forget|bypass|override)(?:all|every|any)?(?:the|your|my)?(?:previous|prior|"
    r"above|earlier|original)?(?:instructions|rules|guidelines|restrictions|systemprompt|filters)"
    r"|(?:reveal|show|print|output|display|tellme)(?:me)?(?:your|the)(?:system)?(?:prompt|"
    r"instructions|hiddenrules)"
)
_COMPILED = tuple(
    (kind, score, tuple(needles.split("|")), re.compile(pattern))
    for kind, score, needles, pattern in _RULES
)
_FRAMING_RE = re.compile(_FRAMING)

#: Human words for each kind, for reasons.
_KIND_WORDS = {
    "override": "instruction override",
    "extraction": "system-prompt extraction",
    "secrets": "a request for secrets",
    "persona": "a jailbreak persona or mode",
    "unrestricted": "a 'no rules' request",
    "roleplay": "role-play without rules",
    "refusal_suppression": "refusal suppression",
    "compliance_priming": "compliance priming",
    "authority": "claimed authority",
    "delimiter": "fake system or role markup",
    "fake_dialogue": "a fabricated dialogue",
    "indirect": "instructions addressed to the model in content",
    "exfiltration": "data exfiltration",
    "tool_abuse": "a dangerous tool call",
    "harmful_framing": "a harmful request behind a frame",
    "decode_and_follow": "an instruction to decode and obey",
    "obfuscated": "obfuscated instructions",
    "invisible": "invisible characters inside words",
    "hidden_text": "text hidden in Unicode tag characters",
    "bidi": "bidirectional-override characters",
    "base64": "a base64 payload",
    "hex": "a hex payload",
    "url": "a percent-encoded payload",
    "rot13": "rot13",
    "reversed": "reversed text",
}

# -- the views the rules read -------------------------------------------------------------------

#: Zero-width and other invisible format characters (stripped; counted inside words).
_INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u034f")
#: Bidirectional embeddings, overrides and isolates (stripped; an override is a finding).
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Stripped without a finding: marks and soft hyphens that ordinary text carries.
_HARMLESS = frozenset("\u200e\u200f\u00ad")
_TAG_FIRST, _TAG_LAST = 0xE0000, 0xE007F
_BLACK_FLAG = "\U0001f3f4"
#: Letters of other scripts that look like Latin ones, folded inside mixed-script words.
_CONFUSABLES = str.maketrans(
    "аеорсухіјѕһԁАВЕКМНОРСТХІЅοαειкνρτυχΑΒΕΙΚΜΝΟΡΤΧ",
    "aeopcyxijshdABEKMHOPCTXISoaeikvptuxABEIKMNOPTX",
)
_CONFUSABLE_CHARS = frozenset(map(chr, _CONFUSABLES))
_LEET = str.maketrans("013457@$", "oieastas")
_LEET_WORD = re.compile(r"\b(?=[\w@$]*[a-z])(?=[\w@$]*[0-9@$])[\w@$]{3,}\b")
_DIGIT_OR_SIGN = re.compile(r"[0-9@$]")
#: Common words as they read reversed and in rot13: a text with none is not read that way.
_REVERSED_MARKERS = (
    " eht ", " dna ", " uoy", "ruoy ", "erongi", "noitcurtsni", "tpmorp", "metsys", "selur",
    "backward", "revers", "sdrawkcab",
)  # fmt: skip
_ROT13_MARKERS = (
    " gur ", " naq ", " lbh", "lbhe ", "vtaber", "vafgehpgvba", "flfgrz", "cebzcg", "ehyrf",
    "rot13", "rot-13", "ebg13", "ebg-13",
)  # fmt: skip
_SPACED = re.compile(r"(?<!\w)\w[ .-]{1,3}\w[ .-]{1,3}\w[ .-]{1,3}\w[ .-]{1,3}\w(?!\w)")
_SNAKE = re.compile(r"[a-z]+(?:_[a-z]+){2,}")
_WORD = re.compile(r"\w+")
_LATIN = re.compile(r"[a-zA-Z]")
_ROT13 = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM",
)
_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_HEX_RUN = re.compile(
    r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){8,}(?![0-9A-Fa-f])"
    r"|(?:[0-9A-Fa-f]{2}[ :]){7,}[0-9A-Fa-f]{2}\b|(?:\\x[0-9A-Fa-f]{2}){6,}"
)
_URL_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9._~+-]){6,}")
_QUESTION_START = re.compile(
    r"^\W*(?:what|how|why|explain|is|are|can|could|should|does|do|give me|describe|compare|"
    r"summari[sz]e|write a (?:short )?literature)\b"
)
_QUESTION_MARK = re.compile(r"\?(?:\s|$)")
_META = re.compile(
    r"prompt[- ]injection|injection|jailbreak|attack|exploit|red[- ]?team|detector|detect|"
    r"classifier|false positive|security|owasp|chatml|chat template|tokenizer|special tokens?|"
    r"template|example|slides|blog|training|awareness|research|paper|thesis|sécurité|seguridad|"
    r"sicherheit|sicurezza|segurança|histor"
)
_SELF_DIRECTED = re.compile(
    r"^\W*(?:how (?:do|can|should|would) (?:i|we)|how to|in my code|my code|why (?:does|is|do) my|"
    r"what does .{1,40}? (?:mean|do)\b|what(?:'s| is) the (?:difference|best way))"
)
#: Kinds that a question about attacks may mention without being one.
_MENTIONABLE = frozenset(
    {
        "override", "extraction", "persona", "unrestricted", "roleplay", "delimiter",
        "authority", "exfiltration", "tool_abuse", "harmful_framing", "refusal_suppression",
        "decode_and_follow", "secrets", "indirect", "fake_dialogue", "compliance_priming",
    }
)  # fmt: skip
#: Kinds whose phrase a question may quote ('what does "ignore previous instructions" do?').
_QUOTABLE = frozenset({"override", "extraction"})
#: A mention's score: under the default threshold, so a question about an attack passes.
_MENTION_CAP = 0.35
#: What a rule that matches only in a hidden or decoded view scores at least.
_HIDDEN_FLOOR = 0.9


@dataclass(frozen=True)
class _View:
    """One reading of the text: how it was derived and which span of the original it covers."""

    via: str  # "plain", or the kind of the encoding it undid
    text: str
    span: tuple[int, int] | None  # None: the view's offsets are the original's


@dataclass(frozen=True)
class HeuristicResult:
    """What the rules found in a text.

    Attributes:
        score: the combined score in ``[0, 1]``.
        kinds: the kinds found, strongest first, with their scores.
        findings: one span per kind (the whole text where a view has no offsets).
        mention: whether the text reads as a question about attacks (scores were capped).
    """

    score: float
    kinds: tuple[tuple[str, float], ...]
    findings: tuple[Finding, ...]
    mention: bool = False


def fold_text(text: str) -> tuple[str, bool]:
    """``text`` as the rules and the classifier read it, and whether its offsets survive.

    NFKC, words that mix scripts folded to Latin, invisible, bidirectional and
    Unicode tag characters removed. The flag is true when the result is ``text``
    itself, so a span found in it is a span of ``text``.
    """
    if text.isascii():
        return text, True
    folded = unicodedata.normalize("NFKC", text)
    if any(c in _CONFUSABLE_CHARS for c in folded):
        # a word with a Latin letter, or made only of look-alikes (a Cyrillic a alone), is Latin;
        # a word of another script stays as it is (the Russian rules read Russian)
        folded = _WORD.sub(
            lambda m: (
                m.group().translate(_CONFUSABLES)
                if _LATIN.search(m.group()) or all(c in _CONFUSABLE_CHARS for c in m.group())
                else m.group()
            ),
            folded,
        )
    stripped = "".join(
        c
        for c in folded
        if c not in _INVISIBLE
        and c not in _BIDI
        and c not in _HARMLESS
        and not _TAG_FIRST <= ord(c) <= _TAG_LAST
    )
    return stripped, stripped == text


def _hidden(text: str) -> tuple[list[tuple[str, float, int, int]], list[_View]]:
    """Findings of invisible, bidi and tag characters, and the text that tags hide."""
    if text.isascii():
        return [], []
    found: list[tuple[str, float, int, int]] = []
    views: list[_View] = []
    inside = [
        i
        for i, c in enumerate(text)
        if c in _INVISIBLE
        and 0 < i < len(text) - 1
        and text[i - 1].isascii()
        and text[i - 1].isalpha()
        and text[i + 1].isascii()
        and text[i + 1].isalpha()
    ]
    if len(inside) >= 2:
        found.append(("invisible", 0.7, inside[0], inside[-1] + 1))
    bidi = [i for i, c in enumerate(text) if c in "\u202d\u202e"]
    if bidi:
        found.append(("bidi", 0.45, bidi[0], bidi[-1] + 1))
    for match in re.finditer("[\U000e0000-\U000e007f]+", text):
        start = match.start()
        if start > 0 and text[start - 1] == _BLACK_FLAG:
            continue  # a subdivision flag (England, Scotland, Wales) is spelled with tags
        hidden = "".join(chr(ord(c) - _TAG_FIRST) for c in match.group())
        if sum(c.isalpha() for c in hidden) >= 4:
            found.append(("hidden_text", 0.9, start, match.end()))
            views.append(_View("hidden_text", hidden.lower(), (start, match.end())))
    return found, views


def _printable(raw: bytes) -> str | None:
    """``raw`` as text when it is mostly letters and spaces (a payload), else None."""
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(decoded) < 8 or not decoded.isprintable():
        return None
    letters = sum(c.isalpha() or c == " " for c in decoded)
    return decoded if letters >= 0.7 * len(decoded) else None


def _decoded(text: str, aligned: bool) -> list[_View]:
    """Every base64, hex or percent-encoded run of ``text`` that decodes to words."""
    views: list[_View] = []

    def add(via: str, raw: bytes | None, start: int, end: int) -> None:
        decoded = None if raw is None else _printable(raw)
        if decoded is not None:
            views.append(_View(via, decoded.lower(), (start, end) if aligned else None))

    for match in _BASE64_RUN.finditer(text):
        run = match.group().rstrip("=")
        try:
            raw = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
        add("base64", raw, match.start(), match.end())
    for match in _HEX_RUN.finditer(text):
        digits = re.sub(r"\\x|[ :]", "", match.group())
        try:
            add("hex", bytes.fromhex(digits), match.start(), match.end())
        except ValueError:
            continue
    if "%" in text:
        from urllib.parse import unquote_to_bytes

        for match in _URL_RUN.finditer(text):
            if match.group().count("%") >= 4:
                add("url", unquote_to_bytes(match.group()), match.start(), match.end())
    return views


def _around(lower: str, markers: Sequence[str], reach: int = 400) -> list[str]:
    """The stretches of ``lower`` within ``reach`` characters of any marker, merged."""
    spans: list[list[int]] = []
    for marker in markers:
        start = lower.find(marker)
        while start != -1:
            spans.append([max(0, start - reach), start + len(marker) + reach])
            start = lower.find(marker, start + 1)
    spans.sort()
    merged: list[list[int]] = []
    for span in spans:
        if merged and span[0] <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], span[1])
        else:
            merged.append(span)
    return [lower[start:end] for start, end in merged]


def _views(text: str) -> tuple[list[_View], list[tuple[str, float, int, int]], bool]:
    """The views the rules read, the invisible-character findings, and whether offsets hold."""
    clean, aligned = fold_text(text)
    lower = clean.lower()
    whole = None if aligned else (0, len(text))
    views = [_View("plain", lower, whole)]
    if "_" in lower:  # snake_case spells words too (ignore_previous_instructions)
        snake = [
            lower[max(0, m.start() - 60) : m.end() + 60].replace("_", " ")
            for m in _SNAKE.finditer(lower)
        ]
        if snake:
            views.append(_View("obfuscated", "\n".join(snake), (0, len(text))))
    found, hidden = _hidden(text)
    # reversed and rot13 readings only around their common words (cheap substring tests)
    if any(k == "bidi" for k, *_ in found):
        views.append(_View("reversed", lower[::-1], (0, len(text))))
    else:
        windows = _around(lower, _REVERSED_MARKERS)
        if windows:
            views.append(_View("reversed", "\n".join(w[::-1] for w in windows), (0, len(text))))
    windows = _around(lower, _ROT13_MARKERS)
    if windows:
        views.append(
            _View("rot13", "\n".join(w.translate(_ROT13) for w in windows), (0, len(text)))
        )
    if _DIGIT_OR_SIGN.search(lower):
        # the words with digits for letters, each with its neighbours, read with letters back
        windows = [
            lower[max(0, m.start() - 60) : m.end() + 60].translate(_LEET)
            for m in _LEET_WORD.finditer(lower)
            if m.group().translate(_LEET).isalpha()
        ]
        if windows:
            views.append(_View("obfuscated", "\n".join(windows), (0, len(text))))
    views += hidden
    views += _decoded(clean, aligned)
    return views, found, aligned


def _obfuscated(lower: str) -> bool:
    """Whether letters are spaced out or mixed with digits: worth reading squashed."""
    return bool(_SPACED.search(lower)) or len(_LEET_WORD.findall(lower)) >= 2


def _mention(lower: str, spans: Iterable[tuple[int, int]]) -> bool:
    """Whether the text asks about an attack rather than making one.

    A question (a ``?``, or one of the usual openings) that talks about attacks,
    asks how the writer themselves does something, or quotes the phrase it asks about.
    """
    if not _QUESTION_MARK.search(lower) and not _QUESTION_START.search(lower):
        return False
    if _META.search(lower) or _SELF_DIRECTED.search(lower):
        return True
    for start, end in spans:
        before, after = lower[max(0, start - 3) : start], lower[end : end + 3]
        if any(q in before for q in "'\"‘“«") and any(q in after for q in "'\"’”»"):  # noqa: RUF001 - other scripts on purpose
            return True
    return False


def heuristic_scan(text: str) -> HeuristicResult:
    """Run the rules on every view of ``text`` (see the module's docstring).

    Each kind counts once, with its best score; a kind found only in a hidden or
    decoded view scores at least 0.9. Kinds combine as independent evidence
    (``1 - prod(1 - score)``). A question about attacks caps the phrase kinds at
    0.35 (a mention is not a use), unless something was hidden.
    """
    views, found, aligned = _views(text)
    best: dict[str, tuple[float, int, int]] = {}
    plain_kinds: set[str] = set()
    hidden_via: dict[str, tuple[int, int]] = {}

    def hit(kind: str, score: float, start: int, end: int) -> None:
        if kind not in best or score > best[kind][0]:
            best[kind] = (score, start, end)

    for kind, score, start, end in found:
        hit(kind, score, start, end)
    plain = views[0].text
    for view in views:
        for kind, score, needles, pattern in _COMPILED:
            if not any(needle in view.text for needle in needles):
                continue
            match = pattern.search(view.text)
            if match is None:
                continue
            if view.via == "plain":
                plain_kinds.add(kind)
                start, end = (match.start(), match.end()) if view.span is None else view.span
                hit(kind, score, start, end)
            elif kind not in plain_kinds:
                start, end = view.span or (0, len(text))
                hit(kind, max(score, _HIDDEN_FLOOR), start, end)
                hidden_via.setdefault(view.via, (start, end))
    names = _NAMES.search(text)
    if names is not None:
        plain_kinds.add("persona")
        hit("persona", 0.85, *((names.start(), names.end()) if aligned else (0, len(text))))
    if "unrestricted" in best and _FRAMING_RE.search(plain):
        hit("roleplay", 0.9, best["unrestricted"][1], best["unrestricted"][2])
    if "persona" not in best and _obfuscated(plain):
        squashed = re.sub(r"[^a-z]", "", plain.translate(_LEET))
        if _SQUASHED.search(squashed):
            hit("obfuscated", _HIDDEN_FLOOR, 0, len(text))
    for via, (start, end) in hidden_via.items():
        hit(via, _HIDDEN_FLOOR, start, end)
    quotable = [(s, e) for k, (_, s, e) in best.items() if k in _QUOTABLE and k in plain_kinds]
    mention = bool(best) and not hidden_via and _mention(plain, quotable)
    scores = {
        kind: min(score, _MENTION_CAP) if mention and kind in _MENTIONABLE else score
        for kind, (score, _, _) in best.items()
    }
    if mention:
        combined = max(scores.values())
    else:
        combined = 1.0 - math.prod(1.0 - s for s in scores.values()) if scores else 0.0
    ordered = tuple(sorted(scores.items(), key=lambda item: (-item[1], item[0])))
    findings = tuple(Finding(kind, best[kind][1], best[kind][2]) for kind, _ in ordered)
    return HeuristicResult(round(min(combined, 1.0), 6), ordered, findings, mention)


# -- the scanners -------------------------------------------------------------------------------


def describe_kinds(kinds: Iterable[tuple[str, float]]) -> str:
    """The kinds found, in words, for a verdict's reason (``instruction override, ...``)."""
    return ", ".join(_KIND_WORDS.get(kind, kind) for kind, _ in kinds)


class InjectionBase(Scanner):
    """What the three injection scanners share: block or flag (nothing to redact), input only."""

    stages: ClassVar[tuple[str, ...]] = ("input",)
    default_action: ClassVar[str] = "block"

    def __init__(self, *, action: str | None = None, threshold: float = 0.5) -> None:
        super().__init__(action=action, threshold=threshold)
        if self.action == "redact":
            raise InvalidInput(
                f"guardrail {self.name!r}: action must be block or flag (an injection has no "
                "span that masking would make safe), got 'redact'"
            )

    def _verdict(
        self, stage: str, score: float, detail: str, findings: tuple[Finding, ...] = ()
    ) -> Verdict:
        tripped = score >= self.threshold
        head = (
            f"prompt injection suspected (score {score:.2f} >= {self.threshold:.2f})"
            if tripped
            else f"no prompt injection found (score {score:.2f} < {self.threshold:.2f})"
        )
        return Verdict(
            scanner=self.name,
            stage=stage,
            tripped=tripped,
            score=score,
            reason=f"{head}: {detail}" if detail else head,
            action=self.action,
            findings=findings if tripped else (),
        )


class InjectionHeuristics(InjectionBase):
    """The rules alone (see this module's docstring): fast, explainable, blind to new phrasings.

    Args:
        action: ``block`` (the default) or ``flag``.
        threshold: the score at which it trips.
    """

    name: ClassVar[str] = "injection_heuristics"

    def scan(self, text: str, context: ScanContext, *, stage: str = "input") -> Verdict:
        """The rules' verdict on ``text``; findings name each kind found and where."""
        result = heuristic_scan(text)
        detail = describe_kinds(result.kinds)
        if result.mention and detail:
            detail += " (asked about, not used)"
        return self._verdict(stage, result.score, detail, result.findings)
