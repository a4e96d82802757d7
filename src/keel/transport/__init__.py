"""How a :class:`keel.Client` reaches Keel's state: one small interface, a local implementation."""

from __future__ import annotations

from keel.transport.base import Transport, TransportBound
from keel.transport.local import LocalTransport, local_or

__all__ = ["LocalTransport", "Transport", "TransportBound", "local_or"]
