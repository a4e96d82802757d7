"""Where a job's attempts run: the :class:`Executor` interface and its local implementation.

The Ray executor is imported from its own module only when used (Ray is an extra).
"""

from keel.jobs.executors.base import Executor, Handle
from keel.jobs.executors.local import LocalExecutor, LocalHandle

__all__ = ["Executor", "Handle", "LocalExecutor", "LocalHandle"]
