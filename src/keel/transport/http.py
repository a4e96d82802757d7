"""The http transport: a :class:`keel.Client` that talks to ``keel server`` with a token.

``KEEL_SERVER_URL`` (or ``keel.init(server=...)``, or ``--server``) plus
``KEEL_TOKEN`` choose it. Every call becomes one request to the server's
REST API (``/api/v1``), which checks the token, the caller's roles, and runs
the same library code the local transport runs. Identity is the token's
user as the server reports it: ``KEEL_USER`` means nothing here.

Errors come back as ``{"error": ...}`` with a status, and are raised as the
Keel error of that status, so code written against the local transport
handles them unchanged. Creates carry an ``Idempotency-Key``, so a retry
after a dropped connection makes nothing twice; reads and idempotent writes
are retried on connection errors too.

Artifacts go to the server's content-addressed blob routes: the client
hashes what it sends and the server hashes what it receives (an upload
whose bytes do not match its digest is refused), and every read is verified
again by the client's :class:`~keel.artifacts.ArtifactStore`.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from keel import errors
from keel.artifacts import ArtifactStore
from keel.config import Settings, get_settings
from keel.errors import (
    BackendUnavailable,
    Conflict,
    InvalidInput,
    KeelError,
    NotFound,
    PermissionDenied,
    StorageError,
    TooLarge,
    Unauthenticated,
    Unprocessable,
)
from keel.transport.base import Transport
from keel.transport.wire import from_wire

if TYPE_CHECKING:
    import httpx

    from keel.store import Store

__all__ = ["API_PREFIX", "ERROR_CLASS_HEADER", "HttpTransport"]

#: The response header naming a Keel error's class, so a subclass crosses intact.
ERROR_CLASS_HEADER = "x-keel-error"

#: Where the native REST API lives on a server.
API_PREFIX = "/api/v1"
_STATUS_ERRORS: dict[int, type[KeelError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: Unprocessable,
    503: BackendUnavailable,
}
_RETRIES = 3
_CHUNK = 1 << 20
#: Bytes of a downloaded object held in memory before the spool moves to a file.
_SPOOL_IN_MEMORY = 8 << 20


class HttpTransport(Transport):
    """Reaches Keel's state through ``keel server``.

    Args:
        settings: must name ``server_url``; ``token`` authenticates (a server started
            with ``--no-auth`` needs none).
        client: an ``httpx.Client`` to use instead of a new one (tests, custom TLS).
    """

    def __init__(self, settings: Settings | None = None, *, client: httpx.Client | None = None):
        self._settings = settings or get_settings()
        if not self._settings.server_url:
            raise InvalidInput("the http transport needs a server URL (KEEL_SERVER_URL)")
        self._client = client
        self._user: str | None = None
        self._artifacts: ArtifactStore | None = None

    # -- the Transport interface ------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def user(self) -> str:
        """The token's user, as the server says (never ``KEEL_USER``)."""
        if self._user is None:
            self._user = str(self.request("GET", "/whoami")["user"])
        return self._user

    @property
    def store(self) -> Store:
        raise InvalidInput(
            "this client talks to keel server at "
            f"{self._settings.server_url}: the metadata store is the server's, not opened here"
        )

    @property
    def artifacts(self) -> ArtifactStore:
        if self._artifacts is None:
            self._artifacts = ArtifactStore(HttpBackend(self))
        return self._artifacts

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __repr__(self) -> str:
        return f"HttpTransport({self._settings.server_url})"

    # -- requests ---------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        """The connection pool (opened on first use)."""
        if self._client is None:
            import httpx

            headers = {"user-agent": "keel-client"}
            if self._settings.token:
                headers["authorization"] = f"Bearer {self._settings.token}"
            self._client = httpx.Client(
                base_url=str(self._settings.server_url).rstrip("/"),
                headers=headers,
                timeout=httpx.Timeout(60.0, connect=10.0),
            )
        return self._client

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        keyed: bool = True,
    ) -> httpx.Response:
        """One request to ``API_PREFIX + path``, retried on connection errors, errors raised.

        A ``POST`` gets an ``Idempotency-Key`` (kept across its retries), so the server
        answers a retried create with what the first attempt made. A ``POST`` that only
        reads (a search) passes ``keyed=False``: it needs no key and skips its cost.
        """
        import httpx

        headers = dict(headers or {})
        if method == "POST" and keyed:
            headers.setdefault("idempotency-key", uuid.uuid4().hex)
        url = API_PREFIX + path
        for attempt in range(_RETRIES):
            try:
                request = self.http.build_request(
                    method, url, json=json, params=params, content=content, headers=headers
                )
                response = self.http.send(request, stream=stream)
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if attempt == _RETRIES - 1 or not isinstance(content, bytes | None):
                    raise BackendUnavailable(
                        f"cannot reach keel server at {self._settings.server_url}: {exc}; "
                        "is it running (keel server start)?"
                    ) from None
                time.sleep(0.2 * 2**attempt)
            except httpx.TimeoutException as exc:
                raise BackendUnavailable(
                    f"keel server at {self._settings.server_url} did not answer in time ({exc})"
                ) from None
        if response.status_code >= 400:
            if stream:
                response.read()
            raise _error(response)
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`send`, returning the JSON body (None for 204)."""
        response = self.send(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def call(self, method: str, path: str, returns: Any, **kwargs: Any) -> Any:
        """:meth:`request`, decoding the body as ``returns`` (see :mod:`keel.transport.wire`)."""
        return from_wire(self.request(method, path, **kwargs), returns)


def _error(response: httpx.Response) -> KeelError:
    try:
        message = str(response.json().get("error") or response.text)
    except ValueError:
        message = response.text[:500] or response.reason_phrase
    kind = _STATUS_ERRORS.get(response.status_code)
    named = getattr(errors, response.headers.get(ERROR_CLASS_HEADER, ""), None)
    # only a Keel error of the same status: a header cannot turn a 403 into anything else
    if (
        isinstance(named, type)
        and issubclass(named, KeelError)
        and named.status_code == response.status_code
    ):
        kind = named
    if kind is None:
        kind = StorageError if response.status_code >= 500 else InvalidInput
        message = f"keel server answered {response.status_code}: {message}"
    return kind(message)


class HttpBackend:
    """The artifact backend over ``keel server``'s blob routes (``/blobs/{key}``).

    Only content-addressed objects cross: the server refuses any key outside
    ``objects/`` and any upload whose bytes do not hash to the key's digest.
    """

    def __init__(self, transport: HttpTransport) -> None:
        self.transport = transport
        self.url = f"{transport.settings.server_url}{API_PREFIX}/blobs"

    def exists(self, key: str) -> bool:
        try:
            self.transport.send("HEAD", f"/blobs/{key}")
        except NotFound:
            return False
        return True

    def put_file(self, key: str, src: Path) -> None:
        def chunks() -> Iterator[bytes]:
            with open(src, "rb") as f:
                while block := f.read(_CHUNK):
                    yield block

        self.transport.send("PUT", f"/blobs/{key}", content=chunks())

    def put_bytes(self, key: str, data: bytes) -> None:
        self.transport.send("PUT", f"/blobs/{key}", content=data)

    def sync_folders(self, keys: Iterable[str]) -> None:
        """Nothing to do: the server flushed each object before it answered the upload."""

    def open(self, key: str) -> BinaryIO:
        """The object's bytes, rewound, from a spool: in memory up to 8 MiB, then on disk.

        The artifact store that reads it verifies the digest, as for any backend.
        """
        response = self.transport.send("GET", f"/blobs/{key}", stream=True)
        # returned open: the caller closes it
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            for block in response.iter_bytes(_CHUNK):
                spool.write(block)
        except BaseException:
            spool.close()
            raise
        finally:
            response.close()
        spool.seek(0)
        return cast(BinaryIO, spool)

    def _not_here(self, what: str) -> InvalidInput:
        return InvalidInput(f"{what} is not offered through keel server: only objects cross")

    def delete(self, key: str) -> None:
        raise self._not_here("deleting an object")

    def move(self, key: str, new_key: str) -> None:
        raise self._not_here("moving an object")

    def keys(self, prefix: str = "") -> Iterator[str]:
        raise self._not_here("listing objects")

    def put_table(self, key: str, table: Any) -> None:
        raise self._not_here("writing a table")

    def list_dir(self, key: str) -> list[tuple[str, bool]]:
        raise self._not_here("listing a folder")

    def arrow_filesystem(self) -> Any:
        raise self._not_here("a filesystem view")
