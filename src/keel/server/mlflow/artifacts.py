"""MLflow's artifact proxy (``/api/2.0/mlflow-artifacts``) over Keel's run artifacts.

The mlflow client puts each file with ``PUT artifacts/<path>`` (the raw bytes
as the body), gets one with ``GET artifacts/<path>`` and lists a folder with
``GET artifacts?path=<folder>``. Paths are the ones this server hands out as
artifact URIs, and only those:

- ``<experiment>/<run>/artifacts/<p>``: the run's artifact ``<p>``;
- ``<experiment>/models/<model>/artifacts/<p>``: a logged model's file, stored
  as its source run's artifact ``models/<model>/<p>``.

So every byte the client uploads is a content-addressed object of Keel's
artifact store and a row of a run's artifacts, which ``keel`` lists, downloads
and follows in lineage like any other. ``<p>`` is checked by
:func:`keel.validation.check_relative_path` (no ``..``, no absolute path), the
experiment in the path must be the run's, and the caller needs ``write`` on
that experiment to upload and ``read`` to get or list. An upload is streamed
to a temporary file, refused past ``max_upload_bytes``, then stored through
:meth:`~keel.tracking.client.TrackingClient.log_artifact`, which hashes it,
stores it under its digest and records the row. A download is streamed and
hashed on the way: bytes that do not match their digest end the answer
short, rather than reach the client as a model.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import blake3
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from keel.artifacts import ArtifactStore
from keel.errors import IntegrityError, InvalidInput, NotFound, TooLarge
from keel.server.context import Caller, CallerDep
from keel.server.mlflow.models import logged_model
from keel.server.permissions import on_run
from keel.validation import check_relative_path

__all__ = ["ArtifactTarget", "router", "target_of"]

router = APIRouter()

_CHUNK = 1 << 20
_MODEL_FILES = re.compile(r"^models/m-[0-9a-f]{32}/")
_FORMS = "<experiment>/<run id>/artifacts/<path> or <experiment>/models/<model id>/artifacts/<path>"


@dataclass(frozen=True)
class ArtifactTarget:
    """Where an MLflow artifact path lands: a run, and a path among its artifacts."""

    run_id: str
    path: str  # the run artifact path
    is_root: bool  # the path names the root of the run's or the model's artifacts


def _split(path: str) -> tuple[str, list[str], str]:
    """The experiment, the owner's segments and the path under ``artifacts``."""
    parts = path.strip("/").split("/")
    if "artifacts" in parts[1:4]:
        at = parts.index("artifacts", 1)
        return parts[0], parts[1:at], "/".join(parts[at + 1 :])
    raise InvalidInput(f"artifact path must be {_FORMS}; got {path[:120]!r}")


def target_of(caller: Caller, permission: str, path: str) -> ArtifactTarget:
    """The run and run artifact path an MLflow artifact path names, once permission is checked.

    Raises:
        InvalidInput: the path has neither form, or is not a safe relative path.
        NotFound: the run or model does not exist, or is not in the experiment named.
        PermissionDenied: the caller lacks ``permission`` on the experiment.
    """
    experiment, owner, rest = _split(path)
    inner = check_relative_path(rest, "artifact path") if rest else ""
    if len(owner) == 1:
        run_id, prefix = owner[0], ""
        info = on_run(caller, permission, run_id)
        home = info.experiment_id
    elif len(owner) == 2 and owner[0] == "models":
        model = logged_model(caller, permission, owner[1])
        if model.source_run_id is None:
            raise InvalidInput(
                f"logged model {model.id} has no source run, so Keel has nowhere to keep its "
                "files; create it with source_run_id (mlflow logs models inside a run)"
            )
        run_id, prefix, home = model.source_run_id, model.artifact_prefix, model.experiment_id
    else:
        raise InvalidInput(f"artifact path must be {_FORMS}; got {path[:120]!r}")
    if experiment != str(home):
        raise NotFound(f"{path[:120]!r} names experiment {experiment}; its owner is in {home}")
    joined = f"{prefix}/{inner}" if prefix and inner else prefix or inner
    return ArtifactTarget(run_id, joined, not inner)


@router.put("/artifacts/{path:path}")
async def upload_artifact(path: str, request: Request, caller: CallerDep) -> dict[str, Any]:
    """Store the body as the artifact ``path`` names (a new upload replaces the old row)."""
    target = await run_in_threadpool(target_of, caller, "write", path)
    if target.is_root:
        raise InvalidInput(f"artifact path {path[:120]!r} names a folder; name a file in it")
    limit = caller.state.settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    folder, name = PurePosixPath(target.path).parent, PurePosixPath(target.path).name
    with tempfile.TemporaryDirectory(prefix="keel-mlflow-") as scratch:
        local = Path(scratch) / name
        size = 0
        with open(local, "wb") as sink:
            async for block in request.stream():
                size += len(block)
                if size > limit:
                    raise _too_large(limit)
                sink.write(block)
        tracking = caller.client.tracking
        await run_in_threadpool(
            tracking.log_artifact,
            target.run_id,
            local,
            None if str(folder) == "." else str(folder),
        )
    return {}


def _too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"upload is over max_upload_bytes ({limit} bytes); raise the server's "
        "KEEL_MAX_UPLOAD_BYTES to accept it"
    )


@router.get("/artifacts/{path:path}")
def download_artifact(path: str, caller: CallerDep) -> StreamingResponse:
    """The artifact's bytes, streamed and checked against its digest on the way."""
    target = target_of(caller, "read", path)
    entries = caller.client.tracking.list_artifacts(target.run_id, target.path or None)
    entry = next((e for e in entries if e.path == target.path), None)
    if entry is None:
        raise NotFound(f"no artifact file at {path[:120]!r}")
    handle = caller.state.artifacts.backend.open(ArtifactStore.key(entry.digest))

    def chunks() -> Iterator[bytes]:
        hasher = blake3.blake3()
        with handle:
            while block := handle.read(_CHUNK):
                hasher.update(block)
                yield block
        if hasher.hexdigest() != entry.digest:
            raise IntegrityError(
                f"artifact object {entry.digest} is corrupt; the download was cut short"
            )

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@router.get("/artifacts")
def list_artifacts(
    caller: CallerDep, path: str = Query(default="", max_length=2_048)
) -> dict[str, Any]:
    """The files and folders right under ``path`` (a file lists nothing), by name."""
    target = target_of(caller, "read", path)
    entries = caller.client.tracking.list_artifacts(target.run_id, target.path or None)
    base = f"{target.path}/" if target.path else ""
    children: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not entry.path.startswith(base):
            continue  # the path names a file: MLflow lists nothing for it
        head, slash, _ = entry.path[len(base) :].partition("/")
        if not target.path and _MODEL_FILES.match(entry.path):
            continue  # a logged model's files: listed under its own URI, not the run's
        if slash:
            children[head] = {"path": head, "is_dir": True}
        else:
            children[head] = {"path": head, "is_dir": False, "file_size": entry.size}
    return {"files": [children[name] for name in sorted(children)]}
