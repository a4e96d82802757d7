"""``keel server``: the control plane (REST API, identities, tokens and roles)."""

from keel.server.app import create_app

__all__ = ["create_app"]
