"""OpenAI's wire format as the gateway reads and writes it: bodies, errors, event streams.

- :func:`read_json` reads a request body (413 over :data:`MAX_BODY_BYTES`,
  400 when it is not a JSON object) and :func:`check_shape` refuses one an
  upstream could not take, naming the field, never echoing a value.
- :func:`error_body` is OpenAI's error document,
  ``{"error": {"message", "type", "code", "param"}}``, with the type and code
  OpenAI's clients expect for each status (:data:`GUARDRAIL_ERROR` for a request
  or an answer a guardrail blocked).
- :class:`EventRelay` passes a server-sent event stream through as it comes,
  noting the text and the usage it carries and dropping the usage event the
  caller did not ask for (the gateway always asks the upstream for it).
"""

from __future__ import annotations

import itertools
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from keel.asgi import read_body
from keel.errors import InvalidInput
from keel.llm.gateway.tokens import estimate_messages, estimate_prompt
from keel.serving.protocols import check_request_id

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = [
    "ERROR_TYPES",
    "GUARDRAIL_ERROR",
    "MAX_BODY_BYTES",
    "SENT_FIELD",
    "EventRelay",
    "check_shape",
    "error_body",
    "estimate_input",
    "new_request_id",
    "output_text",
    "read_json",
    "request_id",
]

#: Largest request body accepted (bytes); larger ones get 413 before they are read whole.
MAX_BODY_BYTES = 16 << 20
#: OpenAI's error ``type`` and ``code`` by HTTP status.
ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "insufficient_scope"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("insufficient_quota", "over_budget"),
    502: ("api_error", "upstream_error"),
    503: ("api_error", "upstream_unavailable"),
    504: ("api_error", "upstream_timeout"),
}
#: The error ``type`` of a request (or an answer) a guardrail blocked; its ``code`` is the
#: scanner's name and its ``param`` the part of the request that tripped it.
GUARDRAIL_ERROR = "guardrail_blocked"
#: The field of a request that holds what is sent to the model, by endpoint.
SENT_FIELD = {"chat": "messages", "completions": "prompt", "embeddings": "input"}

#: New request ids: a random prefix per process and a counter, unique without a syscall each.
_ID_PREFIX = uuid.uuid4().hex[:20]
_ids = itertools.count(1)


def error_body(
    status: int,
    message: str,
    *,
    kind: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """OpenAI's error document for ``status``; ``kind`` and ``code`` replace the status's own
    (a guardrail's block is ``guardrail_blocked``, coded with the scanner's name)."""
    default_kind, default_code = ERROR_TYPES.get(
        status, ("invalid_request_error" if status < 500 else "api_error", None)
    )
    error = {
        "message": message,
        "type": kind or default_kind,
        "code": code or default_code,
        "param": param,
    }
    return orjson.dumps({"error": error})


def new_request_id() -> str:
    """A request id no other request of any gateway process has (32 hex digits)."""
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFFFFFFFF:012x}"


def request_id(request: Request) -> str:
    """The caller's ``x-request-id`` (checked: printable ASCII, 1-256 characters) or a new one."""
    given = request.headers.get("x-request-id")
    return new_request_id() if given is None else check_request_id(given)


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object, refusing one over :data:`MAX_BODY_BYTES` before reading it.

    Raises:
        TooLarge: the body is over the limit.
        InvalidInput: it is not a JSON object.
    """
    raw = await read_body(request, MAX_BODY_BYTES)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInput("the body is not JSON; send an OpenAI-style request object") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"the body must be a JSON object, got a JSON {type(doc).__name__}")
    return doc


def check_shape(body: dict[str, Any], endpoint: str) -> None:
    """Refuse a body the upstream could not take, naming the field (never echoing it).

    Raises:
        InvalidInput: ``messages``, ``prompt``, ``input`` or ``stream`` has the wrong shape.
    """
    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidInput("'messages' must be a non-empty list of {role, content} objects")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidInput(f"messages[{i}] must be an object with a 'role'")
    elif endpoint == "completions":
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list):
            raise InvalidInput("'prompt' must be text or a list of texts")
    else:
        given = body.get("input")
        if not isinstance(given, str | list) or not given:
            raise InvalidInput("'input' must be text or a non-empty list of texts")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidInput("'stream' must be true or false")


def estimate_input(endpoint: str, sent: Any) -> int:
    """Input tokens of what a request sends (its messages, prompt or input), estimated."""
    if endpoint == "chat":
        return estimate_messages(sent if isinstance(sent, list) else [])
    return estimate_prompt(sent)


def output_text(endpoint: str, doc: dict[str, Any]) -> str | None:
    """An answer's text (the first choice's), or None for embeddings.

    A chat answer without text content (tool calls) is its whole message as JSON.
    """
    if endpoint == "embeddings":
        return None
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    first = choices[0]
    if endpoint == "chat":
        message = first.get("message")
        if not isinstance(message, dict):
            return ""
        content = message.get("content")
        if isinstance(content, str):
            return content
        return orjson.dumps(message).decode()
    text = first.get("text")
    return text if isinstance(text, str) else ""


class EventRelay:
    """A server-sent event stream passed through event by event.

    :meth:`feed` takes the upstream's bytes as they arrive and returns the whole
    events among them (a partial one waits for the rest), unchanged except that the
    usage event is dropped unless ``keep_usage``. Along the way it keeps the streamed
    text (:attr:`text`) and the usage (:attr:`usage`, None if none came).

    Args:
        keep_usage: pass the usage event on (the caller asked for
            ``stream_options.include_usage``).
    """

    def __init__(self, keep_usage: bool) -> None:
        self.keep_usage = keep_usage
        self.usage: dict[str, Any] | None = None
        self._texts: list[str] = []
        self._buffer = b""

    @property
    def text(self) -> str:
        """The text streamed so far (the first choice's)."""
        return "".join(self._texts)

    def feed(self, chunk: bytes) -> bytes:
        """The whole events ``chunk`` completes, to send on (possibly nothing)."""
        buffer = self._buffer + (chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk)
        out = []
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            event, buffer = buffer[:end], buffer[end + 2 :]
            if self._keep(event):
                out.append(event + b"\n\n")
        self._buffer = buffer
        return b"".join(out)

    def rest(self) -> bytes:
        """What is left when the stream ends without a closing blank line."""
        rest, self._buffer = self._buffer, b""
        return rest if rest.strip() else b""

    def _keep(self, event: bytes) -> bool:
        if not event.startswith(b"data:"):
            return True
        data = event[5:].strip()
        if data == b"[DONE]":
            return True
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(doc, dict):
            return True
        usage = doc.get("usage")
        choices = doc.get("choices")
        if usage and isinstance(usage, dict):
            self.usage = usage
            if not choices and not self.keep_usage:
                return False
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            first = choices[0]
            delta = first.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else first.get("text")
            if isinstance(piece, str):
                self._texts.append(piece)
        return True
