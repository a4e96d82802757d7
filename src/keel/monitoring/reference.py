"""Reference profiles of model versions: what their live traffic is compared with.

A model version's reference profile describes its training (or validation)
data in the prediction log's terms: inputs as ``input.<column>``, and the
model's own predictions on that data as ``output.<name>`` (the naming rule is
:func:`keel.models.reference.log_columns`, the one the server logs by).
Comparing outputs catches prediction drift even before any label arrives.
Only the signature's inputs are profiled as inputs: a target column in the
reference data is not something traffic carries.

A version gets its reference in one of these ways, the first that applies
winning:

- :func:`set_reference` (``keel monitor reference set``) stores a profile for
  a registered version; the newest one wins. It is audited.
- ``keel.log_model(model, ..., reference_data=train_df)`` profiles the data
  and the model's predictions on it and stores ``reference-profile.json``
  inside the package, so a registered version carries it, pinned by digest;
- without either, registering the version takes the stored profile of its
  run's training dataset (a table version the run, or the pipeline steps
  before it, read or logged), and so does promoting it through an alias
  (:func:`ensure_reference`: a pipeline's lineage is complete only once its
  steps finished). These profiles have no outputs: prediction drift needs one
  of the two ways above.

A served version with none of these is not compared; the monitor raises a
``no_reference`` alert naming the command that gives it one.

Through ``keel server`` each function goes through the client's monitoring
part (:func:`keel.monitoring.part.monitoring_part`): :func:`set_reference`
builds the profile where it is called (the data and the model load there) and
the server stores it; :func:`ensure_reference` and :func:`reference_info` run
on the server, which holds the lineage and the stored profiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from keel.data.profiling import Profile
from keel.models.reference import (
    ORIGIN_KEY,
    REFERENCE_FILE,
    input_columns,
    pinned_metadata,
    reference_profile,
    training_reference,
)
from keel.monitoring.clients import resolve_client

if TYPE_CHECKING:
    from keel.client import Client


__all__ = [
    "ensure_reference",
    "get_reference",
    "parse_reference",
    "reference_command",
    "reference_info",
    "set_reference",
]


def reference_command(model_name: str, version: int) -> str:
    """The command that gives a version a reference profile."""
    return f"keel monitor reference set {model_name} {version} TRAINING_DATA"


# -- stored references --------------------------------------------------------------------------


def set_reference(
    model_name: str,
    version: int,
    data: Any,
    *,
    predict: bool = True,
    categorical: Sequence[str] | None = None,
    client: Client | None = None,
) -> Profile:
    """Store the reference profile of a registered model version (audited).

    Only the columns of the version's signature are profiled as inputs; others
    in ``data`` (the target, an id) are left out and named in the audit entry.

    Args:
        model_name: the registered model.
        version: its version number.
        data: the reference features (DataFrame, Arrow table, Parquet/CSV path), or a
            :class:`Profile` (names without ``input.``/``output.`` are taken as inputs).
        predict: also profile the version's predictions on ``data`` (loads the model).
        categorical: numeric input columns to treat as categories.

    Raises:
        NotFound: no such model or version.
        InvalidInput: unreadable data, data without one of the model's inputs, or a
            model that cannot predict on it.
    """
    client = resolve_client(client)
    mv = client.get_model_version(model_name, version)
    metadata = pinned_metadata(client.artifacts, mv.manifest_digest) or {}
    inputs = input_columns(metadata.get("signature"))
    predictor = None
    if predict and not isinstance(data, Profile):
        from keel.models import load_model

        predictor = load_model(mv.uri).predict
    result = reference_profile(data, predict=predictor, categorical=categorical, inputs=inputs)
    left_out = [] if inputs is None else _left_out(data, inputs)
    client.monitoring.store_reference(mv.name, mv.version, result, left_out)
    return result


def parse_reference(doc: Any) -> Profile:
    """A reference profile from its JSON form (:meth:`Profile.to_dict`), as a client sends it.

    Raises:
        InvalidInput: ``doc`` is not a profile's JSON.
    """
    from keel.errors import InvalidInput

    try:
        if not isinstance(doc, dict) or not isinstance(doc.get("columns"), dict):
            raise TypeError("no 'columns' object")
        return Profile.from_dict(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidInput(
            f"expected a reference profile as Profile.to_dict() writes it; this one does not "
            f"read ({type(exc).__name__}: {exc}); build it with keel.monitoring.profile"
        ) from None


def local_store_reference(
    model_name: str, version: int, profile: Profile, left_out: list[str], client: Client
) -> str:
    """Store ``profile`` as the version's newest reference on the client's own store.

    Raises:
        NotFound: no such model or version.
    """
    mv = client.get_model_version(model_name, version)
    return _store(client, mv.name, mv.version, profile, {"left_out": left_out} if left_out else {})


def _left_out(data: Any, inputs: Sequence[str]) -> list[str]:
    """Columns of ``data`` that are not model inputs (what the reference leaves out)."""
    if isinstance(data, Profile):
        names = [n.removeprefix("input.") for n in data.columns if not n.startswith("output.")]
    else:
        from keel.data.profiling import open_source

        names = list(open_source(data).columns)
    return [n for n in names if n not in inputs]


def _store(
    client: Client, model_name: str, version: int, result: Profile, extra: dict[str, Any]
) -> str:
    """Store ``result`` as the version's newest reference, with its audit entry."""
    from keel.governance import audit
    from keel.store import schema as s
    from keel.store.sql import now_ms

    origin = extra.get("origin")
    blob = client.artifacts.put_json(
        {**result.to_dict(), **({ORIGIN_KEY: origin} if origin else {})}
    )
    actor = client.user
    with client.store.write() as conn:
        model_id = conn.execute(
            select(s.registered_models.c.id).where(
                s.registered_models.c.name == model_name, s.registered_models.c.kind == "model"
            )
        ).scalar_one()
        conn.execute(
            s.reference_profiles.insert().values(
                model_id=model_id,
                version=version,
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
            object_id=f"{model_name}/{version}",
            after={
                "profile_digest": blob.digest,
                "rows": result.rows,
                "columns": result.names,
                **extra,
            },
        )
    return str(blob.digest)


def ensure_reference(
    model_name: str, version: int, *, client: Client | None = None
) -> dict[str, Any] | None:
    """The version's reference, taking one from its training data if it has none yet.

    Called when a version is promoted: a pipeline registers its model from inside
    a step, before the lineage from the step back to the dataset it read is
    stored, so registration alone could not find it. Audited like
    :func:`set_reference`.

    Returns:
        :func:`reference_info` afterwards (``None``: the version still has none).
    """
    return resolve_client(client).monitoring.ensure_reference(model_name, version)


def local_ensure_reference(model_name: str, version: int, client: Client) -> dict[str, Any] | None:
    """:func:`ensure_reference` on the client's own store."""
    info = local_reference_info(model_name, version, client)
    if info is not None:
        return info
    mv = client.get_model_version(model_name, version)
    metadata = pinned_metadata(client.artifacts, mv.manifest_digest) or {}
    inputs = input_columns(metadata.get("signature"))
    if not inputs or not mv.run_id:
        return None
    found = training_reference(client.store, client.artifacts, mv.run_id, inputs)
    if found is None:
        return None
    result, uri = found
    _store(client, mv.name, mv.version, result, {"origin": uri})
    return local_reference_info(model_name, version, client)


def reference_info(
    model_name: str, version: int, *, client: Client | None = None
) -> dict[str, Any] | None:
    """Where a version's reference comes from, or ``None``.

    ``source`` is ``set`` (:func:`set_reference`), ``dataset`` (taken from its
    training data; ``dataset`` names the version) or ``package``.

    Raises:
        NotFound: no such model or version.
    """
    return resolve_client(client).monitoring.reference_info(model_name, version)


def local_reference_info(model_name: str, version: int, client: Client) -> dict[str, Any] | None:
    """:func:`reference_info` on the client's own store."""
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
        origin = client.artifacts.get_json(row.profile_digest).get(ORIGIN_KEY)
        return {
            "source": "set" if origin is None else "dataset",
            **({} if origin is None else {"dataset": origin}),
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


def get_reference(model_name: str, version: int, *, client: Client | None = None) -> Profile | None:
    """The reference profile of a model version, or ``None`` if it has none.

    The newest profile stored with :func:`set_reference` (or taken from the
    version's training data) wins; otherwise the one
    ``log_model(reference_data=...)`` put in the package.

    Raises:
        NotFound: no such model or version.
    """
    client = resolve_client(client)
    info = reference_info(model_name, version, client=client)
    if info is None:
        return None
    return Profile.from_dict(client.artifacts.get_json(info["digest"]))
