"""A real model registry and a real uvicorn server on a free port (see ``_support.serving``)."""

from __future__ import annotations

from _support.serving import registered, serve

__all__ = ["registered", "serve"]
