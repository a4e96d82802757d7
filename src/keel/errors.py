"""Keel's exceptions.

Every error Keel raises on purpose is a ``KeelError``. The tree has two
branches: what the caller did wrong, and what the world did::

    KeelError
    ├── UserError                      the caller can fix it
    │   ├── InvalidInput (ValueError)  bad argument, filter, key, value   → 400
    │   ├── NotFound (LookupError)     unknown run, experiment, object    → 404
    │   ├── Conflict                   write-once or compare-and-set lost → 409
    │   ├── PermissionDenied           identity lacks the role            → 403
    │   └── ApprovalRequired           protected change needs approvals   → 403
    └── SystemFault                    the environment failed
        ├── StorageError (OSError)     disk, bucket, database write       → 503
        ├── IntegrityError             bytes do not match their digest    → 500
        └── BackendUnavailable         database/S3/Ray cannot be reached  → 503

Messages say what was expected, what came, and what to do. Servers map the
classes to ``status_code`` and never echo payloads or stack traces.
"""

from __future__ import annotations

__all__ = [
    "ApprovalRequired",
    "BackendUnavailable",
    "Conflict",
    "IntegrityError",
    "InvalidInput",
    "KeelError",
    "NotFound",
    "PermissionDenied",
    "StorageError",
    "SystemFault",
    "UserError",
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


class NotFound(UserError, LookupError):
    """The named object does not exist."""

    status_code = 404


class Conflict(UserError):
    """The write would overwrite something that may only be written once, or lost a race."""

    status_code = 409


class PermissionDenied(UserError, PermissionError):
    """The current identity is not allowed to do this."""

    status_code = 403


class ApprovalRequired(PermissionDenied):
    """The change is protected by policy and lacks the approvals it needs."""

    status_code = 403


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
