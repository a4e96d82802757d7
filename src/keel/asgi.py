"""Running an ASGI app with uvicorn: how ``keel server`` and ``keel serve`` start.

:func:`read_body` is how Keel's own ASGI apps (serving, the gateway, the feature
server) read a request body under a size limit.

One process serves an app built here. ``workers > 1`` forks uvicorn workers
instead, and each builds its own app through a factory named by import path,
from the environment the parent leaves for it: an app (its engines, caches,
threads) does not survive a fork, so none is built before one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from keel.errors import TooLarge

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["LOG_LEVEL", "read_body", "run_uvicorn", "tune_process"]

#: uvicorn's own log level: startup banners and per-request lines stay out of the way.
LOG_LEVEL = "warning"


async def read_body(request: Request, limit: int, hint: str = "") -> bytes:
    """The whole body, refusing one over ``limit`` bytes before reading it all.

    A declared length over the limit is refused before a byte is read; a body sent
    without one (chunked) is refused as soon as it passes the limit.

    Args:
        request: the request.
        limit: the most bytes the body may hold.
        hint: appended to the message (``"; ask for fewer rows per request"``).

    Raises:
        TooLarge: the body is over the limit (413).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes; the limit is {limit}{hint}")
    if declared is not None:  # the server holds the body to its declared length
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes{hint}")
        chunks.append(chunk)
    return b"".join(chunks)


def run_uvicorn(
    build: Callable[[], Any],
    factory: str,
    *,
    host: str,
    port: int,
    workers: int = 1,
    access_log: bool = False,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Serve until interrupted: ``build()`` in this process, or ``workers`` processes.

    Args:
        build: makes the app when one process serves.
        factory: ``"module:function"`` that makes the app in each worker from the
            environment (uvicorn's ``factory=True``).
        host: the interface to bind.
        port: the port to bind.
        workers: processes to run; above 1, ``factory`` builds each one's app.
        access_log: log a line per request.
        environ: variables ``factory`` reads, set here before the workers start.
    """
    import uvicorn

    if workers > 1:
        os.environ.update(environ or {})
        uvicorn.run(
            factory,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            log_level=LOG_LEVEL,
        )
        return
    uvicorn.run(build(), host=host, port=port, access_log=access_log, log_level=LOG_LEVEL)


def tune_process() -> None:
    """Interpreter settings for a process that only serves (``keel serve``, ``keel gateway``).

    - ``gc.freeze()`` once the app is ready: the objects alive now (libraries, models)
      are never scanned again, so a full collection takes microseconds instead of tens
      of milliseconds in the middle of a request.
    - A 1 ms GIL switch interval (default 5 ms): a log writer thread hands the GIL back
      to the event loop sooner while it builds a file.
    """
    import gc
    import sys

    gc.collect()
    gc.freeze()
    sys.setswitchinterval(0.001)
