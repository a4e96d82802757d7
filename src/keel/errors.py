"""Keel's exceptions.

Every error Keel raises on purpose is a ``KeelError``. The tree has two
branches: what the caller did wrong, and what the world did::

    KeelError
    ├── UserError                      the caller can fix it
    │   ├── InvalidInput (ValueError)  bad argument, filter, key, value   → 400
    │   │   ├── Unprocessable          parsed, but does not fit the model → 422
    │   │   └── TooLarge               a request body over the limit      → 413
    │   ├── NotFound (LookupError)     unknown run, experiment, object    → 404
    │   ├── Conflict                   write-once or compare-and-set lost → 409
    │   ├── Unauthenticated            no, bad, expired or revoked token  → 401
    │   ├── PermissionDenied           identity lacks the role            → 403
    │   │   └── ApprovalRequired       protected change needs approvals   → 403
    │   ├── OverBudget                 a spending budget is used up       → 429
    │   └── StepFailed                 a pipeline step's own code raised  → 500
    │                                  (keel.pipelines: it carries the run)
    └── SystemFault                    the environment failed
        ├── StorageError (OSError)     disk, bucket, database write       → 503
        ├── IntegrityError             bytes do not match their digest    → 500
        └── BackendUnavailable         database/S3/Ray cannot be reached  → 503

Messages say what was expected, what came, and what to do. Servers map the
classes to ``status_code`` and never echo payloads or stack traces.
"""

from __future__ import annotations

import errno

__all__ = [
    "ApprovalRequired",
    "BackendUnavailable",
    "Conflict",
    "IntegrityError",
    "InvalidInput",
    "KeelError",
    "NotFound",
    "OverBudget",
    "PermissionDenied",
    "StorageError",
    "SystemFault",
    "TooLarge",
    "Unauthenticated",
    "Unprocessable",
    "UserError",
    "from_os_error",
]


class KeelError(Exception):
    """Root of every error Keel raises on purpose."""

    status_code: int = 500


class UserError(KeelError):
    """The caller did something Keel cannot accept; retrying unchanged will fail again."""

    status_code = 400


class InvalidInput(UserError, ValueError):
    """An argument, key, value or expression is malformed."""

    status_code = 400


class Unprocessable(InvalidInput):
    """Input that parsed but does not fit the model's signature."""

    status_code = 422


class TooLarge(InvalidInput):
    """A request body over the size limit the server accepts."""

    status_code = 413


class NotFound(UserError, LookupError):
    """The named object does not exist."""

    status_code = 404


class Conflict(UserError):
    """The write would overwrite something that may only be written once, or lost a race."""

    status_code = 409


class Unauthenticated(UserError):
    """A server call without a valid token: none, malformed, unknown, expired or revoked."""

    status_code = 401


class PermissionDenied(UserError, PermissionError):
    """The current identity is not allowed to do this."""

    status_code = 403


class ApprovalRequired(PermissionDenied):
    """The change is protected by policy and lacks the approvals it needs."""

    status_code = 403


class OverBudget(UserError):
    """A request would spend past a budget (money or tokens) of its caller or team."""

    status_code = 429


class SystemFault(KeelError):
    """Something outside the caller's control failed; retrying may succeed."""

    status_code = 503


class StorageError(SystemFault, OSError):
    """Reading or writing metadata or artifacts failed."""

    status_code = 503


class IntegrityError(SystemFault):
    """Stored bytes do not match the digest that names them."""

    status_code = 500


class BackendUnavailable(SystemFault, ConnectionError):
    """A configured backend (database, object store, cluster) cannot be reached."""

    status_code = 503


#: errno values that mean the disk or the quota is full: free space, then retry.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def from_os_error(exc: BaseException, what: str, *, named: bool = True) -> KeelError:
    """The Keel error for ``exc``, raised while reading or writing ``what``.

    The one translation of the world's IO errors (local files, fsspec/s3fs,
    botocore) into Keel's tree; a Keel error passes through unchanged:

    - a connection failure or timeout (``ConnectionError``, ``TimeoutError``, or
      botocore's ``EndpointConnectionError``, ``ConnectTimeoutError``,
      ``ReadTimeoutError`` …) → :class:`BackendUnavailable`;
    - ``FileNotFoundError`` → :class:`NotFound` when the caller named ``what``,
      else :class:`StorageError` (something Keel listed itself vanished);
    - ``PermissionError`` → :class:`StorageError` (the store refused Keel, not
      the caller: Keel's own :class:`PermissionDenied` is for roles);
    - a full disk or quota (``ENOSPC``, ``EDQUOT``, ``EFBIG``) → :class:`StorageError`
      saying to free space;
    - anything else (``IsADirectoryError``, ``NotADirectoryError``, other
      ``OSError``, a client library's own error) → :class:`StorageError`.

    Args:
        exc: what was raised.
        what: what was being reached, for the message (``"object 'ab/cd' in s3://b/p"``).
        named: whether the caller named ``what`` (a missing one is then their NotFound).
    """
    if isinstance(exc, KeelError):
        return exc
    kind = type(exc).__name__
    if isinstance(exc, ConnectionError | TimeoutError) or "Connect" in kind or "Timeout" in kind:
        return BackendUnavailable(f"cannot reach {what}: {exc}; check the endpoint and network")
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"no {what}") if named else StorageError(f"{what}: {exc}")
    if isinstance(exc, PermissionError):
        return StorageError(f"access denied to {what}: {exc}; check the credentials or permissions")
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return StorageError(f"no space left for {what}: {exc}; free space or raise the quota")
    return StorageError(f"{what}: {exc}")
