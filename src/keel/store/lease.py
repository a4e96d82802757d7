"""Lease owner ids, shared by everything that holds a lease on a row of the store.

A lease (the automation controller's on a policy, the job scheduler's) is a row's
``lease_owner`` and ``lease_until``, taken and renewed by compare-and-set. The owner
id carries the host and pid, so a successor on the same host can see that the
holder died and take the lease over at once instead of waiting for it to expire.
"""

from __future__ import annotations

import os
import socket
import uuid

__all__ = ["holder_is_dead", "new_owner"]


def new_owner() -> str:
    """A lease owner id: ``host:pid:random`` (the pid lets a successor see the holder died)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(owner: str | None) -> bool:
    """True when ``owner`` is a process of this host that no longer runs (or nobody)."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
