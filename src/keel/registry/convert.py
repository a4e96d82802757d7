"""Converting a version in MLflow's format into a Keel package, checked by its predictions.

A version that came from MLflow keeps MLflow's files (``MLmodel`` and a skops or
pickle model file). :func:`convert_version` re-saves its scikit-learn model as a
Keel package (skops, with a signature, an input example and requirements), in a
new run of the source run's experiment, and registers that as the next version
of the same model. It registers nothing unless the new package, loaded back the
way serving loads it, predicts exactly what the original did on the input example.

Running the conversion is the explicit act of trust a pickle needs: the pickle is
loaded once, by an unpickler that still resolves only the names the loader
trusts (see :mod:`keel.models.flavors.mlflow`). After it, the version loads and
serves with no flag at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import IntegrityError, InvalidInput

if TYPE_CHECKING:
    from keel.client import Client
    from keel.registry.entities import ModelVersion

__all__ = ["CONVERTED_FROM", "Conversion", "convert_version"]

#: The tag a converted version and its run carry: the URI of the version it came from.
CONVERTED_FROM = "keel.converted_from"


@dataclass(frozen=True)
class Conversion:
    """A finished conversion.

    Attributes:
        source: the version in MLflow's format.
        version: the new version, a Keel package.
        run_id: the run that holds the new package.
        rows_checked: how many rows of the input example predicted the same.
    """

    source: ModelVersion
    version: ModelVersion
    run_id: str
    rows_checked: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.uri,
            "version": self.version.uri,
            "run_id": self.run_id,
            "rows_checked": self.rows_checked,
        }


def convert_version(
    name: str,
    version: int,
    *,
    example: Any = None,
    trust: Sequence[str] | None = None,
    client: Client | None = None,
) -> Conversion:
    """Re-save version ``version`` of ``name`` (MLflow's format) as a Keel package and register it.

    Args:
        name: the registered model.
        version: a version whose package is in MLflow's format (scikit-learn flavor).
        example: rows to check the predictions on; default the input example MLflow
            stored with the model.
        trust: names the loader trusts beyond its built-in list, for models that need them.
        client: the client to work through (default ``keel.Client()``).

    Raises:
        InvalidInput: the version is already a Keel package, is not scikit-learn, or
            has no input example and none was given.
        PermissionDenied: the model needs types nothing trusts (the message says how).
        IntegrityError: the re-saved model predicts differently; nothing was registered.
    """
    import keel
    from keel.client import Client
    from keel.models.api import load_model, log_model

    client = client or Client()
    source = client.registry.get_model_version(name, version)
    original = load_model(source.uri, allow_pickle=True, trust=trust)
    if original.flavor != "mlflow":
        raise InvalidInput(
            f"{source.uri} is already a Keel package (flavor {original.flavor}); "
            "only versions in MLflow's format need converting"
        )
    data = example if example is not None else _stored_example(original.path, source.uri)
    expected = np.asarray(original.predict(data))
    if source.run_id is None:
        raise InvalidInput(f"{source.uri} has no source run to convert alongside")
    run_info = client.tracking.get_run(source.run_id).info
    experiment = client.tracking.get_experiment(run_info.experiment_id)
    with keel.start_run(
        f"convert {name}/{version}",
        experiment=experiment.name,
        tags={CONVERTED_FROM: source.uri},
    ) as run:
        log_model(original.native, name="model", input_example=data, flavor="sklearn")
        converted = load_model(f"runs:/{run.id}/model", trust=trust)
        got = np.asarray(converted.predict(data))
        if got.shape != expected.shape or not np.array_equal(got, expected):
            raise IntegrityError(
                f"the re-saved {source.uri} predicts differently on the input example "
                f"({int(np.sum(got != expected)) if got.shape == expected.shape else 'shape'} "
                "differences); nothing was registered. Keep loading the original with "
                "allow_pickle=True"
            )
    new = client.registry.create_model_version(
        name,
        f"runs:/{run.id}/model",
        description=f"{source.uri} in Keel's format (skops), converted from MLflow's",
        tags={CONVERTED_FROM: source.uri},
    )
    return Conversion(source, new, run.id, len(expected))


def _stored_example(folder: Any, uri: str) -> Any:
    """The input example MLflow stored beside the model (``input_example.json``, split orient)."""
    import json

    import pandas as pd

    path = folder / "input_example.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(
            f"{uri} has no input example to check the conversion on; pass rows the model "
            "takes (keel models convert NAME VERSION --example rows.csv)"
        ) from None
    if isinstance(doc, dict) and "columns" in doc and "data" in doc:
        return pd.DataFrame(doc["data"], columns=doc["columns"])
    raise InvalidInput(
        f"{uri}: input_example.json is not a table (columns and data); pass --example rows.csv"
    )
