"""Which deployments exist, as monitoring sees them: a typo must not start a time series.

A deployment exists when it is stored (``keel deploy create``), when it has
prediction logs (``keel serve models:/churn@champion`` logs under the model's
name without storing a deployment), or when monitoring already knows it (it
has monitor runs or settings). Any other name is a mistake: it gets
``NotFound`` with the closest existing names, instead of an empty run stored
under the wrong name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from keel.errors import NotFound

if TYPE_CHECKING:
    from keel.client import Client


__all__ = ["known_deployments", "require_deployment"]


def known_deployments(client: Client) -> list[str]:
    """Every deployment name monitoring can read: stored, logged or already monitored."""
    from keel.predictions import PredictionReader
    from keel.serving.deployments import Deployments
    from keel.store import schema as s

    settings = client.settings
    names = {d.name for d in Deployments(client).all()}
    reader = PredictionReader(settings.artifacts_url, s3_endpoint_url=settings.s3_endpoint_url)
    names.update(reader.deployments())
    with client.store.read() as conn:
        names.update(conn.execute(select(s.monitor_runs.c.deployment).distinct()).scalars())
        names.update(conn.execute(select(s.monitor_settings.c.deployment)).scalars())
    return sorted(names)


def require_deployment(deployment: str, client: Client) -> None:
    """Raise ``NotFound`` unless ``deployment`` exists (see the module docstring).

    Raises:
        NotFound: naming the closest existing names (:func:`keel.suggest.hint`).
    """
    if _stored(deployment, client):  # the usual case: one query, no listing
        return
    known = known_deployments(client)
    if deployment in known:
        return
    from keel.suggest import hint

    raise NotFound(
        f"no deployment named {deployment!r}: none is stored, none has prediction logs and "
        "none was monitored under that name; "
        + hint(deployment, known, kind="deployments", create="create one with `keel deploy create`")
    )


def _stored(deployment: str, client: Client) -> bool:
    from keel.serving.deployments import Deployments

    try:
        Deployments(client).current_revision(deployment)
    except NotFound:
        return False
    return True
