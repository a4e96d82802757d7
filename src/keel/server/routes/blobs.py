"""Content-addressed objects: streamed upload and download, digests checked on both ends.

Only object keys cross: a key is accepted when it is exactly the key the
artifact store gives its digest (:meth:`~keel.artifacts.ArtifactStore.key`,
``objects/<2 hex>/<62 hex>``). An upload is
streamed to a temporary file while it is hashed; it lands under its key only
when the bytes hash to the key's digest and stay within
``max_upload_bytes``. A connection that drops mid-upload, or a server killed
mid-upload, leaves no object under the key (the backend renames into place).

Objects are named by their 256-bit digest, which a caller learns only from
metadata it may read; so reading an object needs ``read`` somewhere, and
storing one needs ``write`` somewhere (an editor scoped to one experiment logs
its artifacts through here).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import blake3
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from keel.artifacts import ArtifactStore
from keel.errors import InvalidInput, NotFound, TooLarge
from keel.server.context import CallerDep

router = APIRouter(tags=["artifacts"])

_CHUNK = 1 << 20


def _digest_of(key: str) -> str:
    """The digest ``key`` names, if it is the artifact store's key of that digest."""
    digest = key.removeprefix("objects/").replace("/", "", 1)
    try:
        if ArtifactStore.key(digest) == key:
            return digest
    except InvalidInput:
        pass  # not a digest: the message below says what a key looks like
    raise InvalidInput(
        f"blob key must be objects/<2 hex>/<62 hex> (a BLAKE3 digest), got {key[:80]!r}"
    )


@router.head("/blobs/{key:path}")
def blob_exists(key: str, caller: CallerDep) -> Response:
    """200 if the object is stored, 404 if not."""
    _digest_of(key)
    caller.require_somewhere("read", "reading artifacts needs it")
    if not caller.state.artifacts.backend.exists(key):
        raise NotFound(f"no object {key}")
    return Response(status_code=200)


@router.get("/blobs/{key:path}")
def get_blob(key: str, caller: CallerDep) -> StreamingResponse:
    """The object's bytes, streamed; the client verifies them against the digest."""
    _digest_of(key)
    caller.require_somewhere("read", "reading artifacts needs it")
    handle = caller.state.artifacts.backend.open(key)

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(_CHUNK):
                yield block

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@router.put("/blobs/{key:path}", status_code=201)
async def put_blob(key: str, request: Request, caller: CallerDep) -> dict[str, object]:
    """Store an object streamed in the body; refused unless its bytes hash to ``key``."""
    digest = _digest_of(key)
    caller.require_somewhere("write", "uploading artifacts needs it")
    limit = caller.state.settings.max_upload_bytes
    fd, name = tempfile.mkstemp(prefix="keel-upload-", suffix=".part")
    path = Path(name)
    try:
        hasher = blake3.blake3()
        size = 0
        with os.fdopen(fd, "wb") as sink:
            async for block in request.stream():
                size += len(block)
                if size > limit:
                    raise TooLarge(
                        f"upload is over max_upload_bytes ({limit} bytes); raise the server's "
                        "KEEL_MAX_UPLOAD_BYTES to accept it"
                    )
                hasher.update(block)
                sink.write(block)
        actual = hasher.hexdigest()
        if actual != digest:
            raise InvalidInput(
                f"upload does not match its key: the bytes hash to {actual}, the key names "
                f"{digest}; nothing was stored"
            )
        backend = caller.state.artifacts.backend
        if not await run_in_threadpool(backend.exists, key):
            await run_in_threadpool(backend.put_file, key, path)
        # the client records the digest once answered: the name must survive a crash first
        await run_in_threadpool(backend.sync_folders, [key])
    finally:
        path.unlink(missing_ok=True)
    return {"digest": digest, "size": size}
