"""Reference profiles of model versions: what their live traffic is compared with.

A model version's reference profile describes its training (or validation)
data in the prediction log's terms: inputs as ``input.<column>``, and the
model's own predictions on that data as ``output.<name>`` (the naming rule is
:func:`keel.models.reference.log_columns`, the one the server logs by).
Comparing outputs catches prediction drift even before any label arrives.

A version gets its reference in one of two ways:

- ``keel.log_model(model, ..., reference_data=train_df)`` profiles the data
  and the model's predictions on it and stores ``reference-profile.json``
  inside the package, so a registered version carries it, pinned by digest;
- :func:`set_reference` (``keel monitor reference set``) stores a profile for
  a registered version afterwards; the newest one wins over the package's.
  It is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from keel.data.profiling import Profile
from keel.models.reference import REFERENCE_FILE, reference_profile
from keel.monitoring._client import resolve_client

__all__ = ["get_reference", "reference_info", "set_reference"]


# -- stored references --------------------------------------------------------------------------


def set_reference(
    model_name: str,
    version: int,
    data: Any,
    *,
    predict: bool = True,
    categorical: Sequence[str] | None = None,
    client: Any = None,
) -> Profile:
    """Store the reference profile of a registered model version (audited).

    Args:
        model_name: the registered model.
        version: its version number.
        data: the reference features (DataFrame, Arrow table, Parquet/CSV path), or a
            :class:`Profile` (names without ``input.``/``output.`` are taken as inputs).
        predict: also profile the version's predictions on ``data`` (loads the model).
        categorical: numeric input columns to treat as categories.

    Raises:
        NotFound: no such model or version.
        InvalidInput: unreadable data, or a model that cannot predict on it.
    """
    from keel.governance import audit
    from keel.store import schema as s
    from keel.store.sql import now_ms

    client = resolve_client(client)
    mv = client.get_model_version(model_name, version)
    predictor = None
    if predict and not isinstance(data, Profile):
        from keel.models import load_model

        predictor = load_model(mv.uri).predict
    result = reference_profile(data, predict=predictor, categorical=categorical)
    blob = client.artifacts.put_json(result.to_dict())
    actor = client._settings.user
    with client.store.write() as conn:
        model_id = conn.execute(
            select(s.registered_models.c.id).where(s.registered_models.c.name == mv.name)
        ).scalar_one()
        conn.execute(
            s.reference_profiles.insert().values(
                model_id=model_id,
                version=mv.version,
                profile_digest=blob.digest,
                rows=result.rows,
                created_at=now_ms(),
                created_by=actor,
            )
        )
        audit.record(
            conn,
            actor=actor,
            action="monitor.reference.set",
            object_type="model_version",
            object_id=f"{mv.name}/{mv.version}",
            after={"profile_digest": blob.digest, "rows": result.rows, "columns": result.names},
        )
    return result


def reference_info(model_name: str, version: int, *, client: Any = None) -> dict[str, Any] | None:
    """Where a version's reference comes from (``set`` or ``package``), or ``None``."""
    client = resolve_client(client)
    mv = client.get_model_version(model_name, version)
    from keel.store import schema as s

    with client.store.read() as conn:
        row = conn.execute(
            select(s.reference_profiles)
            .join(s.registered_models, s.registered_models.c.id == s.reference_profiles.c.model_id)
            .where(
                s.registered_models.c.name == mv.name, s.reference_profiles.c.version == mv.version
            )
            .order_by(s.reference_profiles.c.id.desc())
            .limit(1)
        ).first()
    if row is not None:
        return {
            "source": "set",
            "digest": row.profile_digest,
            "rows": row.rows,
            "created_at": row.created_at,
            "created_by": row.created_by,
        }
    if mv.manifest_digest:
        for entry in client.artifacts.read_manifest(mv.manifest_digest):
            if entry.path == REFERENCE_FILE:
                return {"source": "package", "digest": entry.digest, "rows": None}
    return None


def get_reference(model_name: str, version: int, *, client: Any = None) -> Profile | None:
    """The reference profile of a model version, or ``None`` if it has none.

    The newest profile stored with :func:`set_reference` wins; otherwise the one
    ``log_model(reference_data=...)`` put in the package.

    Raises:
        NotFound: no such model or version.
    """
    client = resolve_client(client)
    info = reference_info(model_name, version, client=client)
    if info is None:
        return None
    return Profile.from_dict(client.artifacts.get_json(info["digest"]))
