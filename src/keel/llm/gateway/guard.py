"""Guardrails on the gateway's requests and answers: which texts the scanners read, and what follows.

A request's route chooses its guardrails (:meth:`GatewayConfig.guardrails_for
<keel.llm.gateway.config.GatewayConfig.guardrails_for>`); a
:class:`RequestGuard` runs them with one :class:`~keel.llm.guardrails.base.ScanContext`
for the whole request, so a value redacted in the question and repeated in the
answer gets the same placeholder (``<EMAIL_1>``) in both.

**Input** scanners run before the cache lookup and before anything goes
upstream, each text on its own, in the configured order:

- a chat request: the ``content`` of the messages whose role the section's
  ``roles`` names (default ``user`` and ``tool``), a string or each text part of
  a list of parts;
- a text completion: the ``prompt`` (or each prompt of a list);
- an embedding request: the ``input`` texts;
- a prompt request (``prompts:/support@production``): the text of its
  ``variables`` (every string, also inside lists and objects), which are what the
  caller wrote; the template is the prompt author's. The prompt is rendered again
  from the redacted variables.

**Output** scanners run on the answer's text: each choice's message content (a
tool call's arguments are not read) or completion text. They are given the
prompt's ``response_schema`` (or a raw request's ``response_format`` JSON
schema) for ``json_schema``, and the request's texts as the passages
``groundedness`` compares with.

**Actions.** ``redact`` replaces the text in what is sent upstream (and cached,
and traced) or in the answer returned. ``block`` stops at the first blocking
verdict with a 400 in OpenAI's error shape, type ``guardrail_blocked``, code
the scanner's name, ``param`` the part (``messages[1]``), and a message with
the scanner's reason, never the text (:class:`GuardrailBlocked`). An input block
never reaches the upstream; an output block has spent the upstream's tokens,
and its trace counts them. ``flag`` records the verdict and goes on.

**Streams.** Output scanners need the whole answer. When a route's output
scanners can block or redact, a streamed answer is read whole from the upstream,
scanned, and then sent as one burst of its events (each choice's whole redacted
text in its first event, its other text events dropped), or refused with the
400; its time to first token is then the whole answer's. With only ``flag``
scanners the stream passes through as it comes and is scanned when it ends (the
first choice's text; a stream the caller left is not scanned).

**Traces.** Every verdict (``Verdict.to_dict()`` plus ``part``) goes into the
trace's ``guardrails`` column. A blocked request's trace keeps no bodies, even
where its route stores them: what tripped the guardrail is what must not be kept.

**The event loop.** Regex and checksum scanners run inline (tens of
microseconds). When a stage has a heavy scanner (embedding-based: the
injection classifier, groundedness), its scans go to a worker thread, and heavy
scanners are warmed when the gateway starts (:func:`warm`) so the first request
does not load a model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from keel.errors import InvalidInput
from keel.llm.gateway.tokens import text_of
from keel.llm.gateway.wire import GUARDRAIL_ERROR, error_body

if TYPE_CHECKING:
    from keel.llm.gateway.config import GatewayConfig, GuardrailsConfig
    from keel.llm.guardrails.base import ScanContext, Scanner, Verdict

__all__ = [
    "HEAVY_SCANNERS",
    "GuardrailBlocked",
    "RequestGuard",
    "blocked_body",
    "is_heavy",
    "response_schema",
    "warm",
]

log = logging.getLogger("keel.gateway")

#: Scanners that run a model (sentence embeddings), by name, for scanner classes that do
#: not say so themselves with a ``heavy`` attribute: their scans leave the event loop.
HEAVY_SCANNERS = frozenset({"injection", "injection_classifier", "groundedness"})
#: What :func:`warm` scans once at start.
_WARM_TEXT = "Warming up: what is the capital of France?"


class GuardrailBlocked(InvalidInput):
    """A guardrail blocked a request or its answer (400, never echoing the text).

    Attributes:
        scanner: the scanner that blocked (the error's ``code``).
        stage: ``input`` or ``output``.
        part: the text it read (``messages[1]``, ``variables.question``, ``choices[0]``).
    """

    def __init__(self, verdict: Verdict, part: str) -> None:
        what = "request" if verdict.stage == "input" else "answer"
        super().__init__(
            f"guardrail {verdict.scanner!r} blocked the {what} ({part}): {verdict.reason}"
        )
        self.scanner = verdict.scanner
        self.stage = verdict.stage
        self.part = part


def blocked_body(exc: GuardrailBlocked) -> bytes:
    """The OpenAI-shaped error document of a block."""
    return error_body(
        exc.status_code, str(exc), kind=GUARDRAIL_ERROR, code=exc.scanner, param=exc.part
    )


def is_heavy(scanner: Scanner) -> bool:
    """Whether ``scanner``'s scans should leave the event loop (it runs a model)."""
    flag = getattr(scanner, "heavy", None)
    return bool(flag) if flag is not None else scanner.name in HEAVY_SCANNERS


def response_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a raw request's ``response_format`` asks the answer to follow, or None."""
    wanted = body.get("response_format")
    if not isinstance(wanted, dict) or wanted.get("type") != "json_schema":
        return None
    spec = wanted.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


def warm(config: GatewayConfig) -> int:
    """Scan a short text once with every heavy scanner the config uses (loads its model).

    Returns:
        How many scanners were warmed.
    """
    from keel.llm.guardrails.base import ScanContext

    sections = [config.guardrails] + [m.guardrails for m in config.models]
    sections += [p.guardrails for p in config.prompts]
    seen: set[int] = set()
    for section in sections:
        if section is None:
            continue
        for stage, scanners in (("input", section.input), ("output", section.output)):
            for scanner in scanners:
                if id(scanner) not in seen and is_heavy(scanner):
                    seen.add(id(scanner))
                    # a passage too, so groundedness embeds instead of skipping
                    scanner.scan(_WARM_TEXT, ScanContext(context=[_WARM_TEXT]), stage=stage)
    return len(seen)


# -- the texts of a request and of an answer -------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """One text of a body, where it sits (``holder[key]``) and what to call it."""

    part: str
    holder: Any
    key: Any

    @property
    def text(self) -> str:
        return str(self.holder[self.key])

    def set(self, text: str) -> None:
        self.holder[self.key] = text


def _content_slots(message: dict[str, Any], part: str) -> list[_Slot]:
    content = message.get("content")
    if isinstance(content, str):
        return [_Slot(part, message, "content")] if content else []
    if isinstance(content, list):  # content parts: the text ones
        return [
            _Slot(f"{part}.content[{j}]", item, "text")
            for j, item in enumerate(content)
            if isinstance(item, dict) and isinstance(item.get("text"), str) and item["text"]
        ]
    return []


def _text_slots(holder: Any, key: Any, part: str) -> list[_Slot]:
    """Every non-empty string at or under ``holder[key]`` (a string, or lists and objects)."""
    value = holder[key]
    if isinstance(value, str):
        return [_Slot(part, holder, key)] if value else []
    if isinstance(value, list):
        return [s for i in range(len(value)) for s in _text_slots(value, i, f"{part}[{i}]")]
    if isinstance(value, dict):
        return [s for k in value for s in _text_slots(value, k, f"{part}.{k}")]
    return []


def request_slots(body: dict[str, Any], endpoint: str, roles: Sequence[str]) -> list[_Slot]:
    """The texts of a raw request the input scanners read (see the module docstring)."""
    if endpoint == "chat":
        slots: list[_Slot] = []
        for i, message in enumerate(body.get("messages") or ()):
            if isinstance(message, dict) and message.get("role") in roles:
                slots += _content_slots(message, f"messages[{i}]")
        return slots
    field = "prompt" if endpoint == "completions" else "input"
    return _text_slots(body, field, field) if field in body else []


def variable_slots(variables: dict[str, Any]) -> list[_Slot]:
    """The texts of a prompt request's variables."""
    return [s for name in variables for s in _text_slots(variables, name, f"variables.{name}")]


def answer_slots(doc: dict[str, Any], endpoint: str) -> list[_Slot]:
    """The texts of a whole answer: each choice's content (chat) or text (completions)."""
    choices = doc.get("choices")
    if endpoint == "embeddings" or not isinstance(choices, list):
        return []
    slots: list[_Slot] = []
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if endpoint == "chat" and isinstance(message, dict):
            slots += _content_slots(message, f"choices[{i}]")
        elif endpoint == "completions" and isinstance(choice.get("text"), str) and choice["text"]:
            slots.append(_Slot(f"choices[{i}]", choice, "text"))
    return slots


def passages(sent: Any, endpoint: str) -> list[str]:
    """What the request gave the model, as the passages an answer should rest on."""
    if endpoint == "chat" and isinstance(sent, list):
        texts = [text_of(m.get("content")) for m in sent if isinstance(m, dict)]
    elif isinstance(sent, str):
        texts = [sent]
    elif isinstance(sent, list):
        texts = [t for t in sent if isinstance(t, str)]
    else:
        texts = []
    return [t for t in texts if t.strip()]


# -- running the scanners --------------------------------------------------------------------


def _scan(
    slots: Sequence[_Slot], scanners: Sequence[Scanner], stage: str, context: ScanContext
) -> list[tuple[_Slot, Any]]:
    """Each slot's ``guard`` outcome, in order, up to and including the first that blocks.

    Reads the slots and writes nothing to them, so it may run in a worker thread.
    """
    from keel.llm.guardrails.api import guard

    out = []
    for slot in slots:
        guarded = guard(slot.text, list(scanners), stage=stage, context=context)
        out.append((slot, guarded))
        if guarded.blocked_by is not None:
            break
    return out


class RequestGuard:
    """The guardrails of one request: its section, its scan context, and the verdicts so far.

    Args:
        rails: the route's guardrails section.
        context: the request's scan context (its redactor and response schema).
    """

    def __init__(self, rails: GuardrailsConfig, context: ScanContext) -> None:
        self.rails = rails
        self.context = context
        self.verdicts: list[dict[str, Any]] = []
        self.blocked = False

    @property
    def holds_streams(self) -> bool:
        """Whether a streamed answer must be read whole before it is sent: an output
        scanner can block or redact it."""
        return any(s.action in ("block", "redact") for s in self.rails.output)

    def trace(self) -> str | None:
        """The verdicts as the trace's ``guardrails`` column (None: no scanner ran)."""
        return orjson.dumps(self.verdicts).decode() if self.verdicts else None

    async def check_request(self, body: dict[str, Any], endpoint: str) -> None:
        """Scan a raw request's texts, redacting ``body`` in place.

        Raises:
            GuardrailBlocked: an input scanner blocked it.
        """
        await self._run(request_slots(body, endpoint, self.rails.roles), self.rails.input, "input")

    async def check_variables(self, variables: dict[str, Any]) -> bool:
        """Scan a prompt request's variables, redacting them in place; whether any changed.

        Raises:
            GuardrailBlocked: an input scanner blocked them.
        """
        return await self._run(variable_slots(variables), self.rails.input, "input")

    async def check_answer(self, doc: dict[str, Any], endpoint: str, sent: Any) -> bool:
        """Scan a whole answer (``sent``: what the request sent), redacting ``doc`` in place;
        whether any text changed.

        Raises:
            GuardrailBlocked: an output scanner blocked it.
        """
        self._passages(sent, endpoint)
        return await self._run(answer_slots(doc, endpoint), self.rails.output, "output")

    async def check_events(self, body: bytes, endpoint: str, sent: Any) -> tuple[bytes, str]:
        """Scan a whole streamed answer (its server-sent events); the events to send, with
        redactions, and the first choice's text.

        Raises:
            GuardrailBlocked: an output scanner blocked it.
        """
        self._passages(sent, endpoint)
        events = _Events.parse(body, endpoint)
        texts = {index: {"text": text} for index, text in events.texts().items()}
        slots = [_Slot(f"choices[{i}]", holder, "text") for i, holder in texts.items()]
        if await self._run(slots, self.rails.output, "output"):
            body = events.rewrite({i: holder["text"] for i, holder in texts.items()})
        first = texts.get(0) or next(iter(texts.values()), {"text": ""})
        return body, first["text"]

    async def check_streamed(self, text: str, endpoint: str, sent: Any) -> None:
        """Scan an answer already streamed to the caller (flag scanners only): the verdicts
        are recorded; a scanner that fails is logged, the answer being out already."""
        self._passages(sent, endpoint)
        try:
            slots = [_Slot("choices[0]", {"text": text}, "text")] if text else []
            await self._run(slots, self.rails.output, "output")
        except Exception:
            log.exception("keel: an output guardrail failed on a streamed answer")

    def _passages(self, sent: Any, endpoint: str) -> None:
        if not self.context.context:
            self.context.context = passages(sent, endpoint)

    async def _run(self, slots: list[_Slot], scanners: Sequence[Scanner], stage: str) -> bool:
        if not slots or not scanners:
            return False
        if any(is_heavy(s) for s in scanners):
            results = await asyncio.to_thread(_scan, slots, scanners, stage, self.context)
        else:  # regex and checksums: a thread hop would cost more than the scan
            results = _scan(slots, scanners, stage, self.context)
        changed = False
        for slot, guarded in results:
            self.verdicts.extend({**v.to_dict(), "part": slot.part} for v in guarded.verdicts)
            if guarded.blocked_by is not None:
                self.blocked = True
                raise GuardrailBlocked(guarded.blocked_by, slot.part)
            if guarded.text != slot.text:
                slot.set(guarded.text)
                changed = True
        return changed


class _Events:
    """A whole server-sent event stream, its text per choice, and a rewrite with new texts."""

    def __init__(self, raw: list[bytes], docs: dict[int, dict[str, Any]], endpoint: str) -> None:
        self.raw = raw
        self.docs = docs
        self.endpoint = endpoint

    @classmethod
    def parse(cls, body: bytes, endpoint: str) -> _Events:
        raw = [event for event in body.split(b"\n\n") if event.strip()]
        docs: dict[int, dict[str, Any]] = {}
        for n, event in enumerate(raw):
            data = event[5:].strip() if event.startswith(b"data:") else b""
            if not data or data == b"[DONE]":
                continue
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("choices"), list):
                docs[n] = doc
        return cls(raw, docs, endpoint)

    def _pieces(self) -> list[tuple[int, int, Callable[[str], None], str]]:
        """(event, choice index, setter, text) of every piece of text, in stream order."""
        out = []
        for n, doc in self.docs.items():
            for position, choice in enumerate(doc["choices"]):
                if not isinstance(choice, dict):
                    continue
                index = choice.get("index", position)
                holder: Any = choice
                key = "text"
                if self.endpoint == "chat":
                    holder, key = choice.get("delta"), "content"
                if isinstance(holder, dict) and isinstance(holder.get(key), str):
                    out.append((n, index, _setter(holder, key), holder[key]))
        return out

    def texts(self) -> dict[int, str]:
        """Each choice's whole text."""
        texts: dict[int, list[str]] = {}
        for _, index, _, piece in self._pieces():
            texts.setdefault(index, []).append(piece)
        return {index: "".join(pieces) for index, pieces in texts.items()}

    def rewrite(self, texts: dict[int, str]) -> bytes:
        """The events with each choice's text replaced: all of it in the choice's first piece,
        nothing in the others (an event left with nothing to say is dropped)."""
        seen: set[int] = set()
        touched: set[int] = set()
        for n, index, put, _ in self._pieces():
            put(texts[index] if index not in seen else "")
            seen.add(index)
            touched.add(n)
        out = []
        for n, event in enumerate(self.raw):
            if n not in touched:
                out.append(event)
            elif not all(map(self._empty, self.docs[n]["choices"])):
                out.append(b"data: " + orjson.dumps(self.docs[n]))
        return b"".join(event + b"\n\n" for event in out)

    def _empty(self, choice: Any) -> bool:
        """Whether a rewritten choice carries nothing: no text, no finish, nothing else."""
        if not isinstance(choice, dict) or choice.get("finish_reason") is not None:
            return False
        if self.endpoint == "chat":
            delta = choice.get("delta")
            return (
                isinstance(delta, dict) and set(delta) <= {"content"} and not delta.get("content")
            )
        return not choice.get("text") and choice.get("logprobs") is None


def _setter(holder: dict[str, Any], key: str) -> Callable[[str], None]:
    def put(text: str) -> None:
        holder[key] = text

    return put
